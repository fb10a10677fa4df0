//! Trusted browsers (issue 20 item 5). After a fresh, user-verified
//! passkey sign-in the owner may mark the browser trusted: it is given a
//! random 256-bit token in the HttpOnly `__Host-passgate-trusted` cookie,
//! and the server keeps a record with a keyed hash of it, a label, and an
//! expiry. The risk rules read `is_trusted` (the `trusted_device` signal),
//! so a sign-in or payment from a trusted browser scores lower.
//!
//! Why a passkey and not a password and a code: those can be relayed by a
//! phishing page in real time, and a phisher who could mark their own
//! browser trusted would have lowered the score of everything they do next.
//! The cookie is bound to one account (its hash is keyed with the user id),
//! so it lowers nothing for anyone else who signs in in that browser.
//!
//! Trust ends at its expiry (`trust.days`), when its owner removes it
//! (`DELETE /v1/me/trusted-devices/{id}`), and at an admin's or the
//! operator's device reset (in the same transaction, `store::reset_devices`).
//! Signing out, or ending sessions, leaves it: a trusted browser is a
//! browser, not a session, and the point is that the next sign-in there is
//! known.

use std::sync::Arc;

use serde::Serialize;

use super::audit::{Audit, Event};
use super::codes::CodeHasher;
use super::fresh::Freshness;
use super::notify::{Change, Notifier};
use super::tokens::AccessClaims;
use crate::clock::{Clock, rfc3339};
use crate::config::Settings;
use crate::context::ClientInfo;
use crate::domain::{OpaqueToken, UserId};
use crate::error::{ApiError, Result};
use crate::store::{Store, TrustStored, TrustedDeviceRow};

/// The purpose a trusted browser's token is hashed under.
const TRUST_PURPOSE: &str = "trusted_device";
/// Live trusted browsers one account may hold: enough for every browser a
/// person uses, few enough that the list stays readable and a session
/// cannot fill the table.
pub const MAX_TRUSTED: i64 = 20;
/// What a passkey sign-in's amr holds when the user was verified (PIN or
/// biometrics), not only present (RFC 8176).
const USER_VERIFIED: &str = "user";

/// A trusted browser, as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TrustedDevice {
    pub trusted_device_id: String,
    /// The browser and system it was trusted from, e.g. "Chrome on Linux".
    pub label: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The last sign-in or payment it was checked for.
    pub last_seen_at: String,
    pub expires_at: String,
    /// The browser making this request.
    pub current: bool,
}

/// What marking a browser trusted made: the record, and the cookie's token
/// (given to the browser once, stored only hashed).
pub struct Trusted {
    pub device: TrustedDevice,
    pub token: OpaqueToken,
    /// The cookie's Max-Age.
    pub max_age_secs: u64,
}

/// What removing a trusted browser did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// It was the browser making the request: its cookie should go too.
    pub was_current: bool,
}

#[derive(Clone)]
pub struct TrustedDevices {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    codes: Arc<CodeHasher>,
    audit: Audit,
    notifier: Notifier,
    fresh: Freshness,
}

impl TrustedDevices {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        codes: Arc<CodeHasher>,
        audit: Audit,
        notifier: Notifier,
        fresh: Freshness,
    ) -> TrustedDevices {
        TrustedDevices { settings, store, clock, codes, audit, notifier, fresh }
    }

    /// Whether `cookie` (the `__Host-passgate-trusted` value, as
    /// `ClientInfo.trusted_device` carries it) marks a browser this user
    /// trusted, unexpired and not revoked. A missing, malformed, unknown,
    /// expired or revoked token, or another user's, is false. A true
    /// answer records that the browser was seen now.
    pub async fn is_trusted(&self, user_id: &UserId, cookie: Option<&str>) -> Result<bool> {
        let Some(hash) = self.hash_of(user_id, cookie) else { return Ok(false) };
        Ok(self.store.touch_trusted_device(user_id, &hash, self.clock.now_ms()).await?)
    }

    /// Marks the browser of `client` trusted for the bearer, who must have
    /// signed in with a user-verified passkey within
    /// `mfa.fresh_auth_seconds` (403 `passkey_required` otherwise). A
    /// browser that is already trusted by this user gets a new token, and
    /// its old record ends. Audited, and the owner is mailed.
    pub async fn trust(&self, claims: &AccessClaims, client: &ClientInfo) -> Result<Trusted> {
        self.fresh.require_fresh_passkey(claims).await?;
        if !claims.amr.iter().any(|method| method == USER_VERIFIED) {
            return Err(ApiError::PasskeyRequired(
                "trusting a browser needs a passkey sign-in that verified you (PIN or biometrics)"
                    .into(),
            ));
        }
        let user_id = parse_user(&claims.sub)?;
        let user = self.store.find_user(&claims.sub).await?.ok_or(ApiError::Unauthorized)?;
        let replacing = self.hash_of(&user_id, client.trusted_device.as_deref());
        let token = OpaqueToken::generate();
        let now = self.clock.now_ms();
        let lifetime = self.settings.trust.lifetime;
        let label = user_agent_family(client.user_agent.as_deref());
        let row = TrustedDeviceRow {
            trusted_device_id: uuid::Uuid::now_v7().to_string(),
            user_id,
            token_hash: self.codes.hash(TRUST_PURPOSE, &claims.sub, token.expose()),
            label: label.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + lifetime.as_millis() as i64,
            revoked_at: None,
        };
        let stored =
            self.store.insert_trusted_device(&row, replacing.as_deref(), MAX_TRUSTED, now).await?;
        if stored == TrustStored::TooMany {
            return Err(ApiError::ValidationFailed(format!(
                "at most {MAX_TRUSTED} browsers can be trusted at once; remove one first"
            )));
        }
        let reason = format!("{label}, until {}", rfc3339(row.expires_at));
        self.audit
            .record(
                Event::ok("browser_trusted")
                    .user(&claims.sub)
                    .device(&row.trusted_device_id)
                    .reason(&reason),
            )
            .await;
        self.notifier.notify(
            &user,
            Change::BrowserTrusted { label: &label, until: row.expires_at },
            None,
        );
        Ok(Trusted { device: view(&row, true), token, max_age_secs: lifetime.as_secs() })
    }

    /// The user's live trusted browsers, newest first; the one whose
    /// cookie `client` sent is marked current.
    pub async fn list(&self, user_id: &str, client: &ClientInfo) -> Result<Vec<TrustedDevice>> {
        let user_id = parse_user(user_id)?;
        let rows = self.store.live_trusted_devices(&user_id, self.clock.now_ms()).await?;
        let cookie = client.trusted_device.as_deref();
        Ok(rows.iter().map(|row| view(row, self.is_this(row, cookie))).collect())
    }

    /// Ends one of the user's trusted browsers (404 `not_found` for one
    /// that is not theirs, or no longer live). Audited. Any session may do
    /// this: removing trust only raises the risk score.
    pub async fn revoke(
        &self,
        user_id: &str,
        trusted_device_id: &str,
        client: &ClientInfo,
    ) -> Result<Revoked> {
        let not_found = || ApiError::NotFound("no such trusted browser".into());
        // Ids are UUIDs: anything else names none, and is not looked up.
        let id = uuid::Uuid::parse_str(trusted_device_id).map_err(|_| not_found())?.to_string();
        let user = parse_user(user_id)?;
        // Read before it ends, for whether it is this browser's.
        let row = self.store.find_trusted_device(&id).await?.filter(|row| row.user_id == user);
        if !self.store.revoke_trusted_device(&user, &id, self.clock.now_ms()).await? {
            return Err(not_found());
        }
        let label = row.as_ref().map_or("", |row| row.label.as_str());
        self.audit
            .record(
                Event::ok("browser_trust_revoked")
                    .user(user_id)
                    .device(&id)
                    .reason(&format!("{label} removed by its owner")),
            )
            .await;
        let cookie = client.trusted_device.as_deref();
        Ok(Revoked { was_current: row.is_some_and(|row| self.is_this(&row, cookie)) })
    }

    /// The stored form of a cookie's token for this user; None when there
    /// is none of a token's shape.
    fn hash_of(&self, user_id: &UserId, cookie: Option<&str>) -> Option<String> {
        let token = OpaqueToken::parse_field(cookie?.to_owned(), "trusted_device").ok()?;
        Some(self.codes.hash(TRUST_PURPOSE, &user_id.to_string(), token.expose()))
    }

    /// Whether `row` is the record of the cookie `cookie`, compared in
    /// constant time.
    fn is_this(&self, row: &TrustedDeviceRow, cookie: Option<&str>) -> bool {
        let Some(cookie) = cookie else { return false };
        OpaqueToken::parse_field(cookie.to_owned(), "trusted_device").is_ok_and(|token| {
            self.codes.matches(
                TRUST_PURPOSE,
                &row.user_id.to_string(),
                token.expose(),
                &row.token_hash,
            )
        })
    }
}

fn view(row: &TrustedDeviceRow, current: bool) -> TrustedDevice {
    TrustedDevice {
        trusted_device_id: row.trusted_device_id.clone(),
        label: row.label.clone(),
        created_at: rfc3339(row.created_at),
        last_seen_at: rfc3339(row.last_seen_at),
        expires_at: rfc3339(row.expires_at),
        current,
    }
}

/// A verified token's subject is a user id; anything else is not a caller.
fn parse_user(user_id: &str) -> Result<UserId> {
    UserId::parse(user_id.to_owned()).map_err(|_| ApiError::Unauthorized)
}

/// The browser and system a user agent names, from a fixed list of words
/// ("Chrome on Linux"), for a label a person recognises. Never the user
/// agent as sent: it is the client's claim, and the label goes into mails
/// and the audit trail. The same families as the security page's
/// `describeAgent` (static/security-devices.js).
pub fn user_agent_family(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent else { return "Unknown browser".to_owned() };
    let browser = if ua.contains("Edg/") {
        "Edge"
    } else if ua.contains("OPR/") {
        "Opera"
    } else if ua.contains("Firefox/") {
        "Firefox"
    } else if ua.contains("Chrome/") || ua.contains("CriOS/") {
        "Chrome"
    } else if ua.contains("Safari/") && ua.contains("Version/") {
        "Safari"
    } else {
        "Unknown browser"
    };
    let system = if ua.contains("Android") {
        Some("Android")
    } else if ua.contains("iPhone") || ua.contains("iPad") {
        Some("iOS")
    } else if ua.contains("Windows") {
        Some("Windows")
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        Some("macOS")
    } else if ua.contains("CrOS") {
        Some("ChromeOS")
    } else if ua.contains("Linux") {
        Some("Linux")
    } else {
        None
    };
    match system {
        Some(system) => format!("{browser} on {system}"),
        None => browser.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_a_fixed_list_of_words() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(user_agent_family(Some(chrome)), "Chrome on Linux");
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(user_agent_family(Some(safari)), "Safari on iOS");
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like \
                    Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
        assert_eq!(user_agent_family(Some(edge)), "Edge on Windows");
        assert_eq!(user_agent_family(None), "Unknown browser");
        // Whatever a client claims, nothing of it is copied.
        let forged = "<script>{code}</script>\r\nSubject: hi";
        assert_eq!(user_agent_family(Some(forged)), "Unknown browser");
    }
}
