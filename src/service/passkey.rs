//! Passkey ceremonies: registration and sign-in, username-first and
//! discoverable. State lives in the `ceremony` table under an opaque id,
//! so any node can finish what another started; a finish takes (deletes)
//! the row before verifying, so each challenge is answered at most once.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use webauthn_rs::prelude::{
    AuthenticationResult, Base64UrlSafeData, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, WebauthnError,
};
use webauthn_rs_proto::{
    AllowCredentials, AuthenticatorTransport, ResidentKeyRequirement, UserVerificationPolicy,
};

use super::Core;
use super::audit::Event;
use super::authenticator_data::registration_facts;
use super::tokens::{ClientInfo, SessionGrant, TokenSet};
use crate::domain::{
    CeremonyId, DeviceId, DeviceName, DisplayName, EmailAddress, UserId, Username,
};
use crate::error::{ApiError, Result};
use crate::metrics::CeremonyOutcome;
use crate::store::{CeremonyRow, CredentialRow, CredentialUse, UserRow};

pub(super) const KIND_REGISTER: &str = "register";
const KIND_LOGIN: &str = "login";
/// RFC 8176 methods for a user-verified passkey (API contract, Tokens).
pub(super) const PASSKEY_AMR: &[&str] = &["hwk", "user"];

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

#[derive(Serialize, Deserialize)]
#[serde(tag = "flow", rename_all = "snake_case")]
enum LoginState {
    UsernameFirst {
        user_id: UserId,
        authentication: PasskeyAuthentication,
    },
    Discoverable {
        authentication: DiscoverableAuthentication,
    },
    /// Started for a username with no passkeys: it can never finish, but
    /// looks like any other until then.
    Decoy,
}

impl Core {
    pub async fn register_start(&self, input: RegisterStart) -> Result<CeremonyStarted> {
        if self.store.find_user_by_username(input.username.as_ref()).await?.is_some() {
            return Err(ApiError::UsernameTaken);
        }
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
        self.put_ceremony(KIND_REGISTER, Some(user_id), &state, public_key).await
    }

    pub async fn register_finish(
        &self,
        ceremony_id: &CeremonyId,
        credential: &RegisterPublicKeyCredential,
        device_name: Option<DeviceName>,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let result = self.finish_registration(ceremony_id, credential, device_name, client).await;
        self.metrics.ceremony_result(KIND_REGISTER, &result);
        if let Err(error @ ApiError::WebauthnFailed(_)) = &result {
            self.audit(Event::failed("user_registered", error.code())).await;
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
        let row = self.new_credential(
            &state.user_id.to_string(),
            credential,
            &state.registration,
            device_name,
        )?;
        let device_id = DeviceId::parse(row.device_id.clone()).map_err(anyhow::Error::from)?;
        let user = UserRow {
            user_id: state.user_id.to_string(),
            username: state.username,
            display_name: state.display_name,
            email: state.email,
            email_verified: false,
            roles: String::new(),
            locked_at: None,
            created_at: row.created_at,
        };
        let grant = SessionGrant {
            user_id: state.user_id,
            roles: &user.roles,
            amr: PASSKEY_AMR,
            device_id: Some(device_id),
        };
        let session = self.new_session(&grant, client);
        self.store.register_user(&user, &row, &session.row, &session.refresh.hash()).await?;
        tracing::Span::current().record("user_id", tracing::field::display(&user.user_id));
        self.audit(Event::ok("user_registered").user(&user.user_id).device(&row.device_id)).await;
        let mut tokens = self.token_set(&session.row, &user.roles, &session.refresh)?;
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
        user_id: &str,
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
            device_id: DeviceId::new().to_string(),
            user_id: user_id.to_owned(),
            name: device_name.map(|n| n.to_string()).unwrap_or_else(|| "Passkey".to_owned()),
            passkey: serde_json::to_string(&passkey).map_err(anyhow::Error::from)?,
            sign_count: i64::from(facts.counter),
            backup_eligible: facts.backup_eligible,
            backup_state: facts.backup_state,
            aaguid: facts.aaguid.to_string(),
            transports: serde_json::to_string(&transports).map_err(anyhow::Error::from)?,
            created_at: self.clock.now_ms(),
            last_used_at: None,
        })
    }

    /// Starts a sign-in. With a username it lists that user's credentials;
    /// an unknown username gets made-up ids that are stable for the name,
    /// so the answer does not reveal whether the account exists.
    pub async fn login_start(&self, username: Option<Username>) -> Result<CeremonyStarted> {
        let Some(username) = username else {
            let (challenge, authentication) =
                self.webauthn.start_discoverable_authentication().map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!("starting discoverable login: {e}"))
                })?;
            let state = LoginState::Discoverable { authentication };
            return self.put_login(challenge, None, &state).await;
        };
        let user = self.store.find_user_by_username(username.as_ref()).await?;
        let rows = match &user {
            Some(user) => self.store.user_credentials(&user.user_id).await?,
            None => Vec::new(),
        };
        let passkeys: Vec<Passkey> = rows
            .iter()
            .map(|row| serde_json::from_str(&row.passkey))
            .collect::<std::result::Result<_, _>>()
            .map_err(anyhow::Error::from)?;
        match user {
            Some(user) if !passkeys.is_empty() => {
                let user_id = UserId::parse(user.user_id).map_err(anyhow::Error::from)?;
                let (mut challenge, authentication) = self
                    .webauthn
                    .start_passkey_authentication(&passkeys)
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!("starting login: {e}")))?;
                for (allowed, row) in challenge.public_key.allow_credentials.iter_mut().zip(&rows) {
                    allowed.transports = Some(parse_transports(&row.transports));
                }
                let state = LoginState::UsernameFirst { user_id, authentication };
                self.put_login(challenge, Some(user_id), &state).await
            }
            _ => {
                // Shaped like the known-user answer above: no extensions,
                // no mediation, a fresh challenge, stable made-up ids.
                let (mut challenge, _) = self
                    .webauthn
                    .start_discoverable_authentication()
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!("starting login: {e}")))?;
                challenge.mediation = None;
                challenge.public_key.extensions = None;
                challenge.public_key.allow_credentials = self.decoy_credentials(&username)?;
                self.put_login(challenge, None, &LoginState::Decoy).await
            }
        }
    }

    pub async fn login_finish(
        &self,
        ceremony_id: &CeremonyId,
        credential: &PublicKeyCredential,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let result = self.finish_login(ceremony_id, credential, client).await;
        self.metrics.ceremony_result(KIND_LOGIN, &result);
        if let Err(ApiError::InvalidCredentials) = &result {
            self.audit(Event::failed("login", "passkey assertion refused")).await;
        }
        result
    }

    async fn finish_login(
        &self,
        ceremony_id: &CeremonyId,
        credential: &PublicKeyCredential,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let state: LoginState = self.take_ceremony(KIND_LOGIN, ceremony_id).await?;
        let credential_id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
        let row = self.store.find_credential(&credential_id).await?;
        let refused = |reason: &str| {
            tracing::info!(target: "audit", event = "login_failed", reason);
            ApiError::InvalidCredentials
        };
        let (row, result) = match state {
            LoginState::Decoy => return Err(refused("no such account")),
            LoginState::UsernameFirst { user_id, authentication } => {
                let row = row
                    .filter(|r| r.user_id == user_id.to_string())
                    .ok_or_else(|| refused("credential is not the user's"))?;
                let result = match self
                    .webauthn
                    .finish_passkey_authentication(credential, &authentication)
                {
                    Ok(result) => result,
                    Err(error) => return Err(self.assertion_refused(&error, &row).await),
                };
                (row, result)
            }
            LoginState::Discoverable { authentication } => {
                let (user_handle, _) = self
                    .webauthn
                    .identify_discoverable_authentication(credential)
                    .map_err(|e| refused(&e.to_string()))?;
                let row = row
                    .filter(|r| r.user_id == user_handle.to_string())
                    .ok_or_else(|| refused("credential does not belong to the user handle"))?;
                let passkey: Passkey =
                    serde_json::from_str(&row.passkey).map_err(anyhow::Error::from)?;
                let keys = [DiscoverableKey::from(&passkey)];
                let result = match self.webauthn.finish_discoverable_authentication(
                    credential,
                    authentication,
                    &keys,
                ) {
                    Ok(result) => result,
                    Err(error) => return Err(self.assertion_refused(&error, &row).await),
                };
                (row, result)
            }
        };
        self.complete_login(row, &result, client).await
    }

    /// Stores the new counter and opens the session in one transaction.
    async fn complete_login(
        &self,
        row: CredentialRow,
        result: &AuthenticationResult,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let user = self.store.find_user(&row.user_id).await?.ok_or(ApiError::InvalidCredentials)?;
        tracing::Span::current().record("user_id", tracing::field::display(&user.user_id));
        if user.locked_at.is_some() {
            self.audit(Event::failed("login", "account locked").user(&user.user_id)).await;
            return Err(ApiError::InvalidCredentials);
        }
        let used = self.credential_use(&row, result)?;
        let device_id = DeviceId::parse(row.device_id.clone()).map_err(anyhow::Error::from)?;
        let user_id = UserId::parse(user.user_id.clone()).map_err(anyhow::Error::from)?;
        let grant = SessionGrant {
            user_id,
            roles: &user.roles,
            amr: PASSKEY_AMR,
            device_id: Some(device_id),
        };
        let session = self.new_session(&grant, client);
        if !self.store.complete_login(&used, &session.row, &session.refresh.hash()).await? {
            // Another sign-in stored a newer counter after this one was
            // verified: the same clone check, lost in a race.
            return Err(self.clone_warning(&row.user_id, &row.device_id).await);
        }
        self.audit(Event::ok("login").user(&user.user_id).device(&row.device_id).reason("passkey"))
            .await;
        self.token_set(&session.row, &user.roles, &session.refresh)
    }

    /// Maps a failed assertion check to the client's answer, recording a
    /// counter that did not move forward as a possible clone (WebAuthn §7.2
    /// step 21: webauthn-rs refuses it with CredentialPossibleCompromise).
    pub(super) async fn assertion_refused(
        &self,
        error: &WebauthnError,
        row: &CredentialRow,
    ) -> ApiError {
        if matches!(error, WebauthnError::CredentialPossibleCompromise) {
            return self.clone_warning(&row.user_id, &row.device_id).await;
        }
        tracing::info!(target: "audit", event = "login_failed", user_id = %row.user_id, reason = %error);
        ApiError::InvalidCredentials
    }

    /// What a verified assertion changes in its credential row: the
    /// passkey with its new counter and backup state.
    pub(super) fn credential_use(
        &self,
        row: &CredentialRow,
        result: &AuthenticationResult,
    ) -> Result<CredentialUse> {
        let mut passkey: Passkey =
            serde_json::from_str(&row.passkey).map_err(anyhow::Error::from)?;
        passkey.update_credential(result);
        Ok(CredentialUse {
            credential_id: row.credential_id.clone(),
            passkey: serde_json::to_string(&passkey).map_err(anyhow::Error::from)?,
            sign_count: i64::from(result.counter()),
            backup_state: result.backup_state(),
            used_at: self.clock.now_ms(),
        })
    }

    pub(super) async fn clone_warning(&self, user_id: &str, device_id: &str) -> ApiError {
        self.metrics.clone_warning();
        let event = Event::failed("clone_warning", "sign counter did not increase");
        self.audit(event.user(user_id).device(device_id)).await;
        ApiError::InvalidCredentials
    }

    async fn put_login(
        &self,
        challenge: RequestChallengeResponse,
        user_id: Option<UserId>,
        state: &LoginState,
    ) -> Result<CeremonyStarted> {
        let public_key =
            serde_json::to_value(&challenge.public_key).map_err(anyhow::Error::from)?;
        self.put_ceremony(KIND_LOGIN, user_id, state, public_key).await
    }

    pub(super) async fn put_ceremony<S: Serialize>(
        &self,
        kind: &str,
        user_id: Option<UserId>,
        state: &S,
        public_key: Value,
    ) -> Result<CeremonyStarted> {
        let ceremony_id = CeremonyId::generate();
        let ttl = self.settings.webauthn.ceremony_ttl.as_millis() as i64;
        let row = CeremonyRow {
            ceremony_id: ceremony_id.to_string(),
            kind: kind.to_owned(),
            user_id: user_id.map(|u| u.to_string()),
            state: serde_json::to_string(state).map_err(anyhow::Error::from)?,
            expires_at: self.clock.now_ms() + ttl,
        };
        self.store.put_ceremony(&row).await?;
        self.metrics.ceremony(kind, CeremonyOutcome::Started);
        Ok(CeremonyStarted { ceremony_id: ceremony_id.to_string(), public_key })
    }

    pub(super) async fn take_ceremony<S: for<'de> Deserialize<'de>>(
        &self,
        kind: &str,
        ceremony_id: &CeremonyId,
    ) -> Result<S> {
        let row = self
            .store
            .take_ceremony(ceremony_id.as_ref(), kind, self.clock.now_ms())
            .await?
            .ok_or(ApiError::CeremonyNotFound)?;
        Ok(serde_json::from_str(&row.state).map_err(anyhow::Error::from)?)
    }

    /// One or two made-up credential ids for a username, the same every
    /// time: HMAC-SHA-256 under a secret shared by all nodes.
    fn decoy_credentials(&self, username: &Username) -> Result<Vec<AllowCredentials>> {
        let keyed = |key: &[u8], data: &[u8]| -> Result<Vec<u8>> {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(anyhow::Error::from)?;
            mac.update(data);
            Ok(mac.finalize().into_bytes().to_vec())
        };
        let seed = keyed(&self.decoy_key, username.as_ref().as_bytes())?;
        let count = 1 + usize::from(seed[0] & 1);
        (0..count)
            .map(|i| {
                Ok(AllowCredentials {
                    type_: "public-key".to_owned(),
                    id: Base64UrlSafeData::from(keyed(&seed, &[i as u8])?),
                    // What browsers report for a phone or laptop passkey,
                    // in their (alphabetical) order, so a made-up entry
                    // reads like the most common real one.
                    transports: Some(vec![
                        AuthenticatorTransport::Hybrid,
                        AuthenticatorTransport::Internal,
                    ]),
                })
            })
            .collect()
    }
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
