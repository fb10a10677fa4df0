//! The risk review queue (issue 20 item 3): sign-ins and payments that the
//! risk rules held, and what admins and owners did with them.

use async_trait::async_trait;

use super::StoreResult;
use super::engine::{Arg, Engine, Sql};
use crate::clock::Millis;
use crate::domain::UserId;

/// One held sign-in or payment (see migrations: risk_review).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ReviewRow {
    pub review_id: String,
    pub user_id: UserId,
    pub kind: String,
    pub subject: String,
    pub status: String,
    pub score: i32,
    /// JSON array of reasons.
    pub reasons: String,
    /// JSON object for the reviewer.
    pub context: String,
    pub token_hash: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub appeal: Option<String>,
    pub appealed_at: Option<Millis>,
    pub decided_at: Option<Millis>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
}

#[async_trait]
pub trait ReviewStore: Send + Sync {
    async fn insert_review(&self, review: &ReviewRow) -> StoreResult<()>;
    /// Marks one approved, unexpired review of this user, kind and subject
    /// used; false when there was none. Each approval lets one attempt
    /// through, even when two race for it.
    async fn take_approval(
        &self,
        user_id: &UserId,
        kind: &str,
        subject: &str,
        now: Millis,
    ) -> StoreResult<bool>;
}

const INSERT_REVIEW: &str = "insert into risk_review (review_id, user_id, kind, subject, status, \
     score, reasons, context, token_hash, created_at, expires_at, appeal, appealed_at, \
     decided_at, decided_by, decision_reason) \
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

const TAKE_APPROVAL: &str = "update risk_review set status = 'used' where review_id = \
     (select review_id from risk_review where user_id = $1 and kind = $2 and subject = $3 \
      and status = 'approved' and expires_at > $4 order by created_at limit 1) \
     and status = 'approved'";

#[async_trait]
impl<E: Engine> ReviewStore for E {
    async fn insert_review(&self, review: &ReviewRow) -> StoreResult<()> {
        let args: [Arg<'_>; 16] = [
            (&review.review_id).into(),
            (&review.user_id).into(),
            (&review.kind).into(),
            (&review.subject).into(),
            (&review.status).into(),
            review.score.into(),
            (&review.reasons).into(),
            (&review.context).into(),
            (&review.token_hash).into(),
            review.created_at.into(),
            review.expires_at.into(),
            (&review.appeal).into(),
            review.appealed_at.into(),
            review.decided_at.into(),
            (&review.decided_by).into(),
            (&review.decision_reason).into(),
        ];
        self.db().await?.execute(INSERT_REVIEW, &args).await?;
        Ok(())
    }

    async fn take_approval(
        &self,
        user_id: &UserId,
        kind: &str,
        subject: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let args = [user_id.into(), kind.into(), subject.into(), now.into()];
        Ok(self.db().await?.execute(TAKE_APPROVAL, &args).await? == 1)
    }
}
