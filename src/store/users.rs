//! Accounts and the passkeys they sign in with, as read by sign-ins and
//! registration.

use async_trait::async_trait;
use sqlx::Connection;

use super::audit::audit_args;
use super::devices::credential_args;
use super::engine::{Arg, Engine, Sql};
use super::risk::{RiskStore, inline_seen, seen_args};
use super::sessions::session_args;
use super::{CredentialRow, RegistrationRows, StoreResult, UserRow};
use crate::clock::Millis;

#[async_trait]
pub trait UserStore: Send + Sync {
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

    /// Creates the user, the first passkey, a session and its refresh token,
    /// with the audit row, at once; a taken username gives `Conflict` and
    /// writes nothing.
    async fn register_user(&self, rows: &RegistrationRows<'_>) -> StoreResult<()>;

    /// Creates an account with no passkey yet and stores its enrolment
    /// code, at once (`passgate user create`); a taken username gives
    /// `Conflict` and writes nothing.
    async fn create_user_for_enrolment(
        &self,
        user: &UserRow,
        code_hash: &str,
        expires_at: Millis,
    ) -> StoreResult<()>;

    /// Sets the address, unverified.
    async fn set_email(&self, user_id: &str, email: &str) -> StoreResult<()>;
    /// Makes `address` the account's verified address.
    async fn verify_email(&self, user_id: &str, address: &str) -> StoreResult<bool>;
    /// Sets the language of the account's mails; false: no such account.
    async fn set_language(&self, user_id: &str, language: &str) -> StoreResult<bool>;
}

#[async_trait]
impl<E: Engine> UserStore for E {
    async fn find_user(&self, user_id: &str) -> StoreResult<Option<UserRow>> {
        let sql = "select * from app_user where user_id = $1";
        Ok(self.db().await?.fetch_optional(sql, &[user_id.into()]).await?)
    }

    async fn find_user_by_username(&self, username: &str) -> StoreResult<Option<UserRow>> {
        let sql = "select * from app_user where username = $1";
        Ok(self.db().await?.fetch_optional(sql, &[username.into()]).await?)
    }

    async fn user_credentials(&self, user_id: &str) -> StoreResult<Vec<CredentialRow>> {
        let sql = "select * from credential where user_id = $1 order by created_at";
        Ok(self.db().await?.fetch_all(sql, &[user_id.into()]).await?)
    }

    async fn find_credential(&self, credential_id: &str) -> StoreResult<Option<CredentialRow>> {
        let sql = "select * from credential where credential_id = $1";
        Ok(self.db().await?.fetch_optional(sql, &[credential_id.into()]).await?)
    }

    async fn login_credentials(&self, username: &str) -> StoreResult<Vec<CredentialRow>> {
        let sql = "select c.* from credential c join app_user u on u.user_id = c.user_id \
                   where u.username = $1 order by c.created_at";
        Ok(self.read_db().await?.fetch_all(sql, &[username.into()]).await?)
    }

    async fn credential_shape_near(&self, seed: &str) -> StoreResult<Vec<(String, i64)>> {
        // The passkeys of the account whose first credential id follows
        // `seed` (wrapping round): a real account's count, id lengths and
        // transports, for a name that is none.
        let sql = "select transports, cast(length(credential_id) as bigint) from credential \
                   where user_id = coalesce( \
                   (select user_id from credential where credential_id >= $1 \
                    order by credential_id limit 1), \
                   (select user_id from credential order by credential_id limit 1)) \
                   order by created_at";
        Ok(self.read_db().await?.fetch_all(sql, &[seed.into()]).await?)
    }

    async fn register_user(&self, rows: &RegistrationRows<'_>) -> StoreResult<()> {
        // Differs by engine: one text, which SQLite may commit in a group.
        self.store_registration(rows).await?;
        let rest = &rows.seen[inline_seen(rows.seen).len()..];
        if !rest.is_empty() {
            self.record_seen(&rows.user.user_id, rest, rows.session.created_at).await?;
        }
        Ok(())
    }

    async fn create_user_for_enrolment(
        &self,
        user: &UserRow,
        code_hash: &str,
        expires_at: Millis,
    ) -> StoreResult<()> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        insert_user(&mut *tx, user).await?;
        let sql = "insert into enrolment_code (user_id, code_hash, tries, expires_at, created_at) \
                   values ($1, $2, 0, $3, $4)";
        let args =
            [(&user.user_id).into(), code_hash.into(), expires_at.into(), user.created_at.into()];
        tx.execute(sql, &args).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_email(&self, user_id: &str, email: &str) -> StoreResult<()> {
        let sql = "update app_user set email = $2, email_verified = false where user_id = $1";
        self.db().await?.execute(sql, &[user_id.into(), email.into()]).await?;
        Ok(())
    }

    async fn verify_email(&self, user_id: &str, address: &str) -> StoreResult<bool> {
        let sql = "update app_user set email = $2, email_verified = true where user_id = $1";
        Ok(self.db().await?.execute(sql, &[user_id.into(), address.into()]).await? == 1)
    }

    async fn set_language(&self, user_id: &str, language: &str) -> StoreResult<bool> {
        let sql = "update app_user set language = $2 where user_id = $1";
        Ok(self.db().await?.execute(sql, &[user_id.into(), language.into()]).await? == 1)
    }
}

async fn insert_user<C: Sql>(conn: &mut C, user: &UserRow) -> StoreResult<()> {
    let sql = "insert into app_user (user_id, username, display_name, email, \
               email_verified, roles, locked_at, created_at, language) \
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    let roles = user.roles.to_stored();
    conn.execute(sql, &user_args(user, &roles)).await?;
    Ok(())
}

/// A user row's nine columns, in table order, with its roles as stored.
fn user_args<'a>(user: &'a UserRow, roles: &'a str) -> [Arg<'a>; 9] {
    [
        (&user.user_id).into(),
        (&user.username).into(),
        (&user.display_name).into(),
        (&user.email).into(),
        user.email_verified.into(),
        roles.into(),
        user.locked_at.into(),
        user.created_at.into(),
        (&user.language).into(),
    ]
}

/// A registration's values, as each engine's `store_registration` numbers
/// them: the user ($1-$9), the credential ($10-$22), the session
/// ($23-$32; its id $23 and time $29 serve the refresh token too), the
/// refresh token's hash ($33), the audit row ($34-$44), then the history
/// rows written in the same text (`seen_insert` from $45, at most
/// `MOST_SEEN` of them: `inline_seen`).
pub(crate) fn registration_args<'a>(rows: &RegistrationRows<'a>, roles: &'a str) -> Vec<Arg<'a>> {
    let seen = inline_seen(rows.seen);
    let mut args: Vec<Arg<'a>> = Vec::with_capacity(REGISTRATION_ARGS + 3 * seen.len());
    args.extend(user_args(rows.user, roles));
    args.extend(credential_args(rows.credential));
    args.extend(session_args(rows.session));
    args.push(rows.refresh_hash.into());
    args.extend(audit_args(rows.audit));
    args.extend(seen_args(seen));
    args
}

/// How many values a registration binds before its history rows.
pub(crate) const REGISTRATION_ARGS: usize = 44;
