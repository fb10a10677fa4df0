//! Accounts and the passkeys they sign in with, as read by sign-ins and
//! registration.

use async_trait::async_trait;
use sqlx::Connection;

use super::devices::insert_credential;
use super::engine::{Engine, Sql};
use super::sessions::insert_session;
use super::{CredentialRow, SessionRow, StoreResult, UserRow};
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

    /// Creates the user, the first passkey, a session and its refresh token
    /// at once; a taken username gives `Conflict` and writes nothing.
    async fn register_user(
        &self,
        user: &UserRow,
        credential: &CredentialRow,
        session: &SessionRow,
        refresh_hash: &str,
    ) -> StoreResult<()>;

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

    async fn register_user(
        &self,
        user: &UserRow,
        credential: &CredentialRow,
        session: &SessionRow,
        refresh_hash: &str,
    ) -> StoreResult<()> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        insert_user(&mut *tx, user).await?;
        insert_credential(&mut *tx, credential).await?;
        insert_session(&mut *tx, session, refresh_hash).await?;
        tx.commit().await?;
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
    let args = [
        (&user.user_id).into(),
        (&user.username).into(),
        (&user.display_name).into(),
        (&user.email).into(),
        user.email_verified.into(),
        (&roles).into(),
        user.locked_at.into(),
        user.created_at.into(),
        (&user.language).into(),
    ];
    conn.execute(sql, &args).await?;
    Ok(())
}
