//! TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps, one step of
//! skew either way: what Google Authenticator, Authy and 1Password all
//! read from an otpauth:// URI), and the recovery codes that back it up.

use std::sync::Arc;

use qrcode::QrCode;
use qrcode::render::svg;
use rand::RngCore;
use serde::Serialize;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use super::audit::{Audit, Event};
use super::codes::{self, CodeHasher, RECOVERY_CODES};
use super::fresh::Freshness;
use super::notify::{Change, Notifier};
use super::sealing::Sealer;
use super::throttle::Throttle;
use super::tokens::AccessClaims;
use crate::clock::Clock;
use crate::config::Settings;
use crate::context::ClientInfo;
use crate::error::{ApiError, Result};
use crate::store::Store;

const STEP_SECS: u64 = 30;
const DIGITS: usize = 6;
/// 160 bits, RFC 4226's recommendation.
const SECRET_BYTES: usize = 20;
const RECOVERY_PURPOSE: &str = "recovery";

/// What TOTP enrolment shows the user once: type the secret, open the URI,
/// or scan the QR code.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpEnrolment {
    /// Base32, no padding.
    pub secret: String,
    pub otpauth_uri: String,
    /// The otpauth URI as an SVG QR code.
    pub qr_svg: String,
}

/// Shown once; only their hashes are kept.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

fn totp(secret: Vec<u8>, issuer: &str, account: &str) -> Result<TOTP> {
    // ':' separates issuer and account in the label; usernames cannot hold
    // one, this is for safety only.
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECS,
        secret,
        Some(issuer.to_owned()),
        account.replace(':', "_"),
    )
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("TOTP parameters: {e}")))
}

/// The step within one step of `now` whose code is `code`, if it is later
/// than `after` (codes of steps already used are never accepted again).
pub(super) fn matching_step(totp: &TOTP, code: &str, now_secs: i64, after: i64) -> Option<i64> {
    let step = now_secs.div_euclid(STEP_SECS as i64);
    let mut found = None;
    // Every candidate is computed and compared, found or not, so the time
    // taken says nothing about which one matched.
    for candidate in [step - 1, step, step + 1] {
        let expected = totp.generate((candidate.max(0) as u64) * STEP_SECS);
        let equal = bool::from(expected.as_bytes().ct_eq(code.as_bytes()));
        if equal && candidate > after && found.is_none() {
            found = Some(candidate);
        }
    }
    found
}

fn qr_svg(uri: &str) -> Result<String> {
    let code = QrCode::new(uri.as_bytes())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("QR code: {e}")))?;
    Ok(code.render::<svg::Color<'_>>().min_dimensions(200, 200).quiet_zone(true).build())
}

/// TOTP and recovery codes: enrolment, and checking a sign-in code.
#[derive(Clone)]
pub struct Totp {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    secrets: Arc<Sealer>,
    codes: Arc<CodeHasher>,
    audit: Audit,
    throttle: Throttle,
    notifier: Notifier,
    fresh: Freshness,
}

impl Totp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        secrets: Arc<Sealer>,
        codes: Arc<CodeHasher>,
        audit: Audit,
        throttle: Throttle,
        notifier: Notifier,
        fresh: Freshness,
    ) -> Totp {
        Totp { settings, store, clock, secrets, codes, audit, throttle, notifier, fresh }
    }

    fn secret_label(user_id: &str) -> String {
        format!("totp:{user_id}")
    }

    fn open_totp(&self, user_id: &str, sealed: &str, account: &str) -> Result<TOTP> {
        let secret = self.secrets.open(&Self::secret_label(user_id), sealed)?;
        totp(secret, &self.settings.mfa.totp_issuer, account)
    }

    /// Starts TOTP enrolment with a new secret; it is inactive until
    /// `totp_finish` confirms a code from it. A second factor: a stolen but
    /// stale token, or a phished password and code, must not add its own,
    /// so the account's strongest factor must have been used just now.
    pub async fn totp_start(&self, claims: &AccessClaims) -> Result<TotpEnrolment> {
        self.fresh.require_strongest_factor(claims).await?;
        let user_id = claims.sub.as_str();
        let user = self.store.find_user(user_id).await?.ok_or(ApiError::Unauthorized)?;
        let mut secret = vec![0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let sealed = self.secrets.seal(&Self::secret_label(user_id), &secret)?;
        let totp = totp(secret, &self.settings.mfa.totp_issuer, &user.username)?;
        if !self.store.put_pending_totp(user_id, &sealed, self.clock.now_ms()).await? {
            return Err(ApiError::ValidationFailed(
                "TOTP is already set up; remove it (DELETE /v1/me/totp) before enrolling anew"
                    .into(),
            ));
        }
        let otpauth_uri = totp.get_url();
        Ok(TotpEnrolment {
            secret: totp.get_secret_base32(),
            qr_svg: qr_svg(&otpauth_uri)?,
            otpauth_uri,
        })
    }

    /// Confirms enrolment with a code from the new secret, and hands out
    /// the recovery codes.
    pub async fn totp_finish(
        &self,
        claims: &AccessClaims,
        code: &crate::domain::OneTimeCode,
        client: &ClientInfo,
    ) -> Result<RecoveryCodes> {
        let user_id = claims.sub.as_str();
        self.throttle.check("account", client, Some(user_id)).await?;
        self.fresh.require_strongest_factor(claims).await?;
        let user = self.store.find_user(user_id).await?.ok_or(ApiError::Unauthorized)?;
        let row = self.store.totp(user_id).await?.filter(|t| t.confirmed_at.is_none()).ok_or_else(
            || ApiError::NotFound("no TOTP enrolment is in progress; start one first".into()),
        )?;
        let totp = self.open_totp(user_id, &row.secret, &user.username)?;
        let step = matching_step(&totp, code.expose(), self.clock.now_secs(), row.last_step)
            .ok_or(ApiError::InvalidSetupCode)?;
        let (shown, hashes) = self.new_recovery_codes(user_id);
        if !self
            .store
            .confirm_totp(user_id, &row.secret, step, &hashes, self.clock.now_ms())
            .await?
        {
            return Err(ApiError::InvalidSetupCode);
        }
        self.audit.record(Event::ok("totp_enrolled").user(user_id)).await;
        self.notifier.notify(&user, Change::TotpAdded, None);
        Ok(RecoveryCodes { recovery_codes: shown })
    }

    pub async fn totp_delete(&self, claims: &AccessClaims) -> Result<()> {
        self.fresh.require_strongest_factor(claims).await?;
        let user_id = claims.sub.as_str();
        if !self.store.delete_totp(user_id).await? {
            return Err(ApiError::NotFound("TOTP is not set up".into()));
        }
        self.audit.record(Event::ok("totp_removed").user(user_id)).await;
        if let Some(user) = self.store.find_user(user_id).await? {
            self.notifier.notify(&user, Change::TotpRemoved, None);
        }
        Ok(())
    }

    /// Replaces the recovery codes (the old ones stop working).
    pub async fn regenerate_recovery_codes(&self, claims: &AccessClaims) -> Result<RecoveryCodes> {
        self.fresh.require_strongest_factor(claims).await?;
        let user_id = claims.sub.as_str();
        let active = self.store.totp(user_id).await?.is_some_and(|t| t.confirmed_at.is_some());
        if !active {
            return Err(ApiError::ValidationFailed(
                "recovery codes back up TOTP: set up TOTP first".into(),
            ));
        }
        let (shown, hashes) = self.new_recovery_codes(user_id);
        self.store.replace_recovery_codes(user_id, &hashes, self.clock.now_ms()).await?;
        self.audit.record(Event::ok("recovery_codes_regenerated").user(user_id)).await;
        if let Some(user) = self.store.find_user(user_id).await? {
            self.notifier.notify(&user, Change::RecoveryCodesMade, None);
        }
        Ok(RecoveryCodes { recovery_codes: shown })
    }

    fn new_recovery_codes(&self, user_id: &str) -> (Vec<String>, Vec<String>) {
        let shown: Vec<String> = (0..RECOVERY_CODES).map(|_| codes::recovery_code()).collect();
        let hashes = shown
            .iter()
            .map(|c| self.codes.hash(RECOVERY_PURPOSE, user_id, &codes::normalise_recovery(c)))
            .collect();
        (shown, hashes)
    }

    /// Checks a sign-in code: a TOTP code (each accepted once) or a
    /// recovery code (each spent once).
    pub(super) async fn check_totp_or_recovery(
        &self,
        user_id: &str,
        username: &str,
        code: &crate::domain::OneTimeCode,
    ) -> Result<bool> {
        if code.is_six_digits() {
            let Some(row) = self.store.totp(user_id).await?.filter(|t| t.confirmed_at.is_some())
            else {
                return Ok(false);
            };
            let totp = self.open_totp(user_id, &row.secret, username)?;
            let Some(step) =
                matching_step(&totp, code.expose(), self.clock.now_secs(), row.last_step)
            else {
                return Ok(false);
            };
            // The conditional update makes a code good once even when two
            // requests present it at the same moment.
            return Ok(self.store.use_totp_step(user_id, step).await?);
        }
        if codes::looks_like_recovery(code.expose()) {
            let hash = self.codes.hash(RECOVERY_PURPOSE, user_id, code.expose());
            let spent = self.store.use_recovery_code(user_id, &hash, self.clock.now_ms()).await?;
            if spent {
                self.audit.record(Event::ok("recovery_code_used").user(user_id)).await;
            }
            return Ok(spent);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the SHA-1 seed, 8-digit values truncated to
    /// their last 6 digits (dynamic truncation then mod 10^6).
    #[test]
    fn codes_follow_the_rfc_6238_test_vectors() {
        let totp = totp(b"12345678901234567890".to_vec(), "passgate", "alice").unwrap();
        for (time, expected) in [
            (59u64, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
        ] {
            assert_eq!(totp.generate(time), expected[2..], "at {time}");
        }
    }

    #[test]
    fn a_code_matches_within_one_step_and_only_after_the_last_used() {
        let totp = totp(b"12345678901234567890".to_vec(), "passgate", "alice").unwrap();
        let now = 1_111_111_111i64;
        let step = now / 30;
        let current = totp.generate(now as u64);
        assert_eq!(matching_step(&totp, &current, now, 0), Some(step));
        assert_eq!(matching_step(&totp, &current, now + 30, 0), Some(step), "one step late");
        assert_eq!(matching_step(&totp, &current, now - 30, 0), Some(step), "one step early");
        assert_eq!(matching_step(&totp, &current, now + 60, 0), None, "two steps late");
        assert_eq!(matching_step(&totp, &current, now, step), None, "already used");
        assert_eq!(matching_step(&totp, "000000", now, 0).is_some(), current == "000000");
    }

    #[test]
    fn the_uri_and_qr_code_carry_the_secret() {
        let totp = totp(vec![7u8; 20], "passgate", "alice").unwrap();
        let uri = totp.get_url();
        assert!(uri.starts_with("otpauth://totp/passgate:alice?secret="), "{uri}");
        assert!(uri.contains(&totp.get_secret_base32()));
        assert!(uri.contains("issuer=passgate"));
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }
}
