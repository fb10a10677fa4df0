//! Risk decisions (issue 20): signals from what passgate already knows,
//! rules from configuration that add to a score with a named reason, and
//! an outcome: allow, step up, hold for review, or deny.
//!
//! This file holds the types the decision shares with the review queue
//! (`service/reviews.rs`); the signals and rules live beside it.

use serde::{Deserialize, Serialize};

use crate::domain::UserId;

/// What a decision does, mildest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    /// A fresh user-verified passkey, or a second factor, is needed first.
    StepUp,
    /// An admin decides; the user can see why and appeal.
    Hold,
    Deny,
}

/// One rule that matched: its name, what it added, and the plain words
/// its owner and the reviewer read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    pub rule: String,
    pub score: i32,
    pub words: String,
}

/// What was held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HeldKind {
    #[serde(rename = "signin")]
    SignIn,
    Payment,
}

impl HeldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldKind::SignIn => "signin",
            HeldKind::Payment => "payment",
        }
    }
}

/// A sign-in or payment to put in the review queue.
#[derive(Clone, Debug)]
pub struct Held {
    pub user_id: UserId,
    pub kind: HeldKind,
    /// What an approval lets through: a payment's txn digest; for a
    /// sign-in, the factor it used (`passkey`, `password_totp`,
    /// `password_mail`).
    pub subject: String,
    pub score: i32,
    pub reasons: Vec<Reason>,
    /// What the reviewer needs to judge (network, user-agent family,
    /// amount, currency, payee). Never a secret.
    pub context: serde_json::Value,
}

pub mod decide;
pub mod rules;
pub mod signals;

pub use decide::{Attempt, Factor, Passed, Risk, SignInScope, load_rules};
