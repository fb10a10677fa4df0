//! A software FIDO2 platform authenticator, including the browser glue around it.
//!
//! The API tests must drive real WebAuthn ceremonies without a browser. A
//! `SoftAuthenticator` takes the options JSON the server hands to
//! `navigator.credentials.create()` / `.get()` (the `publicKey` member, in the
//! WebAuthn L3 JSON form) and returns exactly what `PublicKeyCredential.toJSON()`
//! would post back, signed with real P-256 keys, so the server's verification
//! runs unmodified. Knobs and the `*_with` hooks let tests produce the broken or
//! hostile responses a real browser never would (wrong origin, no UV, cloned
//! counters, wrong RP id hash, bad signature, ...).
//!
//! The `self_tests` module at the bottom checks the authenticator directly
//! against webauthn-rs, so a failing API test points at the server, not here.

// Each test file of the binary uses a different subset of the API.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::rand_core::{OsRng, RngCore as _};
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Same AAGUID as Chromium's virtual authenticator, so it is recognisable in logs.
pub const AAGUID: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8];
/// COSE algorithm identifier of ES256, the only algorithm this authenticator has.
pub const ES256: i64 = -7;

/// authenticatorData flag bits, for tests that tamper with them.
pub mod flags {
    pub const UP: u8 = 0x01;
    pub const UV: u8 = 0x04;
    pub const BE: u8 = 0x08;
    pub const BS: u8 = 0x10;
    pub const AT: u8 = 0x40;
}

/// Offsets into authenticatorData: rpIdHash (32) || flags (1) || signCount (4).
const FLAGS_AT: usize = 32;
const COUNTER_AT: usize = 33;

struct Credential {
    id: Vec<u8>,
    rp_id: String,
    user_handle: Vec<u8>,
    key: SigningKey,
    counter: u32,
    synced: bool,
}

/// What is about to be signed and sent, handed to the `register_with` /
/// `login_with` hook so a test can forge anything a hostile client could.
/// Changes made here are what gets signed: the signature stays valid unless
/// `corrupt_signature` is set.
pub struct Ceremony {
    /// clientDataJSON before serialisation. Known members keep the browser's
    /// order (type, challenge, origin, crossOrigin); extra members follow.
    pub client_data: Value,
    /// Raw authenticatorData (for registration it includes the attested
    /// credential data).
    pub authenticator_data: Vec<u8>,
    /// Login only: response.userHandle; `None` omits it.
    pub user_handle: Option<Vec<u8>>,
    /// Login only: flip a bit of the finished DER signature.
    pub corrupt_signature: bool,
}

impl Ceremony {
    /// Replaces rpIdHash, e.g. to act like a phishing site's authenticator.
    pub fn set_rp_id(&mut self, rp_id: &str) {
        self.authenticator_data[..FLAGS_AT].copy_from_slice(&sha256(rp_id.as_bytes()));
    }

    pub fn flags_mut(&mut self) -> &mut u8 {
        &mut self.authenticator_data[FLAGS_AT]
    }

    pub fn set_counter(&mut self, counter: u32) {
        self.authenticator_data[COUNTER_AT..COUNTER_AT + 4].copy_from_slice(&counter.to_be_bytes());
    }
}

/// A platform authenticator holding resident ES256 credentials, plus the
/// browser that talks to it (clientDataJSON, toJSON encoding).
pub struct SoftAuthenticator {
    origin: String,
    credentials: Vec<Credential>,
    user_verified: bool,
    synced: bool,
    transports: Vec<String>,
}

impl SoftAuthenticator {
    /// `origin` goes into clientDataJSON verbatim, e.g. "https://wallet.example"
    /// or "android:apk-key-hash:...".
    pub fn new(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            credentials: Vec::new(),
            user_verified: true,
            synced: false,
            transports: vec!["internal".to_owned()],
        }
    }

    /// The transports future registrations report (default `internal`).
    pub fn set_transports(&mut self, transports: &[&str]) {
        self.transports = transports.iter().map(|t| t.to_string()).collect();
    }

    pub fn set_origin(&mut self, origin: &str) {
        self.origin = origin.to_owned();
    }

    /// Sets the UV flag of future ceremonies (default true). Deliberately not
    /// checked against `userVerification: "required"`: a browser would refuse,
    /// but tests need the response to see whether the server rejects it.
    pub fn set_user_verified(&mut self, uv: bool) {
        self.user_verified = uv;
    }

    /// Future registrations behave like synced passkeys (iCloud Keychain,
    /// Google Password Manager): BE and BS set, counter always 0. Default is a
    /// device-bound credential: BE/BS clear, counter 0 at registration and +1
    /// on every assertion.
    pub fn set_synced(&mut self, synced: bool) {
        self.synced = synced;
    }

    /// Overwrites the stored signature counter of a credential. A device-bound
    /// credential increments before signing, so the next assertion reports
    /// `counter + 1`; a synced one reports `counter` unchanged. Setting it
    /// below what the server has seen simulates a cloned authenticator.
    pub fn set_counter(&mut self, credential_id: &str, counter: u32) {
        let id = b64d(credential_id, "credential_id");
        let cred = self.credentials.iter_mut().find(|c| c.id == id).unwrap_or_else(|| {
            panic!("set_counter: authenticator holds no credential {credential_id}")
        });
        cred.counter = counter;
    }

    /// Base64url ids of the held credentials, in registration order.
    pub fn credential_ids(&self) -> Vec<String> {
        self.credentials.iter().map(|c| b64e(&c.id)).collect()
    }

    /// `navigator.credentials.create({publicKey})` followed by `toJSON()`.
    /// Panics like the browser would reject: no ES256 in pubKeyCredParams, or
    /// a credential in excludeCredentials is already held (InvalidStateError).
    pub fn register(&mut self, public_key: &Value) -> Value {
        self.register_with(public_key, |_| {})
    }

    /// `register`, with a hook to alter client data / authenticator data
    /// before the attestation object is built.
    pub fn register_with(
        &mut self,
        public_key: &Value,
        tamper: impl FnOnce(&mut Ceremony),
    ) -> Value {
        let challenge = str_at(public_key, "/challenge");
        let rp_id = self.rp_id(public_key, "/rp/id");
        let user_handle = b64d(str_at(public_key, "/user/id"), "user.id");

        let offers_es256 = public_key["pubKeyCredParams"]
            .as_array()
            .expect("options.pubKeyCredParams must be an array")
            .iter()
            .any(|p| p["type"] == "public-key" && p["alg"] == ES256);
        assert!(offers_es256, "NotSupportedError: pubKeyCredParams does not offer ES256 (-7)");

        for excluded in public_key["excludeCredentials"].as_array().into_iter().flatten() {
            let id = b64d(str_at(excluded, "/id"), "excludeCredentials[].id");
            assert!(
                !self.credentials.iter().any(|c| c.id == id && c.rp_id == rp_id),
                "InvalidStateError: authenticator already holds excluded credential {}",
                b64e(&id)
            );
        }

        let key = SigningKey::random(&mut OsRng);
        let mut id = vec![0u8; 32];
        OsRng.fill_bytes(&mut id);

        let mut flag_bits = flags::UP | flags::AT;
        if self.user_verified {
            flag_bits |= flags::UV;
        }
        if self.synced {
            flag_bits |= flags::BE | flags::BS;
        }
        let mut authenticator_data = auth_data_header(&rp_id, flag_bits, 0);
        authenticator_data.extend_from_slice(&AAGUID);
        authenticator_data.extend_from_slice(&(id.len() as u16).to_be_bytes());
        authenticator_data.extend_from_slice(&id);
        authenticator_data.extend_from_slice(&cose_es256(&key));

        let mut ceremony = Ceremony {
            client_data: client_data("webauthn.create", challenge, &self.origin),
            authenticator_data,
            user_handle: None,
            corrupt_signature: false,
        };
        tamper(&mut ceremony);
        let client_data_json = client_data_bytes(&ceremony.client_data);

        let attestation_object = cbor(&ciborium::Value::Map(vec![
            ("fmt".into(), "none".into()),
            ("attStmt".into(), ciborium::Value::Map(vec![])),
            ("authData".into(), ciborium::Value::Bytes(ceremony.authenticator_data.clone())),
        ]));
        let spki =
            key.verifying_key().to_public_key_der().expect("P-256 public key encodes as SPKI");

        // Browsers answer credProps themselves; every credential here is resident.
        let extension_results =
            if public_key.pointer("/extensions/credProps") == Some(&Value::Bool(true)) {
                json!({"credProps": {"rk": true}})
            } else {
                json!({})
            };

        let response = json!({
            "id": b64e(&id),
            "rawId": b64e(&id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": extension_results,
            "response": {
                "clientDataJSON": b64e(&client_data_json),
                "attestationObject": b64e(&attestation_object),
                "transports": self.transports,
                "publicKeyAlgorithm": ES256,
                "publicKey": b64e(spki.as_bytes()),
                "authenticatorData": b64e(&ceremony.authenticator_data),
            },
        });
        self.credentials.push(Credential {
            id,
            rp_id,
            user_handle,
            key,
            counter: 0,
            synced: self.synced,
        });
        response
    }

    /// `navigator.credentials.get({publicKey})` followed by `toJSON()`.
    /// Non-empty allowCredentials: the first listed credential held for rpId.
    /// Empty (discoverable login): the newest credential held for rpId.
    pub fn login(&mut self, public_key: &Value) -> Value {
        self.login_with(public_key, |_| {})
    }

    /// `login`, with a hook to alter what gets signed.
    pub fn login_with(&mut self, public_key: &Value, tamper: impl FnOnce(&mut Ceremony)) -> Value {
        let challenge = str_at(public_key, "/challenge");
        let rp_id = self.rp_id(public_key, "/rpId");
        let allowed: Vec<Vec<u8>> = public_key["allowCredentials"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| b64d(str_at(d, "/id"), "allowCredentials[].id"))
            .collect();

        let index = if allowed.is_empty() {
            self.credentials.iter().rposition(|c| c.rp_id == rp_id).unwrap_or_else(|| {
                panic!("NotAllowedError: no discoverable credential for rpId {rp_id:?}")
            })
        } else {
            allowed
                .iter()
                .find_map(|a| self.credentials.iter().position(|c| &c.id == a && c.rp_id == rp_id))
                .unwrap_or_else(|| {
                    panic!(
                        "NotAllowedError: none of allowCredentials {:?} is held for rpId {rp_id:?} (held: {:?})",
                        allowed.iter().map(|a| b64e(a)).collect::<Vec<_>>(),
                        self.credential_ids()
                    )
                })
        };
        let cred = &mut self.credentials[index];
        if !cred.synced {
            cred.counter = cred.counter.wrapping_add(1);
        }

        let mut flag_bits = flags::UP;
        if self.user_verified {
            flag_bits |= flags::UV;
        }
        if cred.synced {
            flag_bits |= flags::BE | flags::BS;
        }
        let mut ceremony = Ceremony {
            client_data: client_data("webauthn.get", challenge, &self.origin),
            authenticator_data: auth_data_header(&rp_id, flag_bits, cred.counter),
            user_handle: Some(cred.user_handle.clone()),
            corrupt_signature: false,
        };
        tamper(&mut ceremony);
        let client_data_json = client_data_bytes(&ceremony.client_data);

        let mut signed = ceremony.authenticator_data.clone();
        signed.extend_from_slice(&sha256(&client_data_json));
        let signature: Signature = cred.key.sign(&signed);
        let mut signature = signature.to_der().as_bytes().to_vec();
        if ceremony.corrupt_signature {
            // Last byte is inside the DER-encoded `s`, so the DER stays well-formed.
            *signature.last_mut().expect("DER signature is never empty") ^= 0x01;
        }

        let mut response = json!({
            "clientDataJSON": b64e(&client_data_json),
            "authenticatorData": b64e(&ceremony.authenticator_data),
            "signature": b64e(&signature),
        });
        if let Some(user_handle) = &ceremony.user_handle {
            response["userHandle"] = json!(b64e(user_handle));
        }
        json!({
            "id": b64e(&cred.id),
            "rawId": b64e(&cred.id),
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": response,
        })
    }

    /// The options' RP id or, as a browser does when it is absent, the
    /// origin's host.
    fn rp_id(&self, public_key: &Value, pointer: &str) -> String {
        if let Some(rp_id) = public_key.pointer(pointer).and_then(Value::as_str) {
            return rp_id.to_owned();
        }
        let host = self
            .origin
            .strip_prefix("https://")
            .and_then(|rest| rest.split([':', '/']).next())
            .unwrap_or_else(|| {
                panic!(
                    "options lack {pointer} and origin {:?} has no host to default to",
                    self.origin
                )
            });
        host.to_owned()
    }
}

fn client_data(type_: &str, challenge: &str, origin: &str) -> Value {
    json!({"type": type_, "challenge": challenge, "origin": origin, "crossOrigin": false})
}

/// serde_json's map is sorted, but browsers emit type, challenge, origin,
/// crossOrigin in that order and RPs doing the spec's "limited verification"
/// depend on it.
fn client_data_bytes(client_data: &Value) -> Vec<u8> {
    let Some(members) = client_data.as_object() else {
        return serde_json::to_vec(client_data).expect("JSON value serialises");
    };
    const ORDER: [&str; 4] = ["type", "challenge", "origin", "crossOrigin"];
    let known = ORDER.iter().filter_map(|k| members.get_key_value(*k));
    let extra = members.iter().filter(|(k, _)| !ORDER.contains(&k.as_str()));
    let body: Vec<String> =
        known.chain(extra).map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v)).collect();
    format!("{{{}}}", body.join(",")).into_bytes()
}

fn auth_data_header(rp_id: &str, flag_bits: u8, counter: u32) -> Vec<u8> {
    let mut data = sha256(rp_id.as_bytes()).to_vec();
    data.push(flag_bits);
    data.extend_from_slice(&counter.to_be_bytes());
    data
}

/// COSE_Key for ES256, keys in CTAP2 canonical order (1, 3, -1, -2, -3).
fn cose_es256(key: &SigningKey) -> Vec<u8> {
    let point = key.verifying_key().to_encoded_point(false);
    let int = |i: i64| ciborium::Value::Integer(i.into());
    let coord = |c: Option<&p256::FieldBytes>| {
        ciborium::Value::Bytes(c.expect("uncompressed point has x and y").to_vec())
    };
    cbor(&ciborium::Value::Map(vec![
        (int(1), int(2)),
        (int(3), int(ES256)),
        (int(-1), int(1)),
        (int(-2), coord(point.x())),
        (int(-3), coord(point.y())),
    ]))
}

fn cbor(value: &ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn b64e(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn b64d(data: &str, what: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(data)
        .unwrap_or_else(|e| panic!("{what} is not base64url without padding ({e}): {data:?}"))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("options lack string {pointer}: {value}"))
}

/// Checks the authenticator against webauthn-rs itself, without the server.
mod self_tests {
    use super::*;
    use webauthn_rs::prelude::*;

    const RP_ID: &str = "wallet.example";
    const ORIGIN: &str = "https://wallet.example";
    /// Shape of a real Android origin: base64url SHA-256 of the signing cert.
    const ANDROID_ORIGIN: &str =
        "android:apk-key-hash:AbC-_dEf0123456789xyzXYZ-_aBcDeFgHiJkLmNoPqR";

    fn webauthn() -> Webauthn {
        webauthn_with(&[])
    }

    fn webauthn_with(extra_origins: &[&str]) -> Webauthn {
        let origin = Url::parse(ORIGIN).expect("valid origin");
        let mut builder = WebauthnBuilder::new(RP_ID, &origin).expect("rp id fits origin");
        for extra in extra_origins {
            builder = builder
                .append_allowed_origin(&Url::parse(extra).expect("extra origin parses as a URL"));
        }
        builder.build().expect("webauthn builds")
    }

    fn public_key<T: serde::Serialize>(challenge_response: &T) -> Value {
        serde_json::to_value(challenge_response).expect("options serialise")["publicKey"].clone()
    }

    fn try_register(
        wa: &Webauthn,
        auth: &mut SoftAuthenticator,
        user: Uuid,
    ) -> WebauthnResult<Passkey> {
        let (ccr, state) = wa
            .start_passkey_registration(user, "claire", "Claire", None)
            .expect("start registration");
        let reply = auth.register(&public_key(&ccr));
        let reply: RegisterPublicKeyCredential = serde_json::from_value(reply)
            .expect("webauthn-rs parses the toJSON registration response");
        wa.finish_passkey_registration(&reply, &state)
    }

    fn register(wa: &Webauthn, auth: &mut SoftAuthenticator, user: Uuid) -> Passkey {
        try_register(wa, auth, user).expect("registration verifies")
    }

    fn login_with(
        wa: &Webauthn,
        auth: &mut SoftAuthenticator,
        passkey: &Passkey,
        tamper: impl FnOnce(&mut Ceremony),
    ) -> WebauthnResult<AuthenticationResult> {
        let (rcr, state) = wa
            .start_passkey_authentication(std::slice::from_ref(passkey))
            .expect("start authentication");
        let reply = auth.login_with(&public_key(&rcr), tamper);
        let reply: PublicKeyCredential = serde_json::from_value(reply)
            .expect("webauthn-rs parses the toJSON authentication response");
        wa.finish_passkey_authentication(&reply, &state)
    }

    fn login(
        wa: &Webauthn,
        auth: &mut SoftAuthenticator,
        passkey: &Passkey,
    ) -> WebauthnResult<AuthenticationResult> {
        login_with(wa, auth, passkey, |_| {})
    }

    /// The JSON webauthn-rs sends is the L3 `PublicKeyCredential*OptionsJSON`
    /// shape the authenticator (and a browser's `parse*OptionsFromJSON`) reads.
    #[test]
    fn webauthn_rs_options_use_l3_json_names() {
        let wa = webauthn();
        let user = Uuid::new_v4();
        let (ccr, _) = wa
            .start_passkey_registration(user, "claire", "Claire", None)
            .expect("start registration");
        let create = serde_json::to_value(&ccr).expect("options serialise");
        let pk = &create["publicKey"];
        assert_eq!(pk["rp"]["id"], RP_ID);
        assert_eq!(pk["user"]["id"], b64e(user.as_bytes()));
        assert_eq!(pk["user"]["displayName"], "Claire");
        assert_eq!(b64d(str_at(pk, "/challenge"), "challenge").len(), 32);
        assert!(
            pk["pubKeyCredParams"]
                .as_array()
                .expect("array")
                .contains(&json!({"type": "public-key", "alg": -7}))
        );
        assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
        assert_eq!(pk["attestation"], "none");

        let passkey = register(&wa, &mut SoftAuthenticator::new(ORIGIN), user);
        let (rcr, _) = wa
            .start_passkey_authentication(std::slice::from_ref(&passkey))
            .expect("start authentication");
        let get = serde_json::to_value(&rcr).expect("options serialise");
        let pk = &get["publicKey"];
        assert_eq!(pk["rpId"], RP_ID);
        assert_eq!(pk["userVerification"], "required");
        assert_eq!(pk["allowCredentials"][0]["type"], "public-key");
        assert_eq!(pk["allowCredentials"][0]["id"], b64e(passkey.cred_id().as_ref()));

        let (rcr, _) = wa.start_discoverable_authentication().expect("start discoverable");
        let get = serde_json::to_value(&rcr).expect("options serialise");
        assert_eq!(get["publicKey"]["allowCredentials"], json!([]));
        // `mediation` sits next to `publicKey`, as in CredentialRequestOptions.
        assert_eq!(get["mediation"], "conditional");
        eprintln!("create options: {create:#}\nget options: {get:#}");
    }

    #[test]
    fn registration_response_has_browser_shape_and_verifies() {
        let wa = webauthn();
        let mut auth = SoftAuthenticator::new(ORIGIN);
        let user = Uuid::new_v4();
        let (ccr, state) = wa
            .start_passkey_registration(user, "claire", "Claire", None)
            .expect("start registration");
        let options = public_key(&ccr);
        let reply = auth.register(&options);

        let client_data = b64d(str_at(&reply, "/response/clientDataJSON"), "clientDataJSON");
        let expected = format!(
            r#"{{"type":"webauthn.create","challenge":{},"origin":"{ORIGIN}","crossOrigin":false}}"#,
            options["challenge"]
        );
        assert_eq!(String::from_utf8(client_data).expect("utf-8"), expected);
        assert_eq!(reply["id"], reply["rawId"]);
        assert_eq!(auth.credential_ids(), vec![str_at(&reply, "/id").to_owned()]);
        assert_eq!(reply["response"]["publicKeyAlgorithm"], ES256);
        let auth_data = b64d(str_at(&reply, "/response/authenticatorData"), "authenticatorData");
        assert_eq!(auth_data[..32], sha256(RP_ID.as_bytes()));
        assert_eq!(auth_data[FLAGS_AT], flags::UP | flags::UV | flags::AT);
        assert_eq!(auth_data[COUNTER_AT..COUNTER_AT + 4], [0, 0, 0, 0]);
        assert_eq!(auth_data[37..53], AAGUID);

        let reply: RegisterPublicKeyCredential =
            serde_json::from_value(reply).expect("webauthn-rs parses it");
        let passkey =
            wa.finish_passkey_registration(&reply, &state).expect("registration verifies");
        assert_eq!(b64e(passkey.cred_id().as_ref()), auth.credential_ids()[0]);
    }

    #[test]
    #[should_panic(expected = "InvalidStateError")]
    fn excluded_credential_is_not_registered_twice() {
        let wa = webauthn();
        let mut auth = SoftAuthenticator::new(ORIGIN);
        let user = Uuid::new_v4();
        let passkey = register(&wa, &mut auth, user);
        let (ccr, _) = wa
            .start_passkey_registration(
                user,
                "claire",
                "Claire",
                Some(vec![passkey.cred_id().clone()]),
            )
            .expect("start registration");
        auth.register(&public_key(&ccr));
    }

    #[test]
    fn username_first_login_verifies_and_counts_up() {
        let wa = webauthn();
        let mut auth = SoftAuthenticator::new(ORIGIN);
        let mut passkey = register(&wa, &mut auth, Uuid::new_v4());

        for expected in 1..=3 {
            let result = login(&wa, &mut auth, &passkey).expect("assertion verifies");
            assert_eq!(result.counter(), expected);
            assert!(result.user_verified());
            assert!(!result.backup_eligible());
            assert!(result.needs_update(), "a higher counter must be persisted");
            assert_eq!(passkey.update_credential(&result), Some(true));
        }
    }

    #[test]
    fn discoverable_login_identifies_user() {
        let wa = webauthn();
        let mut auth = SoftAuthenticator::new(ORIGIN);
        let alice = Uuid::new_v4();
        let bob = Uuid::new_v4();
        let _alice_key = register(&wa, &mut auth, alice);
        let bob_key = register(&wa, &mut auth, bob);

        let (rcr, state) = wa.start_discoverable_authentication().expect("start discoverable");
        let reply = auth.login(&public_key(&rcr));
        let reply: PublicKeyCredential =
            serde_json::from_value(reply).expect("webauthn-rs parses it");

        // The newest credential for the RP answers, like a single-account picker.
        let (user, cred_id) =
            wa.identify_discoverable_authentication(&reply).expect("userHandle present");
        assert_eq!(user, bob);
        assert_eq!(cred_id, bob_key.cred_id().as_ref());

        let result = wa
            .finish_discoverable_authentication(&reply, state, &[DiscoverableKey::from(&bob_key)])
            .expect("discoverable assertion verifies");
        assert_eq!(result.cred_id(), bob_key.cred_id());
        assert_eq!(result.counter(), 1);
    }

    #[test]
    fn wrong_origin_is_rejected() {
        let wa = webauthn();
        let mut auth = SoftAuthenticator::new("https://wallet.example.evil");
        let err =
            try_register(&wa, &mut auth, Uuid::new_v4()).expect_err("foreign origin registers");
        assert!(matches!(err, WebauthnError::InvalidRPOrigin), "{err:?}");

        auth.set_origin(ORIGIN);
        let passkey = register(&wa, &mut auth, Uuid::new_v4());
        // Subdomains are rejected unless WebauthnBuilder::allow_subdomains(true).
        auth.set_origin("https://login.wallet.example");
        let err = login(&wa, &mut auth, &passkey).expect_err("subdomain origin logs in");
        assert!(matches!(err, WebauthnError::InvalidRPOrigin), "{err:?}");
    }

    #[test]
    fn missing_user_verification_is_rejected() {
        let wa = webauthn();
        let mut auth = SoftAuthenticator::new(ORIGIN);
        auth.set_user_verified(false);
        let err = try_register(&wa, &mut auth, Uuid::new_v4()).expect_err("registers without UV");
        assert!(matches!(err, WebauthnError::UserNotVerified), "{err:?}");

        auth.set_user_verified(true);
        let passkey = register(&wa, &mut auth, Uuid::new_v4());
        auth.set_user_verified(false);
        let err = login(&wa, &mut auth, &passkey).expect_err("logs in without UV");
        assert!(matches!(err, WebauthnError::UserNotVerified), "{err:?}");
    }

    /// webauthn-rs 0.5.5 hard-fails a counter that does not go up, but only
    /// against the counter stored in the Passkey: the server must persist
    /// `update_credential` results or clones go unnoticed.
    #[test]
    fn counter_going_backwards_is_rejected() {
        let wa = webauthn();
        let mut auth = SoftAuthenticator::new(ORIGIN);
        let mut passkey = register(&wa, &mut auth, Uuid::new_v4());
        let id = auth.credential_ids()[0].clone();

        auth.set_counter(&id, 9);
        let result = login(&wa, &mut auth, &passkey).expect("counter jumping ahead is fine");
        assert_eq!(result.counter(), 10);
        passkey.update_credential(&result);

        auth.set_counter(&id, 4); // the clone reports 5 < 10
        let err = login(&wa, &mut auth, &passkey).expect_err("backwards counter accepted");
        assert!(matches!(err, WebauthnError::CredentialPossibleCompromise), "{err:?}");

        auth.set_counter(&id, 9); // an equal counter is just as suspicious
        let err = login(&wa, &mut auth, &passkey).expect_err("repeated counter accepted");
        assert!(matches!(err, WebauthnError::CredentialPossibleCompromise), "{err:?}");

        // A stale stored Passkey (counter 10, never updated past it) accepts 11.
        assert_eq!(login(&wa, &mut auth, &passkey).expect("counter 11 verifies").counter(), 11);
    }

    #[test]
    fn synced_passkey_keeps_counter_zero() {
        let wa = webauthn();
        let mut auth = SoftAuthenticator::new(ORIGIN);
        auth.set_synced(true);
        let mut passkey = register(&wa, &mut auth, Uuid::new_v4());
        for _ in 0..2 {
            let result = login(&wa, &mut auth, &passkey).expect("synced assertion verifies");
            assert_eq!(result.counter(), 0);
            assert!(result.backup_eligible() && result.backup_state());
            assert_eq!(passkey.update_credential(&result), Some(false));
        }
    }

    #[test]
    fn forged_assertions_are_rejected() {
        let wa = webauthn();
        let mut auth = SoftAuthenticator::new(ORIGIN);
        let passkey = register(&wa, &mut auth, Uuid::new_v4());

        let err = login_with(&wa, &mut auth, &passkey, |c| c.set_rp_id("evil.example"))
            .expect_err("foreign rp id");
        assert!(matches!(err, WebauthnError::InvalidRPIDHash), "{err:?}");

        let err = login_with(&wa, &mut auth, &passkey, |c| c.corrupt_signature = true)
            .expect_err("bad signature");
        assert!(matches!(err, WebauthnError::AuthenticationFailure), "{err:?}");

        let err = login_with(&wa, &mut auth, &passkey, |c| {
            c.client_data["challenge"] = json!(b64e(&[0; 32]))
        })
        .expect_err("stale challenge");
        assert!(matches!(err, WebauthnError::MismatchedChallenge), "{err:?}");

        let err = login_with(&wa, &mut auth, &passkey, |c| {
            c.client_data["type"] = json!("webauthn.create")
        })
        .expect_err("wrong type");
        assert!(matches!(err, WebauthnError::InvalidClientDataType), "{err:?}");

        let err = login_with(&wa, &mut auth, &passkey, |c| *c.flags_mut() &= !flags::UP)
            .expect_err("no user presence");
        assert!(matches!(err, WebauthnError::UserNotPresent), "{err:?}");

        // The untouched path still works after all that.
        login(&wa, &mut auth, &passkey).expect("honest assertion verifies");
    }

    /// Android apps send `android:apk-key-hash:<b64url sha256 of signing cert>`
    /// as the origin. It parses as an opaque URL, and webauthn-rs compares
    /// opaque origins by exact URL equality, so appending it works.
    #[test]
    fn android_apk_key_hash_origin_verifies_when_allowed() {
        let wa = webauthn_with(&[ANDROID_ORIGIN]);
        let mut auth = SoftAuthenticator::new(ANDROID_ORIGIN);
        let passkey = register(&wa, &mut auth, Uuid::new_v4());
        login(&wa, &mut auth, &passkey).expect("android assertion verifies");

        // The web origin still works alongside it.
        auth.set_origin(ORIGIN);
        login(&wa, &mut auth, &passkey).expect("web assertion verifies");

        // Exact match only: another app's key hash, or a case change, fails.
        for other in [
            "android:apk-key-hash:ZZZ-_dEf0123456789xyzXYZ-_aBcDeFgHiJkLmNoPqR",
            "android:apk-key-hash:abc-_dEf0123456789xyzXYZ-_aBcDeFgHiJkLmNoPqR",
        ] {
            auth.set_origin(other);
            let err = login(&wa, &mut auth, &passkey).expect_err("other app's origin accepted");
            assert!(matches!(err, WebauthnError::InvalidRPOrigin), "{err:?}");
        }

        // Not allowed unless appended.
        let mut auth = SoftAuthenticator::new(ANDROID_ORIGIN);
        let err = try_register(&webauthn(), &mut auth, Uuid::new_v4())
            .expect_err("unlisted android origin");
        assert!(matches!(err, WebauthnError::InvalidRPOrigin), "{err:?}");
    }
}
