//! The query text, written once. `impl_store!` expands to one `Store`
//! implementation per engine: the SQL is portable (`$n` placeholders work
//! on both), and each expansion is type-checked against its own driver.

/// Stores a verified assertion. The counter rule of WebAuthn §7.2 step 21
/// is enforced here as well, so that two concurrent sign-ins cannot both
/// pass with one counter value; zero on both sides is a synced passkey
/// that keeps no counter.
/// How long a name that is no account keeps its failure count: a spray of
/// made-up names is forgotten after this quiet spell.
pub(crate) const NAMES_FORGOTTEN_AFTER_MS: i64 = 30 * 24 * 3600 * 1000;

pub(crate) const COUNTED_USE: &str = "update credential set backup_eligible = $2, sign_count = $3, \
     backup_state = $4, last_used_at = $5 where credential_id = $1 \
     and (sign_count < $3 or (sign_count = 0 and $3 = 0))";

/// The columns `bind_session` binds, in its order; every statement that
/// writes a session names them through this.
macro_rules! session_columns {
    () => {
        "session (session_id, user_id, device_id, amr, client_ip, user_agent, created_at, \
         last_used_at, expires_at, revoked_at)"
    };
}

/// The columns `bind_audit` binds, in its order.
macro_rules! audit_columns {
    () => {
        "audit_event (event_id, occurred_at, event, outcome, user_id, actor_id, device_id, \
         client_ip, user_agent, reason, request_id)"
    };
}

/// Stores a new ceremony; `bind_ceremony` binds its columns.
macro_rules! ceremony_insert {
    () => {
        concat!($crate::store::sql::ceremony_into!(), "values ($1, $2, $3, $4, $5)")
    };
}

/// The columns a ceremony's insert names, in the order both binders bind.
macro_rules! ceremony_into {
    () => {
        "insert into ceremony (ceremony_id, kind, user_id, state, expires_at) "
    };
}

macro_rules! impl_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn pool_state(&self) -> (u32, usize) {
                self.pool_use()
            }

            async fn ping(&self) -> StoreResult<()> {
                self.ping_db().await
            }

            async fn find_user(&self, user_id: &str) -> StoreResult<Option<UserRow>> {
                Ok(sqlx::query_as::<_, UserRow>("select * from app_user where user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&mut *self.db().await?)
                    .await?)
            }

            async fn find_user_by_username(&self, username: &str) -> StoreResult<Option<UserRow>> {
                Ok(sqlx::query_as::<_, UserRow>("select * from app_user where username = $1")
                    .bind(username)
                    .fetch_optional(&mut *self.db().await?)
                    .await?)
            }

            async fn user_credentials(&self, user_id: &str) -> StoreResult<Vec<CredentialRow>> {
                Ok(sqlx::query_as::<_, CredentialRow>(
                    "select * from credential where user_id = $1 order by created_at",
                )
                .bind(user_id)
                .fetch_all(&mut *self.db().await?)
                .await?)
            }

            async fn login_credentials(&self, username: &str) -> StoreResult<Vec<CredentialRow>> {
                Ok(sqlx::query_as::<_, CredentialRow>(
                    "select c.* from credential c join app_user u on u.user_id = c.user_id \
                     where u.username = $1 order by c.created_at",
                )
                .bind(username)
                .fetch_all(&mut *self.read_db().await?)
                .await?)
            }

            async fn credential_shape_near(&self, seed: &str) -> StoreResult<Vec<(String, i64)>> {
                // The passkeys of the account whose first credential id
                // follows `seed` (wrapping round): a real account's count,
                // id lengths and transports, for a name that is none.
                Ok(sqlx::query_as(
                    "select transports, cast(length(credential_id) as bigint) from credential \
                     where user_id = coalesce( \
                     (select user_id from credential where credential_id >= $1 \
                      order by credential_id limit 1), \
                     (select user_id from credential order by credential_id limit 1)) \
                     order by created_at",
                )
                .bind(seed)
                .fetch_all(&mut *self.read_db().await?)
                .await?)
            }

            async fn find_credential(
                &self,
                credential_id: &str,
            ) -> StoreResult<Option<CredentialRow>> {
                Ok(sqlx::query_as::<_, CredentialRow>(
                    "select * from credential where credential_id = $1",
                )
                .bind(credential_id)
                .fetch_optional(&mut *self.db().await?)
                .await?)
            }

            async fn find_login(
                &self,
                used_id: &str,
                credential_id: &str,
            ) -> StoreResult<(bool, Option<(CredentialRow, UserRow)>)> {
                // One round trip: whether the handle was used, and the
                // credential with its owner (the owner's columns renamed).
                let row = sqlx::query(
                    "select (select count(*) from ceremony where ceremony_id = $1) as used_count, \
                     c.*, u.username as owner_username, u.display_name as owner_display_name, \
                     u.email as owner_email, u.email_verified as owner_email_verified, \
                     u.roles as owner_roles, u.locked_at as owner_locked_at, \
                     u.created_at as owner_created_at \
                     from (select 1 as one) as probe \
                     left join credential c on c.credential_id = $2 \
                     left join app_user u on u.user_id = c.user_id",
                )
                .bind(used_id)
                .bind(credential_id)
                .fetch_one(&mut *self.read_db().await?)
                .await?;
                let used: i64 = sqlx::Row::try_get(&row, "used_count")?;
                let known: Option<String> = sqlx::Row::try_get(&row, "credential_id")?;
                let owned = match known {
                    Some(_) => Some(
                        <$crate::store::CredentialOwnerRow as sqlx::FromRow<_>>::from_row(&row)?
                            .split(),
                    ),
                    None => None,
                };
                Ok((used > 0, owned))
            }

            async fn use_up_login(&self, used_id: &str, expires_at: Millis) -> StoreResult<bool> {
                let done = sqlx::query(
                    "insert into ceremony (ceremony_id, kind, user_id, state, expires_at) \
                     values ($1, 'used', null, '', $2) on conflict (ceremony_id) do nothing",
                )
                .bind(used_id)
                .bind(expires_at)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn put_ceremony(&self, ceremony: &CeremonyRow) -> StoreResult<()> {
                // Differs by engine: SQLite may commit it in a group.
                self.store_ceremony(ceremony).await
            }

            async fn take_ceremony(
                &self,
                ceremony_id: &str,
                kind: &str,
                now: Millis,
            ) -> StoreResult<Option<CeremonyRow>> {
                Ok(sqlx::query_as::<_, CeremonyRow>(
                    "delete from ceremony where ceremony_id = $1 and kind = $2 and expires_at > $3 \
                     returning ceremony_id, kind, user_id, state, expires_at",
                )
                .bind(ceremony_id)
                .bind(kind)
                .bind(now)
                .fetch_optional(&mut *self.db().await?)
                .await?)
            }

            async fn find_ceremony(
                &self,
                ceremony_id: &str,
                kind: &str,
                now: Millis,
            ) -> StoreResult<Option<CeremonyRow>> {
                Ok(sqlx::query_as::<_, CeremonyRow>(
                    "select ceremony_id, kind, user_id, state, expires_at from ceremony \
                     where ceremony_id = $1 and kind = $2 and expires_at > $3",
                )
                .bind(ceremony_id)
                .bind(kind)
                .bind(now)
                .fetch_optional(&mut *self.db().await?)
                .await?)
            }

            async fn take_owned_ceremony(
                &self,
                ceremony_id: &str,
                kind: &str,
                user_id: &str,
                now: Millis,
            ) -> StoreResult<Option<CeremonyRow>> {
                Ok(sqlx::query_as::<_, CeremonyRow>(
                    "delete from ceremony where ceremony_id = $1 and kind = $2 and expires_at > $3 \
                     and user_id = $4 returning ceremony_id, kind, user_id, state, expires_at",
                )
                .bind(ceremony_id)
                .bind(kind)
                .bind(now)
                .bind(user_id)
                .fetch_optional(&mut *self.db().await?)
                .await?)
            }

            async fn purge_expired_ceremonies(&self, now: Millis) -> StoreResult<u64> {
                let done = sqlx::query("delete from ceremony where expires_at <= $1")
                    .bind(now)
                    .execute(&mut *self.db().await?)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn purge_ended_sessions(
                &self,
                before: Millis,
                idle_before: Millis,
            ) -> StoreResult<u64> {
                // Their refresh tokens go with them (on delete cascade).
                let done = sqlx::query(
                    "delete from session where expires_at <= $1 or revoked_at <= $1 \
                     or last_used_at <= $2",
                )
                .bind(before)
                .bind(idle_before)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected())
            }

            async fn register_user(
                &self,
                user: &UserRow,
                credential: &CredentialRow,
                session: &SessionRow,
                refresh_hash: &str,
            ) -> StoreResult<()> {
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                sqlx::query(
                    "insert into app_user (user_id, username, display_name, email, \
                     email_verified, roles, locked_at, created_at) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&user.user_id)
                .bind(&user.username)
                .bind(&user.display_name)
                .bind(&user.email)
                .bind(user.email_verified)
                .bind(&user.roles)
                .bind(user.locked_at)
                .bind(user.created_at)
                .execute(&mut *tx)
                .await?;
                insert_credential(&mut tx, credential).await?;
                insert_session(&mut tx, session, refresh_hash).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn record_credential_use(&self, used: &CredentialUse) -> StoreResult<bool> {
                let updated = sqlx::query(COUNTED_USE).bind(&used.credential_id).bind(used.backup_eligible)
                    .bind(used.sign_count).bind(used.backup_state).bind(used.used_at)
                    .execute(&mut *self.db().await?).await?;
                Ok(updated.rows_affected() == 1)
            }

            async fn complete_login(
                &self,
                login: &$crate::store::LoginRows<'_>,
            ) -> StoreResult<$crate::store::LoginStored> {
                // The one statement that differs by engine (see the store's
                // `store_login`).
                self.store_login(login).await
            }

            async fn rotate_refresh(
                &self,
                old_hash: &str,
                new_hash: &str,
                now: Millis,
                idle_before: Millis,
            ) -> StoreResult<RefreshOutcome> {
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                // Retire first: of two racing presentations of one token,
                // exactly one wins this update; the other sees it retired.
                // A refusal after this point rolls the retirement back.
                let live: Option<(String,)> = sqlx::query_as(
                    "update refresh_token set retired_at = $2 \
                     where token_hash = $1 and retired_at is null returning session_id",
                )
                .bind(old_hash)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((session_id,)) = live else {
                    let known: Option<(String,)> =
                        sqlx::query_as("select session_id from refresh_token where token_hash = $1")
                            .bind(old_hash)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let Some((session_id,)) = known else {
                        tx.rollback().await?;
                        return Ok(RefreshOutcome::Invalid);
                    };
                    // RFC 9700 §4.14.2: a retired refresh token presented
                    // again means it leaked; end the whole session.
                    sqlx::query(
                        "update session set revoked_at = $2 \
                         where session_id = $1 and revoked_at is null",
                    )
                    .bind(&session_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    return Ok(RefreshOutcome::Reused);
                };
                let session: Option<SessionRow> = sqlx::query_as(
                    "update session set last_used_at = $2 where session_id = $1 \
                     and revoked_at is null and expires_at > $2 and last_used_at > $3 \
                     and user_id in (select user_id from app_user where locked_at is null) \
                     returning *",
                )
                .bind(&session_id)
                .bind(now)
                .bind(idle_before)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(session) = session else {
                    tx.rollback().await?;
                    return Ok(RefreshOutcome::Invalid);
                };
                sqlx::query(
                    "insert into refresh_token (token_hash, session_id, created_at) \
                     values ($1, $2, $3)",
                )
                .bind(new_hash)
                .bind(&session_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(RefreshOutcome::Rotated(session))
            }

            async fn end_session_by_refresh(
                &self,
                token_hash: &str,
                now: Millis,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "update session set revoked_at = $2 where revoked_at is null and session_id = \
                     (select session_id from refresh_token where token_hash = $1)",
                )
                .bind(token_hash)
                .bind(now)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn find_session(&self, session_id: &str) -> StoreResult<Option<SessionRow>> {
                Ok(sqlx::query_as::<_, SessionRow>("select * from session where session_id = $1")
                    .bind(session_id)
                    .fetch_optional(&mut *self.db().await?)
                    .await?)
            }

            async fn find_session_signed_by(
                &self,
                session_id: &str,
                kid: &str,
            ) -> StoreResult<Option<(SessionRow, bool)>> {
                #[derive(sqlx::FromRow)]
                struct Row {
                    #[sqlx(flatten)]
                    session: SessionRow,
                    key_live: bool,
                }
                let row = sqlx::query_as::<_, Row>(
                    "select session.*, exists (select 1 from signing_key \
                     where kid = $2 and revoked_at is null) as key_live \
                     from session where session_id = $1",
                )
                .bind(session_id)
                .bind(kid)
                .fetch_optional(&mut *self.db().await?)
                .await?;
                Ok(row.map(|row| (row.session, row.key_live)))
            }

            async fn revoke_signing_key(
                &self,
                kid: &str,
                now: Millis,
                activate: Option<&str>,
                replacement: Option<&SigningKeyRow>,
            ) -> StoreResult<bool> {
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let revoked = sqlx::query(
                    "update signing_key set revoked_at = $2 where kid = $1 and revoked_at is null",
                )
                .bind(kid)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if revoked == 0 {
                    return Ok(false);
                }
                if let Some(next) = activate {
                    sqlx::query("update signing_key set active_from = $2 where kid = $1")
                        .bind(next)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(key) = replacement {
                    insert_signing_key(&mut tx, key).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
                Ok(sqlx::query_as::<_, SigningKeyRow>(
                    "select * from signing_key order by created_at desc, kid desc",
                )
                .fetch_all(&mut *self.db().await?)
                .await?)
            }

            async fn add_signing_key(&self, key: &SigningKeyRow) -> StoreResult<()> {
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                insert_signing_key(&mut tx, key).await?;
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
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                insert_signing_key(&mut tx, key).await?;
                sqlx::query(
                    "update signing_key set retired_at = $1 \
                     where retired_at is null and kid <> $2 and kid <> $3",
                )
                .bind(now)
                .bind(&key.kid)
                .bind(keep_kid)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn password_hash(&self, user_id: &str) -> StoreResult<Option<String>> {
                let row: Option<(String,)> =
                    sqlx::query_as("select phc from user_password where user_id = $1")
                        .bind(user_id)
                        .fetch_optional(&mut *self.db().await?)
                        .await?;
                Ok(row.map(|(phc,)| phc))
            }

            async fn set_password(&self, user_id: &str, phc: &str, now: Millis) -> StoreResult<()> {
                sqlx::query(
                    "insert into user_password (user_id, phc, updated_at) values ($1, $2, $3) \
                     on conflict (user_id) do update set phc = excluded.phc, \
                     updated_at = excluded.updated_at",
                )
                .bind(user_id)
                .bind(phc)
                .bind(now)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(())
            }

            async fn upgrade_password(&self, user_id: &str, old: &str, new: &str) -> StoreResult<bool> {
                let done = sqlx::query("update user_password set phc = $3 where user_id = $1 and phc = $2")
                    .bind(user_id)
                    .bind(old)
                    .bind(new)
                    .execute(&mut *self.db().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn factor_counts(&self, user_id: &str) -> StoreResult<FactorCounts> {
                Ok(sqlx::query_as::<_, FactorCounts>(
                    "select (select count(*) from user_password where user_id = $1) as passwords, \
                     (select count(*) from user_totp where user_id = $1 \
                      and confirmed_at is not null) as totp, \
                     (select count(*) from recovery_code where user_id = $1 \
                      and used_at is null) as recovery_codes",
                )
                .bind(user_id)
                .fetch_one(&mut *self.db().await?)
                .await?)
            }

            async fn totp(&self, user_id: &str) -> StoreResult<Option<TotpRow>> {
                Ok(sqlx::query_as::<_, TotpRow>("select * from user_totp where user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&mut *self.db().await?)
                    .await?)
            }

            async fn put_pending_totp(
                &self,
                user_id: &str,
                sealed: &str,
                now: Millis,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "insert into user_totp (user_id, secret, confirmed_at, last_step, created_at) \
                     values ($1, $2, null, 0, $3) on conflict (user_id) do update \
                     set secret = excluded.secret, created_at = excluded.created_at, last_step = 0 \
                     where user_totp.confirmed_at is null",
                )
                .bind(user_id)
                .bind(sealed)
                .bind(now)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
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
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let done = sqlx::query(
                    "update user_totp set confirmed_at = $3, last_step = $2 \
                     where user_id = $1 and confirmed_at is null and last_step < $2 \
                     and secret = $4",
                )
                .bind(user_id)
                .bind(step)
                .bind(now)
                .bind(sealed)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                insert_recovery_codes(&mut tx, user_id, recovery_hashes, now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn use_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "update user_totp set last_step = $2 \
                     where user_id = $1 and confirmed_at is not null and last_step < $2",
                )
                .bind(user_id)
                .bind(step)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_totp(&self, user_id: &str) -> StoreResult<bool> {
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let done = sqlx::query("delete from user_totp where user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("delete from recovery_code where user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn replace_recovery_codes(
                &self,
                user_id: &str,
                hashes: &[String],
                now: Millis,
            ) -> StoreResult<()> {
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                insert_recovery_codes(&mut tx, user_id, hashes, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn use_recovery_code(
                &self,
                user_id: &str,
                hash: &str,
                now: Millis,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "update recovery_code set used_at = $3 \
                     where user_id = $1 and code_hash = $2 and used_at is null",
                )
                .bind(user_id)
                .bind(hash)
                .bind(now)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn put_mfa_token(
                &self,
                token_hash: &str,
                user_id: &str,
                expires_at: Millis,
                now: Millis,
            ) -> StoreResult<()> {
                sqlx::query(
                    "insert into mfa_token (token_hash, user_id, expires_at, created_at) \
                     values ($1, $2, $3, $4)",
                )
                .bind(token_hash)
                .bind(user_id)
                .bind(expires_at)
                .bind(now)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(())
            }

            async fn mfa_token_user(
                &self,
                token_hash: &str,
                now: Millis,
            ) -> StoreResult<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as(
                    "select user_id from mfa_token where token_hash = $1 and expires_at > $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&mut *self.db().await?)
                .await?;
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
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let taken = sqlx::query(
                    "delete from mfa_token where token_hash = $1 and user_id = $2 and expires_at > $3",
                )
                .bind(token_hash)
                .bind(&session.user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if taken.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                insert_session(&mut tx, session, refresh_hash).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn put_email_code(
                &self,
                code: &EmailCodeRow,
                resend_before: Millis,
            ) -> StoreResult<bool> {
                let stored = sqlx::query(
                    "insert into email_code (purpose, user_id, code_hash, address, tries, \
                     sent_at, expires_at) values ($1, $2, $3, $4, $5, $6, $7) \
                     on conflict (purpose, user_id) do update set code_hash = excluded.code_hash, \
                     address = excluded.address, tries = excluded.tries, \
                     sent_at = excluded.sent_at, expires_at = excluded.expires_at \
                     where email_code.sent_at <= $8 or email_code.expires_at <= $6",
                )
                .bind(&code.purpose)
                .bind(&code.user_id)
                .bind(&code.code_hash)
                .bind(&code.address)
                .bind(code.tries)
                .bind(code.sent_at)
                .bind(code.expires_at)
                .bind(resend_before)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(stored.rows_affected() == 1)
            }

            async fn email_code(
                &self,
                purpose: &str,
                user_id: &str,
            ) -> StoreResult<Option<EmailCodeRow>> {
                Ok(sqlx::query_as::<_, EmailCodeRow>(
                    "select * from email_code where purpose = $1 and user_id = $2",
                )
                .bind(purpose)
                .bind(user_id)
                .fetch_optional(&mut *self.db().await?)
                .await?)
            }

            async fn try_email_code(
                &self,
                purpose: &str,
                user_id: &str,
                max_tries: i32,
                now: Millis,
            ) -> StoreResult<Option<EmailCodeRow>> {
                Ok(sqlx::query_as::<_, EmailCodeRow>(
                    "update email_code set tries = tries + 1 where purpose = $1 and user_id = $2 \
                     and tries < $3 and expires_at > $4 returning *",
                )
                .bind(purpose)
                .bind(user_id)
                .bind(max_tries)
                .bind(now)
                .fetch_optional(&mut *self.db().await?)
                .await?)
            }

            async fn take_email_code(
                &self,
                purpose: &str,
                user_id: &str,
                code_hash: &str,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "delete from email_code where purpose = $1 and user_id = $2 and code_hash = $3",
                )
                .bind(purpose)
                .bind(user_id)
                .bind(code_hash)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_email(&self, user_id: &str, email: &str) -> StoreResult<()> {
                sqlx::query(
                    "update app_user set email = $2, email_verified = false where user_id = $1",
                )
                .bind(user_id)
                .bind(email)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(())
            }

            async fn verify_email(&self, user_id: &str, address: &str) -> StoreResult<bool> {
                let done = sqlx::query(
                    "update app_user set email = $2, email_verified = true where user_id = $1",
                )
                .bind(user_id)
                .bind(address)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn hit_rate_window(
                &self,
                bucket: &str,
                now: Millis,
                window_ms: i64,
            ) -> StoreResult<(i64, Millis)> {
                // One statement: two nodes counting the same bucket at
                // once both land in the one row.
                Ok(sqlx::query_as(
                    "insert into rate_window (bucket, hits, window_ends) values ($1, 1, $2 + $3) \
                     on conflict (bucket) do update set \
                     hits = case when rate_window.window_ends <= $2 then 1 \
                     else rate_window.hits + 1 end, \
                     window_ends = case when rate_window.window_ends <= $2 then $2 + $3 \
                     else rate_window.window_ends end \
                     returning hits, window_ends",
                )
                .bind(bucket)
                .bind(now)
                .bind(window_ms)
                .fetch_one(&mut *self.db().await?)
                .await?)
            }

            async fn locked_until(&self, subject: &str) -> StoreResult<Millis> {
                let row: Option<(i64,)> =
                    sqlx::query_as("select locked_until from login_failure where subject = $1")
                        .bind(subject)
                        .fetch_optional(&mut *self.db().await?)
                        .await?;
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
                // One statement, so that a burst of attempts at once is
                // counted one by one: the attempt that reaches `lock_from`
                // locks the subject before it is checked, and the rest of
                // the burst finds it locked (no row returned).
                Ok(sqlx::query_as(
                    "insert into login_failure (subject, failures, streak, locked_until, updated_at) \
                     values ($1, 1, 1, case when 1 >= $4 then $5 else 0 end, $2) \
                     on conflict (subject) do update set \
                     failures = login_failure.failures + 1, \
                     streak = case when login_failure.updated_at < $3 then 1 \
                     else login_failure.streak + 1 end, \
                     locked_until = case when login_failure.failures + 1 >= $4 then $5 \
                     else login_failure.locked_until end, \
                     updated_at = $2 \
                     where login_failure.locked_until <= $2 \
                     returning failures, streak",
                )
                .bind(subject)
                .bind(now)
                .bind(quiet_before)
                .bind(lock_from)
                .bind(provisional_until)
                .fetch_optional(&mut *self.db().await?)
                .await?)
            }

            async fn return_attempt(
                &self,
                subject: &str,
                provisional_until: Millis,
            ) -> StoreResult<()> {
                // The lock goes with the attempt only if it is the one this
                // attempt set (a later failure's lock has another time).
                sqlx::query(
                    "update login_failure set failures = failures - 1, \
                     streak = case when streak > 0 then streak - 1 else 0 end, \
                     locked_until = case when locked_until = $2 then 0 else locked_until end \
                     where subject = $1 and failures > 0",
                )
                .bind(subject)
                .bind(provisional_until)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(())
            }

            async fn lock_subject(&self, subject: &str, until: Millis) -> StoreResult<()> {
                sqlx::query("update login_failure set locked_until = $2 where subject = $1")
                    .bind(subject)
                    .bind(until)
                    .execute(&mut *self.db().await?)
                    .await?;
                Ok(())
            }

            async fn clear_failures(&self, subject: &str) -> StoreResult<()> {
                sqlx::query("delete from login_failure where subject = $1")
                    .bind(subject)
                    .execute(&mut *self.db().await?)
                    .await?;
                Ok(())
            }

            async fn purge_fallback(&self, now: Millis, forget_before: Millis) -> StoreResult<u64> {
                let mut purged = 0;
                for (query, cutoff) in [
                    ("delete from mfa_token where expires_at <= $1", now),
                    ("delete from email_code where expires_at <= $1", now),
                    ("delete from rate_window where window_ends <= $1", now),
                    // A count runs until a sign-in, for names that are no
                    // account as for accounts (else a count forgotten
                    // sooner would tell them apart); a name quiet for 30
                    // days is forgotten, so a spray of made-up names
                    // cannot fill the table for good.
                    (
                        "delete from login_failure where updated_at < $1 and locked_until < $1 \
                         and failures = 0",
                        forget_before.min(now),
                    ),
                    (
                        "delete from login_failure where subject like 'name:%' and updated_at < $1",
                        now - $crate::store::sql::NAMES_FORGOTTEN_AFTER_MS,
                    ),
                ] {
                    purged += sqlx::query(query).bind(cutoff).execute(&mut *self.db().await?).await?.rows_affected();
                }
                Ok(purged)
            }

            async fn add_credential(&self, credential: &CredentialRow) -> StoreResult<()> {
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                insert_credential(&mut tx, credential).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rename_credential(
                &self,
                user_id: &str,
                device_id: &str,
                name: &str,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "update credential set name = $3 where user_id = $1 and device_id = $2",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(name)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_credential(
                &self,
                user_id: &str,
                device_id: &str,
                keep_one: bool,
                now: Millis,
            ) -> StoreResult<$crate::store::Unbound> {
                use $crate::store::Unbound;
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                // A no-op update takes the user's row lock on PostgreSQL
                // (SQLite's write lock covers the whole database): a
                // concurrent unbind of the same user waits here, then
                // counts what this one left.
                sqlx::query("update app_user set user_id = user_id where user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                let (count,): (i64,) =
                    sqlx::query_as("select count(*) from credential where user_id = $1")
                        .bind(user_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if keep_one && count <= 1 {
                    tx.rollback().await?;
                    return Ok(Unbound::LastOne);
                }
                let done = sqlx::query("delete from credential where user_id = $1 and device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(Unbound::NotFound);
                }
                sqlx::query(
                    "update session set revoked_at = $3 \
                     where user_id = $1 and device_id = $2 and revoked_at is null",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
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
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let devices = sqlx::query("delete from credential where user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let sessions = sqlx::query(
                    "update session set revoked_at = $2 where user_id = $1 \
                     and revoked_at is null and expires_at > $2",
                )
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "insert into enrolment_code (user_id, code_hash, tries, expires_at, created_at) \
                     values ($1, $2, 0, $3, $4) on conflict (user_id) do update set \
                     code_hash = excluded.code_hash, tries = 0, \
                     expires_at = excluded.expires_at, created_at = excluded.created_at",
                )
                .bind(user_id)
                .bind(code_hash)
                .bind(expires_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok((devices, sessions))
            }

            async fn user_sessions(&self, user_id: &str, now: Millis) -> StoreResult<Vec<SessionRow>> {
                Ok(sqlx::query_as::<_, SessionRow>(
                    "select * from session where user_id = $1 and revoked_at is null \
                     and expires_at > $2 order by last_used_at desc",
                )
                .bind(user_id)
                .bind(now)
                .fetch_all(&mut *self.db().await?)
                .await?)
            }

            async fn end_session(&self, user_id: &str, session_id: &str, now: Millis) -> StoreResult<bool> {
                let done = sqlx::query(
                    "update session set revoked_at = $3 where user_id = $1 \
                     and session_id = $2 and revoked_at is null",
                )
                .bind(user_id)
                .bind(session_id)
                .bind(now)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn void_fallback_steps(&self, user_id: &str) -> StoreResult<()> {
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                sqlx::query("delete from mfa_token where user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("delete from email_code where user_id = $1 and purpose = 'login'")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn end_other_sessions(
                &self,
                user_id: &str,
                keep_session_id: &str,
                now: Millis,
            ) -> StoreResult<u64> {
                let done = sqlx::query(
                    "update session set revoked_at = $3 where user_id = $1 \
                     and session_id <> $2 and revoked_at is null",
                )
                .bind(user_id)
                .bind(keep_session_id)
                .bind(now)
                .execute(&mut *self.db().await?)
                .await?;
                Ok(done.rows_affected())
            }

            async fn set_roles(&self, user_id: &str, roles: &str) -> StoreResult<bool> {
                let done = sqlx::query("update app_user set roles = $2 where user_id = $1")
                    .bind(user_id)
                    .bind(roles)
                    .execute(&mut *self.db().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_locked(
                &self,
                user_id: &str,
                locked_at: Option<Millis>,
                now: Millis,
            ) -> StoreResult<bool> {
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let done = sqlx::query("update app_user set locked_at = $2 where user_id = $1")
                    .bind(user_id)
                    .bind(locked_at)
                    .execute(&mut *tx)
                    .await?;
                if locked_at.is_none() {
                    // An admin's unlock also opens a fallback sign-in that
                    // failures closed.
                    sqlx::query("delete from login_failure where subject = 'user:' || $1")
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                if locked_at.is_some() {
                    // A locked account keeps no session.
                    sqlx::query(
                        "update session set revoked_at = $2 where user_id = $1 and revoked_at is null",
                    )
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn search_users(
                &self,
                query: &str,
                after: &str,
                limit: i64,
            ) -> StoreResult<Vec<UserRow>> {
                // LIKE wildcards in the query are matched literally.
                let escaped = query.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                let pattern = format!("%{escaped}%");
                Ok(sqlx::query_as::<_, UserRow>(
                    "select * from app_user where (username like $1 escape '\\' \
                     or lower(display_name) like $1 escape '\\' \
                     or lower(coalesce(email, '')) like $1 escape '\\') \
                     and username > $2 order by username limit $3",
                )
                .bind(pattern.to_lowercase())
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *self.db().await?)
                .await?)
            }

            async fn try_enrolment_code(
                &self,
                user_id: &str,
                max_tries: i32,
                now: Millis,
            ) -> StoreResult<Option<(String, Millis)>> {
                Ok(sqlx::query_as(
                    "update enrolment_code set tries = tries + 1 where user_id = $1 \
                     and tries < $2 and expires_at > $3 returning code_hash, expires_at",
                )
                .bind(user_id)
                .bind(max_tries)
                .bind(now)
                .fetch_optional(&mut *self.db().await?)
                .await?)
            }

            async fn return_enrolment_try(&self, user_id: &str, code_hash: &str) -> StoreResult<()> {
                sqlx::query(
                    "update enrolment_code set tries = tries - 1 \
                     where user_id = $1 and code_hash = $2 and tries > 0",
                )
                .bind(user_id)
                .bind(code_hash)
                .execute(&mut *self.db().await?)
                .await?;
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
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let taken = sqlx::query(
                    "delete from enrolment_code where user_id = $1 and code_hash = $2",
                )
                .bind(&credential.user_id)
                .bind(code_hash)
                .execute(&mut *tx)
                .await?;
                if taken.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                insert_credential(&mut tx, credential).await?;
                insert_session(&mut tx, session, refresh_hash).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn append_audit(&self, event: &AuditRow) -> StoreResult<()> {
                insert_audit(&mut *self.db().await?, event).await
            }

            async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
                // Absent filters are nulls that match everything; one text
                // per order for both engines and every combination.
                macro_rules! audit_page {
                    ($after:literal, $order:literal) => {
                        concat!(
                            "select * from audit_event where \
                             ($1 is null or user_id = $1) and ($2 is null or event = $2) \
                             and ($3 is null or occurred_at >= $3) \
                             and ($4 is null or occurred_at < $4) \
                             and ($5 is null or event_id ", $after, " $5) \
                             order by event_id ", $order, " limit $6"
                        )
                    };
                }
                let sql = if filter.newest_first {
                    audit_page!("<", "desc")
                } else {
                    audit_page!(">", "asc")
                };
                Ok(sqlx::query_as::<_, AuditRow>(sql)
                .bind(&filter.user_id)
                .bind(&filter.event)
                .bind(filter.since)
                .bind(filter.until)
                .bind(&filter.after)
                .bind(filter.limit)
                .fetch_all(&mut *self.db().await?)
                .await?)
            }

            async fn shared_secret(
                &self,
                name: &str,
                candidate: &str,
                now: Millis,
            ) -> StoreResult<String> {
                sqlx::query(
                    "insert into server_secret (name, value, created_at) values ($1, $2, $3) \
                     on conflict (name) do nothing",
                )
                .bind(name)
                .bind(candidate)
                .bind(now)
                .execute(&mut *self.db().await?)
                .await?;
                let (value,): (String,) =
                    sqlx::query_as("select value from server_secret where name = $1")
                        .bind(name)
                        .fetch_one(&mut *self.db().await?)
                        .await?;
                Ok(value)
            }
            async fn rewrite_secrets(
                &self,
                only_unsealed: bool,
                rewrite: &$crate::store::RewriteSecret<'_>,
            ) -> StoreResult<u64> {
                // One text per table: (select, update). `$1 = false` keeps
                // every row; sealed values start with `sealed:`.
                const TABLES: [(&str, &str); 3] = [
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
                let mut conn = self.db().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let mut rewritten = 0;
                for (table, (select, update)) in TABLES.into_iter().enumerate() {
                    let rows: Vec<(String, String)> = sqlx::query_as(select)
                        .bind(only_unsealed)
                        .fetch_all(&mut *tx)
                        .await?;
                    for (id, value) in rows {
                        let place = match table {
                            0 => SecretPlace::SigningKey { kid: &id },
                            1 => SecretPlace::Totp { user_id: &id },
                            _ => SecretPlace::ServerSecret { name: &id },
                        };
                        let Some(new) = rewrite(place, &value).map_err(StoreError::Other)? else {
                            continue;
                        };
                        rewritten += sqlx::query(update)
                            .bind(&id)
                            .bind(&value)
                            .bind(&new)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    }
                }
                tx.commit().await?;
                Ok(rewritten)
            }
        }

        async fn insert_credential(
            tx: &mut sqlx::Transaction<'_, Db>,
            credential: &CredentialRow,
        ) -> StoreResult<()> {
            sqlx::query(
                "insert into credential (credential_id, device_id, user_id, name, passkey, \
                 sign_count, backup_eligible, backup_state, aaguid, transports, created_at, \
                 last_used_at, payments_after) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&credential.credential_id)
            .bind(&credential.device_id)
            .bind(&credential.user_id)
            .bind(&credential.name)
            .bind(&credential.passkey)
            .bind(credential.sign_count)
            .bind(credential.backup_eligible)
            .bind(credential.backup_state)
            .bind(&credential.aaguid)
            .bind(&credential.transports)
            .bind(credential.created_at)
            .bind(credential.last_used_at)
            .bind(credential.payments_after)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        async fn insert_recovery_codes(
            tx: &mut sqlx::Transaction<'_, Db>,
            user_id: &str,
            hashes: &[String],
            now: Millis,
        ) -> StoreResult<()> {
            sqlx::query("delete from recovery_code where user_id = $1")
                .bind(user_id)
                .execute(&mut **tx)
                .await?;
            for hash in hashes {
                sqlx::query(
                    "insert into recovery_code (user_id, code_hash, used_at, created_at) \
                     values ($1, $2, null, $3)",
                )
                .bind(user_id)
                .bind(hash)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }

        async fn insert_signing_key(
            tx: &mut sqlx::Transaction<'_, Db>,
            key: &SigningKeyRow,
        ) -> StoreResult<()> {
            sqlx::query(
                "insert into signing_key (kid, algorithm, private_key, public_jwk, \
                 created_at, retired_at, active_from, revoked_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(&key.private_key)
            .bind(&key.public_jwk)
            .bind(key.created_at)
            .bind(key.retired_at)
            .bind(key.active_from)
            .bind(key.revoked_at)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

        /// Binds an audit row's eleven columns, in table order, after
        /// whatever `query` has bound so far.
        fn bind_audit<'q>(query: Query<'q>, event: &'q AuditRow) -> Query<'q> {
            query
                .bind(&event.event_id)
                .bind(event.occurred_at)
                .bind(&event.event)
                .bind(&event.outcome)
                .bind(&event.user_id)
                .bind(&event.actor_id)
                .bind(&event.device_id)
                .bind(&event.client_ip)
                .bind(&event.user_agent)
                .bind(&event.reason)
                .bind(&event.request_id)
        }

        /// Binds a ceremony row's five columns, in `ceremony_insert!`'s order.
        fn bind_ceremony<'q>(query: Query<'q>, ceremony: &'q CeremonyRow) -> Query<'q> {
            query
                .bind(&ceremony.ceremony_id)
                .bind(&ceremony.kind)
                .bind(&ceremony.user_id)
                .bind(&ceremony.state)
                .bind(ceremony.expires_at)
        }

        /// Binds a session row's ten columns, in table order.
        fn bind_session<'q>(query: Query<'q>, session: &'q SessionRow) -> Query<'q> {
            query
                .bind(&session.session_id)
                .bind(&session.user_id)
                .bind(&session.device_id)
                .bind(&session.amr)
                .bind(&session.client_ip)
                .bind(&session.user_agent)
                .bind(session.created_at)
                .bind(session.last_used_at)
                .bind(session.expires_at)
                .bind(session.revoked_at)
        }

        async fn insert_audit<'e, E>(executor: E, event: &AuditRow) -> StoreResult<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let query = sqlx::query(concat!(
                "insert into ",
                $crate::store::sql::audit_columns!(),
                " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ));
            bind_audit(query, event).execute(executor).await?;
            Ok(())
        }

        async fn insert_session(
            tx: &mut sqlx::Transaction<'_, Db>,
            session: &SessionRow,
            refresh_hash: &str,
        ) -> StoreResult<()> {
            let query = sqlx::query(concat!(
                "insert into ",
                $crate::store::sql::session_columns!(),
                " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ));
            bind_session(query, session).execute(&mut **tx).await?;
            sqlx::query(
                "insert into refresh_token (token_hash, session_id, created_at) values ($1, $2, $3)",
            )
            .bind(refresh_hash)
            .bind(&session.session_id)
            .bind(session.created_at)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    };
}

pub(crate) use {audit_columns, ceremony_insert, ceremony_into, impl_store, session_columns};
