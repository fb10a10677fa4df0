//! passgate checks sign-in assertions with its own aws-lc-rs verifier
//! (src/service/assertion.rs) instead of webauthn-rs's OpenSSL one. Here
//! both see the same assertions, honest and tampered, and must agree;
//! where passgate is deliberately stricter, the test says so.

use passgate::service::assertion::{PublicKey, Refusal, RelyingParty, Stored};
use serde_json::{Value, json};
use webauthn_rs::prelude::*;

use crate::authenticator::{Ceremony, SoftAuthenticator, flags};

const RP_ID: &str = "wallet.example";
const ORIGIN: &str = "https://wallet.example";
const ANDROID_ORIGIN: &str = "android:apk-key-hash:AbC-_dEf0123456789xyzXYZ-_aBcDeFgHiJkLmNoPqR";

struct Pair {
    webauthn: Webauthn,
    ours: RelyingParty,
    passkey: Passkey,
    key: PublicKey,
    sign_count: u32,
    backup_eligible: bool,
}

fn pair(authenticator: &mut SoftAuthenticator) -> Pair {
    let origin = Url::parse(ORIGIN).unwrap();
    let android = Url::parse(ANDROID_ORIGIN).unwrap();
    let webauthn = WebauthnBuilder::new(RP_ID, &origin)
        .unwrap()
        .append_allowed_origin(&android)
        .build()
        .unwrap();
    let ours = RelyingParty::new(RP_ID, vec![origin, android]);
    let (options, state) =
        webauthn.start_passkey_registration(Uuid::new_v4(), "claire", "Claire", None).unwrap();
    let options = serde_json::to_value(&options).unwrap()["publicKey"].clone();
    let reply: RegisterPublicKeyCredential =
        serde_json::from_value(authenticator.register(&options)).unwrap();
    let passkey = webauthn.finish_passkey_registration(&reply, &state).unwrap();
    let key = PublicKey::of(&passkey).expect("an ES256 key");
    let backup_eligible = passkey_is_backup_eligible(&passkey);
    Pair { webauthn, ours, passkey, key, sign_count: 0, backup_eligible }
}

fn passkey_is_backup_eligible(passkey: &Passkey) -> bool {
    serde_json::to_value(passkey).unwrap()["cred"]["backup_eligible"].as_bool().unwrap()
}

/// One assertion, checked by both. Returns (webauthn-rs accepted,
/// passgate's answer); an accepted one moves both stored counters on.
fn both(
    pair: &mut Pair,
    authenticator: &mut SoftAuthenticator,
    tamper: impl FnOnce(&mut Ceremony),
) -> (bool, Result<(), Refusal>) {
    let (options, state) =
        pair.webauthn.start_passkey_authentication(std::slice::from_ref(&pair.passkey)).unwrap();
    let challenge = options.public_key.challenge.to_vec();
    let options = serde_json::to_value(&options).unwrap()["publicKey"].clone();
    let reply: PublicKeyCredential =
        serde_json::from_value(authenticator.login_with(&options, tamper)).unwrap();
    let theirs = pair.webauthn.finish_passkey_authentication(&reply, &state);
    let stored = Stored {
        key: &pair.key,
        sign_count: pair.sign_count,
        backup_eligible: pair.backup_eligible,
    };
    let ours = pair.ours.verify(&reply, &challenge, &stored);
    if let (Ok(result), Ok(verified)) = (&theirs, &ours) {
        pair.passkey.update_credential(result);
        pair.sign_count = verified.counter;
        pair.backup_eligible = verified.backup_eligible;
    }
    (theirs.is_ok(), ours.map(|_| ()))
}

type Tamper = fn(&mut Ceremony);

/// Tampering both verifiers must judge alike (true: accepted).
const SHARED: &[(&str, bool, Tamper)] = &[
    ("honest", true, |_| {}),
    ("create type", false, |c| c.client_data["type"] = json!("webauthn.create")),
    ("other challenge", false, |c| {
        c.client_data["challenge"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    }),
    ("phishing origin", false, |c| c.client_data["origin"] = json!("https://wallet.example.evil")),
    ("other port", false, |c| c.client_data["origin"] = json!("https://wallet.example:8443")),
    ("plain http", false, |c| c.client_data["origin"] = json!("http://wallet.example")),
    ("subdomain", false, |c| c.client_data["origin"] = json!("https://pay.wallet.example")),
    ("android app", true, |c| c.client_data["origin"] = json!(ANDROID_ORIGIN)),
    ("other android app", false, |c| c.client_data["origin"] = json!("android:apk-key-hash:other")),
    ("origin with a path", true, |c| c.client_data["origin"] = json!("https://wallet.example/")),
    ("extra client data member", true, |c| {
        c.client_data["other_keys_can_be_added_here"] = json!("do not compare clientDataJSON")
    }),
    ("client data not an object", false, |c| c.client_data = json!("webauthn.get")),
    ("other rp id", false, |c| c.set_rp_id("evil.example")),
    ("no user presence", false, |c| *c.flags_mut() &= !flags::UP),
    ("no user verification", false, |c| *c.flags_mut() &= !flags::UV),
    ("backed up, not eligible", false, |c| *c.flags_mut() |= flags::BS),
    ("bad signature", false, |c| c.corrupt_signature = true),
    ("attested data flag", false, |c| *c.flags_mut() |= flags::AT),
    ("extensions flag without extensions", false, |c| *c.flags_mut() |= 0x80),
    ("short authenticator data", false, |c| c.authenticator_data.truncate(36)),
    ("counter jumps", true, |c| c.set_counter(1000)),
];

#[test]
fn passgate_and_webauthn_rs_agree_on_every_assertion() {
    let mut authenticator = SoftAuthenticator::new(ORIGIN);
    let mut p = pair(&mut authenticator);
    // A few honest sign-ins first, so the counters are past zero.
    for _ in 0..3 {
        assert_eq!(both(&mut p, &mut authenticator, |_| {}), (true, Ok(())));
    }
    let mut disagreements = Vec::new();
    for (name, accepted, tamper) in SHARED {
        let (theirs, ours) = both(&mut p, &mut authenticator, *tamper);
        if theirs != *accepted || ours.is_ok() != *accepted {
            disagreements.push(format!("{name}: webauthn-rs {theirs}, passgate {ours:?}"));
        }
    }
    // The counter must move past the stored one (a clone warning).
    for back in [0, 1, p.sign_count] {
        let counter = p.sign_count - back;
        let (theirs, ours) = both(&mut p, &mut authenticator, move |c| c.set_counter(counter));
        if theirs || ours != Err(Refusal::CounterNotIncreased) {
            disagreements
                .push(format!("counter {counter}: webauthn-rs {theirs}, passgate {ours:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert_eq!(p.sign_count, 1000, "the jump was stored");
}

#[test]
fn passgate_is_stricter_where_it_says_so() {
    let mut authenticator = SoftAuthenticator::new(ORIGIN);
    let mut p = pair(&mut authenticator);
    let stricter: &[(&str, Tamper, Refusal)] = &[
        (
            "cross-origin iframe",
            |c| c.client_data["crossOrigin"] = json!(true),
            Refusal::CrossOrigin,
        ),
        (
            "stray bytes",
            |c| c.authenticator_data.extend_from_slice(&[0xa0]),
            Refusal::Malformed("trailing bytes after authenticatorData"),
        ),
    ];
    for (name, tamper, why) in stricter {
        let (theirs, ours) = both(&mut p, &mut authenticator, *tamper);
        assert!(theirs, "{name}: webauthn-rs accepts this one");
        assert_eq!(ours, Err(*why), "{name}");
    }
    // Extensions are fine when flagged and well-formed.
    let (theirs, ours) = both(&mut p, &mut authenticator, |c| {
        *c.flags_mut() |= 0x80;
        c.authenticator_data.extend_from_slice(&[0xa0]);
    });
    assert_eq!((theirs, ours), (true, Ok(())));
}

#[test]
fn a_backup_eligible_flag_that_differs_from_the_stored_one_is_refused() {
    let mut authenticator = SoftAuthenticator::new(ORIGIN);
    let mut p = pair(&mut authenticator);
    assert!(!p.backup_eligible);
    // webauthn-rs lets a device-bound credential become eligible; WebAuthn
    // L3 §7.2 step 16 does not, and neither does passgate.
    let (theirs, ours) = both(&mut p, &mut authenticator, |c| *c.flags_mut() |= flags::BE);
    assert_eq!((theirs, ours), (true, Err(Refusal::BackupEligibilityChanged)));
    assert!(!p.backup_eligible, "nothing new is stored");
    let (theirs, ours) = both(&mut p, &mut authenticator, |_| {});
    assert_eq!((theirs, ours), (true, Ok(())));
}

#[test]
fn a_synced_passkey_without_a_counter_signs_in_again_and_again() {
    let mut authenticator = SoftAuthenticator::new(ORIGIN);
    authenticator.set_synced(true);
    let mut p = pair(&mut authenticator);
    assert!(p.backup_eligible, "a synced passkey registers as backup eligible");
    for _ in 0..3 {
        assert_eq!(both(&mut p, &mut authenticator, |_| {}), (true, Ok(())));
    }
    assert_eq!(p.sign_count, 0);
    // Losing backup eligibility is refused by both.
    let (theirs, ours) =
        both(&mut p, &mut authenticator, |c| *c.flags_mut() &= !(flags::BE | flags::BS));
    assert!(!theirs);
    assert_eq!(ours, Err(Refusal::BackupEligibilityChanged));
}

/// The verifier reads the key the way passgate stores it: from the
/// passkey's JSON.
#[test]
fn the_stored_passkey_json_gives_the_same_key() {
    let mut authenticator = SoftAuthenticator::new(ORIGIN);
    let p = pair(&mut authenticator);
    let json: Value = serde_json::to_value(&p.passkey).unwrap();
    let cose: COSEKey = serde_json::from_value(json["cred"]["cred"].clone()).unwrap();
    assert_eq!(PublicKey::from_cose(&cose), Some(p.key.clone()));
    match &p.key {
        PublicKey::Es256(point) => assert_eq!((point.len(), point[0]), (65, 4)),
        other => panic!("expected ES256, got {other:?}"),
    }
}
