//! A user's passkeys as devices they manage, and what an admin does to an
//! account: roles, locks, search, and the enrolment code after a reset.

use async_trait::async_trait;
use sqlx::Connection;

use super::engine::{Arg, Engine, Sql};
use super::sessions::insert_session;
use super::{CredentialRow, SessionRow, StoreResult, Unbound, UserRow};
use crate::clock::Millis;

/// What lets an enrolment bind a passkey without signing in: its stored
/// hash, spent in the same transaction as the binding.
#[derive(Clone, Copy, Debug)]
pub enum EnrolProof<'a> {
    /// The code an admin's device reset issued.
    EnrolmentCode(&'a str),
    /// One of the recovery codes the user made, spent at `Millis`.
    RecoveryCode(&'a str, Millis),
}

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
    /// Unbinds every device, ends every session and every trusted
    /// browser, and stores an enrolment code, at once; returns (devices,
    /// sessions) ended.
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
    /// Stores an enrolment code requested by mail, working from
    /// `valid_from`, unless a live enrolment code (an admin's, or an
    /// earlier request) is there; false (nothing written) then.
    async fn put_mailed_recovery(
        &self,
        user_id: &str,
        code_hash: &str,
        cancel_hash: &str,
        valid_from: Millis,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<bool>;
    /// When the user's live enrolment code was requested by mail; None
    /// when there is none, or it is an admin's.
    async fn mailed_recovery_requested_at(&self, user_id: &str) -> StoreResult<Option<Millis>>;
    /// Voids the mailed recovery whose cancel token hashes to
    /// `cancel_hash`; the user it was for, or None when none is.
    async fn cancel_mailed_recovery(&self, cancel_hash: &str) -> StoreResult<Option<String>>;
    /// Voids the user's pending mailed recovery; false when none was.
    async fn void_mailed_recovery(&self, user_id: &str) -> StoreResult<bool>;
    /// Gives back the try a right code counted, so only wrong codes use
    /// the code up.
    async fn return_enrolment_try(&self, user_id: &str, code_hash: &str) -> StoreResult<()>;
    /// Binds the new passkey and spends what allowed it (the enrolment
    /// code, or one passkey recovery code) at once; false when it was
    /// spent meanwhile.
    async fn enrol_with_code(
        &self,
        proof: EnrolProof<'_>,
        credential: &CredentialRow,
        session: &SessionRow,
        refresh_hash: &str,
    ) -> StoreResult<bool>;
    /// Replaces the user's passkey recovery codes with `hashes`.
    async fn replace_passkey_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[String],
        now: Millis,
    ) -> StoreResult<()>;
    /// Whether `hash` is one of the user's passkey recovery codes not yet
    /// spent.
    async fn passkey_recovery_code_live(&self, user_id: &str, hash: &str) -> StoreResult<bool>;

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
    conn.execute(sql, &credential_args(credential)).await?;
    Ok(())
}

/// A credential row's thirteen columns, in table order (as
/// `insert_credential` and a registration's writes name them).
pub(crate) fn credential_args(credential: &CredentialRow) -> [Arg<'_>; 13] {
    [
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
    ]
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
        // A lost phone may be a trusted browser too: trust ends with the
        // reset, so it cannot lower the risk of the finder's sign-ins.
        let sql = "update trusted_device set revoked_at = $2 where user_id = $1 \
                   and revoked_at is null";
        tx.execute(sql, &[user_id.into(), now.into()]).await?;
        let sql = "insert into enrolment_code (user_id, code_hash, tries, expires_at, created_at) \
                   values ($1, $2, 0, $3, $4) on conflict (user_id) do update set \
                   code_hash = excluded.code_hash, tries = 0, \
                   expires_at = excluded.expires_at, created_at = excluded.created_at, \
                   valid_from = null, cancel_hash = null";
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
                   and tries < $2 and expires_at > $3 \
                   and (valid_from is null or valid_from <= $3) \
                   returning code_hash, expires_at";
        let args = [user_id.into(), max_tries.into(), now.into()];
        Ok(self.db().await?.fetch_optional(sql, &args).await?)
    }

    async fn put_mailed_recovery(
        &self,
        user_id: &str,
        code_hash: &str,
        cancel_hash: &str,
        valid_from: Millis,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        // Replaces only a code that has expired: a live one, an admin's
        // above all, is never overwritten by an unauthenticated request.
        let sql = "insert into enrolment_code \
                   (user_id, code_hash, tries, expires_at, created_at, valid_from, cancel_hash) \
                   values ($1, $2, 0, $3, $4, $5, $6) on conflict (user_id) do update set \
                   code_hash = excluded.code_hash, tries = 0, expires_at = excluded.expires_at, \
                   created_at = excluded.created_at, valid_from = excluded.valid_from, \
                   cancel_hash = excluded.cancel_hash where enrolment_code.expires_at <= $4";
        let args = [
            user_id.into(),
            code_hash.into(),
            expires_at.into(),
            now.into(),
            valid_from.into(),
            cancel_hash.into(),
        ];
        Ok(self.db().await?.execute(sql, &args).await? == 1)
    }

    async fn mailed_recovery_requested_at(&self, user_id: &str) -> StoreResult<Option<Millis>> {
        let sql = "select created_at from enrolment_code \
                   where user_id = $1 and cancel_hash is not null";
        let row: Option<(Millis,)> =
            self.db().await?.fetch_optional(sql, &[user_id.into()]).await?;
        Ok(row.map(|(at,)| at))
    }

    async fn cancel_mailed_recovery(&self, cancel_hash: &str) -> StoreResult<Option<String>> {
        let sql = "delete from enrolment_code where cancel_hash = $1 returning user_id";
        let row: Option<(String,)> =
            self.db().await?.fetch_optional(sql, &[cancel_hash.into()]).await?;
        Ok(row.map(|(user_id,)| user_id))
    }

    async fn void_mailed_recovery(&self, user_id: &str) -> StoreResult<bool> {
        let sql = "delete from enrolment_code where user_id = $1 and cancel_hash is not null";
        Ok(self.db().await?.execute(sql, &[user_id.into()]).await? == 1)
    }

    async fn return_enrolment_try(&self, user_id: &str, code_hash: &str) -> StoreResult<()> {
        let sql = "update enrolment_code set tries = tries - 1 \
                   where user_id = $1 and code_hash = $2 and tries > 0";
        self.db().await?.execute(sql, &[user_id.into(), code_hash.into()]).await?;
        Ok(())
    }

    async fn enrol_with_code(
        &self,
        proof: EnrolProof<'_>,
        credential: &CredentialRow,
        session: &SessionRow,
        refresh_hash: &str,
    ) -> StoreResult<bool> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let user_id = &credential.user_id;
        let spent = match proof {
            EnrolProof::EnrolmentCode(hash) => {
                let sql = "delete from enrolment_code where user_id = $1 and code_hash = $2";
                tx.execute(sql, &[user_id.into(), hash.into()]).await?
            }
            EnrolProof::RecoveryCode(hash, now) => {
                let sql = "update passkey_recovery_code set used_at = $3 \
                           where user_id = $1 and code_hash = $2 and used_at is null";
                tx.execute(sql, &[user_id.into(), hash.into(), now.into()]).await?
            }
        };
        if spent != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_credential(&mut *tx, credential).await?;
        insert_session(&mut *tx, session, refresh_hash).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn replace_passkey_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[String],
        now: Millis,
    ) -> StoreResult<()> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let sql = "delete from passkey_recovery_code where user_id = $1";
        tx.execute(sql, &[user_id.into()]).await?;
        let sql = "insert into passkey_recovery_code (user_id, code_hash, used_at, created_at) \
                   values ($1, $2, null, $3)";
        for hash in hashes {
            tx.execute(sql, &[user_id.into(), hash.into(), now.into()]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn passkey_recovery_code_live(&self, user_id: &str, hash: &str) -> StoreResult<bool> {
        let sql = "select count(*) from passkey_recovery_code \
                   where user_id = $1 and code_hash = $2 and used_at is null";
        let (live,): (i64,) =
            self.db().await?.fetch_one(sql, &[user_id.into(), hash.into()]).await?;
        Ok(live == 1)
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
