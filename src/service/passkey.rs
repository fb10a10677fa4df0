//! Passkey ceremonies: registration and sign-in, username-first and
//! discoverable. State lives in the `ceremony` table under an opaque id,
//! so any node can finish what another started; a finish takes (deletes)
//! the row before verifying, so each challenge is answered at most once.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;
use webauthn_rs::prelude::{
    Base64UrlSafeData, COSEKey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Webauthn,
};
use webauthn_rs_proto::{
    AllowCredentials, AuthenticatorTransport, PublicKeyCredentialRequestOptions,
    RequestAuthenticationExtensions, ResidentKeyRequirement, UserVerificationPolicy,
};

use super::assertion::{PublicKey, Refusal, RelyingParty, Stored, Verified};
use super::audit::{Audit, Event, log_audit};
use super::authenticator_data::registration_facts;
use super::login_handle::{HandleSealer, LoginTicket};
use super::risk::{Attempt, Factor, Risk, SignInScope};
use super::throttle::Throttle;
use super::tokens::{SessionGrant, TokenSet, Tokens};
use crate::clock::Clock;
use crate::config::Settings;
use crate::context::ClientInfo;
use crate::domain::{
    CeremonyId, DeviceId, DeviceName, DisplayName, EmailAddress, Roles, UserId, Username,
};
use crate::error::{ApiError, Result};
use crate::metrics::{CeremonyOutcome, Metrics};
use crate::store::{
    CeremonyRow, CredentialRow, CredentialUse, LoginRows, LoginStored, ProfileFact,
    RegistrationRows, Seen, Store, UserRow,
};

pub(super) const KIND_REGISTER: &str = "register";
/// The rate-limit group of registration starts and finishes.
const REGISTER_GROUP: &str = "register";
const KIND_LOGIN: &str = "login";
/// RFC 8176 methods for a user-verified passkey (API contract, Tokens).
pub(super) const PASSKEY_AMR: &[&str] = &["hwk", "user"];
/// A session opened by binding a passkey with an admin's enrolment code:
/// a passkey, but begun with a code that was mailed or handed over, so it
/// does not count as a passkey sign-in for sensitive changes.
pub(super) const ENROLMENT_AMR: &[&str] = &["hwk", "user", "enrol"];
/// A sign-in with a passkey still waiting out its delay (bound after a
/// password sign-in, `payments_after` in the future): a passkey, but maybe
/// a phisher's, so not a passkey sign-in for sensitive changes until the
/// owner, mailed when it was bound, has had the delay to remove it.
pub(super) const PROBATION_AMR: &[&str] = &["hwk", "user", "new"];

/// A started ceremony: what the client passes to its platform API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CeremonyStarted {
    pub ceremony_id: String,
    /// WebAuthn Level 3 `PublicKeyCredentialCreationOptionsJSON` or
    /// `PublicKeyCredentialRequestOptionsJSON`.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    pub public_key: Value,
}

pub struct RegisterStart {
    pub username: Username,
    pub display_name: Option<DisplayName>,
    pub email: Option<EmailAddress>,
}

#[derive(Serialize, Deserialize)]
struct RegisterState {
    user_id: UserId,
    username: String,
    display_name: String,
    email: Option<String>,
    registration: PasskeyRegistration,
}

/// Passkey registration and sign-in.
#[derive(Clone)]
pub struct Passkeys {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    webauthn: Arc<Webauthn>,
    rp: Arc<RelyingParty>,
    handles: Arc<HandleSealer>,
    decoy_key: Arc<[u8]>,
    audit: Audit,
    throttle: Throttle,
    tokens: Tokens,
    risk: Risk,
}

impl Passkeys {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        webauthn: Arc<Webauthn>,
        rp: Arc<RelyingParty>,
        handles: Arc<HandleSealer>,
        decoy_key: Arc<[u8]>,
        audit: Audit,
        throttle: Throttle,
        tokens: Tokens,
        risk: Risk,
    ) -> Passkeys {
        Passkeys {
            settings,
            store,
            clock,
            metrics,
            webauthn,
            rp,
            handles,
            decoy_key,
            audit,
            throttle,
            tokens,
            risk,
        }
    }

    /// Starts a registration. Anyone may call it, and each start stores a
    /// ceremony: counted per client address (`limits.ip_requests_per_minute`).
    pub async fn register_start(
        &self,
        input: RegisterStart,
        client: &ClientInfo,
    ) -> Result<CeremonyStarted> {
        self.throttle.check(REGISTER_GROUP, client, None).await?;
        let user_id = UserId::new();
        let display_name =
            input.display_name.map(|d| d.to_string()).unwrap_or_else(|| input.username.to_string());
        let (public_key, registration) =
            self.start_registration_for(user_id, input.username.as_ref(), &display_name, &[])?;
        let state = RegisterState {
            user_id,
            username: input.username.to_string(),
            display_name,
            email: input.email.map(|e| e.to_string()),
            registration,
        };
        // The name's check and the ceremony's write in one statement.
        let row = self.ceremony_row(KIND_REGISTER, Some(user_id), &state)?;
        if !self.store.put_ceremony_for_new_user(&row, &state.username).await? {
            return Err(ApiError::UsernameTaken);
        }
        Ok(self.started(KIND_REGISTER, row, public_key))
    }

    pub async fn register_finish(
        &self,
        ceremony_id: &CeremonyId,
        credential: &RegisterPublicKeyCredential,
        device_name: Option<DeviceName>,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        self.throttle.check(REGISTER_GROUP, client, None).await?;
        let result = self.finish_registration(ceremony_id, credential, device_name, client).await;
        self.metrics.ceremony_result(KIND_REGISTER, &result);
        if let Err(error @ ApiError::WebauthnFailed(_)) = &result {
            self.audit.record(Event::failed("user_registered", error.code())).await;
        }
        result
    }

    async fn finish_registration(
        &self,
        ceremony_id: &CeremonyId,
        credential: &RegisterPublicKeyCredential,
        device_name: Option<DeviceName>,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let state: RegisterState = self.take_ceremony(KIND_REGISTER, ceremony_id).await?;
        let row =
            self.new_credential(state.user_id, credential, &state.registration, device_name)?;
        let device_id = row.device_id;
        let user = UserRow {
            user_id: state.user_id,
            username: state.username,
            display_name: state.display_name,
            email: state.email,
            email_verified: false,
            roles: Roles::default(),
            locked_at: None,
            created_at: row.created_at,
            // The notices follow the language the account was made in.
            language: super::locale::request_language().map(|l| l.tag().to_owned()),
        };
        let grant = SessionGrant {
            user_id: state.user_id,
            roles: &user.roles,
            amr: PASSKEY_AMR,
            device_id: Some(device_id),
        };
        let session = self.tokens.new_session(&grant, client);
        let (user_id, device) = (user.user_id.to_string(), device_id.to_string());
        let audit = self.audit.row(Event::ok("user_registered").user(&user_id).device(&device));
        let history = self.risk.registration_history(&row.credential_id, client);
        let seen = Seen::all(&history);
        let rows = RegistrationRows {
            user: &user,
            credential: &row,
            session: &session.row,
            refresh_hash: &session.refresh.hash(),
            audit: &audit,
            seen: &seen,
        };
        self.store.register_user(&rows).await?;
        log_audit(&audit);
        tracing::Span::current().record("user_id", tracing::field::display(&user.user_id));
        let mut tokens = self.tokens.token_set(&session.row, &user.roles, &session.refresh)?;
        tokens.device_id = Some(device_id.to_string());
        Ok(tokens)
    }

    /// Registration options for a passkey of `user_id`, excluding the
    /// credentials it already has. A passkey must be discoverable (so
    /// username-less sign-in finds it) and user-verifying (WebAuthn §5.4.6,
    /// residentKey "required"); webauthn-rs asks for "discouraged".
    pub(super) fn start_registration_for(
        &self,
        user_id: UserId,
        username: &str,
        display_name: &str,
        existing: &[CredentialRow],
    ) -> Result<(Value, PasskeyRegistration)> {
        let exclude: Vec<webauthn_rs::prelude::CredentialID> = existing
            .iter()
            .filter_map(|row| URL_SAFE_NO_PAD.decode(&row.credential_id).ok())
            .map(Into::into)
            .collect();
        let (mut challenge, registration) = self
            .webauthn
            .start_passkey_registration(
                *user_id.as_uuid(),
                username,
                display_name,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("starting registration: {e}")))?;
        if let Some(selection) = challenge.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Required);
            selection.require_resident_key = true;
            selection.user_verification = UserVerificationPolicy::Required;
        }
        let public_key =
            serde_json::to_value(&challenge.public_key).map_err(anyhow::Error::from)?;
        Ok((public_key, registration))
    }

    /// Verifies a registration response and makes the credential row of
    /// the new device (not yet stored).
    pub(super) fn new_credential(
        &self,
        user_id: UserId,
        credential: &RegisterPublicKeyCredential,
        registration: &PasskeyRegistration,
        device_name: Option<DeviceName>,
    ) -> Result<CredentialRow> {
        let passkey =
            self.webauthn.finish_passkey_registration(credential, registration).map_err(|e| {
                ApiError::WebauthnFailed(format!("the registration response was refused: {e}"))
            })?;
        let facts = registration_facts(credential.response.attestation_object.as_ref())
            .ok_or_else(|| ApiError::WebauthnFailed("unreadable authenticator data".into()))?;
        let transports: Vec<&str> =
            credential.response.transports.iter().flatten().filter_map(transport_name).collect();
        Ok(CredentialRow {
            credential_id: URL_SAFE_NO_PAD.encode(passkey.cred_id()),
            device_id: DeviceId::new(),
            user_id,
            name: device_name.map(|n| n.to_string()).unwrap_or_else(|| "Passkey".to_owned()),
            passkey: serde_json::to_string(&passkey).map_err(anyhow::Error::from)?,
            sign_count: i64::from(facts.counter),
            backup_eligible: facts.backup_eligible,
            backup_state: facts.backup_state,
            aaguid: facts.aaguid.to_string(),
            transports: serde_json::to_string(&transports).map_err(anyhow::Error::from)?,
            created_at: self.clock.now_ms(),
            last_used_at: None,
            payments_after: None,
        })
    }

    /// Starts a sign-in. With a username it lists that user's credentials;
    /// an unknown username gets made-up ids that are stable for the name,
    /// so the answer does not reveal whether the account exists. Nothing is
    /// written: the state travels sealed in the `ceremony_id` (see
    /// `login_handle`).
    pub async fn login_start(&self, username: Option<Username>) -> Result<CeremonyStarted> {
        let challenge = new_challenge();
        let expires_at =
            self.clock.now_ms() + self.settings.webauthn.ceremony_ttl.as_millis() as i64;
        let Some(username) = username else {
            // Conditional UI asks for user verification metrics, as
            // webauthn-rs's discoverable flow does.
            let extensions = RequestAuthenticationExtensions {
                appid: None,
                uvm: Some(true),
                hmac_get_secret: None,
            };
            let options = self.request_options(&challenge, Vec::new(), Some(extensions));
            let ticket = LoginTicket::new(None, true, challenge, expires_at);
            return self.login_started(&ticket, &options);
        };
        let rows = self.store.login_credentials(username.as_ref()).await?;
        // An unknown name, or an account with no passkeys, is offered
        // stable made-up ids, in an answer shaped like a real account's.
        let (user_id, allowed) = match rows.first() {
            Some(row) => (Some(*row.user_id.as_uuid()), allow_credentials(&rows)?),
            None => (None, self.decoy_credentials(&username).await?),
        };
        let options = self.request_options(&challenge, allowed, None);
        self.login_started(&LoginTicket::new(user_id, false, challenge, expires_at), &options)
    }

    fn login_started(
        &self,
        ticket: &LoginTicket,
        options: &PublicKeyCredentialRequestOptions,
    ) -> Result<CeremonyStarted> {
        self.metrics.ceremony(KIND_LOGIN, CeremonyOutcome::Started);
        Ok(CeremonyStarted {
            ceremony_id: self.handles.seal(ticket)?,
            public_key: serde_json::to_value(options).map_err(anyhow::Error::from)?,
        })
    }

    pub async fn login_finish(
        &self,
        ceremony_id: &CeremonyId,
        credential: &PublicKeyCredential,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let ticket = self.handles.open(ceremony_id.as_ref(), self.clock.now_ms());
        let result = match &ticket {
            Some(ticket) => self.finish_login(ticket, credential, client).await,
            None => Err(ApiError::CeremonyNotFound),
        };
        if let (Err(_), Some(ticket)) = (&result, &ticket) {
            // A refused answer uses the handle up, as any finish does. A
            // good answer recorded it in the sign-in's own transaction.
            self.store.use_up_login(&ticket.used_id(), self.used_until(ticket)).await?;
        }
        self.metrics.ceremony_result(KIND_LOGIN, &result);
        if let Err(ApiError::InvalidCredentials) = &result {
            self.audit.record(Event::failed("login", "passkey assertion refused")).await;
        }
        result
    }

    /// How long a used handle's record is kept: past the handle's own
    /// expiry by a ceremony's lifetime, so that a node whose clock runs
    /// behind, which still takes the handle, also still finds it used.
    fn used_until(&self, ticket: &LoginTicket) -> crate::clock::Millis {
        ticket.expires_at + self.settings.webauthn.ceremony_ttl.as_millis() as i64
    }

    async fn finish_login(
        &self,
        ticket: &LoginTicket,
        credential: &PublicKeyCredential,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let credential_id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
        // The risk decision's profile comes with the credential, when the
        // rules read one: one round trip to the database less.
        let scope = self.risk.sign_in_scope(client);
        let (used, owned) = match &scope {
            Some(scope) => {
                let query = scope.query(&credential_id);
                let (used, owned) =
                    self.store.find_login_with_profile(&ticket.used_id(), &query).await?;
                (used, owned.map(|(row, user, facts)| (row, user, Some((scope, facts)))))
            }
            None => {
                let (used, owned) =
                    self.store.find_login(&ticket.used_id(), &credential_id).await?;
                (used, owned.map(|(row, user)| (row, user, None)))
            }
        };
        if used {
            return Err(ApiError::CeremonyNotFound);
        }
        let refused = |reason: &str| {
            tracing::info!(target: "audit", event = "login_failed", reason);
            ApiError::InvalidCredentials
        };
        let expected_user = match (ticket.discoverable, ticket.user_id) {
            (true, _) => None,
            (false, Some(user_id)) => Some(user_id.to_string()),
            (false, None) => return Err(refused("no such account")),
        };
        let (row, user, profile) = owned.ok_or_else(|| refused("unknown credential"))?;
        // §7.2 step 6: the user handle, when the authenticator returns
        // one, must name the credential's owner; a discoverable sign-in
        // has nothing else to name the user with, so it must be there.
        let handle_matches = credential
            .get_user_unique_id()
            .map(|handle| Uuid::from_slice(handle).is_ok_and(|h| h == *row.user_id.as_uuid()));
        let owner_ok = match expected_user {
            Some(user_id) => row.user_id.to_string() == user_id && handle_matches != Some(false),
            None => handle_matches == Some(true),
        };
        if !owner_ok {
            return Err(refused("credential does not belong to the user"));
        }
        let verified = match self.verify_assertion(credential, &ticket.challenge, &row)? {
            // The same answer, finished twice at once (a double submit):
            // the other finish stored its counter and recorded the handle.
            // Not a clone.
            Err(Refusal::CounterNotIncreased)
                if self.store.find_login(&ticket.used_id(), "").await?.0 =>
            {
                return Err(ApiError::CeremonyNotFound);
            }
            other => self.refusal_answer(other, &row).await?,
        };
        self.complete_login(ticket, row, user, verified, client, profile).await
    }

    /// Checks an assertion against a stored credential.
    pub(super) fn verify_assertion(
        &self,
        credential: &PublicKeyCredential,
        challenge: &[u8],
        row: &CredentialRow,
    ) -> Result<std::result::Result<Verified, Refusal>> {
        let key = public_key_of(&row.passkey)?;
        let stored = Stored {
            key: &key,
            sign_count: u32::try_from(row.sign_count).unwrap_or(u32::MAX),
            backup_eligible: row.backup_eligible,
        };
        Ok(self.rp.verify(credential, challenge, &stored))
    }

    /// A refusal is logged with its reason (a counter that did not move
    /// forward also as a possible clone) and answered as invalid
    /// credentials.
    pub(super) async fn refusal_answer(
        &self,
        checked: std::result::Result<Verified, Refusal>,
        row: &CredentialRow,
    ) -> Result<Verified> {
        match checked {
            Ok(verified) => Ok(verified),
            Err(Refusal::CounterNotIncreased) => {
                Err(self.clone_warning(&row.user_id, &row.device_id).await)
            }
            Err(reason) => {
                tracing::info!(target: "audit", event = "login_failed", user_id = %row.user_id, reason = %reason);
                Err(ApiError::InvalidCredentials)
            }
        }
    }

    /// Takes the ceremony, stores the new counter, opens the session and
    /// writes the audit row, in one transaction.
    async fn complete_login(
        &self,
        ticket: &LoginTicket,
        row: CredentialRow,
        user: UserRow,
        verified: Verified,
        client: &ClientInfo,
        profile: Option<(&SignInScope, Vec<ProfileFact>)>,
    ) -> Result<TokenSet> {
        tracing::Span::current().record("user_id", tracing::field::display(&user.user_id));
        if user.locked_at.is_some() {
            // The passkey proved who this is: they should learn why they
            // cannot get in, rather than think their passkey broke.
            self.audit
                .record(Event::failed("login", "account locked").user(&user.user_id.to_string()))
                .await;
            return Err(ApiError::AccountDisabled);
        }
        // Before anything is written: a step-up, hold or denial opens no
        // session, and the finish's error path uses the handle up, so the
        // same answer cannot be sent again to get past it.
        let attempt = Attempt {
            user_id: &user.user_id,
            factor: Factor::Passkey,
            user_verified: true,
            credential: Some(&row.credential_id),
            synced: row.backup_eligible,
            client,
            payment: None,
        };
        let passed = self.risk.decide_with(&attempt, profile).await?;
        let used = self.credential_use(&row, verified);
        let device_id = row.device_id;
        let user_id = user.user_id;
        let on_probation = row.payments_after.is_some_and(|from| from > self.clock.now_ms());
        let grant = SessionGrant {
            user_id,
            roles: &user.roles,
            amr: if on_probation { PROBATION_AMR } else { PASSKEY_AMR },
            device_id: Some(device_id),
        };
        let session = self.tokens.new_session(&grant, client);
        let (user_id, device_id) = (user_id.to_string(), device_id.to_string());
        let audit = Event::ok("login").user(&user_id).device(&device_id).reason("passkey");
        let audit = self.audit.row(audit);
        let used_id = ticket.used_id();
        // What the sign-in adds to the risk history goes in its own
        // write, not a statement after it.
        let seen = Seen::all(passed.seen());
        let login = LoginRows {
            used_id: &used_id,
            handle_expires_at: self.used_until(ticket),
            used: &used,
            session: &session.row,
            refresh_hash: &session.refresh.hash(),
            audit: &audit,
            seen: &seen,
        };
        match self.store.complete_login(&login).await? {
            LoginStored::Done => {}
            // Another finish of the same handle got there first.
            LoginStored::CeremonyGone => return Err(ApiError::CeremonyNotFound),
            // Another sign-in stored a newer counter after this one was
            // verified: the same clone check, lost in a race.
            LoginStored::CounterNotIncreased => {
                return Err(self.clone_warning(&row.user_id, &row.device_id).await);
            }
        }
        log_audit(&audit);
        self.tokens.token_set(&session.row, &user.roles, &session.refresh)
    }

    /// What a verified assertion changes in its credential row. The
    /// counter and backup flags live in their columns; the passkey JSON
    /// keeps those of its registration.
    pub(super) fn credential_use(&self, row: &CredentialRow, verified: Verified) -> CredentialUse {
        CredentialUse {
            credential_id: row.credential_id.clone(),
            sign_count: i64::from(verified.counter),
            backup_eligible: verified.backup_eligible,
            backup_state: verified.backup_state,
            used_at: self.clock.now_ms(),
        }
    }

    pub(super) async fn clone_warning(&self, user_id: &UserId, device_id: &DeviceId) -> ApiError {
        self.metrics.clone_warning();
        let event = Event::failed("clone_warning", "sign counter did not increase");
        let (user_id, device_id) = (user_id.to_string(), device_id.to_string());
        self.audit.record(event.user(&user_id).device(&device_id)).await;
        ApiError::InvalidCredentials
    }

    /// WebAuthn request options, shaped as webauthn-rs makes them.
    pub(super) fn request_options(
        &self,
        challenge: &[u8],
        allow_credentials: Vec<AllowCredentials>,
        extensions: Option<RequestAuthenticationExtensions>,
    ) -> PublicKeyCredentialRequestOptions {
        PublicKeyCredentialRequestOptions {
            challenge: Base64UrlSafeData::from(challenge.to_vec()),
            timeout: Some(
                u32::try_from(self.settings.webauthn.ceremony_ttl.as_millis()).unwrap_or(u32::MAX),
            ),
            rp_id: self.rp.rp_id().to_owned(),
            allow_credentials,
            user_verification: UserVerificationPolicy::Required,
            hints: None,
            extensions,
        }
    }

    pub(super) async fn put_ceremony<S: Serialize>(
        &self,
        kind: &str,
        user_id: Option<UserId>,
        state: &S,
        public_key: Value,
    ) -> Result<CeremonyStarted> {
        let row = self.ceremony_row(kind, user_id, state)?;
        self.store.put_ceremony(&row).await?;
        Ok(self.started(kind, row, public_key))
    }

    fn ceremony_row<S: Serialize>(
        &self,
        kind: &str,
        user_id: Option<UserId>,
        state: &S,
    ) -> Result<CeremonyRow> {
        let ttl = self.settings.webauthn.ceremony_ttl.as_millis() as i64;
        Ok(CeremonyRow {
            ceremony_id: CeremonyId::generate().to_string(),
            kind: kind.to_owned(),
            user_id: user_id.map(|u| u.to_string()),
            state: serde_json::to_string(state).map_err(anyhow::Error::from)?,
            expires_at: self.clock.now_ms() + ttl,
        })
    }

    /// The answer to a ceremony's start, once its row is stored.
    fn started(&self, kind: &str, row: CeremonyRow, public_key: Value) -> CeremonyStarted {
        self.metrics.ceremony(kind, CeremonyOutcome::Started);
        CeremonyStarted { ceremony_id: row.ceremony_id, public_key }
    }

    /// A live ceremony's state, taken (deleted) at once: single use even
    /// when two finishes race, since only one DELETE returns the row.
    pub(super) async fn take_ceremony<S: for<'de> Deserialize<'de>>(
        &self,
        kind: &str,
        ceremony_id: &CeremonyId,
    ) -> Result<S> {
        let (id, now) = (ceremony_id.as_ref(), self.clock.now_ms());
        let row = self.store.take_ceremony(id, kind, now).await?;
        parse_state(kind, &row.ok_or(ApiError::CeremonyNotFound)?)
    }

    /// Made-up credentials for a name that is no account, the same every
    /// time: shaped like the passkeys of a real account picked by the
    /// name (their count, id lengths and transports), with ids made by
    /// HMAC-SHA-256 under a secret shared by all nodes. With no account to
    /// copy yet, one passkey of a phone or laptop.
    async fn decoy_credentials(&self, username: &Username) -> Result<Vec<AllowCredentials>> {
        let keyed = |key: &[u8], data: &[u8]| -> Result<Vec<u8>> {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(anyhow::Error::from)?;
            mac.update(data);
            Ok(mac.finalize().into_bytes().to_vec())
        };
        let seed = keyed(&self.decoy_key, username.as_ref().as_bytes())?;
        let mut shape = self.store.credential_shape_near(&URL_SAFE_NO_PAD.encode(&seed)).await?;
        if shape.is_empty() {
            shape.push((r#"["hybrid","internal"]"#.to_owned(), 43));
        }
        shape
            .iter()
            .enumerate()
            .map(|(i, (transports, id_chars))| {
                // Bytes whose base64url is `id_chars` long, as the copy's.
                let length = usize::try_from(*id_chars).unwrap_or(32) * 3 / 4;
                let mut id = Vec::with_capacity(length + 32);
                let mut block = 0u8;
                while id.len() < length {
                    id.extend(keyed(&seed, &[i as u8, block])?);
                    block = block.wrapping_add(1);
                }
                id.truncate(length.max(1));
                Ok(AllowCredentials {
                    type_: "public-key".to_owned(),
                    id: Base64UrlSafeData::from(id),
                    transports: Some(parse_transports(transports)),
                })
            })
            .collect()
    }
}

/// A ceremony another release started (during a rolling upgrade) may keep
/// its state in another shape: the client starts again.
fn parse_state<S: for<'de> Deserialize<'de>>(kind: &str, row: &CeremonyRow) -> Result<S> {
    serde_json::from_str(&row.state).map_err(|error| {
        tracing::warn!(kind, %error, "ceremony state from another release; treated as expired");
        ApiError::CeremonyNotFound
    })
}

/// 32 fresh random bytes, as webauthn-rs draws them.
pub(super) fn new_challenge() -> Vec<u8> {
    let mut challenge = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut challenge);
    challenge
}

/// The allowCredentials entries for a user's credentials.
pub(super) fn allow_credentials(rows: &[CredentialRow]) -> Result<Vec<AllowCredentials>> {
    rows.iter()
        .map(|row| {
            let id = URL_SAFE_NO_PAD.decode(&row.credential_id).map_err(anyhow::Error::from)?;
            Ok(AllowCredentials {
                type_: "public-key".to_owned(),
                id: Base64UrlSafeData::from(id),
                transports: Some(parse_transports(&row.transports)),
            })
        })
        .collect()
}

/// The public key of a stored passkey, read from its JSON without
/// building the whole webauthn-rs `Passkey`.
fn public_key_of(passkey_json: &str) -> Result<PublicKey> {
    #[derive(Deserialize)]
    struct StoredPasskey {
        cred: StoredCredential,
    }
    #[derive(Deserialize)]
    struct StoredCredential {
        cred: COSEKey,
    }
    let stored: StoredPasskey = serde_json::from_str(passkey_json).map_err(anyhow::Error::from)?;
    PublicKey::from_cose(&stored.cred.cred)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("stored passkey has an unusable key")))
}

fn transport_name(transport: &AuthenticatorTransport) -> Option<&'static str> {
    Some(match transport {
        AuthenticatorTransport::Usb => "usb",
        AuthenticatorTransport::Nfc => "nfc",
        AuthenticatorTransport::Ble => "ble",
        AuthenticatorTransport::Internal => "internal",
        AuthenticatorTransport::Hybrid => "hybrid",
        AuthenticatorTransport::Test | AuthenticatorTransport::Unknown => return None,
    })
}

fn parse_transports(stored: &str) -> Vec<AuthenticatorTransport> {
    let names: Vec<String> = serde_json::from_str(stored).unwrap_or_default();
    names.iter().filter_map(|n| n.parse().ok()).collect()
}
