//! Bound devices and sessions the signed-in user can see and manage, and
//! the enrolment ceremony with which a user whose devices an admin reset
//! binds a new passkey.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{PasskeyRegistration, RegisterPublicKeyCredential};

use super::aaguid::authenticator_name;
use super::audit::{Audit, Event};
use super::codes::{self, CodeHasher, RECOVERY_CODES};
use super::fresh::Freshness;
use super::locale::{account_language, catalogue, render};
use super::notify::{Change, Notifier};
use super::passkey::{CeremonyStarted, ENROLMENT_AMR, Passkeys};
use super::throttle::Throttle;
use super::tokens::{AccessClaims, SessionGrant, TokenSet, Tokens};
use super::totp::RecoveryCodes;
use crate::clock::{Clock, rfc3339};
use crate::config::Settings;
use crate::context::ClientInfo;
use crate::domain::{CeremonyId, DeviceId, DeviceName, OneTimeCode, OpaqueToken, UserId, Username};
use crate::error::{ApiError, Result};
use crate::store::{CredentialRow, EnrolProof, SessionRow, Store, Unbound};

const KIND_BIND: &str = "bind";
const KIND_ENROL: &str = "enrol";
pub(super) const ENROLMENT_PURPOSE: &str = "enrolment";
/// Apart from the TOTP recovery codes' purpose, so that neither kind of
/// code passes for the other.
const PASSKEY_RECOVERY_PURPOSE: &str = "passkey-recovery";
/// Wrong enrolment codes allowed before the code is void.
const ENROLMENT_TRIES: i32 = 5;
/// How long a mailed recovery code works once its delay has passed.
const MAILED_RECOVERY_TTL_MS: i64 = 24 * 3600 * 1000;

/// A bound passkey, as GET /v1/me/devices lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Device {
    pub device_id: String,
    pub name: String,
    /// Always `passkey` for now.
    pub kind: &'static str,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// Backup eligible: a synced passkey can be (BE flag).
    pub backup_eligible: bool,
    /// Backed up now (BS flag): a synced passkey, not bound to one device.
    pub backup_state: bool,
    pub aaguid: String,
    /// The authenticator model, when its AAGUID is well known.
    pub authenticator: Option<&'static str>,
    /// RFC 3339: when a passkey bound after a password sign-in may start
    /// approving payments; absent when it may already.
    pub payments_from: Option<String>,
    /// The WebAuthn credential id (base64url), the WebAuthn user handle
    /// the passkey holds (base64url) and the RP id it is scoped to: what a
    /// page passes to the WebAuthn Signal API so that the browser or
    /// password manager forgets a passkey unbound here.
    pub credential_id: String,
    pub user_handle: String,
    pub rp_id: String,
}

impl Device {
    fn of(row: &CredentialRow, rp_id: &str) -> Self {
        Device {
            device_id: row.device_id.to_string(),
            name: row.name.clone(),
            kind: "passkey",
            created_at: rfc3339(row.created_at),
            last_used_at: row.last_used_at.map(rfc3339),
            backup_eligible: row.backup_eligible,
            backup_state: row.backup_state,
            aaguid: row.aaguid.clone(),
            authenticator: authenticator_name(&row.aaguid),
            payments_from: row.payments_after.map(rfc3339),
            credential_id: row.credential_id.clone(),
            // What registration set as the user handle (see
            // `Passkeys::start_registration_for`): the user id's 16 bytes.
            user_handle: URL_SAFE_NO_PAD.encode(row.user_id.as_uuid().as_bytes()),
            rp_id: rp_id.to_owned(),
        }
    }
}

/// A live session, as GET /v1/me/sessions lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub session_id: String,
    /// The bound device it began with, if a passkey was used.
    pub device_id: Option<String>,
    /// RFC 8176 methods it began with.
    pub amr: Vec<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    /// The session of the token making this request.
    pub current: bool,
}

impl Session {
    pub fn of(row: &SessionRow, current_sid: &str) -> Session {
        Session {
            session_id: row.session_id.to_string(),
            device_id: row.device_id.map(|id| id.to_string()),
            amr: row.amr.split(' ').filter(|m| !m.is_empty()).map(str::to_owned).collect(),
            client_ip: row.client_ip.clone(),
            user_agent: row.user_agent.clone(),
            created_at: rfc3339(row.created_at),
            last_used_at: rfc3339(row.last_used_at),
            expires_at: rfc3339(row.expires_at),
            current: row.session_id.to_string() == current_sid,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct BindState {
    registration: PasskeyRegistration,
}

#[derive(Serialize, Deserialize)]
struct EnrolState {
    user_id: UserId,
    code_hash: String,
    /// The code is one of the user's passkey recovery codes, not an
    /// admin's enrolment code. Absent in ceremonies begun before there
    /// were any.
    #[serde(default)]
    by_recovery_code: bool,
    /// The code came by mail, on the owner's own request.
    #[serde(default)]
    by_mail: bool,
    registration: PasskeyRegistration,
}

/// An account's bound passkeys and sessions, and enrolment by code.
#[derive(Clone)]
pub struct Devices {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    codes: Arc<CodeHasher>,
    audit: Audit,
    throttle: Throttle,
    notifier: Notifier,
    fresh: Freshness,
    tokens: Tokens,
    passkeys: Passkeys,
}

impl Devices {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        codes: Arc<CodeHasher>,
        audit: Audit,
        throttle: Throttle,
        notifier: Notifier,
        fresh: Freshness,
        tokens: Tokens,
        passkeys: Passkeys,
    ) -> Devices {
        Devices {
            settings,
            store,
            clock,
            codes,
            audit,
            throttle,
            notifier,
            fresh,
            tokens,
            passkeys,
        }
    }

    pub async fn list(&self, user_id: &str) -> Result<Vec<Device>> {
        let rows = self.store.user_credentials(user_id).await?;
        Ok(rows.iter().map(|row| self.device(row)).collect())
    }

    fn device(&self, row: &CredentialRow) -> Device {
        Device::of(row, &self.settings.webauthn.rp_id)
    }

    /// Starts binding one more passkey. An account that has a passkey
    /// binds another only from a fresh passkey sign-in; one without may
    /// bind its first from any fresh sign-in (see `bind_finish`).
    pub async fn bind_start(&self, claims: &AccessClaims) -> Result<CeremonyStarted> {
        self.fresh.require_strongest_factor(claims).await?;
        let user = self.store.find_user(&claims.sub).await?.ok_or(ApiError::Unauthorized)?;
        let existing = self.store.user_credentials(&user.user_id.to_string()).await?;
        let user_id = user.user_id;
        let (public_key, registration) = self.passkeys.start_registration_for(
            user_id,
            &user.username,
            &user.display_name,
            &existing,
        )?;
        self.passkeys
            .put_ceremony(KIND_BIND, Some(user_id), &BindState { registration }, public_key)
            .await
    }

    pub async fn bind_finish(
        &self,
        claims: &AccessClaims,
        ceremony_id: &CeremonyId,
        credential: &RegisterPublicKeyCredential,
        device_name: Option<DeviceName>,
    ) -> Result<Device> {
        let row = self
            .store
            .take_owned_ceremony(ceremony_id.as_ref(), KIND_BIND, &claims.sub, self.clock.now_ms())
            .await?
            .ok_or(ApiError::CeremonyNotFound)?;
        let state: BindState = serde_json::from_str(&row.state).map_err(anyhow::Error::from)?;
        // The token's subject is a user id the server issued.
        let user_id = UserId::parse(claims.sub.clone()).map_err(anyhow::Error::from)?;
        let result =
            self.passkeys.new_credential(user_id, credential, &state.registration, device_name);
        let mut credential = match result {
            Ok(credential) => credential,
            Err(error) => {
                self.audit
                    .record(Event::failed("device_bound", error.code()).user(&claims.sub))
                    .await;
                return Err(error);
            }
        };
        // A passkey bound from a password sign-in could be a phisher's:
        // it signs in at once, but approves payments only after a delay
        // in which the owner, mailed at once, can remove it.
        let by_passkey = self.fresh.session_start(claims).await?.passkey;
        if !by_passkey {
            let delay = self.settings.stepup.fallback_passkey_delay.as_millis() as i64;
            credential.payments_after = Some(self.clock.now_ms() + delay);
        }
        self.store.add_credential(&credential).await?;
        let device_id = credential.device_id.to_string();
        let mut event = Event::ok("device_bound").user(&claims.sub).device(&device_id);
        if !by_passkey {
            event = event.reason("bound after a password sign-in: payments delayed");
        }
        self.audit.record(event).await;
        if let Some(user) = self.store.find_user(&claims.sub).await? {
            let change = Change::PasskeyBound {
                name: &credential.name,
                payments_from: credential.payments_after,
            };
            self.notifier.notify(&user, change, None);
        }
        Ok(self.device(&credential))
    }

    pub async fn rename_device(
        &self,
        user_id: &str,
        device_id: &DeviceId,
        name: &DeviceName,
    ) -> Result<Device> {
        if !self.store.rename_credential(user_id, &device_id.to_string(), name.as_ref()).await? {
            return Err(ApiError::NotFound("no such device".into()));
        }
        self.audit
            .record(Event::ok("device_renamed").user(user_id).device(&device_id.to_string()))
            .await;
        let devices = self.store.user_credentials(user_id).await?;
        let row = devices
            .iter()
            .find(|d| d.device_id == *device_id)
            .ok_or_else(|| ApiError::NotFound("no such device".into()))?;
        Ok(self.device(row))
    }

    /// The signed-in user unbinds one of their passkeys: only from a fresh
    /// passkey sign-in, so that a phished password and code cannot remove
    /// the owner's passkey.
    pub async fn unbind_own_device(
        &self,
        claims: &AccessClaims,
        device_id: &DeviceId,
    ) -> Result<()> {
        self.fresh.require_fresh_passkey(claims).await?;
        self.unbind_device(&claims.sub, device_id, None).await
    }

    /// Unbinds a device (and ends the sessions it began), unless it is the
    /// account's last way to sign in.
    pub(super) async fn unbind_device(
        &self,
        user_id: &str,
        device_id: &DeviceId,
        actor: Option<&str>,
    ) -> Result<()> {
        let devices = self.store.user_credentials(user_id).await?;
        let Some(name) = devices.iter().find(|d| d.device_id == *device_id).map(|d| d.name.clone())
        else {
            return Err(ApiError::NotFound("no such device".into()));
        };
        let last_way = || {
            ApiError::Forbidden(
                "this is the account's last way to sign in: bind another passkey, or set a password and a second factor, first".into(),
            )
        };
        // An admin may remove the last one (a lost phone); a user keeps a
        // way in. The store counts again under the user's lock.
        let keep_one = actor.is_none() && !self.has_fallback(user_id).await?;
        if devices.len() == 1 && keep_one {
            return Err(last_way());
        }
        match self
            .store
            .delete_credential(user_id, &device_id.to_string(), keep_one, self.clock.now_ms())
            .await?
        {
            Unbound::Deleted => {}
            Unbound::NotFound => return Err(ApiError::NotFound("no such device".into())),
            Unbound::LastOne => return Err(last_way()),
        }
        let device_id = device_id.to_string();
        let mut event = Event::ok("device_unbound").user(user_id).device(&device_id);
        event.actor_id = actor;
        self.audit.record(event).await;
        if let Some(user) = self.store.find_user(user_id).await? {
            let change = Change::PasskeyUnbound { name: &name, by_admin: actor.is_some() };
            self.notifier.notify(&user, change, None);
        }
        Ok(())
    }

    /// A password and a second factor: a way in without any passkey.
    async fn has_fallback(&self, user_id: &str) -> Result<bool> {
        let counts = self.store.factor_counts(user_id).await?;
        let user = self.store.find_user(user_id).await?.ok_or(ApiError::Unauthorized)?;
        let second = counts.totp > 0 || (user.email_verified && user.email.is_some());
        Ok(counts.passwords > 0 && second)
    }

    pub async fn sessions(&self, claims: &AccessClaims) -> Result<Vec<Session>> {
        let rows = self.store.user_sessions(&claims.sub, self.clock.now_ms()).await?;
        Ok(rows
            .iter()
            .filter(|row| self.tokens.is_live(row))
            .map(|row| Session::of(row, &claims.sid))
            .collect())
    }

    pub async fn end_session(&self, user_id: &str, session_id: &str) -> Result<()> {
        if !self.store.end_session(user_id, session_id, self.clock.now_ms()).await? {
            return Err(ApiError::NotFound("no such live session".into()));
        }
        self.audit
            .record(Event::ok("session_ended").user(user_id).reason("ended by the user"))
            .await;
        Ok(())
    }

    /// Account recovery by the verified address: mails a one-time code
    /// that binds a new passkey, working only after
    /// `mfa.mail_recovery_delay_seconds`, with a link to cancel. The answer
    /// is the same whether or not the account exists, has a verified
    /// address or already has a code pending; the audit trail tells which.
    pub async fn request_mail_recovery(
        &self,
        username: &Username,
        client: &ClientInfo,
    ) -> Result<()> {
        self.throttle.check("recovery", client, Some(username.as_ref())).await?;
        let refused = |reason: &'static str| Event::failed("account_recovery_requested", reason);
        let Some(user) = self.store.find_user_by_username(username.as_ref()).await? else {
            self.audit.record(refused("unknown user")).await;
            return Ok(());
        };
        let user_id = user.user_id.to_string();
        let Some(address) = user.email.clone().filter(|_| user.email_verified) else {
            self.audit.record(refused("no verified address").user(&user_id)).await;
            return Ok(());
        };
        if user.locked_at.is_some() {
            self.audit.record(refused("account locked").user(&user_id)).await;
            return Ok(());
        }
        let code = codes::recovery_code();
        let hash = self.codes.hash(ENROLMENT_PURPOSE, &user_id, &codes::normalise_recovery(&code));
        let cancel = OpaqueToken::generate();
        let now = self.clock.now_ms();
        let valid_from = now + self.settings.mfa.mail_recovery_delay.as_millis() as i64;
        let expires_at = valid_from + MAILED_RECOVERY_TTL_MS;
        let stored = self
            .store
            .put_mailed_recovery(&user_id, &hash, &cancel.hash(), valid_from, expires_at, now)
            .await?;
        if !stored {
            self.audit.record(refused("an enrolment code is already pending").user(&user_id)).await;
            return Ok(());
        }
        self.audit.record(Event::ok("account_recovery_requested").user(&user_id)).await;
        let origin = self.notifier.origin();
        // Whoever asked, the owner reads it, and must understand the
        // warning most when it was not them: so the account's language
        // comes first, as for a notice, and the request's only without one.
        let language = account_language(&user);
        let words = catalogue(language);
        let values: [(&str, &str); 8] = [
            ("name", &user.display_name),
            ("username", &user.username),
            ("stamp", &self.notifier.when_and_where(language)),
            ("from", &rfc3339(valid_from)),
            ("until", &rfc3339(expires_at)),
            ("origin", origin),
            ("code", &code),
            ("cancel", cancel.expose()),
        ];
        let body = render(words.recovery_requested_body, &values);
        self.notifier.mail(address, words.subject_recovery_requested, body);
        Ok(())
    }

    /// Cancels a mailed recovery with the token from its mail.
    pub async fn cancel_mail_recovery(
        &self,
        token: &OpaqueToken,
        client: &ClientInfo,
    ) -> Result<()> {
        self.throttle.check("recovery", client, None).await?;
        let Some(user_id) = self.store.cancel_mailed_recovery(&token.hash()).await? else {
            self.audit
                .record(Event::failed("account_recovery_cancelled", "unknown or spent token"))
                .await;
            return Err(ApiError::InvalidCode);
        };
        self.audit
            .record(
                Event::ok("account_recovery_cancelled")
                    .user(&user_id)
                    .reason("with the link from the mail"),
            )
            .await;
        if let Some(user) = self.store.find_user(&user_id).await? {
            self.notifier.notify(&user, Change::RecoveryCancelled { by_passkey: false }, None);
        }
        Ok(())
    }

    /// Makes a new set of passkey recovery codes, shown this once (the old
    /// set stops working): each can later start the enrolment of a new
    /// passkey when every bound one is lost. Only a fresh passkey sign-in
    /// may make them: a phished password and code must not mint a way in.
    pub async fn make_recovery_codes(&self, claims: &AccessClaims) -> Result<RecoveryCodes> {
        self.fresh.require_fresh_passkey(claims).await?;
        let user_id = claims.sub.as_str();
        let shown: Vec<String> = (0..RECOVERY_CODES).map(|_| codes::recovery_code()).collect();
        let hashes: Vec<String> = shown
            .iter()
            .map(|c| {
                let normalised = codes::normalise_recovery(c);
                self.codes.hash(PASSKEY_RECOVERY_PURPOSE, user_id, &normalised)
            })
            .collect();
        self.store.replace_passkey_recovery_codes(user_id, &hashes, self.clock.now_ms()).await?;
        self.audit.record(Event::ok("passkey_recovery_codes_made").user(user_id)).await;
        if let Some(user) = self.store.find_user(user_id).await? {
            self.notifier.notify(&user, Change::PasskeyRecoveryCodesMade, None);
        }
        Ok(RecoveryCodes { recovery_codes: shown })
    }

    /// Starts binding a new passkey with a one-time code: the one an
    /// admin's device reset mailed, or one of the user's passkey recovery
    /// codes. Wrong codes count; five void an enrolment code, and the
    /// `enrol` throttle slows guessing at recovery codes (about 50 bits
    /// each). Nothing is spent until the passkey is bound.
    pub async fn enrol_start(
        &self,
        username: &Username,
        code: &OneTimeCode,
        client: &ClientInfo,
    ) -> Result<CeremonyStarted> {
        self.throttle.check("enrol", client, Some(username.as_ref())).await?;
        let user = self.store.find_user_by_username(username.as_ref()).await?;
        let Some(user) = user else {
            self.audit.record(Event::failed("device_enrolled", "unknown user")).await;
            return Err(ApiError::InvalidCode);
        };
        let user_id = user.user_id.to_string();
        let live =
            self.store.try_enrolment_code(&user_id, ENROLMENT_TRIES, self.clock.now_ms()).await?;
        let recovery_hash = self.codes.hash(PASSKEY_RECOVERY_PURPOSE, &user_id, code.expose());
        let (code_hash, by_recovery_code) = match live {
            Some((stored, _))
                if self.codes.matches(ENROLMENT_PURPOSE, &user_id, code.expose(), &stored) =>
            {
                self.store.return_enrolment_try(&user_id, &stored).await?;
                (stored, false)
            }
            _ if self.store.passkey_recovery_code_live(&user_id, &recovery_hash).await? => {
                (recovery_hash, true)
            }
            _ => {
                self.audit
                    .record(
                        Event::failed("device_enrolled", "wrong or expired enrolment code")
                            .user(&user_id),
                    )
                    .await;
                return Err(ApiError::InvalidCode);
            }
        };
        if user.locked_at.is_some() {
            return Err(ApiError::AccountDisabled);
        }
        let existing = self.store.user_credentials(&user_id).await?;
        let mut by_mail = false;
        if !by_recovery_code
            && let Some(requested) = self.store.mailed_recovery_requested_at(&user_id).await?
        {
            // The owner still has a passkey and used it after asking (or
            // after someone else asked in their name): the request is void.
            if existing.iter().any(|c| c.last_used_at.is_some_and(|used| used > requested)) {
                self.store.void_mailed_recovery(&user_id).await?;
                self.audit
                    .record(
                        Event::ok("account_recovery_cancelled")
                            .user(&user_id)
                            .reason("a passkey signed in after the request"),
                    )
                    .await;
                self.notifier.notify(&user, Change::RecoveryCancelled { by_passkey: true }, None);
                return Err(ApiError::InvalidCode);
            }
            by_mail = true;
        }
        let user_id = user.user_id;
        let (public_key, registration) = self.passkeys.start_registration_for(
            user_id,
            &user.username,
            &user.display_name,
            &existing,
        )?;
        let state = EnrolState { user_id, code_hash, by_recovery_code, by_mail, registration };
        self.passkeys.put_ceremony(KIND_ENROL, Some(user_id), &state, public_key).await
    }

    /// Binds the new passkey and uses up the code, at once; signs in.
    pub async fn enrol_finish(
        &self,
        ceremony_id: &CeremonyId,
        credential: &RegisterPublicKeyCredential,
        device_name: Option<DeviceName>,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let state: EnrolState = self.passkeys.take_ceremony(KIND_ENROL, ceremony_id).await?;
        let user_id = state.user_id.to_string();
        let user = self.store.find_user(&user_id).await?.ok_or(ApiError::InvalidCode)?;
        if user.locked_at.is_some() {
            return Err(ApiError::AccountDisabled);
        }
        let mut row = self.passkeys.new_credential(
            state.user_id,
            credential,
            &state.registration,
            device_name,
        )?;
        let now = self.clock.now_ms();
        // A recovery code is one factor someone may have copied, and a
        // mailed one is as strong as the mailbox: the passkey either binds
        // signs in at once but approves payments only after the delay a
        // passkey bound from a password sign-in waits, in which the owner,
        // mailed at once, can remove it.
        if state.by_recovery_code || state.by_mail {
            let delay = self.settings.stepup.fallback_passkey_delay.as_millis() as i64;
            row.payments_after = Some(now + delay);
        }
        let proof = if state.by_recovery_code {
            EnrolProof::RecoveryCode(&state.code_hash, now)
        } else {
            EnrolProof::EnrolmentCode(&state.code_hash)
        };
        let device_id = row.device_id;
        let grant = SessionGrant {
            user_id: state.user_id,
            roles: &user.roles,
            amr: ENROLMENT_AMR,
            device_id: Some(device_id),
        };
        let session = self.tokens.new_session(&grant, client);
        if !self.store.enrol_with_code(proof, &row, &session.row, &session.refresh.hash()).await? {
            self.audit
                .record(
                    Event::failed("device_enrolled", "enrolment code already used").user(&user_id),
                )
                .await;
            return Err(ApiError::InvalidCode);
        }
        let device = device_id.to_string();
        let mut event = Event::ok("device_enrolled").user(&user_id).device(&device);
        if state.by_mail {
            event = event
                .reason("with a mailed account recovery code, after its delay: payments delayed");
        }
        if state.by_recovery_code {
            event = event.reason("with a passkey recovery code: payments delayed");
        }
        if state.by_recovery_code || state.by_mail {
            let payments_from = row.payments_after.unwrap_or(now);
            let change =
                Change::PasskeyRecovered { name: &row.name, payments_from, by_mail: state.by_mail };
            self.notifier.notify(&user, change, None);
        }
        self.audit.record(event).await;
        let mut tokens = self.tokens.token_set(&session.row, &user.roles, &session.refresh)?;
        tokens.device_id = Some(device_id.to_string());
        Ok(tokens)
    }
}
