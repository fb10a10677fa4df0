//! Sessions and the refresh tokens that keep them going.

use async_trait::async_trait;
use sqlx::Connection;

use super::engine::{Arg, Engine, Sql};
use super::{RefreshOutcome, SessionRow, StoreResult};
use crate::clock::Millis;

#[async_trait]
pub trait SessionStore: Send + Sync {
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
    async fn user_sessions(&self, user_id: &str, now: Millis) -> StoreResult<Vec<SessionRow>>;
    async fn end_session(&self, user_id: &str, session_id: &str, now: Millis) -> StoreResult<bool>;
    /// Ends every live session of the user but one; returns how many.
    async fn end_other_sessions(
        &self,
        user_id: &str,
        keep_session_id: &str,
        now: Millis,
    ) -> StoreResult<u64>;
    /// Deletes sessions (and their refresh tokens) that expired or were
    /// ended before `before`, or were last used before `idle_before`.
    async fn purge_ended_sessions(&self, before: Millis, idle_before: Millis) -> StoreResult<u64>;
}

/// Opens a session with its first refresh token.
pub(crate) const INSERT_SESSION: &str = "insert into session (session_id, user_id, device_id, \
     amr, client_ip, user_agent, created_at, last_used_at, expires_at, revoked_at) \
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

const INSERT_REFRESH: &str =
    "insert into refresh_token (token_hash, session_id, created_at) values ($1, $2, $3)";

/// A session row's ten columns, in table order (as `INSERT_SESSION` and the
/// sign-in's writes name them).
pub(crate) fn session_args(session: &SessionRow) -> [Arg<'_>; 10] {
    [
        (&session.session_id).into(),
        (&session.user_id).into(),
        (&session.device_id).into(),
        (&session.amr).into(),
        (&session.client_ip).into(),
        (&session.user_agent).into(),
        session.created_at.into(),
        session.last_used_at.into(),
        session.expires_at.into(),
        session.revoked_at.into(),
    ]
}

pub(crate) async fn insert_session<C: Sql>(
    conn: &mut C,
    session: &SessionRow,
    refresh_hash: &str,
) -> StoreResult<()> {
    conn.execute(INSERT_SESSION, &session_args(session)).await?;
    let args = [refresh_hash.into(), (&session.session_id).into(), session.created_at.into()];
    conn.execute(INSERT_REFRESH, &args).await?;
    Ok(())
}

/// A session with whether a signing key is live.
#[derive(sqlx::FromRow)]
struct SignedSession {
    #[sqlx(flatten)]
    session: SessionRow,
    key_live: bool,
}

#[async_trait]
impl<E: Engine> SessionStore for E {
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: Millis,
        idle_before: Millis,
    ) -> StoreResult<RefreshOutcome> {
        let mut conn = self.db().await?;
        let mut tx = conn.begin().await?;
        // Retire first: of two racing presentations of one token, exactly
        // one wins this update; the other sees it retired. A refusal after
        // this point rolls the retirement back.
        let retire = "update refresh_token set retired_at = $2 \
                      where token_hash = $1 and retired_at is null returning session_id";
        let live: Option<(String,)> =
            tx.fetch_optional(retire, &[old_hash.into(), now.into()]).await?;
        let Some((session_id,)) = live else {
            let known = "select session_id from refresh_token where token_hash = $1";
            let known: Option<(String,)> = tx.fetch_optional(known, &[old_hash.into()]).await?;
            let Some((session_id,)) = known else {
                tx.rollback().await?;
                return Ok(RefreshOutcome::Invalid);
            };
            // RFC 9700 §4.14.2: a retired refresh token presented again
            // means it leaked; end the whole session.
            let end = "update session set revoked_at = $2 \
                       where session_id = $1 and revoked_at is null";
            tx.execute(end, &[(&session_id).into(), now.into()]).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused);
        };
        let touch = "update session set last_used_at = $2 where session_id = $1 \
                     and revoked_at is null and expires_at > $2 and last_used_at > $3 \
                     and user_id in (select user_id from app_user where locked_at is null) \
                     returning *";
        let args = [(&session_id).into(), now.into(), idle_before.into()];
        let session: Option<SessionRow> = tx.fetch_optional(touch, &args).await?;
        let Some(session) = session else {
            tx.rollback().await?;
            return Ok(RefreshOutcome::Invalid);
        };
        tx.execute(INSERT_REFRESH, &[new_hash.into(), (&session_id).into(), now.into()]).await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated(session))
    }

    async fn end_session_by_refresh(&self, token_hash: &str, now: Millis) -> StoreResult<bool> {
        let sql = "update session set revoked_at = $2 where revoked_at is null and session_id = \
                   (select session_id from refresh_token where token_hash = $1)";
        Ok(self.db().await?.execute(sql, &[token_hash.into(), now.into()]).await? == 1)
    }

    async fn find_session(&self, session_id: &str) -> StoreResult<Option<SessionRow>> {
        let sql = "select * from session where session_id = $1";
        Ok(self.db().await?.fetch_optional(sql, &[session_id.into()]).await?)
    }

    async fn find_session_signed_by(
        &self,
        session_id: &str,
        kid: &str,
    ) -> StoreResult<Option<(SessionRow, bool)>> {
        let sql = "select session.*, exists (select 1 from signing_key \
                   where kid = $2 and revoked_at is null) as key_live \
                   from session where session_id = $1";
        let args = [session_id.into(), kid.into()];
        let row: Option<SignedSession> = self.db().await?.fetch_optional(sql, &args).await?;
        Ok(row.map(|row| (row.session, row.key_live)))
    }

    async fn user_sessions(&self, user_id: &str, now: Millis) -> StoreResult<Vec<SessionRow>> {
        let sql = "select * from session where user_id = $1 and revoked_at is null \
                   and expires_at > $2 order by last_used_at desc";
        Ok(self.db().await?.fetch_all(sql, &[user_id.into(), now.into()]).await?)
    }

    async fn end_session(&self, user_id: &str, session_id: &str, now: Millis) -> StoreResult<bool> {
        let sql = "update session set revoked_at = $3 where user_id = $1 \
                   and session_id = $2 and revoked_at is null";
        let args = [user_id.into(), session_id.into(), now.into()];
        Ok(self.db().await?.execute(sql, &args).await? == 1)
    }

    async fn end_other_sessions(
        &self,
        user_id: &str,
        keep_session_id: &str,
        now: Millis,
    ) -> StoreResult<u64> {
        let sql = "update session set revoked_at = $3 where user_id = $1 \
                   and session_id <> $2 and revoked_at is null";
        let args = [user_id.into(), keep_session_id.into(), now.into()];
        Ok(self.db().await?.execute(sql, &args).await?)
    }

    async fn purge_ended_sessions(&self, before: Millis, idle_before: Millis) -> StoreResult<u64> {
        // Their refresh tokens go with them (on delete cascade).
        let sql = "delete from session where expires_at <= $1 or revoked_at <= $1 \
                   or last_used_at <= $2";
        Ok(self.db().await?.execute(sql, &[before.into(), idle_before.into()]).await?)
    }
}
