//! Persistence. Only this module writes SQL. `Store` is named by intent;
//! one implementation per engine is generated from the same query text
//! (see `sql.rs`), and one conformance suite runs against both engines.

mod pg_pool;
/// After a request gave up on the database: PostgreSQL connections are
/// checked before their next use.
pub(crate) use pg_pool::connection_failed as suspect_connections;
mod postgres;
mod sql;
mod sqlite;
mod sqlite_file;

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::config::{Backend, DatabaseSettings};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

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
    pub user_id: String,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub roles: String,
    pub locked_at: Option<Millis>,
    pub created_at: Millis,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CredentialRow {
    pub credential_id: String,
    pub device_id: String,
    pub user_id: String,
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
    owner_roles: String,
    owner_locked_at: Option<Millis>,
    owner_created_at: Millis,
}

impl CredentialOwnerRow {
    pub(crate) fn split(self) -> (CredentialRow, UserRow) {
        let user = UserRow {
            user_id: self.credential.user_id.clone(),
            username: self.owner_username,
            display_name: self.owner_display_name,
            email: self.owner_email,
            email_verified: self.owner_email_verified,
            roles: self.owner_roles,
            locked_at: self.owner_locked_at,
            created_at: self.owner_created_at,
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
    pub session_id: String,
    pub user_id: String,
    pub device_id: Option<String>,
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

#[async_trait]
pub trait Store: Send + Sync {
    /// Connections open in the pool, and how many of them are idle.
    fn pool_state(&self) -> (u32, usize);
    async fn ping(&self) -> StoreResult<()>;

    async fn find_user(&self, user_id: &str) -> StoreResult<Option<UserRow>>;
    async fn find_user_by_username(&self, username: &str) -> StoreResult<Option<UserRow>>;
    async fn user_credentials(&self, user_id: &str) -> StoreResult<Vec<CredentialRow>>;
    async fn find_credential(&self, credential_id: &str) -> StoreResult<Option<CredentialRow>>;
    /// The passkeys of the account with that username (a sign-in's start).
    async fn login_credentials(&self, username: &str) -> StoreResult<Vec<CredentialRow>>;
    /// (transports, credential id length in characters) of the passkeys of
    /// a real account picked by `seed`, stable for a seed: the shape of
    /// made-up credentials for a name that is no account.
    async fn credential_shape_near(&self, seed: &str) -> StoreResult<Vec<(String, i64)>>;
    /// Whether a sign-in handle was used (its `used_id` recorded), and the
    /// credential the answer names with that credential's owner when it is
    /// known: the reads of a sign-in's finish in one query.
    async fn find_login(
        &self,
        used_id: &str,
        credential_id: &str,
    ) -> StoreResult<(bool, Option<(CredentialRow, UserRow)>)>;
    /// Records a sign-in handle as used (a refused answer uses it up too);
    /// false when it already was.
    async fn use_up_login(&self, used_id: &str, expires_at: Millis) -> StoreResult<bool>;

    async fn put_ceremony(&self, ceremony: &CeremonyRow) -> StoreResult<()>;
    /// A live ceremony of that kind, left in place.
    async fn find_ceremony(
        &self,
        ceremony_id: &str,
        kind: &str,
        now: Millis,
    ) -> StoreResult<Option<CeremonyRow>>;
    /// Deletes and returns a live ceremony of that kind: single-use even
    /// when two finishes race, since only one DELETE can return the row.
    async fn take_ceremony(
        &self,
        ceremony_id: &str,
        kind: &str,
        now: Millis,
    ) -> StoreResult<Option<CeremonyRow>>;
    /// `take_ceremony`, for a ceremony only its own user may finish:
    /// another user's attempt leaves it in place.
    async fn take_owned_ceremony(
        &self,
        ceremony_id: &str,
        kind: &str,
        user_id: &str,
        now: Millis,
    ) -> StoreResult<Option<CeremonyRow>>;
    async fn purge_expired_ceremonies(&self, now: Millis) -> StoreResult<u64>;
    /// Deletes sessions (and their refresh tokens) that expired or were
    /// ended before `before`, or were last used before `idle_before`.
    async fn purge_ended_sessions(&self, before: Millis, idle_before: Millis) -> StoreResult<u64>;

    /// Creates the user, the first passkey, a session and its refresh token
    /// at once; a taken username gives `Conflict` and writes nothing.
    async fn register_user(
        &self,
        user: &UserRow,
        credential: &CredentialRow,
        session: &SessionRow,
        refresh_hash: &str,
    ) -> StoreResult<()>;

    /// Records the assertion and opens a session, at once. Returns false
    /// (and writes nothing) when the stored counter moved past the
    /// reported one in the meantime: a cloned authenticator, or a race.
    async fn complete_login(&self, login: &LoginRows<'_>) -> StoreResult<LoginStored>;

    /// Records a verified assertion that opens no session (a step-up);
    /// false, writing nothing, when the counter did not move forward.
    async fn record_credential_use(&self, used: &CredentialUse) -> StoreResult<bool>;

    /// Retires `old_hash` and stores `new_hash` for its session, unless
    /// the session has ended, expired, or was last used before
    /// `idle_before` (then `Invalid`).
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: Millis,
        idle_before: Millis,
    ) -> StoreResult<RefreshOutcome>;
    /// Ends the session of a refresh token; false when there was none live.
    async fn end_session_by_refresh(&self, token_hash: &str, now: Millis) -> StoreResult<bool>;
    async fn find_session(&self, session_id: &str) -> StoreResult<Option<SessionRow>>;
    /// `find_session`, and whether `kid` names a signing key that is not
    /// revoked: what checking an access token reads, in one query.
    async fn find_session_signed_by(
        &self,
        session_id: &str,
        kid: &str,
    ) -> StoreResult<Option<(SessionRow, bool)>>;

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
    // Fallback sign-in (password + second factor).

    async fn password_hash(&self, user_id: &str) -> StoreResult<Option<String>>;
    async fn set_password(&self, user_id: &str, phc: &str, now: Millis) -> StoreResult<()>;
    /// Replaces the hash only if it is still `old` (a re-hash with new
    /// parameters must not undo a concurrent password change).
    async fn upgrade_password(&self, user_id: &str, old: &str, new: &str) -> StoreResult<bool>;
    async fn factor_counts(&self, user_id: &str) -> StoreResult<FactorCounts>;

    async fn totp(&self, user_id: &str) -> StoreResult<Option<TotpRow>>;
    /// Stores an unconfirmed secret, replacing an unconfirmed one; false
    /// (nothing written) when a confirmed one exists.
    async fn put_pending_totp(&self, user_id: &str, sealed: &str, now: Millis)
    -> StoreResult<bool>;
    /// Confirms the pending secret `sealed` (the one the code was checked
    /// against) at `step` and replaces the recovery codes, at once; false
    /// when it is no longer the pending one.
    async fn confirm_totp(
        &self,
        user_id: &str,
        sealed: &str,
        step: i64,
        recovery_hashes: &[String],
        now: Millis,
    ) -> StoreResult<bool>;
    /// Records `step` as used; false when it (or a later one) already was:
    /// a TOTP code is accepted once.
    async fn use_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool>;
    /// Removes TOTP and the recovery codes that back it up.
    async fn delete_totp(&self, user_id: &str) -> StoreResult<bool>;
    async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[String],
        now: Millis,
    ) -> StoreResult<()>;
    /// Spends a recovery code; false when unknown or already spent.
    async fn use_recovery_code(&self, user_id: &str, hash: &str, now: Millis) -> StoreResult<bool>;

    async fn put_mfa_token(
        &self,
        token_hash: &str,
        user_id: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<()>;
    /// The user of a live mfa_token.
    async fn mfa_token_user(&self, token_hash: &str, now: Millis) -> StoreResult<Option<String>>;
    /// Takes the mfa_token and opens the session at once; false (nothing
    /// written) when the token was taken or expired meanwhile.
    async fn finish_mfa(
        &self,
        token_hash: &str,
        session: &SessionRow,
        refresh_hash: &str,
        now: Millis,
    ) -> StoreResult<bool>;

    /// Stores a mailed code, replacing the one of that purpose if it was
    /// sent at or before `resend_before` or has expired; false, storing
    /// nothing, when a newer live code is there (two sends at once).
    async fn put_email_code(&self, code: &EmailCodeRow, resend_before: Millis)
    -> StoreResult<bool>;
    async fn email_code(&self, purpose: &str, user_id: &str) -> StoreResult<Option<EmailCodeRow>>;
    /// Counts one try against a live code and returns it; None when there
    /// is no live code with tries left. Counted before comparing, so that
    /// parallel guesses cannot exceed the limit.
    async fn try_email_code(
        &self,
        purpose: &str,
        user_id: &str,
        max_tries: i32,
        now: Millis,
    ) -> StoreResult<Option<EmailCodeRow>>;
    /// Deletes the code; false when another request used it first.
    async fn take_email_code(
        &self,
        purpose: &str,
        user_id: &str,
        code_hash: &str,
    ) -> StoreResult<bool>;
    /// Sets the address, unverified.
    async fn set_email(&self, user_id: &str, email: &str) -> StoreResult<()>;
    /// Makes `address` the account's verified address.
    async fn verify_email(&self, user_id: &str, address: &str) -> StoreResult<bool>;

    /// Counts a hit in a fixed window; returns the hits so far and when the
    /// window ends.
    async fn hit_rate_window(
        &self,
        bucket: &str,
        now: Millis,
        window_ms: i64,
    ) -> StoreResult<(i64, Millis)>;
    /// The lock on a sign-in subject, if any (locked_until, 0 when none).
    async fn locked_until(&self, subject: &str) -> StoreResult<Millis>;
    /// Counts a password or code attempt before it is checked: returns the
    /// consecutive failures including this one and the failures since the
    /// last quiet spell (a previous attempt before `quiet_before`), or None
    /// when the subject is locked (nothing counted). The attempt that
    /// brings the count to `lock_from` locks the subject until
    /// `provisional_until`, so that attempts made meanwhile are refused.
    async fn count_attempt(
        &self,
        subject: &str,
        now: Millis,
        quiet_before: Millis,
        lock_from: i64,
        provisional_until: Millis,
    ) -> StoreResult<Option<(i64, i64)>>;
    /// Takes back an attempt that turned out right (a right password
    /// before its second factor) or was never checked, with the lock it set
    /// (`provisional_until`, if the lock still has that time).
    async fn return_attempt(&self, subject: &str, provisional_until: Millis) -> StoreResult<()>;
    async fn lock_subject(&self, subject: &str, until: Millis) -> StoreResult<()>;
    async fn clear_failures(&self, subject: &str) -> StoreResult<()>;
    /// Deletes expired mfa tokens, codes, windows and forgotten failures.
    async fn purge_fallback(&self, now: Millis, forget_before: Millis) -> StoreResult<u64>;

    // Devices, sessions, roles, admin, audit.

    async fn add_credential(&self, credential: &CredentialRow) -> StoreResult<()>;
    async fn rename_credential(
        &self,
        user_id: &str,
        device_id: &str,
        name: &str,
    ) -> StoreResult<bool>;
    /// Unbinds a device and ends the sessions it opened, at once. With
    /// `keep_one`, refuses (`LastOne`) when it is the user's only passkey,
    /// counted after locking the user's row, so two unbinds at once
    /// cannot remove the last two.
    async fn delete_credential(
        &self,
        user_id: &str,
        device_id: &str,
        keep_one: bool,
        now: Millis,
    ) -> StoreResult<Unbound>;
    /// Unbinds every device, ends every session, and stores an enrolment
    /// code, at once; returns (devices, sessions) ended.
    async fn reset_devices(
        &self,
        user_id: &str,
        code_hash: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<(u64, u64)>;
    async fn user_sessions(&self, user_id: &str, now: Millis) -> StoreResult<Vec<SessionRow>>;
    async fn end_session(&self, user_id: &str, session_id: &str, now: Millis) -> StoreResult<bool>;
    /// Deletes the user's half-done fallback sign-ins: mfa_tokens and a
    /// mailed sign-in code (a password change makes them stale).
    async fn void_fallback_steps(&self, user_id: &str) -> StoreResult<()>;
    /// Ends every live session of the user but one; returns how many.
    async fn end_other_sessions(
        &self,
        user_id: &str,
        keep_session_id: &str,
        now: Millis,
    ) -> StoreResult<u64>;
    async fn set_roles(&self, user_id: &str, roles: &str) -> StoreResult<bool>;
    async fn set_locked(
        &self,
        user_id: &str,
        locked_at: Option<Millis>,
        now: Millis,
    ) -> StoreResult<bool>;
    /// Users whose name or display name contains `query` (case-insensitive
    /// on the lowercased username), ordered by username, after `after`.
    async fn search_users(&self, query: &str, after: &str, limit: i64)
    -> StoreResult<Vec<UserRow>>;
    /// The live enrolment code of a user, counting one try; None when there
    /// is none live with tries left.
    async fn try_enrolment_code(
        &self,
        user_id: &str,
        max_tries: i32,
        now: Millis,
    ) -> StoreResult<Option<(String, Millis)>>;
    /// Binds the new passkey and takes the enrolment code at once; false
    /// Gives back the try a right code counted, so only wrong codes
    /// use the code up.
    async fn return_enrolment_try(&self, user_id: &str, code_hash: &str) -> StoreResult<()>;
    /// when the code was used meanwhile.
    async fn enrol_with_code(
        &self,
        code_hash: &str,
        credential: &CredentialRow,
        session: &SessionRow,
        refresh_hash: &str,
    ) -> StoreResult<bool>;

    async fn append_audit(&self, event: &AuditRow) -> StoreResult<()>;
    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>>;

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
