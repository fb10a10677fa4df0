//! Fallback sign-in: passwords, TOTP, recovery codes, the token between a
//! password and its second factor, mailed codes, and the counts that
//! throttle them.

use async_trait::async_trait;
use sqlx::Connection;

use super::engine::{Engine, Sql};
use super::sessions::insert_session;
use super::{EmailCodeRow, FactorCounts, SessionRow, StoreResult, TotpRow};
use crate::clock::Millis;

/// How long a name that is no account keeps its failure count: a spray of
/// made-up names is forgotten after this quiet spell.
const NAMES_FORGOTTEN_AFTER_MS: i64 = 30 * 24 * 3600 * 1000;

#[async_trait]
pub trait FallbackStore: Send + Sync {
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
    /// Deletes the user's half-done fallback sign-ins: mfa_tokens and a
    /// mailed sign-in code (a password change makes them stale).
    async fn void_fallback_steps(&self, user_id: &str) -> StoreResult<()>;

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
}

/// Replaces the user's recovery codes with `hashes`.
async fn insert_recovery_codes<C: Sql>(
    conn: &mut C,
    user_id: &str,
    hashes: &[String],
    now: Millis,
) -> StoreResult<()> {
    conn.execute("delete from recovery_code where user_id = $1", &[user_id.into()]).await?;
    let sql = "insert into recovery_code (user_id, code_hash, used_at, created_at) \
               values ($1, $2, null, $3)";
    for hash in hashes {
        conn.execute(sql, &[user_id.into(), hash.into(), now.into()]).await?;
    }
    Ok(())
}

#[async_trait]
impl<E: Engine> FallbackStore for E {
    async fn password_hash(&self, user_id: &str) -> StoreResult<Option<String>> {
        let sql = "select phc from user_password where user_id = $1";
        let row: Option<(String,)> =
            self.db().await?.fetch_optional(sql, &[user_id.into()]).await?;
        Ok(row.map(|(phc,)| phc))
    }

    async fn set_password(&self, user_id: &str, phc: &str, now: Millis) -> StoreResult<()> {
        let sql = "insert into user_password (user_id, phc, updated_at) values ($1, $2, $3) \
                   on conflict (user_id) do update set phc = excluded.phc, \
                   updated_at = excluded.updated_at";
        self.db().await?.execute(sql, &[user_id.into(), phc.into(), now.into()]).await?;
        Ok(())
    }

    async fn upgrade_password(&self, user_id: &str, old: &str, new: &str) -> StoreResult<bool> {
        let sql = "update user_password set phc = $3 where user_id = $1 and phc = $2";
        let args = [user_id.into(), old.into(), new.into()];
        Ok(self.db().await?.execute(sql, &args).await? == 1)
    }

    async fn factor_counts(&self, user_id: &str) -> StoreResult<FactorCounts> {
        let sql = "select (select count(*) from user_password where user_id = $1) as passwords, \
                   (select count(*) from user_totp where user_id = $1 \
                    and confirmed_at is not null) as totp, \
                   (select count(*) from recovery_code where user_id = $1 \
                    and used_at is null) as recovery_codes, \
                   (select count(*) from passkey_recovery_code where user_id = $1 \
                    and used_at is null) as passkey_recovery_codes";
        Ok(self.db().await?.fetch_one(sql, &[user_id.into()]).await?)
    }

    async fn totp(&self, user_id: &str) -> StoreResult<Option<TotpRow>> {
        let sql = "select * from user_totp where user_id = $1";
        Ok(self.db().await?.fetch_optional(sql, &[user_id.into()]).await?)
    }

    async fn put_pending_totp(
        &self,
        user_id: &str,
        sealed: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let sql = "insert into user_totp (user_id, secret, confirmed_at, last_step, created_at) \
                   values ($1, $2, null, 0, $3) on conflict (user_id) do update \
                   set secret = excluded.secret, created_at = excluded.created_at, last_step = 0 \
                   where user_totp.confirmed_at is null";
        let args = [user_id.into(), sealed.into(), now.into()];
        Ok(self.db().await?.execute(sql, &args).await? == 1)
    }

    async fn confirm_totp(
        &self,
        user_id: &str,
        sealed: &str,
        step: i64,
        recovery_hashes: &[String],
        now: Millis,
    ) -> StoreResult<bool> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let sql = "update user_totp set confirmed_at = $3, last_step = $2 \
                   where user_id = $1 and confirmed_at is null and last_step < $2 \
                   and secret = $4";
        let args = [user_id.into(), step.into(), now.into(), sealed.into()];
        if tx.execute(sql, &args).await? != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_recovery_codes(&mut *tx, user_id, recovery_hashes, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn use_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool> {
        let sql = "update user_totp set last_step = $2 \
                   where user_id = $1 and confirmed_at is not null and last_step < $2";
        Ok(self.db().await?.execute(sql, &[user_id.into(), step.into()]).await? == 1)
    }

    async fn delete_totp(&self, user_id: &str) -> StoreResult<bool> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let sql = "delete from user_totp where user_id = $1";
        let done = tx.execute(sql, &[user_id.into()]).await?;
        tx.execute("delete from recovery_code where user_id = $1", &[user_id.into()]).await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[String],
        now: Millis,
    ) -> StoreResult<()> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        insert_recovery_codes(&mut *tx, user_id, hashes, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn use_recovery_code(&self, user_id: &str, hash: &str, now: Millis) -> StoreResult<bool> {
        let sql = "update recovery_code set used_at = $3 \
                   where user_id = $1 and code_hash = $2 and used_at is null";
        let args = [user_id.into(), hash.into(), now.into()];
        Ok(self.db().await?.execute(sql, &args).await? == 1)
    }

    async fn put_mfa_token(
        &self,
        token_hash: &str,
        user_id: &str,
        expires_at: Millis,
        now: Millis,
    ) -> StoreResult<()> {
        let sql = "insert into mfa_token (token_hash, user_id, expires_at, created_at) \
                   values ($1, $2, $3, $4)";
        let args = [token_hash.into(), user_id.into(), expires_at.into(), now.into()];
        self.db().await?.execute(sql, &args).await?;
        Ok(())
    }

    async fn mfa_token_user(&self, token_hash: &str, now: Millis) -> StoreResult<Option<String>> {
        let sql = "select user_id from mfa_token where token_hash = $1 and expires_at > $2";
        let args = [token_hash.into(), now.into()];
        let row: Option<(String,)> = self.db().await?.fetch_optional(sql, &args).await?;
        Ok(row.map(|(user_id,)| user_id))
    }

    async fn finish_mfa(
        &self,
        token_hash: &str,
        session: &SessionRow,
        refresh_hash: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        let sql =
            "delete from mfa_token where token_hash = $1 and user_id = $2 and expires_at > $3";
        let args = [token_hash.into(), (&session.user_id).into(), now.into()];
        if tx.execute(sql, &args).await? != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_session(&mut *tx, session, refresh_hash).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn void_fallback_steps(&self, user_id: &str) -> StoreResult<()> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        tx.execute("delete from mfa_token where user_id = $1", &[user_id.into()]).await?;
        let sql = "delete from email_code where user_id = $1 and purpose = 'login'";
        tx.execute(sql, &[user_id.into()]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_email_code(
        &self,
        code: &EmailCodeRow,
        resend_before: Millis,
    ) -> StoreResult<bool> {
        let sql = "insert into email_code (purpose, user_id, code_hash, address, tries, \
                   sent_at, expires_at) values ($1, $2, $3, $4, $5, $6, $7) \
                   on conflict (purpose, user_id) do update set code_hash = excluded.code_hash, \
                   address = excluded.address, tries = excluded.tries, \
                   sent_at = excluded.sent_at, expires_at = excluded.expires_at \
                   where email_code.sent_at <= $8 or email_code.expires_at <= $6";
        let args = [
            (&code.purpose).into(),
            (&code.user_id).into(),
            (&code.code_hash).into(),
            (&code.address).into(),
            code.tries.into(),
            code.sent_at.into(),
            code.expires_at.into(),
            resend_before.into(),
        ];
        Ok(self.db().await?.execute(sql, &args).await? == 1)
    }

    async fn email_code(&self, purpose: &str, user_id: &str) -> StoreResult<Option<EmailCodeRow>> {
        let sql = "select * from email_code where purpose = $1 and user_id = $2";
        Ok(self.db().await?.fetch_optional(sql, &[purpose.into(), user_id.into()]).await?)
    }

    async fn try_email_code(
        &self,
        purpose: &str,
        user_id: &str,
        max_tries: i32,
        now: Millis,
    ) -> StoreResult<Option<EmailCodeRow>> {
        let sql = "update email_code set tries = tries + 1 where purpose = $1 and user_id = $2 \
                   and tries < $3 and expires_at > $4 returning *";
        let args = [purpose.into(), user_id.into(), max_tries.into(), now.into()];
        Ok(self.db().await?.fetch_optional(sql, &args).await?)
    }

    async fn take_email_code(
        &self,
        purpose: &str,
        user_id: &str,
        code_hash: &str,
    ) -> StoreResult<bool> {
        let sql = "delete from email_code where purpose = $1 and user_id = $2 and code_hash = $3";
        let args = [purpose.into(), user_id.into(), code_hash.into()];
        Ok(self.db().await?.execute(sql, &args).await? == 1)
    }

    async fn hit_rate_window(
        &self,
        bucket: &str,
        now: Millis,
        window_ms: i64,
    ) -> StoreResult<(i64, Millis)> {
        // One statement: two nodes counting the same bucket at once both
        // land in the one row.
        let sql = "insert into rate_window (bucket, hits, window_ends) values ($1, 1, $2 + $3) \
                   on conflict (bucket) do update set \
                   hits = case when rate_window.window_ends <= $2 then 1 \
                   else rate_window.hits + 1 end, \
                   window_ends = case when rate_window.window_ends <= $2 then $2 + $3 \
                   else rate_window.window_ends end \
                   returning hits, window_ends";
        let args = [bucket.into(), now.into(), window_ms.into()];
        let counted: Vec<(i64, Millis)> = self.write_shared(sql, &args).await?;
        counted.into_iter().next().ok_or(super::StoreError::NotFound)
    }

    async fn locked_until(&self, subject: &str) -> StoreResult<Millis> {
        let sql = "select locked_until from login_failure where subject = $1";
        let row: Option<(i64,)> = self.db().await?.fetch_optional(sql, &[subject.into()]).await?;
        Ok(row.map_or(0, |(until,)| until))
    }

    async fn count_attempt(
        &self,
        subject: &str,
        now: Millis,
        quiet_before: Millis,
        lock_from: i64,
        provisional_until: Millis,
    ) -> StoreResult<Option<(i64, i64)>> {
        // One statement, so that a burst of attempts at once is counted one
        // by one: the attempt that reaches `lock_from` locks the subject
        // before it is checked, and the rest of the burst finds it locked
        // (no row returned).
        let sql = "insert into login_failure (subject, failures, streak, locked_until, updated_at) \
                   values ($1, 1, 1, case when 1 >= $4 then $5 else 0 end, $2) \
                   on conflict (subject) do update set \
                   failures = login_failure.failures + 1, \
                   streak = case when login_failure.updated_at < $3 then 1 \
                   else login_failure.streak + 1 end, \
                   locked_until = case when login_failure.failures + 1 >= $4 then $5 \
                   else login_failure.locked_until end, \
                   updated_at = $2 \
                   where login_failure.locked_until <= $2 \
                   returning failures, streak";
        let args = [
            subject.into(),
            now.into(),
            quiet_before.into(),
            lock_from.into(),
            provisional_until.into(),
        ];
        Ok(self.db().await?.fetch_optional(sql, &args).await?)
    }

    async fn return_attempt(&self, subject: &str, provisional_until: Millis) -> StoreResult<()> {
        // The lock goes with the attempt only if it is the one this attempt
        // set (a later failure's lock has another time).
        let sql = "update login_failure set failures = failures - 1, \
                   streak = case when streak > 0 then streak - 1 else 0 end, \
                   locked_until = case when locked_until = $2 then 0 else locked_until end \
                   where subject = $1 and failures > 0";
        self.db().await?.execute(sql, &[subject.into(), provisional_until.into()]).await?;
        Ok(())
    }

    async fn lock_subject(&self, subject: &str, until: Millis) -> StoreResult<()> {
        let sql = "update login_failure set locked_until = $2 where subject = $1";
        self.db().await?.execute(sql, &[subject.into(), until.into()]).await?;
        Ok(())
    }

    async fn clear_failures(&self, subject: &str) -> StoreResult<()> {
        let sql = "delete from login_failure where subject = $1";
        self.db().await?.execute(sql, &[subject.into()]).await?;
        Ok(())
    }

    async fn purge_fallback(&self, now: Millis, forget_before: Millis) -> StoreResult<u64> {
        let mut purged = 0;
        for (sql, cutoff) in [
            ("delete from mfa_token where expires_at <= $1", now),
            ("delete from email_code where expires_at <= $1", now),
            ("delete from rate_window where window_ends <= $1", now),
            // A count runs until a sign-in, for names that are no account
            // as for accounts (else a count forgotten sooner would tell
            // them apart); a name quiet for 30 days is forgotten, so a
            // spray of made-up names cannot fill the table for good.
            (
                "delete from login_failure where updated_at < $1 and locked_until < $1 \
                 and failures = 0",
                forget_before.min(now),
            ),
            (
                "delete from login_failure where subject like 'name:%' and updated_at < $1",
                now - NAMES_FORGOTTEN_AFTER_MS,
            ),
        ] {
            purged += self.db().await?.execute(sql, &[cutoff.into()]).await?;
        }
        Ok(purged)
    }
}
