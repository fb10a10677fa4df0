//! The review queue (issue 20 item 3): a held sign-in or payment waits
//! for an admin's approval or denial; its owner holds a token to see it
//! and appeal. An approval lets one later attempt of the same kind and
//! subject through, until it expires.

use std::sync::Arc;
use std::time::Duration;

use super::codes::CodeHasher;
use super::risk::{Held, HeldKind};
use crate::clock::Clock;
use crate::domain::{OpaqueToken, UserId};
use crate::error::Result;
use crate::store::{ReviewRow, Store};

/// The purpose a review token is hashed under.
const REVIEW_PURPOSE: &str = "risk_review";
/// How long a hold, and then its approval, stays good.
const REVIEW_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the owner of a held attempt is given, once.
pub struct ReviewTicket {
    pub review_id: String,
    /// Lets its holder see the review and appeal; stored only hashed.
    pub token: OpaqueToken,
}

#[derive(Clone)]
pub struct Reviews {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    codes: Arc<CodeHasher>,
}

impl Reviews {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, codes: Arc<CodeHasher>) -> Reviews {
        Reviews { store, clock, codes }
    }

    /// Puts `held` in the queue.
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
}
