//! Payment step-up (API contract, "Payment step-up"): the user approves
//! one exact transaction with a passkey bound to their account, and gets a
//! short-lived authorization token that the payment service checks on its
//! own. This is PSD2 dynamic linking: the WebAuthn challenge is
//! `16 random bytes || SHA-256(canonical transaction)`, so the signature
//! itself covers amount, currency and payee, and the token's `txn` claim
//! names the same digest.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{Base64UrlSafeData, PublicKeyCredential};

use super::audit::{Audit, Event};
use super::keys::SigningKeys;
use super::passkey::{CeremonyStarted, PASSKEY_AMR, Passkeys, allow_credentials};
use super::risk::{Attempt, Factor, Risk};
use super::tokens::AccessClaims;
use crate::clock::Clock;
use crate::config::Settings;
use crate::context::current_client;
use crate::domain::{CeremonyId, Transaction, UserId};
use crate::error::{ApiError, Result};
use crate::metrics::Metrics;
use crate::store::Store;

const KIND_STEPUP: &str = "stepup";
/// The one scope an authorization token carries.
pub const PAYMENT_SCOPE: &str = passgate_verifier::PAYMENT_SCOPE;
/// The JWT `typ` of authorization tokens, so neither kind of token can be
/// taken for the other (RFC 8725 §3.11).
pub const AUTHORIZATION_TYP: &str = passgate_verifier::AUTHORIZATION_TYP;

#[derive(Serialize, Deserialize)]
struct StepupState {
    user_id: UserId,
    transaction: Transaction,
    challenge: Base64UrlSafeData,
    /// The credentials offered: only these may approve.
    credentials: Vec<String>,
}

/// Claims of a payment authorization token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthorizationClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub scope: String,
    pub txn: String,
    pub sid: String,
    pub device_id: String,
    pub amr: Vec<String>,
}

/// No Debug: it holds bearer secrets, and nothing should print it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Authorization {
    pub authorization_token: String,
    pub expires_in: u64,
    /// base64url SHA-256 of the canonical transaction, as in the token.
    pub txn: String,
}

/// Payment approval with a fresh passkey assertion.
#[derive(Clone)]
pub struct StepUp {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    keys: Arc<SigningKeys>,
    audit: Audit,
    passkeys: Passkeys,
    risk: Risk,
}

impl StepUp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        keys: Arc<SigningKeys>,
        audit: Audit,
        passkeys: Passkeys,
        risk: Risk,
    ) -> StepUp {
        StepUp { settings, store, clock, metrics, keys, audit, passkeys, risk }
    }

    pub async fn stepup_start(
        &self,
        bearer: &AccessClaims,
        transaction: Transaction,
    ) -> Result<CeremonyStarted> {
        let user_id = UserId::parse(bearer.sub.clone()).map_err(|_| ApiError::Unauthorized)?;
        let rows = self.store.user_credentials(&bearer.sub).await?;
        let device_bound_only = self.settings.stepup.require_device_bound;
        let now = self.clock.now_ms();
        let any_passkey = !rows.is_empty();
        let waiting = rows.iter().filter_map(|row| row.payments_after).filter(|t| *t > now).min();
        // A passkey bound after a password sign-in waits out its delay.
        let offered: Vec<_> = rows
            .into_iter()
            .filter(|row| !(device_bound_only && row.backup_eligible))
            .filter(|row| row.payments_after.is_none_or(|from| from <= now))
            .collect();
        if offered.is_empty() {
            let why = match waiting {
                Some(from) => format!(
                    "this account's passkey was added after a password sign-in and may approve payments from {} (UTC)",
                    crate::clock::rfc3339(from)
                ),
                None if device_bound_only && any_passkey => {
                    "payments need a device-bound passkey; synced passkeys are not accepted here"
                        .into()
                }
                None => "this account has no passkey to approve payments with".into(),
            };
            return Err(ApiError::Forbidden(why));
        }
        let challenge = transaction_challenge(&transaction);
        let options = self.passkeys.request_options(&challenge, allow_credentials(&offered)?, None);
        let state = StepupState {
            user_id,
            transaction,
            challenge: challenge.into(),
            credentials: offered.into_iter().map(|row| row.credential_id).collect(),
        };
        let public_key = serde_json::to_value(&options).map_err(anyhow::Error::from)?;
        self.passkeys.put_ceremony(KIND_STEPUP, Some(user_id), &state, public_key).await
    }

    pub async fn stepup_finish(
        &self,
        bearer: &AccessClaims,
        ceremony_id: &CeremonyId,
        credential: &PublicKeyCredential,
        transaction: Option<Transaction>,
    ) -> Result<Authorization> {
        let result = self.finish_stepup(bearer, ceremony_id, credential, transaction).await;
        self.metrics.ceremony_result(KIND_STEPUP, &result);
        result
    }

    async fn finish_stepup(
        &self,
        bearer: &AccessClaims,
        ceremony_id: &CeremonyId,
        credential: &PublicKeyCredential,
        transaction: Option<Transaction>,
    ) -> Result<Authorization> {
        // Another user's ceremony id is as good as an unknown one, and is
        // left for its owner.
        let row = self
            .store
            .take_owned_ceremony(
                ceremony_id.as_ref(),
                KIND_STEPUP,
                &bearer.sub,
                self.clock.now_ms(),
            )
            .await?
            .ok_or(ApiError::CeremonyNotFound)?;
        let state: StepupState = serde_json::from_str(&row.state).map_err(anyhow::Error::from)?;
        if transaction.is_some_and(|t| t != state.transaction) {
            tracing::info!(target: "audit", event = "stepup_failed", user_id = %bearer.sub, reason = "transaction changed");
            return Err(ApiError::InvalidCredentials);
        }
        let credential_id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
        if !state.credentials.contains(&credential_id) {
            return Err(ApiError::InvalidCredentials);
        }
        let row = self
            .store
            .find_credential(&credential_id)
            .await?
            .filter(|row| row.user_id.to_string() == bearer.sub)
            .ok_or(ApiError::InvalidCredentials)?;
        let checked =
            self.passkeys.verify_assertion(credential, state.challenge.as_slice(), &row)?;
        let verified = self.passkeys.refusal_answer(checked, &row).await?;
        // The ceremony is already taken: a step-up, hold or denial here
        // cannot be got past by sending the same assertion again.
        let client = current_client();
        let attempt = Attempt {
            user_id: &row.user_id,
            factor: Factor::Passkey,
            // passgate's verifier refuses an assertion without the UV flag.
            user_verified: true,
            credential: Some(&row.credential_id),
            synced: row.backup_eligible,
            client: &client,
            payment: Some(&state.transaction),
        };
        let passed = self.risk.decide(&attempt).await?;
        let used = self.passkeys.credential_use(&row, verified);
        if !self.store.record_credential_use(&used).await? {
            return Err(self.passkeys.clone_warning(&row.user_id, &row.device_id).await);
        }
        let now = self.clock.now_secs();
        let ttl = self.settings.stepup.token_ttl.as_secs();
        let txn = state.transaction.txn();
        let claims = AuthorizationClaims {
            iss: self.settings.tokens.issuer.clone(),
            sub: bearer.sub.clone(),
            aud: self.settings.stepup.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: PAYMENT_SCOPE.to_owned(),
            txn: txn.clone(),
            sid: bearer.sid.clone(),
            device_id: row.device_id.to_string(),
            amr: PASSKEY_AMR.iter().map(|s| s.to_string()).collect(),
        };
        self.audit
            .record(
                Event::ok("payment_approved").user(&bearer.sub).device(&row.device_id.to_string()),
            )
            .await;
        let authorization_token = self.keys.sign(&claims, AUTHORIZATION_TYP)?;
        self.risk.passed(passed).await;
        Ok(Authorization { authorization_token, expires_in: ttl, txn })
    }
}

/// 16 fresh random bytes, then the transaction digest: unpredictable, and
/// bound to exactly this transaction.
fn transaction_challenge(transaction: &Transaction) -> Vec<u8> {
    let mut challenge = vec![0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut challenge);
    challenge.extend_from_slice(&transaction.digest());
    challenge
}
