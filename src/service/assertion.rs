//! Checks a passkey assertion (WebAuthn Level 3 §7.2, steps 5 to 21)
//! with aws-lc-rs. webauthn-rs 0.5 makes the same checks with OpenSSL and
//! rebuilds the public key through OpenSSL's EC group setup for every
//! assertion: that was about a quarter of passgate's CPU per sign-in
//! (BENCHMARKS.md, "Where the time went"). Registration, with its
//! attestation formats, stays with webauthn-rs; sign-in and payment
//! step-up come here. The rules follow webauthn-rs's passkey flow, and
//! `tests/api/assertion.rs` feeds the same assertions, good and tampered,
//! to both and asserts they agree.

use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use url::Url;
use webauthn_rs::prelude::{
    COSEAlgorithm, COSEKey, COSEKeyType, ECDSACurve, Passkey, PublicKeyCredential,
};
use webauthn_rs_core::WebauthnCore;

const FLAG_USER_PRESENT: u8 = 0x01;
const FLAG_USER_VERIFIED: u8 = 0x04;
const FLAG_BACKUP_ELIGIBLE: u8 = 0x08;
const FLAG_BACKUP_STATE: u8 = 0x10;
const FLAG_ATTESTED_DATA: u8 = 0x40;
const FLAG_EXTENSIONS: u8 = 0x80;
/// rpIdHash (32) | flags (1) | signCount (4), then extensions if flagged.
const AUTH_DATA_MIN: usize = 37;

/// Who the assertions are for: the RP id's hash and the origins allowed
/// to ask for them (web origins, related origins, Android apps).
pub struct RelyingParty {
    rp_id: String,
    rp_id_hash: [u8; 32],
    origins: Vec<Url>,
}

/// A credential's public key, as the verifier needs it. Passkey
/// registration accepts ES256 and RS256 only (webauthn-rs's secure
/// algorithms), so those are the two kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// SEC1 uncompressed point: 0x04 | x | y.
    Es256(Vec<u8>),
    Rs256 {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

/// What the stored credential says before this assertion.
pub struct Stored<'a> {
    pub key: &'a PublicKey,
    pub sign_count: u32,
    pub backup_eligible: bool,
}

/// What a verified assertion reports, to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub counter: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
}

/// Why an assertion was refused; the text goes to logs and the audit
/// trail, never to the client (which sees `invalid_credentials`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed(&'static str),
    WrongType,
    WrongChallenge,
    WrongOrigin,
    CrossOrigin,
    WrongRpId,
    UserNotPresent,
    UserNotVerified,
    BackupEligibilityChanged,
    BackedUpButNotEligible,
    BadSignature,
    /// WebAuthn §7.2 step 21: the counter did not move forward, so the
    /// authenticator may have been cloned.
    CounterNotIncreased,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Refusal::Malformed(what) => return write!(f, "malformed assertion: {what}"),
            Refusal::WrongType => "client data type is not webauthn.get",
            Refusal::WrongChallenge => "the challenge is not the ceremony's",
            Refusal::WrongOrigin => "the origin is not allowed",
            Refusal::CrossOrigin => "cross-origin assertions are not accepted",
            Refusal::WrongRpId => "the RP id hash is not ours",
            Refusal::UserNotPresent => "user presence flag not set",
            Refusal::UserNotVerified => "user verification flag not set",
            Refusal::BackupEligibilityChanged => "backup eligibility differs from the stored one",
            Refusal::BackedUpButNotEligible => "backed up but not backup eligible",
            Refusal::BadSignature => "the signature does not verify",
            Refusal::CounterNotIncreased => "sign counter did not increase",
        };
        f.write_str(text)
    }
}

#[derive(Deserialize)]
struct ClientData<'a> {
    #[serde(rename = "type", borrow)]
    type_: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    challenge: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    origin: std::borrow::Cow<'a, str>,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: Option<bool>,
}

impl RelyingParty {
    pub fn new(rp_id: &str, origins: Vec<Url>) -> Self {
        let hash = digest(&SHA256, rp_id.as_bytes());
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(hash.as_ref());
        RelyingParty { rp_id: rp_id.to_owned(), rp_id_hash, origins }
    }

    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// WebAuthn §7.2 steps 11 to 21 for `response`, answering the
    /// ceremony whose challenge was `challenge`. User verification is
    /// always required: passkeys are registered with UV required.
    pub fn verify(
        &self,
        response: &PublicKeyCredential,
        challenge: &[u8],
        stored: &Stored<'_>,
    ) -> Result<Verified, Refusal> {
        let client_data_bytes = response.response.client_data_json.as_slice();
        let client_data: ClientData<'_> = serde_json::from_slice(client_data_bytes)
            .map_err(|_| Refusal::Malformed("clientDataJSON"))?;
        if client_data.type_ != "webauthn.get" {
            return Err(Refusal::WrongType);
        }
        let sent = URL_SAFE_NO_PAD
            .decode(client_data.challenge.trim_end_matches('='))
            .map_err(|_| Refusal::Malformed("clientDataJSON challenge"))?;
        if !bool::from(sent.ct_eq(challenge)) {
            return Err(Refusal::WrongChallenge);
        }
        let origin =
            Url::parse(&client_data.origin).map_err(|_| Refusal::Malformed("client origin"))?;
        if !self
            .origins
            .iter()
            .any(|allowed| WebauthnCore::origins_match(false, false, &origin, allowed))
        {
            return Err(Refusal::WrongOrigin);
        }
        // passgate is not meant to be framed by another site.
        if client_data.cross_origin == Some(true) {
            return Err(Refusal::CrossOrigin);
        }

        let auth_data = response.response.authenticator_data.as_slice();
        if auth_data.len() < AUTH_DATA_MIN {
            return Err(Refusal::Malformed("authenticatorData too short"));
        }
        if !bool::from(auth_data[..32].ct_eq(&self.rp_id_hash)) {
            return Err(Refusal::WrongRpId);
        }
        let flags = auth_data[32];
        check_tail(flags, &auth_data[AUTH_DATA_MIN..])?;
        let counter =
            u32::from_be_bytes([auth_data[33], auth_data[34], auth_data[35], auth_data[36]]);
        if flags & FLAG_USER_PRESENT == 0 {
            return Err(Refusal::UserNotPresent);
        }
        if flags & FLAG_USER_VERIFIED == 0 {
            return Err(Refusal::UserNotVerified);
        }
        let backup_eligible = flags & FLAG_BACKUP_ELIGIBLE != 0;
        let backup_state = flags & FLAG_BACKUP_STATE != 0;
        // WebAuthn L3 §7.2 step 16: backup eligibility is fixed when the
        // credential is made. A flag that differs from the stored one (either
        // way) is another kind of authenticator answering for it, which
        // webauthn-rs's passkey flow would let a credential gain.
        if stored.backup_eligible != backup_eligible {
            return Err(Refusal::BackupEligibilityChanged);
        }
        if backup_state && !stored.backup_eligible {
            return Err(Refusal::BackedUpButNotEligible);
        }

        let client_data_hash = digest(&SHA256, client_data_bytes);
        let mut signed = Vec::with_capacity(auth_data.len() + 32);
        signed.extend_from_slice(auth_data);
        signed.extend_from_slice(client_data_hash.as_ref());
        let signature = response.response.signature.as_slice();
        let good = match stored.key {
            PublicKey::Es256(point) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point).verify(&signed, signature)
            }
            PublicKey::Rs256 { n, e } => RsaPublicKeyComponents { n, e }.verify(
                &RSA_PKCS1_2048_8192_SHA256,
                &signed,
                signature,
            ),
        };
        if good.is_err() {
            return Err(Refusal::BadSignature);
        }
        // A counter of zero on both sides is a synced passkey that keeps
        // none; otherwise it must move forward.
        if (counter > 0 || stored.sign_count > 0) && counter <= stored.sign_count {
            return Err(Refusal::CounterNotIncreased);
        }
        Ok(Verified { counter, backup_eligible, backup_state })
    }
}

/// After the fixed header an assertion carries extensions (one CBOR map)
/// when it says so, and nothing else: no attested credential data, which
/// belongs to registration, and no stray bytes.
fn check_tail(flags: u8, tail: &[u8]) -> Result<(), Refusal> {
    if flags & FLAG_ATTESTED_DATA != 0 {
        return Err(Refusal::Malformed("attested credential data in an assertion"));
    }
    if flags & FLAG_EXTENSIONS == 0 {
        return if tail.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Malformed("trailing bytes after authenticatorData"))
        };
    }
    let mut reader = tail;
    match ciborium::from_reader::<ciborium::Value, _>(&mut reader) {
        Ok(ciborium::Value::Map(_)) if reader.is_empty() => Ok(()),
        _ => Err(Refusal::Malformed("authenticatorData extensions are not one CBOR map")),
    }
}

impl PublicKey {
    /// The key of a registered passkey; `None` for an algorithm passkey
    /// registration never accepts.
    pub fn of(passkey: &Passkey) -> Option<PublicKey> {
        Self::from_cose(passkey.get_public_key())
    }

    pub fn from_cose(key: &COSEKey) -> Option<PublicKey> {
        match (&key.type_, &key.key) {
            (COSEAlgorithm::ES256, COSEKeyType::EC_EC2(ec))
                if ec.curve == ECDSACurve::SECP256R1 =>
            {
                let mut point = vec![0x04];
                for coordinate in [ec.x.as_slice(), ec.y.as_slice()] {
                    if coordinate.len() > 32 {
                        return None;
                    }
                    point.resize(point.len() + 32 - coordinate.len(), 0);
                    point.extend_from_slice(coordinate);
                }
                Some(PublicKey::Es256(point))
            }
            (COSEAlgorithm::RS256, COSEKeyType::RSA(rsa)) => {
                Some(PublicKey::Rs256 { n: rsa.n.to_vec(), e: rsa.e.to_vec() })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    const ORIGIN: &str = "http://localhost:8080";
    const CHALLENGE: &[u8] = b"the challenge the server issued";

    fn relying_party() -> RelyingParty {
        RelyingParty::new("localhost", vec![Url::parse(ORIGIN).unwrap()])
    }

    fn credential(auth_data: &[u8], client_data: &[u8], signature: &[u8]) -> PublicKeyCredential {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        serde_json::from_value(json!({
            "id": "AA", "rawId": "AA", "type": "public-key",
            "response": {
                "authenticatorData": b64(auth_data),
                "clientDataJSON": b64(client_data),
                "signature": b64(signature),
                "userHandle": null,
            },
        }))
        .unwrap()
    }

    /// Authenticator data with our RP id hash, user present and verified.
    fn good_auth_data(counter: u32) -> Vec<u8> {
        let mut data = digest(&SHA256, b"localhost").as_ref().to_vec();
        data.push(FLAG_USER_PRESENT | FLAG_USER_VERIFIED);
        data.extend_from_slice(&counter.to_be_bytes());
        data
    }

    /// A member of client data: the right value, a near miss, or anything.
    fn member(right: &'static str, near: &'static str) -> impl Strategy<Value = String> {
        prop_oneof![Just(right.to_owned()), Just(near.to_owned()), any::<String>()]
    }

    proptest! {
        /// Any bytes as client data, authenticator data and signature:
        /// refused, never a panic, never accepted.
        #[test]
        fn arbitrary_bytes_are_refused_without_a_panic(
            client_data in proptest::collection::vec(any::<u8>(), 0..256),
            auth_data in proptest::collection::vec(any::<u8>(), 0..128),
            signature in proptest::collection::vec(any::<u8>(), 0..80),
            backup_eligible: bool,
        ) {
            let key = PublicKey::Es256(vec![4; 65]);
            let stored = Stored { key: &key, sign_count: 0, backup_eligible };
            let answer = relying_party().verify(&credential(&auth_data, &client_data, &signature), CHALLENGE, &stored);
            prop_assert!(answer.is_err());
        }

        /// A correctly signed assertion whose client data members are each
        /// right, nearly right or arbitrary text (escaped as JSON): accepted
        /// exactly when type, challenge and origin are right and it is not
        /// cross-origin.
        #[test]
        fn signed_client_data_is_accepted_only_when_every_member_is_right(
            type_ in member("webauthn.get", "webauthn.create"),
            challenge in member("right", "dGhlIGNoYWxsZW5nZQ"),
            origin in member(ORIGIN, "http://localhost:8081"),
            cross_origin in proptest::option::of(any::<bool>()),
            extra in any::<String>(),
        ) {
            let challenge_text = if challenge == "right" { URL_SAFE_NO_PAD.encode(CHALLENGE) } else { challenge.clone() };
            let mut client_data = json!({ "type": type_, "challenge": challenge_text, "origin": origin, "other": extra });
            if let Some(cross) = cross_origin {
                client_data["crossOrigin"] = Value::Bool(cross);
            }
            let client_data = client_data.to_string().into_bytes();
            let auth_data = good_auth_data(1);
            let key_pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
            let mut signed = auth_data.clone();
            signed.extend_from_slice(digest(&SHA256, &client_data).as_ref());
            let signature = key_pair.sign(&SystemRandom::new(), &signed).unwrap();
            let key = PublicKey::Es256(key_pair.public_key().as_ref().to_vec());
            let stored = Stored { key: &key, sign_count: 0, backup_eligible: false };

            let answer = relying_party().verify(&credential(&auth_data, &client_data, signature.as_ref()), CHALLENGE, &stored);
            let right = type_ == "webauthn.get"
                && challenge == "right"
                && origin == ORIGIN
                && cross_origin != Some(true);
            prop_assert_eq!(answer.is_ok(), right, "{:?}", answer);
        }
    }
}
