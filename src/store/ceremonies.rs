//! Ceremonies (a registration's or sign-in's state between its start and
//! its finish) and the writes that finish a passkey sign-in.

use std::sync::LazyLock;

use async_trait::async_trait;

use super::audit::audit_args;
use super::engine::{Arg, Engine, Sql};
use super::risk::{PROFILE_PLACES, ProfileRow, RiskStore, inline_seen, profile_args};
use super::risk::{profile_columns, seen_args};
use super::sessions::session_args;
use super::{CeremonyRow, CredentialOwnerRow, CredentialRow, CredentialUse, UserRow};
use super::{LoginRows, LoginStored, ProfileFact, ProfileQuery, StoreResult};
use crate::clock::Millis;

/// Stores a verified assertion. The counter rule of WebAuthn §7.2 step 21
/// is enforced here as well, so that two concurrent sign-ins cannot both
/// pass with one counter value; zero on both sides is a synced passkey
/// that keeps no counter.
const COUNTED_USE: &str = "update credential set backup_eligible = $2, \
     sign_count = $3, backup_state = $4, last_used_at = $5 where credential_id = $1 \
     and (sign_count < $3 or (sign_count = 0 and $3 = 0))";

#[async_trait]
pub trait CeremonyStore: Send + Sync {
    async fn put_ceremony(&self, ceremony: &CeremonyRow) -> StoreResult<()>;
    /// Stores a registration's ceremony unless an account already has
    /// `username` (false, and nothing stored): a registration start's check
    /// and write in one statement.
    async fn put_ceremony_for_new_user(
        &self,
        ceremony: &CeremonyRow,
        username: &str,
    ) -> StoreResult<bool>;
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

    /// Whether a sign-in handle was used (its `used_id` recorded), and the
    /// credential the answer names with that credential's owner when it is
    /// known: the reads of a sign-in's finish in one query.
    async fn find_login(
        &self,
        used_id: &str,
        credential_id: &str,
    ) -> StoreResult<(bool, Option<(CredentialRow, UserRow)>)>;
    /// `find_login` of `query.credential`, with the risk profile of the
    /// credential's owner read in the same statement: one round trip less
    /// per sign-in, when the rules need a profile.
    async fn find_login_with_profile(
        &self,
        used_id: &str,
        query: &ProfileQuery<'_>,
    ) -> StoreResult<(bool, Option<(CredentialRow, UserRow, Vec<ProfileFact>)>)>;
    /// Records a sign-in handle as used (a refused answer uses it up too);
    /// false when it already was.
    async fn use_up_login(&self, used_id: &str, expires_at: Millis) -> StoreResult<bool>;
    /// Records the assertion and opens a session, at once. Returns false
    /// (and writes nothing) when the stored counter moved past the
    /// reported one in the meantime: a cloned authenticator, or a race.
    async fn complete_login(&self, login: &LoginRows<'_>) -> StoreResult<LoginStored>;
    /// Records a verified assertion that opens no session (a step-up);
    /// false, writing nothing, when the counter did not move forward.
    async fn record_credential_use(&self, used: &CredentialUse) -> StoreResult<bool>;
}

/// One round trip: whether the handle was used, and the credential with
/// its owner (the owner's columns renamed), then any `extra` columns.
fn find_login_sql(extra: &str) -> String {
    format!(
        "select (select count(*) from ceremony where ceremony_id = $1) as used_count, \
         c.*, u.username as owner_username, u.display_name as owner_display_name, \
         u.email as owner_email, u.email_verified as owner_email_verified, \
         u.roles as owner_roles, u.locked_at as owner_locked_at, \
         u.created_at as owner_created_at, u.language as owner_language{extra} \
         from (select 1 as one) as probe \
         left join credential c on c.credential_id = $2 \
         left join app_user u on u.user_id = c.user_id"
    )
}

static FIND_LOGIN: LazyLock<String> = LazyLock::new(|| find_login_sql(""));

/// With the owner's risk profile, bound by `profile_args` ($1 the used
/// id; the credential is $2, as in `find_login`).
static FIND_LOGIN_WITH_PROFILE: LazyLock<String> = LazyLock::new(|| {
    let columns = profile_columns("c.user_id", PROFILE_PLACES);
    find_login_sql(&format!(", {columns}"))
});

/// `FIND_LOGIN_WITH_PROFILE`'s row.
struct FoundLoginProfile {
    login: FoundLogin,
    profile: ProfileRow,
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for FoundLoginProfile
where
    FoundLogin: sqlx::FromRow<'r, R>,
    ProfileRow: sqlx::FromRow<'r, R>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(FoundLoginProfile {
            login: FoundLogin::from_row(row)?,
            profile: ProfileRow::from_row(row)?,
        })
    }
}

/// What a sign-in's finish reads: whether its handle was used, and the
/// credential with its owner when there is one.
struct FoundLogin {
    used: bool,
    owned: Option<(CredentialRow, UserRow)>,
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for FoundLogin
where
    &'r str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    CredentialOwnerRow: sqlx::FromRow<'r, R>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let used: i64 = row.try_get("used_count")?;
        let known: Option<String> = row.try_get("credential_id")?;
        let owned = match known {
            Some(_) => Some(CredentialOwnerRow::from_row(row)?.split()),
            None => None,
        };
        Ok(FoundLogin { used: used > 0, owned })
    }
}

/// A ceremony row's five columns, as each engine's `store_ceremony` names
/// them.
pub(crate) fn ceremony_args(ceremony: &CeremonyRow) -> [Arg<'_>; 5] {
    [
        (&ceremony.ceremony_id).into(),
        (&ceremony.kind).into(),
        (&ceremony.user_id).into(),
        (&ceremony.state).into(),
        ceremony.expires_at.into(),
    ]
}

/// The arguments of a sign-in's writes, which each engine sends as one
/// text (its `store_login`): $1 the handle's used id, $2 to $6 the counted
/// use, $7 to $16 the session, $17 its refresh token, $18 to $28 the audit
/// row, $29 when the handle's record expires, then the history rows
/// written in the same text (`seen_insert` from $30, at most `MOST_SEEN`).
pub(crate) fn login_args<'a>(login: &LoginRows<'a>) -> Vec<Arg<'a>> {
    let used = login.used;
    let mut args: Vec<Arg<'a>> = Vec::with_capacity(LOGIN_ARGS + 3 * login.seen.len());
    let counted: [Arg<'a>; 6] = [
        login.used_id.into(),
        (&used.credential_id).into(),
        used.backup_eligible.into(),
        used.sign_count.into(),
        used.backup_state.into(),
        used.used_at.into(),
    ];
    args.extend(counted);
    args.extend(session_args(login.session));
    args.push(login.refresh_hash.into());
    args.extend(audit_args(login.audit));
    args.push(login.handle_expires_at.into());
    args.extend(seen_args(inline_seen(login.seen)));
    args
}

/// How many values a sign-in binds before its history rows.
pub(crate) const LOGIN_ARGS: usize = 29;

#[async_trait]
impl<E: Engine> CeremonyStore for E {
    async fn put_ceremony(&self, ceremony: &CeremonyRow) -> StoreResult<()> {
        // Differs by engine: SQLite may commit it in a group.
        self.store_ceremony(ceremony).await
    }

    async fn put_ceremony_for_new_user(
        &self,
        ceremony: &CeremonyRow,
        username: &str,
    ) -> StoreResult<bool> {
        let sql = "insert into ceremony (ceremony_id, kind, user_id, state, expires_at) \
                   select $1, $2, $3, $4, $5 \
                   where not exists (select 1 from app_user where username = $6) \
                   returning ceremony_id";
        let mut args = ceremony_args(ceremony).to_vec();
        args.push(username.into());
        let stored: Vec<(String,)> = self.write_shared(sql, &args).await?;
        Ok(!stored.is_empty())
    }

    async fn find_ceremony(
        &self,
        ceremony_id: &str,
        kind: &str,
        now: Millis,
    ) -> StoreResult<Option<CeremonyRow>> {
        let sql = "select ceremony_id, kind, user_id, state, expires_at from ceremony \
                   where ceremony_id = $1 and kind = $2 and expires_at > $3";
        let args = [ceremony_id.into(), kind.into(), now.into()];
        Ok(self.db().await?.fetch_optional(sql, &args).await?)
    }

    async fn take_ceremony(
        &self,
        ceremony_id: &str,
        kind: &str,
        now: Millis,
    ) -> StoreResult<Option<CeremonyRow>> {
        let sql = "delete from ceremony where ceremony_id = $1 and kind = $2 and expires_at > $3 \
                   returning ceremony_id, kind, user_id, state, expires_at";
        let args = [ceremony_id.into(), kind.into(), now.into()];
        let taken: Vec<CeremonyRow> = self.write_shared(sql, &args).await?;
        Ok(taken.into_iter().next())
    }

    async fn take_owned_ceremony(
        &self,
        ceremony_id: &str,
        kind: &str,
        user_id: &str,
        now: Millis,
    ) -> StoreResult<Option<CeremonyRow>> {
        let sql = "delete from ceremony where ceremony_id = $1 and kind = $2 and expires_at > $3 \
                   and user_id = $4 returning ceremony_id, kind, user_id, state, expires_at";
        let args = [ceremony_id.into(), kind.into(), now.into(), user_id.into()];
        Ok(self.db().await?.fetch_optional(sql, &args).await?)
    }

    async fn purge_expired_ceremonies(&self, now: Millis) -> StoreResult<u64> {
        let sql = "delete from ceremony where expires_at <= $1";
        Ok(self.db().await?.execute(sql, &[now.into()]).await?)
    }

    async fn find_login(
        &self,
        used_id: &str,
        credential_id: &str,
    ) -> StoreResult<(bool, Option<(CredentialRow, UserRow)>)> {
        let args = [used_id.into(), credential_id.into()];
        let found: FoundLogin = self.read_db().await?.fetch_one(&FIND_LOGIN, &args).await?;
        Ok((found.used, found.owned))
    }

    async fn find_login_with_profile(
        &self,
        used_id: &str,
        query: &ProfileQuery<'_>,
    ) -> StoreResult<(bool, Option<(CredentialRow, UserRow, Vec<ProfileFact>)>)> {
        let args = profile_args(used_id.into(), query);
        let conn = &mut *self.read_db().await?;
        let found: FoundLoginProfile = conn.fetch_one(&FIND_LOGIN_WITH_PROFILE, &args).await?;
        let owned = found.login.owned.map(|(row, user)| (row, user, found.profile.facts(query)));
        Ok((found.login.used, owned))
    }

    async fn use_up_login(&self, used_id: &str, expires_at: Millis) -> StoreResult<bool> {
        let sql = "insert into ceremony (ceremony_id, kind, user_id, state, expires_at) \
                   values ($1, 'used', null, '', $2) on conflict (ceremony_id) do nothing";
        Ok(self.execute_shared(sql, &[used_id.into(), expires_at.into()]).await? == 1)
    }

    async fn complete_login(&self, login: &LoginRows<'_>) -> StoreResult<LoginStored> {
        // The one statement that differs by engine (see `store_login`).
        let stored = self.store_login(login).await?;
        let rest = &login.seen[inline_seen(login.seen).len()..];
        if stored == LoginStored::Done && !rest.is_empty() {
            self.record_seen(&login.session.user_id, rest, login.session.created_at).await?;
        }
        Ok(stored)
    }

    async fn record_credential_use(&self, used: &CredentialUse) -> StoreResult<bool> {
        let args = [
            (&used.credential_id).into(),
            used.backup_eligible.into(),
            used.sign_count.into(),
            used.backup_state.into(),
            used.used_at.into(),
        ];
        Ok(self.db().await?.execute(COUNTED_USE, &args).await? == 1)
    }
}
