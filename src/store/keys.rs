//! Token signing keys, and the server's other secrets at rest.

use async_trait::async_trait;
use sqlx::Connection;

use super::engine::{Engine, Sql};
use super::{RewriteSecret, SecretPlace, SigningKeyRow, StoreError, StoreResult};
use crate::clock::Millis;

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>>;
    async fn add_signing_key(&self, key: &SigningKeyRow) -> StoreResult<()>;
    /// Adds `key` and retires every unretired key but it and `keep_kid`
    /// (the previous one), at once.
    async fn rotate_signing_key(
        &self,
        key: &SigningKeyRow,
        keep_kid: &str,
        now: Millis,
    ) -> StoreResult<()>;
    /// Revokes `kid` and, at once, makes `activate` sign from `now` or
    /// adds `replacement`; false (nothing written) when `kid` is unknown or
    /// already revoked.
    async fn revoke_signing_key(
        &self,
        kid: &str,
        now: Millis,
        activate: Option<&str>,
        replacement: Option<&SigningKeyRow>,
    ) -> StoreResult<bool>;

    /// Returns the stored secret of that name, storing `candidate` first
    /// when there is none (first node to start wins).
    async fn shared_secret(&self, name: &str, candidate: &str, now: Millis) -> StoreResult<String>;

    /// Rewrites secrets at rest (private signing keys, TOTP secrets, server
    /// secrets) in one transaction: `rewrite` gets each stored value with
    /// its place and returns the value to store instead, or None to leave
    /// it. With `only_unsealed`, values already sealed are not visited.
    /// A row changed meanwhile is left as it is. Returns the rows rewritten.
    async fn rewrite_secrets(
        &self,
        only_unsealed: bool,
        rewrite: &RewriteSecret<'_>,
    ) -> StoreResult<u64>;
}

async fn insert_signing_key<C: Sql>(conn: &mut C, key: &SigningKeyRow) -> StoreResult<()> {
    let sql = "insert into signing_key (kid, algorithm, private_key, public_jwk, \
               created_at, retired_at, active_from, revoked_at) \
               values ($1, $2, $3, $4, $5, $6, $7, $8)";
    let args = [
        (&key.kid).into(),
        (&key.algorithm).into(),
        (&key.private_key).into(),
        (&key.public_jwk).into(),
        key.created_at.into(),
        key.retired_at.into(),
        key.active_from.into(),
        key.revoked_at.into(),
    ];
    conn.execute(sql, &args).await?;
    Ok(())
}

/// Per table holding secrets: the select of its values (`$1 = false` keeps
/// every row; sealed values start with `sealed:`) and the update of one
/// that is still what was read.
const SECRET_TABLES: [(&str, &str); 3] = [
    (
        "select kid, private_key from signing_key \
         where $1 = false or private_key not like 'sealed:%'",
        "update signing_key set private_key = $3 where kid = $1 and private_key = $2",
    ),
    (
        "select user_id, secret from user_totp \
         where $1 = false or secret not like 'sealed:%'",
        "update user_totp set secret = $3 where user_id = $1 and secret = $2",
    ),
    (
        "select name, value from server_secret \
         where $1 = false or value not like 'sealed:%'",
        "update server_secret set value = $3 where name = $1 and value = $2",
    ),
];

#[async_trait]
impl<E: Engine> KeyStore for E {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
        let sql = "select * from signing_key order by created_at desc, kid desc";
        Ok(self.db().await?.fetch_all(sql, &[]).await?)
    }

    async fn add_signing_key(&self, key: &SigningKeyRow) -> StoreResult<()> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        insert_signing_key(&mut *tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_signing_key(
        &self,
        key: &SigningKeyRow,
        keep_kid: &str,
        now: Millis,
    ) -> StoreResult<()> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        insert_signing_key(&mut *tx, key).await?;
        let sql = "update signing_key set retired_at = $1 \
                   where retired_at is null and kid <> $2 and kid <> $3";
        tx.execute(sql, &[now.into(), (&key.kid).into(), keep_kid.into()]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_signing_key(
        &self,
        kid: &str,
        now: Millis,
        activate: Option<&str>,
        replacement: Option<&SigningKeyRow>,
    ) -> StoreResult<bool> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let sql = "update signing_key set revoked_at = $2 where kid = $1 and revoked_at is null";
        if tx.execute(sql, &[kid.into(), now.into()]).await? == 0 {
            return Ok(false);
        }
        if let Some(next) = activate {
            let sql = "update signing_key set active_from = $2 where kid = $1";
            tx.execute(sql, &[next.into(), now.into()]).await?;
        }
        if let Some(key) = replacement {
            insert_signing_key(&mut *tx, key).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn shared_secret(&self, name: &str, candidate: &str, now: Millis) -> StoreResult<String> {
        let sql = "insert into server_secret (name, value, created_at) values ($1, $2, $3) \
                   on conflict (name) do nothing";
        self.db().await?.execute(sql, &[name.into(), candidate.into(), now.into()]).await?;
        let sql = "select value from server_secret where name = $1";
        let (value,): (String,) = self.db().await?.fetch_one(sql, &[name.into()]).await?;
        Ok(value)
    }

    async fn rewrite_secrets(
        &self,
        only_unsealed: bool,
        rewrite: &RewriteSecret<'_>,
    ) -> StoreResult<u64> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let mut rewritten = 0;
        for (table, (select, update)) in SECRET_TABLES.into_iter().enumerate() {
            let rows: Vec<(String, String)> = tx.fetch_all(select, &[only_unsealed.into()]).await?;
            for (id, value) in rows {
                let place = match table {
                    0 => SecretPlace::SigningKey { kid: &id },
                    1 => SecretPlace::Totp { user_id: &id },
                    _ => SecretPlace::ServerSecret { name: &id },
                };
                let Some(new) = rewrite(place, &value).map_err(StoreError::Other)? else {
                    continue;
                };
                rewritten +=
                    tx.execute(update, &[(&id).into(), (&value).into(), (&new).into()]).await?;
            }
        }
        tx.commit().await?;
        Ok(rewritten)
    }
}
