//! Failures counted per minute (issue 20 item 4), by network, account and
//! device: the anomaly view and its alerts read them, and so do the risk
//! rules' failure-velocity signals. Each node adds its own counts. The
//! alerts raised from them, once per crossing across nodes, and the log of
//! their webhook's deliveries live here too.

use async_trait::async_trait;
use sqlx::Connection;

use super::StoreResult;
use super::engine::{Arg, Engine, Sql};
use crate::clock::Millis;

/// Failures of one kind for one key in one minute.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct FailureCount {
    /// Unix time in whole minutes.
    pub minute: i64,
    /// 'network', 'account' or 'device'.
    pub dimension: String,
    /// A /24 or /48 network, a user id or a device id.
    pub key: String,
    /// The audit event that failed.
    pub kind: String,
    pub count: i64,
}

/// One key's failures of every kind, over a window or in one minute.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyTotal {
    pub key: String,
    /// Unix time in whole minutes; for a window's total, its last minute.
    pub minute: i64,
    pub total: i64,
}

/// One alert: a key whose failures in one minute reached a threshold.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AlertRow {
    pub alert_id: String,
    pub rule: String,
    pub dimension: String,
    pub key: String,
    /// The minute that crossed, in whole minutes.
    pub window_start: i64,
    /// The audit event with most failures in that minute.
    pub kind: Option<String>,
    pub count: i64,
    pub threshold: i64,
    pub created_at: Millis,
}

/// One attempt to deliver an alert's webhook.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRow {
    pub delivery_id: String,
    pub alert_id: String,
    pub attempt: i32,
    /// The receiver's HTTP status; None when none came back.
    pub status_code: Option<i32>,
    /// Why no status came back: a class such as "timeout", never a URL.
    pub error: Option<String>,
    pub at: Millis,
}

/// A delivery attempt with what its alert was about, for the log's reader.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryLogRow {
    #[sqlx(flatten)]
    pub delivery: DeliveryRow,
    pub dimension: String,
    pub key: String,
    pub window_start: i64,
    pub count: i64,
}

#[async_trait]
pub trait FailureStore: Send + Sync {
    /// Adds each count to its minute's row, making the row if need be.
    async fn add_failures(&self, counts: &[FailureCount]) -> StoreResult<()>;
    /// All failures of any kind for this key from `since_minute` on.
    async fn failures_since(
        &self,
        dimension: &str,
        key: &str,
        since_minute: i64,
    ) -> StoreResult<i64>;
    /// The keys of `dimension` with most failures from `since_minute` on,
    /// most first (ties by key), at most `limit`; `minute` is each key's
    /// latest minute with a failure.
    async fn top_failures(
        &self,
        dimension: &str,
        since_minute: i64,
        limit: i64,
    ) -> StoreResult<Vec<KeyTotal>>;
    /// One key's failures per minute from `since_minute` on, oldest
    /// first; minutes without failures are left out.
    async fn failure_series(
        &self,
        dimension: &str,
        key: &str,
        since_minute: i64,
    ) -> StoreResult<Vec<KeyTotal>>;
    /// Every key of `dimension` whose failures in one minute from
    /// `since_minute` on reached `threshold`, with that minute and count.
    async fn keys_at_or_over(
        &self,
        dimension: &str,
        since_minute: i64,
        threshold: i64,
    ) -> StoreResult<Vec<KeyTotal>>;
    /// The event kind with most failures for this key in this minute.
    async fn top_kind(
        &self,
        dimension: &str,
        key: &str,
        minute: i64,
    ) -> StoreResult<Option<String>>;
    /// For each dimension, the most failures one key had in one minute
    /// from `since_minute` on.
    async fn worst_minutes(&self, since_minute: i64) -> StoreResult<Vec<(String, i64)>>;
    /// Deletes the counts of minutes before `before_minute`.
    async fn purge_failures(&self, before_minute: i64) -> StoreResult<u64>;
    /// Inserts `alert` unless one with the same rule, dimension, key and
    /// minute exists, or one for the same rule, dimension and key started
    /// at `quiet_from` or later (still the same spike); true when this call
    /// inserted it, which on any number of nodes is one call.
    async fn insert_alert(&self, alert: &AlertRow, quiet_from: i64) -> StoreResult<bool>;
    async fn record_delivery(&self, delivery: &DeliveryRow) -> StoreResult<()>;
    /// The latest delivery attempts, newest first.
    async fn deliveries(&self, limit: i64) -> StoreResult<Vec<DeliveryLogRow>>;
    /// Deletes alerts made before `before` and their deliveries.
    async fn purge_alerts(&self, before: Millis) -> StoreResult<u64>;
}

const ADD_FAILURES: &str = "insert into failure_minute (minute, dimension, key, kind, count) \
     values ($1, $2, $3, $4, $5) on conflict (minute, dimension, key, kind) \
     do update set count = failure_minute.count + excluded.count";

const FAILURES_SINCE: &str = "select cast(coalesce(sum(count), 0) as bigint) from failure_minute \
     where dimension = $1 and key = $2 and minute >= $3";

const TOP_FAILURES: &str = "select key, cast(max(minute) as bigint) as minute, \
     cast(sum(count) as bigint) as total from failure_minute \
     where dimension = $1 and minute >= $2 group by key order by total desc, key limit $3";

const FAILURE_SERIES: &str = "select key, minute, cast(sum(count) as bigint) as total \
     from failure_minute where dimension = $1 and key = $2 and minute >= $3 \
     group by key, minute order by minute";

const KEYS_AT_OR_OVER: &str = "select key, minute, cast(sum(count) as bigint) as total \
     from failure_minute where dimension = $1 and minute >= $2 \
     group by key, minute having sum(count) >= $3 order by minute, key";

const TOP_KIND: &str = "select kind from failure_minute \
     where dimension = $1 and key = $2 and minute = $3 order by count desc, kind limit 1";

const WORST_MINUTES: &str = "select dimension, cast(max(total) as bigint) from \
     (select dimension, key, minute, sum(count) as total from failure_minute \
      where minute >= $1 group by dimension, key, minute) per_key group by dimension";

const PURGE_FAILURES: &str = "delete from failure_minute where minute < $1";

const INSERT_ALERT: &str = "insert into anomaly_alert (alert_id, rule, dimension, key, \
     window_start, kind, count, threshold, created_at) \
     select $1, $2, $3, $4, $5, $6, $7, $8, $9 where not exists \
     (select 1 from anomaly_alert where rule = $2 and dimension = $3 and key = $4 \
      and window_start >= $10 and window_start <= $5) \
     on conflict (rule, dimension, key, window_start) do nothing";

const RECORD_DELIVERY: &str = "insert into anomaly_delivery \
     (delivery_id, alert_id, attempt, status_code, error, at) values ($1, $2, $3, $4, $5, $6)";

const DELIVERIES: &str = "select d.delivery_id, d.alert_id, d.attempt, d.status_code, d.error, \
     d.at, a.dimension, a.key, a.window_start, a.count \
     from anomaly_delivery d join anomaly_alert a on a.alert_id = d.alert_id \
     order by d.at desc, d.attempt desc, d.delivery_id desc limit $1";

const PURGE_DELIVERIES: &str = "delete from anomaly_delivery where alert_id in \
     (select alert_id from anomaly_alert where created_at < $1)";

const PURGE_ALERTS: &str = "delete from anomaly_alert where created_at < $1";

#[async_trait]
impl<E: Engine> FailureStore for E {
    async fn add_failures(&self, counts: &[FailureCount]) -> StoreResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        for count in counts {
            let args = [
                count.minute.into(),
                (&count.dimension).into(),
                (&count.key).into(),
                (&count.kind).into(),
                count.count.into(),
            ];
            tx.execute(ADD_FAILURES, &args).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn failures_since(
        &self,
        dimension: &str,
        key: &str,
        since_minute: i64,
    ) -> StoreResult<i64> {
        let args = [dimension.into(), key.into(), since_minute.into()];
        let (total,): (i64,) = self.db().await?.fetch_one(FAILURES_SINCE, &args).await?;
        Ok(total)
    }

    async fn top_failures(
        &self,
        dimension: &str,
        since_minute: i64,
        limit: i64,
    ) -> StoreResult<Vec<KeyTotal>> {
        let args = [dimension.into(), since_minute.into(), limit.into()];
        Ok(self.db().await?.fetch_all(TOP_FAILURES, &args).await?)
    }

    async fn failure_series(
        &self,
        dimension: &str,
        key: &str,
        since_minute: i64,
    ) -> StoreResult<Vec<KeyTotal>> {
        let args = [dimension.into(), key.into(), since_minute.into()];
        Ok(self.db().await?.fetch_all(FAILURE_SERIES, &args).await?)
    }

    async fn keys_at_or_over(
        &self,
        dimension: &str,
        since_minute: i64,
        threshold: i64,
    ) -> StoreResult<Vec<KeyTotal>> {
        let args = [dimension.into(), since_minute.into(), threshold.into()];
        Ok(self.db().await?.fetch_all(KEYS_AT_OR_OVER, &args).await?)
    }

    async fn top_kind(
        &self,
        dimension: &str,
        key: &str,
        minute: i64,
    ) -> StoreResult<Option<String>> {
        let args = [dimension.into(), key.into(), minute.into()];
        let row: Option<(String,)> = self.db().await?.fetch_optional(TOP_KIND, &args).await?;
        Ok(row.map(|(kind,)| kind))
    }

    async fn worst_minutes(&self, since_minute: i64) -> StoreResult<Vec<(String, i64)>> {
        Ok(self.db().await?.fetch_all(WORST_MINUTES, &[since_minute.into()]).await?)
    }

    async fn purge_failures(&self, before_minute: i64) -> StoreResult<u64> {
        Ok(self.db().await?.execute(PURGE_FAILURES, &[before_minute.into()]).await?)
    }

    async fn insert_alert(&self, alert: &AlertRow, quiet_from: i64) -> StoreResult<bool> {
        let args = [
            (&alert.alert_id).into(),
            (&alert.rule).into(),
            (&alert.dimension).into(),
            (&alert.key).into(),
            alert.window_start.into(),
            (&alert.kind).into(),
            alert.count.into(),
            alert.threshold.into(),
            alert.created_at.into(),
            quiet_from.into(),
        ];
        Ok(self.db().await?.execute(INSERT_ALERT, &args).await? == 1)
    }

    async fn record_delivery(&self, delivery: &DeliveryRow) -> StoreResult<()> {
        let args = [
            (&delivery.delivery_id).into(),
            (&delivery.alert_id).into(),
            delivery.attempt.into(),
            Arg::MaybeInt(delivery.status_code.map(i64::from)),
            (&delivery.error).into(),
            delivery.at.into(),
        ];
        self.db().await?.execute(RECORD_DELIVERY, &args).await?;
        Ok(())
    }

    async fn deliveries(&self, limit: i64) -> StoreResult<Vec<DeliveryLogRow>> {
        Ok(self.db().await?.fetch_all(DELIVERIES, &[limit.into()]).await?)
    }

    async fn purge_alerts(&self, before: Millis) -> StoreResult<u64> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        tx.execute(PURGE_DELIVERIES, &[before.into()]).await?;
        let purged = tx.execute(PURGE_ALERTS, &[before.into()]).await?;
        tx.commit().await?;
        Ok(purged)
    }
}
