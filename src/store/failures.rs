//! Failures counted per minute (issue 20 item 4), by network, account and
//! device: the anomaly view and its alerts read them, and so do the risk
//! rules' failure-velocity signals. Each node adds its own counts.

use async_trait::async_trait;
use sqlx::Connection;

use super::StoreResult;
use super::engine::{Engine, Sql};

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
}

const ADD_FAILURES: &str = "insert into failure_minute (minute, dimension, key, kind, count) \
     values ($1, $2, $3, $4, $5) on conflict (minute, dimension, key, kind) \
     do update set count = failure_minute.count + excluded.count";

const FAILURES_SINCE: &str = "select cast(coalesce(sum(count), 0) as bigint) from failure_minute \
     where dimension = $1 and key = $2 and minute >= $3";

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
}
