//! Persistence. Only this module writes SQL. `Store` is named by intent,
//! one sub-trait per aggregate (one file each), each written once over
//! `Engine` as plain query text that runs on both engines; one conformance
//! suite (tests/api/store.rs) runs against both.

mod audit;
mod ceremonies;
mod devices;
mod engine;
mod failures;
mod fallback;
mod idempotency;
mod keys;
pub mod maintenance;
mod pg_pool;
/// After a request gave up on the database: PostgreSQL connections are
/// checked before their next use.
pub(crate) use pg_pool::connection_failed as suspect_connections;
mod postgres;
mod reviews;
mod risk;
mod sessions;
mod sqlite;
mod trusted;
mod users;

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::config::{Backend, DatabaseSettings};
use crate::domain::{DeviceId, Roles, SessionId, UserId};

pub use audit::AuditStore;
pub use ceremonies::CeremonyStore;
pub use devices::{DeviceStore, EnrolProof};
use engine::Engine;
pub use failures::{AlertRow, DeliveryLogRow, DeliveryRow, FailureCount, FailureStore, KeyTotal};
pub use fallback::FallbackStore;
pub use idempotency::{IdempotencyRow, IdempotencyStore};
pub use keys::KeyStore;
pub use postgres::PgStore;
pub use reviews::{QueuedReview, ReviewDecision, ReviewFilter, ReviewRow, ReviewStore};
pub use risk::{ProfileFact, ProfileQuery, RiskStore, Seen};
pub use sessions::SessionStore;
pub use sqlite::SqliteStore;
pub use trusted::{TrustStored, TrustedDeviceRow, TrustedDeviceStore};
pub use users::UserStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("database error")]
    Other(#[source] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                StoreError::Conflict(db.constraint().unwrap_or(db.message()).to_owned())
            }
            // PostgreSQL shutting down or restarting (57P0x), or the
            // connection lost (08xxx): the database, not the request.
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")) =>
            {
                pg_pool::connection_failed();
                StoreError::Unavailable(error.into())
            }
            sqlx::Error::Database(ref db) if refuses_writes(db.as_ref()) => {
                if db.code().as_deref() == Some(PG_READ_ONLY_TRANSACTION) {
                    pg_pool::read_only_refused();
                }
                StoreError::Unavailable(error.into())
            }
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => {
                pg_pool::connection_failed();
                StoreError::Unavailable(error.into())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
                StoreError::Unavailable(error.into())
            }
            // The connection and the server disagree on where they are.
            sqlx::Error::Protocol(_) => {
                pg_pool::connection_failed();
                StoreError::Other(anyhow::Error::new(error))
            }
            other => StoreError::Other(anyhow::Error::new(other)),
        }
    }
}

/// PostgreSQL's read_only_sql_transaction: a hot standby, or
/// `default_transaction_read_only`.
const PG_READ_ONLY_TRANSACTION: &str = "25006";

/// SQLite's primary result codes for a file it cannot write now: read-only,
/// an I/O error (EROFS comes back as one), full, or unable to open the log.
const SQLITE_CANNOT_WRITE: [i32; 4] = [8, 10, 13, 14];

/// The database cannot take writes for now, whatever the request: its disk
/// is full or read-only, or it ran out of some resource. The same request
/// may well succeed later, so it is a 503; the cause is logged.
pub(crate) fn refuses_writes(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else { return false };
    if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
        return pg_refuses_writes(&code);
    }
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        && code.parse().is_ok_and(sqlite_refuses_writes)
}

/// Read-only, or class 53, insufficient resources: disk_full,
/// out_of_memory, too_many_connections and the like.
fn pg_refuses_writes(sqlstate: &str) -> bool {
    sqlstate == PG_READ_ONLY_TRANSACTION || sqlstate.starts_with("53")
}

/// SQLite gives its extended result code; the primary is its low byte.
fn sqlite_refuses_writes(code: i32) -> bool {
    SQLITE_CANNOT_WRITE.contains(&(code & 0xff))
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub email_verified: bool,
    #[sqlx(try_from = "String")]
    pub roles: Roles,
    pub locked_at: Option<Millis>,
    pub created_at: Millis,
    /// The tag of the language its mails are written in ("en", "zh-CN");
    /// none: the language of the request that causes a mail.
    pub language: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CredentialRow {
    pub credential_id: String,
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub name: String,
    pub passkey: String,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub aaguid: String,
    pub transports: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    /// Before this time the passkey may not approve payments (one bound
    /// from a password sign-in); None: at once.
    pub payments_after: Option<Millis>,
}

/// A credential row with its owner's columns, prefixed `owner_` (both
/// tables have `user_id` and `created_at`).
#[derive(sqlx::FromRow)]
pub(crate) struct CredentialOwnerRow {
    #[sqlx(flatten)]
    credential: CredentialRow,
    owner_username: String,
    owner_display_name: String,
    owner_email: Option<String>,
    owner_email_verified: bool,
    #[sqlx(try_from = "String")]
    owner_roles: Roles,
    owner_locked_at: Option<Millis>,
    owner_created_at: Millis,
    owner_language: Option<String>,
}

impl CredentialOwnerRow {
    pub(crate) fn split(self) -> (CredentialRow, UserRow) {
        let user = UserRow {
            user_id: self.credential.user_id,
            username: self.owner_username,
            display_name: self.owner_display_name,
            email: self.owner_email,
            email_verified: self.owner_email_verified,
            roles: self.owner_roles,
            locked_at: self.owner_locked_at,
            created_at: self.owner_created_at,
            language: self.owner_language,
        };
        (self.credential, user)
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CeremonyRow {
    pub ceremony_id: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub state: String,
    pub expires_at: Millis,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub device_id: Option<DeviceId>,
    pub amr: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Millis,
    pub last_used_at: Millis,
    pub expires_at: Millis,
    pub revoked_at: Option<Millis>,
}

#[derive(Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    pub private_key: String,
    pub public_jwk: String,
    pub created_at: Millis,
    /// When it may sign from; None (rows from before) is `created_at`.
    pub active_from: Option<Millis>,
    pub retired_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("active_from", &self.active_from)
            .field("retired_at", &self.retired_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TotpRow {
    pub user_id: String,
    /// Sealed secret; never logged.
    pub secret: String,
    pub confirmed_at: Option<Millis>,
    pub last_step: i64,
    pub created_at: Millis,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EmailCodeRow {
    pub purpose: String,
    pub user_id: String,
    /// Keyed hash of the code; never the code itself.
    pub code_hash: String,
    pub address: String,
    pub tries: i32,
    pub sent_at: Millis,
    pub expires_at: Millis,
}

/// Which second factors and fallbacks an account has.
#[derive(Clone, Copy, Debug, Default, sqlx::FromRow)]
pub struct FactorCounts {
    pub passwords: i64,
    pub totp: i64,
    pub recovery_codes: i64,
    /// Passkey recovery codes not yet spent.
    pub passkey_recovery_codes: i64,
}

/// One security event (see migrations: audit_event).
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub event_id: String,
    pub occurred_at: Millis,
    pub event: String,
    pub outcome: String,
    pub user_id: Option<String>,
    pub actor_id: Option<String>,
    pub device_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
}

/// Which audit rows to read: all filters optional, `after` is the last
/// `event_id` of the previous page (in the page's order: with
/// `newest_first`, the rows before it).
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub event: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub after: Option<String>,
    pub limit: i64,
    pub newest_first: bool,
}

/// Everything a registration writes, in one transaction: the account, its
/// first passkey, a session with its refresh token, the audit row, and
/// the account's first risk history (none when the rules keep none).
pub struct RegistrationRows<'a> {
    pub user: &'a UserRow,
    pub credential: &'a CredentialRow,
    pub session: &'a SessionRow,
    pub refresh_hash: &'a str,
    pub audit: &'a AuditRow,
    pub seen: &'a [Seen<'a>],
}

/// Everything a passkey sign-in writes, in one transaction.
pub struct LoginRows<'a> {
    /// The sign-in handle's used id, recorded first (a ceremony row of kind
    /// `used` that lives until `handle_expires_at`): a finish that finds it
    /// recorded writes nothing.
    pub used_id: &'a str,
    pub handle_expires_at: Millis,
    pub used: &'a CredentialUse,
    pub session: &'a SessionRow,
    pub refresh_hash: &'a str,
    pub audit: &'a AuditRow,
    /// What the sign-in adds to the user's risk history (none when the
    /// rules keep none, or it holds all this already), written only with
    /// the session.
    pub seen: &'a [Seen<'a>],
}

/// What storing a sign-in did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStored {
    Done,
    /// Nothing written: another finish used the handle.
    CeremonyGone,
    /// Nothing written: a newer counter was stored meanwhile.
    CounterNotIncreased,
}

/// What an unbind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unbound {
    Deleted,
    NotFound,
    /// Not done: it was the last passkey, and one had to stay.
    LastOne,
}

/// A verified assertion's effect on its credential.
#[derive(Clone, Debug)]
pub struct CredentialUse {
    pub credential_id: String,
    pub backup_eligible: bool,
    pub sign_count: i64,
    pub backup_state: bool,
    pub used_at: Millis,
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// Retired the old token, stored the new one; the session goes on.
    Rotated(SessionRow),
    /// The token was already retired: its whole session is now ended.
    Reused,
    /// Unknown token, or its session has ended or expired.
    Invalid,
}

/// Everything the services keep, one sub-trait per aggregate; each engine
/// gets all of them from its `Engine` implementation.
#[async_trait]
pub trait Store:
    UserStore
    + CeremonyStore
    + SessionStore
    + FallbackStore
    + DeviceStore
    + KeyStore
    + AuditStore
    + ReviewStore
    + FailureStore
    + TrustedDeviceStore
    + RiskStore
    + IdempotencyStore
{
    /// Connections open in the pool, and how many of them are idle.
    fn pool_state(&self) -> (u32, usize);
    async fn ping(&self) -> StoreResult<()>;
}

#[async_trait]
impl<E: Engine> Store for E {
    fn pool_state(&self) -> (u32, usize) {
        self.pool_use()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.ping_db().await
    }
}

/// What `rewrite_secrets` does to one stored value.
pub type RewriteSecret<'f> =
    dyn for<'a> Fn(SecretPlace<'a>, &'a str) -> anyhow::Result<Option<String>> + Send + Sync + 'f;

/// Where a secret at rest is stored, which is also what its sealing is
/// bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretPlace<'a> {
    SigningKey { kid: &'a str },
    Totp { user_id: &'a str },
    ServerSecret { name: &'a str },
}

/// Connects to the configured database and runs the migrations.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match settings.url.backend()? {
        Backend::Sqlite => Arc::new(SqliteStore::connect(settings).await?),
        Backend::Postgres => Arc::new(PgStore::connect(settings).await?),
    })
}

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_short_of_room_or_read_only_is_unavailable_and_a_refused_row_is_not() {
        for sqlstate in ["25006", "53000", "53100", "53200", "53300", "53400"] {
            assert!(pg_refuses_writes(sqlstate), "{sqlstate}");
        }
        for sqlstate in ["23505", "23503", "40001", "42601", "25P02", "P0001"] {
            assert!(!pg_refuses_writes(sqlstate), "{sqlstate}");
        }
        // FULL, IOERR_WRITE, IOERR_FSYNC, READONLY, READONLY_DBMOVED, CANTOPEN
        for code in [13, 778, 1034, 8, 1032, 14] {
            assert!(sqlite_refuses_writes(code), "{code}");
        }
        // CONSTRAINT_UNIQUE, CONSTRAINT_FOREIGNKEY, CORRUPT, ERROR, BUSY
        for code in [2067, 787, 11, 1, 5] {
            assert!(!sqlite_refuses_writes(code), "{code}");
        }
    }
}
