//! Trusted browsers (issue 20 item 5): the server's side of the
//! `__Host-passgate-trusted` cookie. Only a keyed hash of the cookie's
//! token is kept.

use async_trait::async_trait;
use sqlx::Connection;

use super::StoreResult;
use super::engine::{Arg, Engine, Sql};
use crate::clock::Millis;
use crate::domain::UserId;

/// One trusted browser (see migrations: trusted_device).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TrustedDeviceRow {
    pub trusted_device_id: String,
    pub user_id: UserId,
    /// Keyed hash of the cookie's token; never the token.
    pub token_hash: String,
    pub label: String,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// What storing a new trusted browser did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustStored {
    Done,
    /// Nothing written: the user already has the most live ones allowed.
    TooMany,
}

#[async_trait]
pub trait TrustedDeviceStore: Send + Sync {
    /// Stores `row`, first revoking the user's live trust whose hash is
    /// `replacing` (the same browser trusted again), unless the user would
    /// then hold more than `max_live` live ones.
    async fn insert_trusted_device(
        &self,
        row: &TrustedDeviceRow,
        replacing: Option<&str>,
        max_live: i64,
        now: Millis,
    ) -> StoreResult<TrustStored>;
    /// Whether the user has a live trust with this hash; if so, it was
    /// seen now.
    async fn touch_trusted_device(
        &self,
        user_id: &UserId,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<bool>;
    /// The user's live trusted browsers, newest first.
    async fn live_trusted_devices(
        &self,
        user_id: &UserId,
        now: Millis,
    ) -> StoreResult<Vec<TrustedDeviceRow>>;
    /// One trusted browser, live or not, whoever's it is.
    async fn find_trusted_device(
        &self,
        trusted_device_id: &str,
    ) -> StoreResult<Option<TrustedDeviceRow>>;
    /// Ends one live trust of the user; false when the user has none by
    /// that id.
    async fn revoke_trusted_device(
        &self,
        user_id: &UserId,
        trusted_device_id: &str,
        now: Millis,
    ) -> StoreResult<bool>;
    /// Ends every live trust of the user; how many.
    async fn revoke_trusted_devices(&self, user_id: &str, now: Millis) -> StoreResult<u64>;
    /// Deletes trusts that expired or were revoked before `before`.
    async fn purge_trusted_devices(&self, before: Millis) -> StoreResult<u64>;
}

/// Every column, in table order.
macro_rules! columns {
    () => {
        "trusted_device_id, user_id, token_hash, label, created_at, last_seen_at, expires_at, \
         revoked_at"
    };
}

const INSERT: &str = concat!(
    "insert into trusted_device (",
    columns!(),
    ") values ($1, $2, $3, $4, $5, $6, $7, $8)"
);

#[async_trait]
impl<E: Engine> TrustedDeviceStore for E {
    async fn insert_trusted_device(
        &self,
        row: &TrustedDeviceRow,
        replacing: Option<&str>,
        max_live: i64,
        now: Millis,
    ) -> StoreResult<TrustStored> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        // Takes the user's row lock on PostgreSQL (SQLite's write lock
        // covers the whole database), so two trusts at once count each
        // other.
        let sql = "update app_user set user_id = user_id where user_id = $1";
        tx.execute(sql, &[(&row.user_id).into()]).await?;
        if let Some(old_hash) = replacing {
            let sql = "update trusted_device set revoked_at = $3 \
                       where user_id = $1 and token_hash = $2 and revoked_at is null";
            tx.execute(sql, &[(&row.user_id).into(), old_hash.into(), now.into()]).await?;
        }
        let sql = "select count(*) from trusted_device \
                   where user_id = $1 and revoked_at is null and expires_at > $2";
        let (live,): (i64,) = tx.fetch_one(sql, &[(&row.user_id).into(), now.into()]).await?;
        if live >= max_live {
            tx.rollback().await?;
            return Ok(TrustStored::TooMany);
        }
        let args: [Arg<'_>; 8] = [
            (&row.trusted_device_id).into(),
            (&row.user_id).into(),
            (&row.token_hash).into(),
            (&row.label).into(),
            row.created_at.into(),
            row.last_seen_at.into(),
            row.expires_at.into(),
            row.revoked_at.into(),
        ];
        tx.execute(INSERT, &args).await?;
        tx.commit().await?;
        Ok(TrustStored::Done)
    }

    async fn touch_trusted_device(
        &self,
        user_id: &UserId,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        // A live trust: not revoked and not expired.
        const SQL: &str = "update trusted_device set last_seen_at = $3 where user_id = $1 \
             and token_hash = $2 and revoked_at is null and expires_at > $3";
        let args = [user_id.into(), token_hash.into(), now.into()];
        Ok(self.db().await?.execute(SQL, &args).await? == 1)
    }

    async fn live_trusted_devices(
        &self,
        user_id: &UserId,
        now: Millis,
    ) -> StoreResult<Vec<TrustedDeviceRow>> {
        const SQL: &str = concat!(
            "select ",
            columns!(),
            " from trusted_device where user_id = $1 and revoked_at is null and expires_at > $2 \
             order by created_at desc, trusted_device_id desc"
        );
        Ok(self.db().await?.fetch_all(SQL, &[user_id.into(), now.into()]).await?)
    }

    async fn find_trusted_device(
        &self,
        trusted_device_id: &str,
    ) -> StoreResult<Option<TrustedDeviceRow>> {
        const SQL: &str =
            concat!("select ", columns!(), " from trusted_device where trusted_device_id = $1");
        Ok(self.db().await?.fetch_optional(SQL, &[trusted_device_id.into()]).await?)
    }

    async fn revoke_trusted_device(
        &self,
        user_id: &UserId,
        trusted_device_id: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        const SQL: &str = "update trusted_device set revoked_at = $3 where user_id = $1 \
             and trusted_device_id = $2 and revoked_at is null and expires_at > $3";
        let args = [user_id.into(), trusted_device_id.into(), now.into()];
        Ok(self.db().await?.execute(SQL, &args).await? == 1)
    }

    async fn revoke_trusted_devices(&self, user_id: &str, now: Millis) -> StoreResult<u64> {
        let sql = "update trusted_device set revoked_at = $2 \
                   where user_id = $1 and revoked_at is null and expires_at > $2";
        Ok(self.db().await?.execute(sql, &[user_id.into(), now.into()]).await?)
    }

    async fn purge_trusted_devices(&self, before: Millis) -> StoreResult<u64> {
        let sql = "delete from trusted_device where expires_at < $1 or revoked_at < $1";
        Ok(self.db().await?.execute(sql, &[before.into()]).await?)
    }
}
