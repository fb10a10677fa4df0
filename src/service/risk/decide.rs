//! The decision at a sign-in or payment approval: gather the signals the
//! loaded rules name (the user's profile in one query, and only when a
//! rule needs it), apply the rules, record the decision (audit row,
//! metrics), and act: allow, ask for a step-up, hold for review (unless
//! an admin approved one like it), or deny. After a success, what the
//! attempt looked like joins the user's history.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::rules::{Rules, Verdict};
use super::signals::{
    self, CLONE_WINDOW_MS, FAILURE_WINDOW_MINUTES, Profile, Signal, Signals, Value,
};
use super::{Held, HeldKind, Outcome, Reason};
use crate::clock::Clock;
use crate::context::ClientInfo;
use crate::domain::{RawTransaction, Transaction, UserId};
use crate::error::{ApiError, Result, ReviewToken};
use crate::metrics::Metrics;
use crate::service::audit::{Audit, Event};
use crate::service::reviews::Reviews;
use crate::service::trusted::TrustedDevices;
use crate::store::{ProfileFact, ProfileQuery, Seen, Store};

/// How the user proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Factor {
    Passkey,
    PasswordTotp,
    PasswordMail,
    RecoveryCode,
}

impl Factor {
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Passkey => "passkey",
            Factor::PasswordTotp => "password_totp",
            Factor::PasswordMail => "password_mail",
            Factor::RecoveryCode => "recovery_code",
        }
    }
}

/// One sign-in or payment approval to decide on.
pub struct Attempt<'a> {
    pub user_id: &'a UserId,
    pub factor: Factor,
    /// A passkey assertion with the UV flag (passgate requires it, so
    /// every passkey sign-in and payment is).
    pub user_verified: bool,
    /// The passkey's credential id, when a passkey was used.
    pub credential: Option<&'a str>,
    /// The passkey is synced (backup eligible), not device-bound.
    pub synced: bool,
    pub client: &'a ClientInfo,
    /// The payment being approved; None for a sign-in.
    pub payment: Option<&'a Transaction>,
}

impl Attempt<'_> {
    fn kind(&self) -> HeldKind {
        if self.payment.is_some() { HeldKind::Payment } else { HeldKind::SignIn }
    }

    /// What an approval of a hold lets through (see `Held::subject`).
    fn subject(&self) -> String {
        match self.payment {
            Some(transaction) => transaction.txn(),
            None => self.factor.as_str().to_owned(),
        }
    }
}

/// What a decision that let the attempt through leaves to record once the
/// attempt succeeded.
#[must_use]
pub struct Passed {
    user_id: UserId,
    /// None: nothing to write (the history is not kept, or holds all this).
    seen: Option<Vec<(&'static str, String, i64)>>,
}

impl Passed {
    /// What the attempt adds to the history, for a write that stores it
    /// itself (a passkey sign-in's); none when there is nothing to add.
    pub fn seen(&self) -> &[(&'static str, String, i64)] {
        self.seen.as_deref().unwrap_or_default()
    }
}

/// Where a sign-in's profile is read (`Risk::sign_in_scope`).
pub struct SignInScope {
    network: String,
    user_agent: String,
    now: crate::clock::Millis,
}

impl SignInScope {
    /// The client's network and browser family, with the time the
    /// profile's windows end at.
    fn of(client: &ClientInfo, now: crate::clock::Millis) -> SignInScope {
        let network = client.ip.as_deref().and_then(signals::network_of).unwrap_or_default();
        let user_agent = signals::user_agent_family(client.user_agent.as_deref());
        SignInScope { network, user_agent, now }
    }

    /// The profile query for a sign-in with `credential`.
    pub fn query<'a>(&'a self, credential: &'a str) -> ProfileQuery<'a> {
        self.query_paying(credential, "")
    }

    /// The profile query for an attempt with `credential`, paying in
    /// `currency` ('' for none).
    fn query_paying<'a>(&'a self, credential: &'a str, currency: &'a str) -> ProfileQuery<'a> {
        ProfileQuery {
            network: &self.network,
            user_agent: &self.user_agent,
            credential,
            currency,
            events_since: self.now - CLONE_WINDOW_MS,
            failures_since_minute: self.now.div_euclid(60_000) - (FAILURE_WINDOW_MINUTES - 1),
        }
    }
}

/// The rules in force, swapped whole on SIGHUP.
pub type RuleSet = Arc<RwLock<Arc<Rules>>>;

#[derive(Clone)]
pub struct Risk {
    enabled: bool,
    rules_file: Option<PathBuf>,
    rules: RuleSet,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    audit: Audit,
    reviews: Reviews,
    trusted: TrustedDevices,
}

/// Reads and checks the rules of `rules_file`, or the built-in ones.
pub fn load_rules(rules_file: Option<&std::path::Path>) -> anyhow::Result<Rules> {
    match rules_file {
        None => Rules::built_in(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("risk.rules_file: cannot read {}: {e}", path.display())
            })?;
            Rules::parse(&text, &path.display().to_string())
        }
    }
}

impl Risk {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        enabled: bool,
        rules_file: Option<PathBuf>,
        rules: Rules,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        audit: Audit,
        reviews: Reviews,
        trusted: TrustedDevices,
    ) -> Risk {
        let rules = Arc::new(RwLock::new(Arc::new(rules)));
        Risk { enabled, rules_file, rules, store, clock, metrics, audit, reviews, trusted }
    }

    /// Whether the attempt comes from a browser its owner marked trusted
    /// (issue 20 item 5): its `__Host-` cookie names a live record of
    /// this user. Asked only when a rule names the signal, and only with a
    /// cookie (seeing it touches the record).
    pub async fn trusted_device_signal(
        &self,
        rules: &Rules,
        user_id: &UserId,
        client: &ClientInfo,
    ) -> Result<bool> {
        let named = rules
            .rules
            .iter()
            .flat_map(|r| &r.conditions)
            .any(|c| c.signal == Signal::TrustedDevice);
        match client.trusted_device.as_deref() {
            Some(cookie) if named => self.trusted.is_trusted(user_id, Some(cookie)).await,
            _ => Ok(false),
        }
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        match self.rules.read() {
            Ok(rules) => rules.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the rules file again (SIGHUP). A file that does not pass its
    /// checks is logged and the rules in force stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        match load_rules(self.rules_file.as_deref()) {
            Ok(rules) => {
                tracing::info!(
                    source = %rules.source,
                    rules = rules.rules.len(),
                    "risk rules reloaded"
                );
                let rules = Arc::new(rules);
                match self.rules.write() {
                    Ok(mut slot) => *slot = rules,
                    Err(poisoned) => *poisoned.into_inner() = rules,
                }
                Ok(())
            }
            Err(error) => {
                tracing::error!(
                    error = %format!("{error:#}"),
                    "risk rules not reloaded: the rules in force stay"
                );
                Err(error)
            }
        }
    }

    /// Where a passkey sign-in from `client` would look, when the rules in
    /// force read a profile at all: the sign-in's finish then reads the
    /// profile with the credential (`CeremonyStore::find_login_with_profile`),
    /// one round trip instead of two.
    pub fn sign_in_scope(&self, client: &ClientInfo) -> Option<SignInScope> {
        if !self.enabled || !self.rules().need_profile() {
            return None;
        }
        Some(SignInScope::of(client, self.clock.now_ms()))
    }

    /// Decides on `attempt`. Ok: it may go on (call `passed` once it
    /// succeeded). Err: a step-up, hold or denial to answer, with nothing
    /// issued.
    pub async fn decide(&self, attempt: &Attempt<'_>) -> Result<Passed> {
        self.decide_with(attempt, None).await
    }

    /// `decide`, with the user's profile when it was read already (by
    /// the sign-in's own read, in `sign_in_scope`'s scope, whose network
    /// and browser family are not worked out again).
    pub async fn decide_with(
        &self,
        attempt: &Attempt<'_>,
        read: Option<(&SignInScope, Vec<ProfileFact>)>,
    ) -> Result<Passed> {
        let user_id = *attempt.user_id;
        if !self.enabled {
            return Ok(Passed { user_id, seen: None });
        }
        let rules = self.rules();
        let kind = attempt.kind();
        let now = self.clock.now_ms();
        let own;
        let (scope, read) = match read {
            Some((scope, facts)) => (scope, Some(facts)),
            None => {
                own = SignInScope::of(attempt.client, now);
                (&own, None)
            }
        };
        let (network, user_agent) = (scope.network.as_str(), scope.user_agent.as_str());
        let amount = attempt
            .payment
            .and_then(|t| signals::thousandths(&RawTransaction::from(t.clone()).amount));
        let currency = attempt.payment.map(|t| RawTransaction::from(t.clone()).currency);

        let mut signals = Signals::default();
        signals.set(Signal::Kind, Value::Word(kind.as_str()));
        signals.set(Signal::Factor, Value::Word(attempt.factor.as_str()));
        signals.set(Signal::UserVerified, Value::Bool(attempt.user_verified));
        signals.set(Signal::SyncedPasskey, Value::Bool(attempt.synced));
        let trusted = self.trusted_device_signal(&rules, attempt.user_id, attempt.client).await?;
        signals.set(Signal::TrustedDevice, Value::Bool(trusted));

        let facts: Option<Vec<ProfileFact>> = if let Some(read) = read {
            Some(read)
        } else if rules.need_profile() {
            let credential = attempt.credential.unwrap_or("");
            let query = scope.query_paying(credential, currency.as_deref().unwrap_or(""));
            Some(self.store.risk_profile(attempt.user_id, &query).await?)
        } else {
            None
        };
        let profile = facts.as_deref().map(|facts| Profile {
            facts,
            now,
            network,
            user_agent,
            credential: attempt.credential,
            amount,
        });
        if let Some(profile) = &profile {
            profile.fill(&mut signals);
        }
        let verdict = rules.judge(kind, &signals);
        let answer = self.act(attempt, &verdict, &profile, network, user_agent).await;
        self.record(attempt, &verdict, &answer).await;
        answer?;
        // What to add to the history once the attempt succeeds.
        let seen = profile.and_then(|profile| {
            let mut seen: Vec<(&'static str, String, i64)> = Vec::new();
            match (attempt.payment, amount, currency) {
                (Some(_), Some(amount), Some(currency)) => seen.push(("payment", currency, amount)),
                _ => {
                    let dimensions = [
                        ("network", network),
                        ("user_agent", user_agent),
                        ("credential", attempt.credential.unwrap_or("")),
                    ];
                    if !profile.worth_recording(&dimensions) {
                        return None;
                    }
                    for (dimension, value) in dimensions {
                        if !value.is_empty() {
                            seen.push((dimension, value.to_owned(), 0));
                        }
                    }
                    seen.push(("factor", attempt.factor.as_str().to_owned(), 0));
                    seen.push(("signin", String::new(), 0));
                }
            }
            Some(seen)
        });
        Ok(Passed { user_id, seen })
    }

    /// Adds a succeeded attempt to the user's history. A failure to write
    /// is logged: the sign-in or payment has happened.
    pub async fn passed(&self, passed: Passed) {
        let Some(seen) = passed.seen else { return };
        let rows = Seen::all(&seen);
        let now = self.clock.now_ms();
        if let Err(error) = self.store.record_seen(&passed.user_id, &rows, now).await {
            tracing::warn!(error.cause_chain = ?error, "risk history not written");
        }
    }

    /// A registration is the account's first context: its first sign-in
    /// from the same network and browser is not "new". The rows go into
    /// the history with the account itself, in the registration's write;
    /// none when no rule reads a history.
    pub fn registration_history(
        &self,
        credential: &str,
        client: &ClientInfo,
    ) -> Vec<(&'static str, String, i64)> {
        if !self.enabled || !self.rules().need_profile() {
            return Vec::new();
        }
        let SignInScope { network, user_agent, .. } = SignInScope::of(client, self.clock.now_ms());
        let mut seen = vec![("user_agent", user_agent, 0), ("signin", String::new(), 0)];
        if !network.is_empty() {
            seen.push(("network", network, 0));
        }
        seen.push(("credential", credential.to_owned(), 0));
        seen.push(("factor", Factor::Passkey.as_str().to_owned(), 0));
        seen
    }

    /// What the verdict means for this attempt.
    async fn act(
        &self,
        attempt: &Attempt<'_>,
        verdict: &Verdict,
        profile: &Option<Profile<'_>>,
        network: &str,
        user_agent: &str,
    ) -> Result<()> {
        let reasons = || reasons_json(&verdict.reasons);
        match verdict.outcome {
            Outcome::Allow => Ok(()),
            // A user-verified passkey is the strongest proof passgate takes.
            Outcome::StepUp if attempt.user_verified => Ok(()),
            Outcome::StepUp => {
                // An account without a passkey has nothing stronger to
                // give: stepping it up would lock its owner out.
                let passkeys = match profile {
                    Some(profile) => profile.passkeys(),
                    None => self.store.user_credentials(&attempt.user_id.to_string()).await?.len()
                        as i64,
                };
                if passkeys == 0 {
                    return Ok(());
                }
                Err(ApiError::StepUpRequired { needs: "passkey", reasons: reasons() })
            }
            Outcome::Hold => {
                let subject = attempt.subject();
                if self.reviews.take_approval(attempt.user_id, attempt.kind(), &subject).await? {
                    return Ok(());
                }
                let mut context = serde_json::json!({
                    "factor": attempt.factor.as_str(),
                    "network": network,
                    "user_agent": user_agent,
                });
                if let Some(transaction) = attempt.payment {
                    let raw = RawTransaction::from(transaction.clone());
                    context["amount"] = raw.amount.into();
                    context["currency"] = raw.currency.into();
                    context["payee"] = raw.payee.into();
                }
                let held = Held {
                    user_id: *attempt.user_id,
                    kind: attempt.kind(),
                    subject,
                    score: verdict.score,
                    reasons: verdict.reasons.clone(),
                    context,
                };
                let ticket = self.reviews.hold(held).await?;
                Err(ApiError::HeldForReview {
                    review_id: ticket.review_id,
                    review_token: ReviewToken(ticket.token.expose().to_owned()),
                    reasons: reasons(),
                })
            }
            Outcome::Deny => Err(ApiError::RiskDenied { reasons: reasons() }),
        }
    }

    /// The audit row and metrics of a decision: every decision that a rule
    /// matched or that did not simply allow.
    async fn record(&self, attempt: &Attempt<'_>, verdict: &Verdict, answer: &Result<()>) {
        let kind = attempt.kind().as_str();
        self.metrics.risk_decision(kind, outcome_name(verdict.outcome));
        for reason in &verdict.reasons {
            self.metrics.risk_rule_matched(&reason.rule, "enforce");
        }
        for reason in &verdict.dry_run {
            self.metrics.risk_rule_matched(&reason.rule, "dry_run");
        }
        if verdict.reasons.is_empty() && verdict.dry_run.is_empty() {
            return;
        }
        let names = |reasons: &[Reason]| -> String {
            if reasons.is_empty() {
                return "none".to_owned();
            }
            reasons.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>().join(", ")
        };
        let outcome = outcome_name(verdict.outcome);
        let effect = match (verdict.outcome, answer) {
            (Outcome::StepUp, Ok(())) if attempt.user_verified => {
                " (satisfied by a user-verified passkey)".to_owned()
            }
            (Outcome::StepUp, Ok(())) => " (not asked: the account has no passkey)".to_owned(),
            (Outcome::Hold, Ok(())) => " (let through by an administrator's approval)".to_owned(),
            (Outcome::Hold, Err(ApiError::HeldForReview { review_id, .. })) => {
                format!(" (review {review_id})")
            }
            _ => String::new(),
        };
        let mut reason = format!(
            "score {}: {}; {outcome}{effect}; factor {}",
            verdict.score,
            names(&verdict.reasons),
            attempt.factor.as_str()
        );
        if !verdict.dry_run.is_empty() {
            reason.push_str(&format!(
                "; dry run: {} (would be {})",
                names(&verdict.dry_run),
                outcome_name(verdict.dry_outcome)
            ));
        }
        let user_id = attempt.user_id.to_string();
        // Recorded as a success: the decision was made. Counting a hold as
        // a failed sign-in would feed the failure signals that made it.
        self.audit.record(Event::ok("risk_decision").user(&user_id).reason(&reason)).await;
    }
}

pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allow => "allow",
        Outcome::StepUp => "step_up",
        Outcome::Hold => "hold",
        Outcome::Deny => "deny",
    }
}

fn reasons_json(reasons: &[Reason]) -> serde_json::Value {
    serde_json::to_value(reasons).unwrap_or_else(|_| serde_json::json!([]))
}
