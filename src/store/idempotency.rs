//! Idempotency keys (issue 20 item 6): the first answer to a request sent
//! with an `Idempotency-Key`, kept so that a retry gets it instead of a
//! second effect. The service decides what the columns hold; here a row is
//! claimed by one attempt at a time, completed or released by that attempt
//! only, read, and purged once expired.

use async_trait::async_trait;

use super::StoreResult;
use super::engine::{Engine, Sql};
use crate::clock::Millis;

/// One key's row (see migrations: idempotency_key).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct IdempotencyRow {
    pub key_hash: String,
    pub fingerprint: String,
    pub attempt: String,
    /// 'pending' or 'done'.
    pub state: String,
    pub lease_until: Millis,
    pub status: Option<i32>,
    /// Sealed headers and body; never logged.
    pub answer: Option<String>,
    pub created_at: Millis,
    pub expires_at: Millis,
}

impl IdempotencyRow {
    /// The first answer is stored.
    pub fn is_done(&self) -> bool {
        self.state == "done"
    }
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Makes `row` (pending) the key's row, unless the key has a row that
    /// is still to be kept: one done, or one pending whose lease runs.
    /// A pending row past its lease is taken over only by a request with
    /// the same fingerprint. True: this attempt holds the key now. Of many
    /// claims at once, exactly one wins.
    async fn claim_idempotency_key(&self, row: &IdempotencyRow, now: Millis) -> StoreResult<bool>;
    async fn idempotency_key(&self, key_hash: &str) -> StoreResult<Option<IdempotencyRow>>;
    /// Stores the answer and marks the row done, if `attempt` still holds
    /// it; false when it does not (its lease ran out and another took it).
    async fn complete_idempotency_key(
        &self,
        key_hash: &str,
        attempt: &str,
        status: i32,
        answer: &str,
    ) -> StoreResult<bool>;
    /// Deletes the row if `attempt` still holds it and it is pending: the
    /// attempt had no effect, and the key may be used again.
    async fn release_idempotency_key(&self, key_hash: &str, attempt: &str) -> StoreResult<bool>;
    /// Deletes the rows expired by `now`; the number deleted.
    async fn purge_idempotency_keys(&self, now: Millis) -> StoreResult<u64>;
}

/// `$6` is now. The update runs only on a row that may be taken: expired,
/// or pending past its lease for the same request.
const CLAIM: &str = "insert into idempotency_key (key_hash, fingerprint, attempt, state, \
     lease_until, status, answer, created_at, expires_at) \
     values ($1, $2, $3, 'pending', $4, null, null, $6, $5) \
     on conflict (key_hash) do update set fingerprint = excluded.fingerprint, \
     attempt = excluded.attempt, state = 'pending', lease_until = excluded.lease_until, \
     status = null, answer = null, created_at = excluded.created_at, \
     expires_at = excluded.expires_at \
     where idempotency_key.expires_at <= $6 \
     or (idempotency_key.state = 'pending' and idempotency_key.lease_until <= $6 \
         and idempotency_key.fingerprint = excluded.fingerprint)";

const FIND: &str = "select key_hash, fingerprint, attempt, state, lease_until, status, answer, \
     created_at, expires_at from idempotency_key where key_hash = $1";

const COMPLETE: &str = "update idempotency_key set state = 'done', status = $3, answer = $4 \
     where key_hash = $1 and attempt = $2 and state = 'pending'";

const RELEASE: &str =
    "delete from idempotency_key where key_hash = $1 and attempt = $2 and state = 'pending'";

const PURGE: &str = "delete from idempotency_key where expires_at <= $1";

#[async_trait]
impl<E: Engine> IdempotencyStore for E {
    async fn claim_idempotency_key(&self, row: &IdempotencyRow, now: Millis) -> StoreResult<bool> {
        let args = [
            (&row.key_hash).into(),
            (&row.fingerprint).into(),
            (&row.attempt).into(),
            row.lease_until.into(),
            row.expires_at.into(),
            now.into(),
        ];
        Ok(self.db().await?.execute(CLAIM, &args).await? == 1)
    }

    async fn idempotency_key(&self, key_hash: &str) -> StoreResult<Option<IdempotencyRow>> {
        Ok(self.db().await?.fetch_optional(FIND, &[key_hash.into()]).await?)
    }

    async fn complete_idempotency_key(
        &self,
        key_hash: &str,
        attempt: &str,
        status: i32,
        answer: &str,
    ) -> StoreResult<bool> {
        let args = [key_hash.into(), attempt.into(), status.into(), answer.into()];
        Ok(self.db().await?.execute(COMPLETE, &args).await? == 1)
    }

    async fn release_idempotency_key(&self, key_hash: &str, attempt: &str) -> StoreResult<bool> {
        let args = [key_hash.into(), attempt.into()];
        Ok(self.db().await?.execute(RELEASE, &args).await? == 1)
    }

    async fn purge_idempotency_keys(&self, now: Millis) -> StoreResult<u64> {
        Ok(self.db().await?.execute(PURGE, &[now.into()]).await?)
    }
}
