//! Access tokens (short-lived ES256 JWTs that downstream services verify
//! on their own) and refresh tokens (opaque, stored hashed, rotated on
//! every use).

use std::sync::Arc;

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

use super::audit::{Audit, Event};
use super::keys::SigningKeys;
use crate::clock::Clock;
use crate::config::Settings;
use crate::context::ClientInfo;
use crate::domain::{DeviceId, OpaqueToken, Roles, SessionId, UserId};
use crate::error::{ApiError, Result};
use crate::metrics::Metrics;
use crate::store::{RefreshOutcome, SessionRow, Store};

/// The JWT `typ` of access tokens (RFC 8725 §3.11).
pub const ACCESS_TYP: &str = passgate_verifier::ACCESS_TYP;

/// Clock skew tolerated on `nbf` between nodes.
const NBF_LEEWAY_SECS: i64 = 5;

/// Claims of an access token (API contract, Tokens).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub sid: String,
    pub amr: Vec<String>,
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// What a successful sign-in returns.
/// No Debug: it holds bearer secrets, and nothing should print it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenSet {
    pub user_id: String,
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// Who a new session is for, and how they proved it.
pub struct SessionGrant<'a> {
    pub user_id: UserId,
    pub roles: &'a Roles,
    pub amr: &'a [&'a str],
    pub device_id: Option<DeviceId>,
}

/// The rows a new session writes, and the secret handed out once.
pub struct NewSession {
    pub row: SessionRow,
    pub refresh: OpaqueToken,
}

/// Issues, checks, refreshes and ends sessions and their tokens.
#[derive(Clone)]
pub struct Tokens {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Arc<SigningKeys>,
    audit: Audit,
    metrics: Metrics,
}

impl Tokens {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keys: Arc<SigningKeys>,
        audit: Audit,
        metrics: Metrics,
    ) -> Tokens {
        Tokens { settings, store, clock, keys, audit, metrics }
    }

    pub fn new_session(&self, grant: &SessionGrant<'_>, client: &ClientInfo) -> NewSession {
        let now = self.clock.now_ms();
        let refresh_ttl = self.settings.tokens.refresh_ttl.as_millis() as i64;
        NewSession {
            row: SessionRow {
                session_id: SessionId::new(),
                user_id: grant.user_id,
                device_id: grant.device_id,
                amr: grant.amr.join(" "),
                client_ip: client.ip.clone(),
                user_agent: client.user_agent.clone(),
                created_at: now,
                last_used_at: now,
                expires_at: now + refresh_ttl,
                revoked_at: None,
            },
            refresh: OpaqueToken::generate(),
        }
    }

    /// Signs the access token for a stored session.
    pub fn token_set(
        &self,
        session: &SessionRow,
        roles: &Roles,
        refresh: &OpaqueToken,
    ) -> Result<TokenSet> {
        let now = self.clock.now_secs();
        let ttl = self.settings.tokens.access_ttl.as_secs();
        let claims = AccessClaims {
            iss: self.settings.tokens.issuer.clone(),
            sub: session.user_id.to_string(),
            aud: self.settings.tokens.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: session.session_id.to_string(),
            amr: session.amr.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            roles: roles.names().to_vec(),
            device_id: session.device_id.map(|id| id.to_string()),
        };
        Ok(TokenSet {
            user_id: session.user_id.to_string(),
            access_token: self.keys.sign(&claims, ACCESS_TYP)?,
            token_type: "Bearer",
            expires_in: ttl,
            refresh_token: refresh.expose().to_owned(),
            device_id: None,
        })
    }

    /// Checks signature, issuer, audience and times of an access token,
    /// and that its session has not ended.
    pub async fn verify_access(&self, token: &str) -> Result<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthorized)?;
        if header.typ.as_deref() != Some(ACCESS_TYP) {
            return Err(ApiError::Unauthorized);
        }
        let kid = header.kid.ok_or(ApiError::Unauthorized)?;
        let (algorithm, key) = self
            .keys
            .verifying_key(&kid, self.clock.now_ms())
            .await?
            .ok_or(ApiError::Unauthorized)?;
        // The key decides the algorithm, never the token's header (RFC 8725
        // §3.1): this is what defeats alg=none and HS256-with-public-key.
        if header.alg != algorithm {
            return Err(ApiError::Unauthorized);
        }
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[&self.settings.tokens.audience]);
        validation.set_issuer(&[&self.settings.tokens.issuer]);
        // Times are checked below against the service clock, not the
        // library's, so expiry follows the same clock as everything else.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
            .map_err(|_| ApiError::Unauthorized)?
            .claims;
        let now = self.clock.now_secs();
        if claims.exp <= now || claims.nbf > now + NBF_LEEWAY_SECS {
            return Err(ApiError::Unauthorized);
        }
        // The key's revocation is read with the session, so a key revoked
        // on another node (or by the CLI) is refused here at once.
        let now_ms = self.clock.now_ms();
        let (live, key_live) = match self.store.find_session_signed_by(&claims.sid, &kid).await? {
            Some((s, key_live)) => (self.is_live(&s), key_live),
            None => (false, true),
        };
        if !key_live {
            // This node may still hold the key: pick up the revocation.
            self.keys.refresh_if_stale(now_ms).await?;
        }
        if !live || !key_live {
            return Err(ApiError::Unauthorized);
        }
        Ok(claims)
    }

    /// A session not ended, expired (`tokens.refresh_ttl_seconds` after it
    /// began) or idle (not refreshed for `tokens.idle_timeout_seconds`).
    pub fn is_live(&self, session: &SessionRow) -> bool {
        let now = self.clock.now_ms();
        let idle = self.settings.tokens.idle_timeout.as_millis() as i64;
        session.revoked_at.is_none()
            && session.expires_at > now
            && session.last_used_at > now - idle
    }

    /// Rotates a refresh token (RFC 9700 §4.14.2): the old one is retired,
    /// and presenting a retired one ends its whole session.
    pub async fn refresh(&self, presented: &OpaqueToken) -> Result<TokenSet> {
        let next = OpaqueToken::generate();
        let now = self.clock.now_ms();
        let idle_before = now - self.settings.tokens.idle_timeout.as_millis() as i64;
        match self.store.rotate_refresh(&presented.hash(), &next.hash(), now, idle_before).await? {
            RefreshOutcome::Rotated(session) => {
                let user = self
                    .store
                    .find_user(&session.user_id.to_string())
                    .await?
                    .ok_or(ApiError::InvalidCredentials)?;
                if user.locked_at.is_some() {
                    return Err(ApiError::InvalidCredentials);
                }
                tracing::info!(target: "audit", event = "token_refreshed", user_id = %session.user_id, session_id = %session.session_id);
                self.token_set(&session, &user.roles, &next)
            }
            RefreshOutcome::Reused => {
                let reason = "a retired refresh token was presented; its session is ended";
                self.metrics.refresh_reused();
                self.audit.record(Event::failed("refresh_token_reused", reason)).await;
                Err(ApiError::InvalidCredentials)
            }
            RefreshOutcome::Invalid => Err(ApiError::InvalidCredentials),
        }
    }

    /// Ends the session of a refresh token. Idempotent: an unknown or
    /// already ended one answers the same, so logout never fails the user.
    pub async fn logout(&self, presented: &OpaqueToken) -> Result<()> {
        let ended =
            self.store.end_session_by_refresh(&presented.hash(), self.clock.now_ms()).await?;
        if ended {
            tracing::info!(target: "audit", event = "logout");
        }
        Ok(())
    }
}
