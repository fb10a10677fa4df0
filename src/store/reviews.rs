//! The risk review queue (issue 20 item 3): sign-ins and payments that the
//! risk rules held, and what admins and owners did with them.

use async_trait::async_trait;

use super::engine::{Arg, Engine, Sql};
use super::{StoreResult, UserRow};
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

/// A review with its owner's username, for the admins' queue.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct QueuedReview {
    #[sqlx(flatten)]
    pub review: ReviewRow,
    pub username: String,
}

/// Which reviews a page of the queue holds; every filter optional.
/// `expires_after` keeps rows still good at that time, `expired_by` rows
/// no longer good then; `after` is the last `review_id` of the previous
/// page (ids are UUIDv7, so their order is the order they were made in).
#[derive(Clone, Debug, Default)]
pub struct ReviewFilter {
    pub status: Option<String>,
    pub expires_after: Option<Millis>,
    pub expired_by: Option<Millis>,
    pub after: Option<String>,
    pub limit: i64,
}

/// An admin's decision on a held review.
#[derive(Clone, Debug)]
pub struct ReviewDecision<'a> {
    pub review_id: &'a str,
    /// `approved` or `denied`.
    pub status: &'a str,
    pub decided_by: &'a str,
    pub reason: &'a str,
    pub now: Millis,
    /// Until when the outcome holds: an approval's window to try again.
    pub expires_at: Millis,
}

#[async_trait]
pub trait ReviewStore: Send + Sync {
    async fn insert_review(&self, review: &ReviewRow) -> StoreResult<()>;
    async fn find_review(&self, review_id: &str) -> StoreResult<Option<ReviewRow>>;
    /// One page of the queue, oldest first.
    async fn review_page(&self, filter: &ReviewFilter) -> StoreResult<Vec<QueuedReview>>;
    /// Records the decision if the review is still held and unexpired at
    /// `now`; false otherwise. Of two deciding at once, one wins.
    async fn decide_review(&self, decision: &ReviewDecision<'_>) -> StoreResult<bool>;
    /// Records the owner's appeal if the review is still held, unexpired
    /// at `now`, and not yet appealed; false otherwise.
    async fn appeal_review(&self, review_id: &str, message: &str, now: Millis)
    -> StoreResult<bool>;
    /// Deletes reviews that expired before `before`; how many.
    async fn purge_reviews(&self, before: Millis) -> StoreResult<u64>;
    /// Unlocked admins with a verified address: who hears of an appeal.
    async fn review_admins(&self) -> StoreResult<Vec<UserRow>>;
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

const FIND_REVIEW: &str = "select * from risk_review where review_id = $1";

const REVIEW_PAGE: &str = "select r.*, u.username from risk_review r \
     join app_user u on u.user_id = r.user_id where \
     ($1 is null or r.status = $1) and ($2 is null or r.expires_at > $2) \
     and ($3 is null or r.expires_at <= $3) and ($4 is null or r.review_id > $4) \
     order by r.review_id limit $5";

const DECIDE_REVIEW: &str = "update risk_review set status = $2, decided_by = $3, \
     decision_reason = $4, decided_at = $5, expires_at = $6 \
     where review_id = $1 and status = 'held' and expires_at > $5";

const APPEAL_REVIEW: &str = "update risk_review set appeal = $2, appealed_at = $3 \
     where review_id = $1 and status = 'held' and appeal is null and expires_at > $3";

const PURGE_REVIEWS: &str = "delete from risk_review where expires_at < $1";

// Roles are stored comma-separated (domain::Roles::to_stored).
const REVIEW_ADMINS: &str = "select * from app_user where email is not null \
     and email_verified = true and locked_at is null \
     and ',' || roles || ',' like '%,admin,%' order by username";

#[async_trait]
impl<E: Engine> ReviewStore for E {
    async fn find_review(&self, review_id: &str) -> StoreResult<Option<ReviewRow>> {
        Ok(self.db().await?.fetch_optional(FIND_REVIEW, &[review_id.into()]).await?)
    }

    async fn review_page(&self, filter: &ReviewFilter) -> StoreResult<Vec<QueuedReview>> {
        let args = [
            (&filter.status).into(),
            filter.expires_after.into(),
            filter.expired_by.into(),
            (&filter.after).into(),
            filter.limit.into(),
        ];
        Ok(self.db().await?.fetch_all(REVIEW_PAGE, &args).await?)
    }

    async fn decide_review(&self, decision: &ReviewDecision<'_>) -> StoreResult<bool> {
        let args = [
            decision.review_id.into(),
            decision.status.into(),
            decision.decided_by.into(),
            decision.reason.into(),
            decision.now.into(),
            decision.expires_at.into(),
        ];
        Ok(self.db().await?.execute(DECIDE_REVIEW, &args).await? == 1)
    }

    async fn appeal_review(
        &self,
        review_id: &str,
        message: &str,
        now: Millis,
    ) -> StoreResult<bool> {
        let args = [review_id.into(), message.into(), now.into()];
        Ok(self.db().await?.execute(APPEAL_REVIEW, &args).await? == 1)
    }

    async fn purge_reviews(&self, before: Millis) -> StoreResult<u64> {
        Ok(self.db().await?.execute(PURGE_REVIEWS, &[before.into()]).await?)
    }

    async fn review_admins(&self) -> StoreResult<Vec<UserRow>> {
        Ok(self.db().await?.fetch_all(REVIEW_ADMINS, &[]).await?)
    }

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
