//! The review queue (issue 20 item 3): a held sign-in or payment waits
//! for an admin's approval or denial; its owner holds a token to see it
//! and appeal. An approval lets one later attempt of the same kind and
//! subject through, until it expires.
//!
//! Who may do what:
//! - the owner, with the review's token (given once in the 403 that held
//!   the attempt, and in the mail to the account's verified address):
//!   see the review, and appeal once while it is held. A wrong token and
//!   an unknown review look the same (404), so ids reveal nothing.
//! - an admin, with a passkey sign-in within `mfa.fresh_auth_seconds`
//!   (as for every admin action): approve or deny a held review with a
//!   reason, never one of their own account. The first decision wins;
//!   any other gets 409 `review_closed`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::admin::AdminCaller;
use super::audit::{Audit, Event};
use super::codes::CodeHasher;
use super::fresh::Freshness;
use super::locale::{Catalogue, account_language, catalogue, render};
use super::notify::Notifier;
use super::risk::{Held, HeldKind, Reason};
use crate::clock::{Clock, Millis, rfc3339};
use crate::domain::{OpaqueToken, UserId};
use crate::error::{ApiError, Result};
use crate::store::{QueuedReview, ReviewDecision, ReviewFilter, ReviewRow, Store, UserRow};

/// The purpose a review token is hashed under.
const REVIEW_PURPOSE: &str = "risk_review";
/// How long a hold, and then its approval, stays good.
const REVIEW_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a review stays readable (to its owner and the admins) after
/// it expired, before housekeeping deletes it; the audit trail keeps the
/// decision for good.
pub const KEPT_AFTER_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);
/// An admin's reason, which the owner reads: 1 to 500 characters.
pub const REASON_MAX: usize = 500;
/// An owner's appeal, which the admins read: 1 to 1000 characters.
pub const MESSAGE_MAX: usize = 1000;
/// The statuses the queue may be filtered by; `expired` is a held review
/// past its time, `all` every review.
const STATUS_FILTERS: &[&str] = &["held", "expired", "approved", "denied", "used", "all"];

/// What the owner of a held attempt is given, once.
pub struct ReviewTicket {
    pub review_id: String,
    /// Lets its holder see the review and appeal; stored only hashed.
    pub token: OpaqueToken,
}

/// A review as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewStatus {
    pub review_id: String,
    /// `signin` or `payment`.
    pub kind: String,
    /// `held`, `approved`, `denied` or `used` (an approval spent).
    pub status: String,
    /// Held or approved past `expires_at`: nothing more will happen to it.
    pub expired: bool,
    /// The rules that held it, in plain words.
    pub reasons: Vec<Reason>,
    pub created_at: String,
    /// Held: until when an admin may decide; approved: until when the
    /// approval lets one attempt through.
    pub expires_at: String,
    pub appeal: Option<String>,
    pub appealed_at: Option<String>,
    pub decided_at: Option<String>,
    /// The admin's reason, which the owner is shown.
    pub decision_reason: Option<String>,
}

/// A review as the admins see it: the owner's view, and who and what.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewItem {
    #[serde(flatten)]
    pub review: ReviewStatus,
    pub user_id: String,
    pub username: String,
    /// What an approval lets through: a payment's txn digest, or the
    /// sign-in's factor.
    pub subject: String,
    pub score: i32,
    /// What the reviewer needs to judge (network, user-agent family,
    /// amount). Never a secret.
    #[schema(value_type = Object)]
    pub context: serde_json::Value,
    /// The admin who decided.
    pub decided_by: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewPage {
    pub reviews: Vec<ReviewItem>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
pub struct Reviews {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    codes: Arc<CodeHasher>,
    audit: Audit,
    notifier: Notifier,
    fresh: Freshness,
}

impl Reviews {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        codes: Arc<CodeHasher>,
        audit: Audit,
        notifier: Notifier,
        fresh: Freshness,
    ) -> Reviews {
        Reviews { store, clock, codes, audit, notifier, fresh }
    }

    /// Puts `held` in the queue, and mails its owner why and where to
    /// appeal.
    pub async fn hold(&self, held: Held) -> Result<ReviewTicket> {
        let review_id = uuid::Uuid::now_v7().to_string();
        let token = OpaqueToken::generate();
        let now = self.clock.now_ms();
        let row = ReviewRow {
            token_hash: self.codes.hash(REVIEW_PURPOSE, &review_id, token.expose()),
            review_id: review_id.clone(),
            user_id: held.user_id,
            kind: held.kind.as_str().to_owned(),
            subject: held.subject,
            status: "held".to_owned(),
            score: held.score,
            reasons: serde_json::to_string(&held.reasons).map_err(anyhow::Error::from)?,
            context: held.context.to_string(),
            created_at: now,
            expires_at: now + REVIEW_LIFETIME.as_millis() as i64,
            appeal: None,
            appealed_at: None,
            decided_at: None,
            decided_by: None,
            decision_reason: None,
        };
        self.store.insert_review(&row).await?;
        self.mail_held(&row, &held.reasons, &token).await;
        Ok(ReviewTicket { review_id, token })
    }

    /// Whether an admin approved a held attempt like this one; if so, the
    /// approval is spent.
    pub async fn take_approval(
        &self,
        user_id: &UserId,
        kind: HeldKind,
        subject: &str,
    ) -> Result<bool> {
        let now = self.clock.now_ms();
        Ok(self.store.take_approval(user_id, kind.as_str(), subject, now).await?)
    }

    /// The review, for the holder of its token.
    pub async fn status(&self, review_id: &str, token: &str) -> Result<ReviewStatus> {
        let row = self.owned(review_id, token).await?;
        Ok(self.view(&row))
    }

    /// The owner's appeal: once, while the review is held; the admins are
    /// told by mail.
    pub async fn appeal(
        &self,
        review_id: &str,
        token: &str,
        message: &str,
    ) -> Result<ReviewStatus> {
        let row = self.owned(review_id, token).await?;
        let message = bounded("message", message, MESSAGE_MAX)?;
        let now = self.clock.now_ms();
        self.still_held(&row, now)?;
        if row.appeal.is_some() {
            // One appeal: the admins are mailed each time, and a second
            // would let the holder of a token flood their mailboxes.
            return Err(ApiError::ReviewClosed("this review was already appealed".into()));
        }
        if !self.store.appeal_review(review_id, message, now).await? {
            return Err(ApiError::ReviewClosed(
                "this review was decided or appealed meanwhile".into(),
            ));
        }
        let user_id = row.user_id.to_string();
        let reason = format!("review {review_id} ({})", row.kind);
        self.audit.record(Event::ok("review_appealed").user(&user_id).reason(&reason)).await;
        self.mail_admins(&row).await;
        let row = self.find(review_id).await?;
        Ok(self.view(&row))
    }

    /// One page of the queue, oldest first: `status` one of
    /// `STATUS_FILTERS` (default `held`: those still waiting).
    pub async fn queue(
        &self,
        _admin: &AdminCaller,
        status: Option<&str>,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<ReviewPage> {
        let status = status.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("held");
        if !STATUS_FILTERS.contains(&status) {
            let known = STATUS_FILTERS.join(", ");
            return Err(ApiError::ValidationFailed(format!(
                "status: {status:?} is not one of {known}"
            )));
        }
        let now = self.clock.now_ms();
        let limit = limit.clamp(1, 100);
        let mut filter = ReviewFilter {
            after: cursor.filter(|c| !c.is_empty()).map(str::to_owned),
            limit: limit + 1,
            ..ReviewFilter::default()
        };
        match status {
            "all" => {}
            "held" => {
                filter.status = Some("held".into());
                filter.expires_after = Some(now);
            }
            "expired" => {
                filter.status = Some("held".into());
                filter.expired_by = Some(now);
            }
            other => filter.status = Some(other.to_owned()),
        }
        let rows = self.store.review_page(&filter).await?;
        let more = rows.len() as i64 > limit;
        let reviews: Vec<ReviewItem> =
            rows.into_iter().take(limit as usize).map(|q| self.item(q)).collect();
        let next_cursor =
            more.then(|| reviews.last().map(|r| r.review.review_id.clone())).flatten();
        Ok(ReviewPage { reviews, next_cursor })
    }

    pub async fn review(&self, _admin: &AdminCaller, review_id: &str) -> Result<ReviewItem> {
        let row = self.find(review_id).await?;
        self.queued(row).await
    }

    /// Approves (`approve`) or denies a held review with `reason`, which
    /// its owner is mailed. An approval lets one attempt of the same kind
    /// and subject through within `REVIEW_LIFETIME`.
    pub async fn decide(
        &self,
        admin: &AdminCaller,
        review_id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<ReviewItem> {
        self.fresh.require_fresh_passkey(admin.claims()).await?;
        let reason = bounded("reason", reason, REASON_MAX)?;
        let row = self.find(review_id).await?;
        let admin_id = admin.claims().sub.as_str();
        if row.user_id.to_string() == admin_id {
            return Err(ApiError::Forbidden(
                "an admin cannot decide a review of their own account".into(),
            ));
        }
        let now = self.clock.now_ms();
        self.still_held(&row, now)?;
        let status = if approve { "approved" } else { "denied" };
        let expires_at =
            if approve { now + REVIEW_LIFETIME.as_millis() as i64 } else { row.expires_at };
        let decision =
            ReviewDecision { review_id, status, decided_by: admin_id, reason, now, expires_at };
        if !self.store.decide_review(&decision).await? {
            return Err(ApiError::ReviewClosed("this review was decided meanwhile".into()));
        }
        let user_id = row.user_id.to_string();
        let event = if approve { "review_approved" } else { "review_denied" };
        let why = format!("review {review_id} ({}): {reason}", row.kind);
        self.audit.record(Event::ok(event).user(&user_id).actor(admin_id).reason(&why)).await;
        let row = self.find(review_id).await?;
        self.mail_decided(&row).await;
        self.queued(row).await
    }

    async fn find(&self, review_id: &str) -> Result<ReviewRow> {
        self.store
            .find_review(review_id)
            .await?
            .ok_or_else(|| ApiError::NotFound("no such review".into()))
    }

    /// The review if `token` is its token; an unknown review and a wrong
    /// token are the same 404.
    async fn owned(&self, review_id: &str, token: &str) -> Result<ReviewRow> {
        let refused = || ApiError::NotFound("no such review, or not its token".into());
        let row = self.store.find_review(review_id).await?.ok_or_else(refused)?;
        if self.codes.matches(REVIEW_PURPOSE, review_id, token, &row.token_hash) {
            Ok(row)
        } else {
            Err(refused())
        }
    }

    fn still_held(&self, row: &ReviewRow, now: Millis) -> Result<()> {
        if row.status != "held" {
            return Err(ApiError::ReviewClosed(format!("this review is already {}", row.status)));
        }
        if row.expires_at <= now {
            return Err(ApiError::ReviewClosed("this review expired".into()));
        }
        Ok(())
    }

    fn view(&self, row: &ReviewRow) -> ReviewStatus {
        let now = self.clock.now_ms();
        ReviewStatus {
            review_id: row.review_id.clone(),
            kind: row.kind.clone(),
            status: row.status.clone(),
            expired: matches!(row.status.as_str(), "held" | "approved") && row.expires_at <= now,
            reasons: serde_json::from_str(&row.reasons).unwrap_or_default(),
            created_at: rfc3339(row.created_at),
            expires_at: rfc3339(row.expires_at),
            appeal: row.appeal.clone(),
            appealed_at: row.appealed_at.map(rfc3339),
            decided_at: row.decided_at.map(rfc3339),
            decision_reason: row.decision_reason.clone(),
        }
    }

    fn item(&self, queued: QueuedReview) -> ReviewItem {
        let row = queued.review;
        ReviewItem {
            review: self.view(&row),
            user_id: row.user_id.to_string(),
            username: queued.username,
            subject: row.subject,
            score: row.score,
            context: serde_json::from_str(&row.context).unwrap_or_default(),
            decided_by: row.decided_by,
        }
    }

    async fn queued(&self, row: ReviewRow) -> Result<ReviewItem> {
        let username = match self.store.find_user(&row.user_id.to_string()).await? {
            Some(user) => user.username,
            None => String::new(),
        };
        Ok(self.item(QueuedReview { review: row, username }))
    }

    async fn owner(&self, row: &ReviewRow) -> Option<(UserRow, String)> {
        match self.store.find_user(&row.user_id.to_string()).await {
            Ok(Some(user)) => {
                let address = user.email.clone().filter(|_| user.email_verified)?;
                Some((user, address))
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(error.cause_chain = ?error, "review mail: owner not read");
                None
            }
        }
    }

    /// To the owner: what was held, why, and the link to see it and
    /// appeal. The link carries the token: whoever reads the account's
    /// verified mailbox may appeal, which is its owner.
    async fn mail_held(&self, row: &ReviewRow, reasons: &[Reason], token: &OpaqueToken) {
        let Some((user, address)) = self.owner(row).await else { return };
        let language = account_language(&user);
        let words = catalogue(language);
        let listed: Vec<String> = reasons.iter().map(|r| format!("  - {}", r.words)).collect();
        let link = format!(
            "{}/review.html#id={}&token={}",
            self.notifier.origin(),
            row.review_id,
            token.expose()
        );
        let body = render(
            words.review_held_body,
            &[
                ("name", &user.display_name),
                ("username", &user.username),
                ("what", what(words, &row.kind)),
                ("reasons", &listed.join("\r\n")),
                ("stamp", &self.notifier.when_and_where(language)),
                ("link", &link),
                ("days", &days(REVIEW_LIFETIME)),
            ],
        );
        self.notifier.mail(address, words.subject_review_held, body);
    }

    /// To the owner: the decision, and for a denial the admin's reason.
    async fn mail_decided(&self, row: &ReviewRow) {
        let Some((user, address)) = self.owner(row).await else { return };
        let words = catalogue(account_language(&user));
        let reason = row.decision_reason.as_deref().unwrap_or("");
        let values: [(&str, &str); 6] = [
            ("name", &user.display_name),
            ("username", &user.username),
            ("what", what(words, &row.kind)),
            ("reason", reason),
            ("days", &days(REVIEW_LIFETIME)),
            ("origin", self.notifier.origin()),
        ];
        let (subject, body) = if row.status == "approved" {
            (words.subject_review_approved, render(words.review_approved_body, &values))
        } else {
            (words.subject_review_denied, render(words.review_denied_body, &values))
        };
        self.notifier.mail(address, subject, body);
    }

    /// To every unlocked admin with a verified address but the owner: an
    /// appeal waits. The appeal's text stays out of the mail (it is the
    /// user's words, and could pass for the server's): the console shows it.
    async fn mail_admins(&self, row: &ReviewRow) {
        let admins = match self.store.review_admins().await {
            Ok(admins) => admins,
            Err(error) => {
                tracing::warn!(error.cause_chain = ?error, "appeal mail: admins not read");
                return;
            }
        };
        let owner = match self.store.find_user(&row.user_id.to_string()).await {
            Ok(Some(owner)) => owner.username,
            _ => String::new(),
        };
        for admin in admins.iter().filter(|a| a.user_id != row.user_id) {
            let Some(address) = admin.email.clone() else { continue };
            let words = catalogue(account_language(admin));
            let body = render(
                words.review_appealed_body,
                &[
                    ("name", &admin.display_name),
                    ("username", &owner),
                    ("what", what(words, &row.kind)),
                    ("origin", self.notifier.origin()),
                ],
            );
            self.notifier.mail(address, words.subject_review_appealed, body);
        }
    }
}

/// A held kind, in words.
fn what<'w>(words: &'w Catalogue, kind: &str) -> &'w str {
    if kind == "payment" { words.review_payment } else { words.review_signin }
}

fn days(lifetime: Duration) -> String {
    (lifetime.as_secs() / 86_400).to_string()
}

/// `text` trimmed, 1 to `max` characters.
fn bounded<'t>(field: &str, text: &'t str, max: usize) -> Result<&'t str> {
    let text = text.trim();
    let length = text.chars().count();
    if length == 0 || length > max {
        return Err(ApiError::ValidationFailed(format!("{field}: 1 to {max} characters")));
    }
    Ok(text)
}
