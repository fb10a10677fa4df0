//! A user's passkeys as devices they manage, and what an admin does to an
//! account: roles, locks, search, and the enrolment code after a reset.

use async_trait::async_trait;
use sqlx::Connection;

use super::engine::{Engine, Sql};
use super::sessions::insert_session;
use super::{CredentialRow, SessionRow, StoreResult, Unbound, UserRow};
use crate::clock::Millis;

#[async_trait]
pub trait DeviceStore: Send + Sync {
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
    /// The live enrolment code of a user, counting one try; None when there
    /// is none live with tries left.
    async fn try_enrolment_code(
        &self,
        user_id: &str,
        max_tries: i32,
        now: Millis,
    ) -> StoreResult<Option<(String, Millis)>>;
    /// Gives back the try a right code counted, so only wrong codes use
    /// the code up.
    async fn return_enrolment_try(&self, user_id: &str, code_hash: &str) -> StoreResult<()>;
    /// Binds the new passkey and takes the enrolment code at once; false
    /// when the code was used meanwhile.
    async fn enrol_with_code(
        &self,
        code_hash: &str,
        credential: &CredentialRow,
        session: &SessionRow,
        refresh_hash: &str,
    ) -> StoreResult<bool>;

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
}

pub(crate) async fn insert_credential<C: Sql>(
    conn: &mut C,
    credential: &CredentialRow,
) -> StoreResult<()> {
    let sql = "insert into credential (credential_id, device_id, user_id, name, passkey, \
               sign_count, backup_eligible, backup_state, aaguid, transports, created_at, \
               last_used_at, payments_after) \
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
    let args = [
        (&credential.credential_id).into(),
        (&credential.device_id).into(),
        (&credential.user_id).into(),
        (&credential.name).into(),
        (&credential.passkey).into(),
        credential.sign_count.into(),
        credential.backup_eligible.into(),
        credential.backup_state.into(),
        (&credential.aaguid).into(),
        (&credential.transports).into(),
        credential.created_at.into(),
        credential.last_used_at.into(),
        credential.payments_after.into(),
    ];
    conn.execute(sql, &args).await?;
    Ok(())
}

#[async_trait]
impl<E: Engine> DeviceStore for E {
    async fn add_credential(&self, credential: &CredentialRow) -> StoreResult<()> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        insert_credential(&mut *tx, credential).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rename_credential(
        &self,
        user_id: &str,
        device_id: &str,
        name: &str,
    ) -> StoreResult<bool> {
        let sql = "update credential set name = $3 where user_id = $1 and device_id = $2";
        let args = [user_id.into(), device_id.into(), name.into()];
        Ok(self.db().await?.execute(sql, &args).await? == 1)
    }

    async fn delete_credential(
        &self,
        user_id: &str,
        device_id: &str,
        keep_one: bool,
        now: Millis,
    ) -> StoreResult<Unbound> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        // A no-op update takes the user's row lock on PostgreSQL (SQLite's
        // write lock covers the whole database): a concurrent unbind of the
        // same user waits here, then counts what this one left.
        let sql = "update app_user set user_id = user_id where user_id = $1";
        tx.execute(sql, &[user_id.into()]).await?;
        let sql = "select count(*) from credential where user_id = $1";
        let (count,): (i64,) = tx.fetch_one(sql, &[user_id.into()]).await?;
        if keep_one && count <= 1 {
            tx.rollback().await?;
            return Ok(Unbound::LastOne);
        }
        let sql = "delete from credential where user_id = $1 and device_id = $2";
        if tx.execute(sql, &[user_id.into(), device_id.into()]).await? != 1 {
            tx.rollback().await?;
            return Ok(Unbound::NotFound);
        }
        let sql = "update session set revoked_at = $3 \
                   where user_id = $1 and device_id = $2 and revoked_at is null";
        tx.execute(sql, &[user_id.into(), device_id.into(), now.into()]).await?;
        tx.commit().await?;
        Ok(Unbound::Deleted)
    }

    async fn reset_devices(
        &self,
        user_id: &str,
        code_hash: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<(u64, u64)> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let sql = "delete from credential where user_id = $1";
        let devices = tx.execute(sql, &[user_id.into()]).await?;
        let sql = "update session set revoked_at = $2 where user_id = $1 \
                   and revoked_at is null and expires_at > $2";
        let sessions = tx.execute(sql, &[user_id.into(), now.into()]).await?;
        let sql = "insert into enrolment_code (user_id, code_hash, tries, expires_at, created_at) \
                   values ($1, $2, 0, $3, $4) on conflict (user_id) do update set \
                   code_hash = excluded.code_hash, tries = 0, \
                   expires_at = excluded.expires_at, created_at = excluded.created_at";
        let args = [user_id.into(), code_hash.into(), expires_at.into(), now.into()];
        tx.execute(sql, &args).await?;
        tx.commit().await?;
        Ok((devices, sessions))
    }

    async fn try_enrolment_code(
        &self,
        user_id: &str,
        max_tries: i32,
        now: Millis,
    ) -> StoreResult<Option<(String, Millis)>> {
        let sql = "update enrolment_code set tries = tries + 1 where user_id = $1 \
                   and tries < $2 and expires_at > $3 returning code_hash, expires_at";
        let args = [user_id.into(), max_tries.into(), now.into()];
        Ok(self.db().await?.fetch_optional(sql, &args).await?)
    }

    async fn return_enrolment_try(&self, user_id: &str, code_hash: &str) -> StoreResult<()> {
        let sql = "update enrolment_code set tries = tries - 1 \
                   where user_id = $1 and code_hash = $2 and tries > 0";
        self.db().await?.execute(sql, &[user_id.into(), code_hash.into()]).await?;
        Ok(())
    }

    async fn enrol_with_code(
        &self,
        code_hash: &str,
        credential: &CredentialRow,
        session: &SessionRow,
        refresh_hash: &str,
    ) -> StoreResult<bool> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let sql = "delete from enrolment_code where user_id = $1 and code_hash = $2";
        if tx.execute(sql, &[(&credential.user_id).into(), code_hash.into()]).await? != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_credential(&mut *tx, credential).await?;
        insert_session(&mut *tx, session, refresh_hash).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_roles(&self, user_id: &str, roles: &str) -> StoreResult<bool> {
        let sql = "update app_user set roles = $2 where user_id = $1";
        Ok(self.db().await?.execute(sql, &[user_id.into(), roles.into()]).await? == 1)
    }

    async fn set_locked(
        &self,
        user_id: &str,
        locked_at: Option<Millis>,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let sql = "update app_user set locked_at = $2 where user_id = $1";
        let done = tx.execute(sql, &[user_id.into(), locked_at.into()]).await?;
        if locked_at.is_none() {
            // An admin's unlock also opens a fallback sign-in that failures
            // closed.
            let sql = "delete from login_failure where subject = 'user:' || $1";
            tx.execute(sql, &[user_id.into()]).await?;
        }
        if locked_at.is_some() {
            // A locked account keeps no session.
            let sql =
                "update session set revoked_at = $2 where user_id = $1 and revoked_at is null";
            tx.execute(sql, &[user_id.into(), now.into()]).await?;
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn search_users(
        &self,
        query: &str,
        after: &str,
        limit: i64,
    ) -> StoreResult<Vec<UserRow>> {
        // LIKE wildcards in the query are matched literally.
        let escaped = query.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let pattern = format!("%{escaped}%").to_lowercase();
        let sql = "select * from app_user where (username like $1 escape '\\' \
                   or lower(display_name) like $1 escape '\\' \
                   or lower(coalesce(email, '')) like $1 escape '\\') \
                   and username > $2 order by username limit $3";
        let args = [(&pattern).into(), after.into(), limit.into()];
        Ok(self.db().await?.fetch_all(sql, &args).await?)
    }
}
