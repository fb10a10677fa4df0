use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use serde_json::{Value, json};

use super::*;
use crate::clock::ManualClock;
use crate::keys::public_key;
use crate::replay::SWEEP_EVERY_SECS;

const ISSUER: &str = "https://auth.wallet.example";
const AUDIENCE: &str = "payments:authorize";

/// RFC 8037 appendix A.1's Ed25519 key, as PKCS#8 and as JWK `x`.
const ED25519_SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const ED25519_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn es256(kid: &str) -> Signer {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = secret.to_pkcs8_der().unwrap();
    let point = secret.public_key().to_encoded_point(false);
    Signer {
        kid: kid.into(),
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_der(der.as_bytes()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }),
    }
}

fn ed25519(kid: &str) -> Signer {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend(
        (0..32).map(|i| u8::from_str_radix(&ED25519_SEED_HEX[2 * i..2 * i + 2], 16).unwrap()),
    );
    Signer {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(&der),
        jwk: json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": ED25519_X }),
    }
}

impl Signer {
    /// A payment authorization, typed as passgate types it.
    fn sign(&self, claims: &Value) -> String {
        self.sign_typed(claims, AUTHORIZATION_TYP)
    }

    fn sign_typed(&self, claims: &Value, typ: &str) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// A JWKS endpoint on a loopback port that counts its requests; the
/// set it serves can be swapped while it runs.
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    body: Arc<Mutex<String>>,
}

fn serve_jwks(keys: &[&Signer]) -> JwksServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(Mutex::new(String::new()));
    let server = JwksServer { url, hits: hits.clone(), body: body.clone() };
    server.publish(keys);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            hits.fetch_add(1, Ordering::SeqCst);
            let body = body.lock().unwrap().clone();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    server
}

impl JwksServer {
    fn publish(&self, keys: &[&Signer]) {
        let keys: Vec<&Value> = keys.iter().map(|k| &k.jwk).collect();
        *self.body.lock().unwrap() = json!({ "keys": keys }).to_string();
    }
}

fn transaction(amount: &str) -> Transaction {
    Transaction::parse(RawTransaction {
        amount: amount.into(),
        currency: "EUR".into(),
        payee: "Coffee Shop".into(),
        reference: None,
    })
    .unwrap()
}

fn claims(clock: &ManualClock, txn: &Transaction) -> Value {
    let now = clock.now_secs();
    json!({
        "iss": ISSUER, "sub": "user-1", "aud": AUDIENCE, "iat": now, "nbf": now,
        "exp": now + 120, "jti": uuid::Uuid::new_v4().to_string(),
        "scope": PAYMENT_SCOPE, "txn": txn.txn(), "sid": "session-1",
        "device_id": "device-1", "amr": ["hwk", "user"],
    })
}

fn verifier(server: &JwksServer, clock: &ManualClock) -> Verifier {
    Verifier::new(&server.url, ISSUER, AUDIENCE).unwrap().with_clock(clock.clone())
}

#[tokio::test]
async fn accepts_es256_and_eddsa_once_and_reports_the_claims() {
    let (ec, ed) = (es256("ec-1"), ed25519("ed-1"));
    let server = serve_jwks(&[&ec, &ed]);
    let clock = ManualClock::default();
    let verifier = verifier(&server, &clock);
    let txn = transaction("12.50");

    for signer in [&ec, &ed] {
        let token = signer.sign(&claims(&clock, &txn));
        let authorization = verifier.verify_payment(&token, &txn).await.unwrap();
        assert_eq!(authorization.sub, "user-1");
        assert_eq!(authorization.txn, txn.txn());
        assert_eq!(authorization.kid, signer.kid);
        assert_eq!(authorization.amr, ["hwk", "user"]);
        assert_eq!(verifier.verify_payment(&token, &txn).await, Err(VerifyError::Replayed));
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "one fetch serves both keys");
}

#[tokio::test]
async fn the_type_audience_and_scope_tell_access_tokens_and_authorizations_apart() {
    let ec = es256("ec-1");
    let server = serve_jwks(&[&ec]);
    let clock = ManualClock::default();
    let verifier = verifier(&server, &clock);
    let txn = transaction("12.50");
    let now = clock.now_secs();
    let access = json!({
        "iss": ISSUER, "sub": "user-1", "aud": "payments", "iat": now, "nbf": now,
        "exp": now + 300, "jti": "access-1", "sid": "session-1", "amr": ["hwk"],
    });

    let access_token = ec.sign_typed(&access, ACCESS_TYP);
    let checked = verifier.verify_access(&access_token, "payments").await.unwrap();
    assert_eq!((checked.sub.as_str(), checked.kid.as_str()), ("user-1", "ec-1"));
    assert_eq!(
        verifier.verify_payment(&access_token, &txn).await,
        Err(VerifyError::WrongType(AUTHORIZATION_TYP)),
        "an access token is no authorization"
    );
    // Each check refuses on its own: retyped, the audience and then the
    // scope still do.
    let retyped = ec.sign(&access);
    assert_eq!(verifier.verify_payment(&retyped, &txn).await, Err(VerifyError::WrongAudience));
    let mut same_audience = access.clone();
    same_audience["aud"] = json!(AUDIENCE);
    assert_eq!(
        verifier.verify_payment(&ec.sign(&same_audience), &txn).await,
        Err(VerifyError::InsufficientScope)
    );

    let authorization = ec.sign(&claims(&clock, &txn));
    assert_eq!(
        verifier.verify_access(&authorization, "payments").await,
        Err(VerifyError::WrongType(ACCESS_TYP)),
        "an authorization is no access token"
    );
    let untyped = ec.sign_typed(&claims(&clock, &txn), ACCESS_TYP);
    assert_eq!(
        verifier.verify_access(&untyped, AUDIENCE).await,
        Err(VerifyError::WrongType(ACCESS_TYP)),
        "nor does a payment scope pass as an access token"
    );
    assert_eq!(
        verifier.verify_access(&access_token, AUDIENCE).await,
        Err(VerifyError::WrongAudience)
    );
    assert!(verifier.verify_payment(&authorization, &txn).await.is_ok());
}

#[tokio::test]
async fn refuses_each_bad_claim_with_its_own_reason() {
    let ec = es256("ec-1");
    let server = serve_jwks(&[&ec]);
    let clock = ManualClock::default();
    let verifier = verifier(&server, &clock);
    let txn = transaction("12.50");
    let now = clock.now_secs();
    let cases: [(&str, Value, VerifyError); 12] = [
        ("iss", json!("https://evil.example"), VerifyError::WrongIssuer),
        ("aud", json!("wallet"), VerifyError::WrongAudience),
        ("aud", json!(["wallet", "other"]), VerifyError::WrongAudience),
        ("exp", json!(now - 6), VerifyError::Expired),
        ("nbf", json!(now + 30), VerifyError::NotYetValid),
        ("scope", json!("openid"), VerifyError::InsufficientScope),
        ("scope", Value::Null, VerifyError::InsufficientScope),
        ("exp", json!(now + 121), VerifyError::LifetimeTooLong),
        ("txn", json!(transaction("12.51").txn()), VerifyError::TransactionMismatch),
        ("txn", Value::Null, VerifyError::MissingClaim("txn")),
        ("jti", json!(""), VerifyError::MissingClaim("jti")),
        ("exp", json!("soon"), VerifyError::Malformed),
    ];
    for (claim, value, expected) in cases {
        let mut body = claims(&clock, &txn);
        if value.is_null() {
            body.as_object_mut().unwrap().remove(claim);
        } else {
            body[claim] = value.clone();
        }
        let result = verifier.verify_payment(&ec.sign(&body), &txn).await;
        assert_eq!(result, Err(expected), "{claim} = {value}");
    }
    // An audience list that includes us is fine.
    let mut body = claims(&clock, &txn);
    body["aud"] = json!(["wallet", AUDIENCE]);
    assert!(verifier.verify_payment(&ec.sign(&body), &txn).await.is_ok());
}

#[tokio::test]
async fn refuses_forged_headers_before_any_key_lookup() {
    let ec = es256("ec-1");
    let server = serve_jwks(&[&ec]);
    let clock = ManualClock::default();
    let verifier = verifier(&server, &clock);
    let txn = transaction("12.50");
    let genuine = ec.sign(&claims(&clock, &txn));
    let payload = genuine.split('.').nth(1).unwrap();
    let header = |h: Value| URL_SAFE_NO_PAD.encode(h.to_string());

    let none = format!("{}.{payload}.", header(json!({ "alg": "none", "kid": "ec-1" })));
    let hs256 = format!("{}.{payload}.AAAA", header(json!({ "alg": "HS256", "kid": "ec-1" })));
    let crit = format!(
        "{}.{payload}.AAAA",
        header(json!({ "alg": "ES256", "kid": "ec-1", "crit": ["b64"], "b64": false }))
    );
    let no_kid = format!("{}.{payload}.AAAA", header(json!({ "alg": "ES256" })));
    let cases = [
        (none.as_str(), VerifyError::UnsupportedAlgorithm("none".into())),
        (hs256.as_str(), VerifyError::UnsupportedAlgorithm("HS256".into())),
        (crit.as_str(), VerifyError::Malformed),
        (no_kid.as_str(), VerifyError::MissingKeyId),
        ("", VerifyError::Malformed),
        ("a.b", VerifyError::Malformed),
        ("a.b.c.d", VerifyError::Malformed),
    ];
    for (token, expected) in cases {
        assert_eq!(verifier.verify_payment(token, &txn).await, Err(expected), "{token}");
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(verifier.verify_payment(&huge, &txn).await, Err(VerifyError::Malformed));
}

#[tokio::test]
async fn an_eddsa_header_on_an_ec_key_is_refused() {
    let ec = es256("shared-kid");
    let ed = ed25519("shared-kid");
    let server = serve_jwks(&[&ec]);
    let clock = ManualClock::default();
    let verifier = verifier(&server, &clock);
    let txn = transaction("12.50");
    let token = ed.sign(&claims(&clock, &txn));
    assert_eq!(verifier.verify_payment(&token, &txn).await, Err(VerifyError::AlgorithmMismatch));
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval_and_find_new_keys() {
    let (old, new) = (es256("old"), es256("new"));
    let server = serve_jwks(&[&old]);
    let clock = ManualClock::default();
    let mut verifier = verifier(&server, &clock);
    verifier.keys.min_refetch = Duration::from_millis(300);
    let txn = transaction("12.50");

    assert!(verifier.verify_payment(&old.sign(&claims(&clock, &txn)), &txn).await.is_ok());
    // The issuer rotates to a key published after our fetch: a burst of
    // tokens right away cannot make us refetch...
    server.publish(&[&old, &new]);
    for _ in 0..20 {
        let token = new.sign(&claims(&clock, &txn));
        assert_eq!(verifier.verify_payment(&token, &txn).await, Err(VerifyError::UnknownKey));
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    // ...but once the interval has passed, the next one does, once.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(verifier.verify_payment(&new.sign(&claims(&clock, &txn)), &txn).await.is_ok());
    assert!(verifier.verify_payment(&old.sign(&claims(&clock, &txn)), &txn).await.is_ok());
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_withdrawn_key_stops_verifying_once_the_set_is_old() {
    let (old, new) = (es256("old"), es256("new"));
    let server = serve_jwks(&[&old]);
    let clock = ManualClock::default();
    let mut verifier = verifier(&server, &clock);
    verifier.keys.max_age = Duration::from_millis(200);
    verifier.keys.min_refetch = Duration::ZERO;
    let txn = transaction("12.50");
    assert!(verifier.verify_payment(&old.sign(&claims(&clock, &txn)), &txn).await.is_ok());

    server.publish(&[&new]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let token = old.sign(&claims(&clock, &txn));
    assert_eq!(verifier.verify_payment(&token, &txn).await, Err(VerifyError::UnknownKey));
}

#[tokio::test]
async fn an_unreachable_issuer_is_reported_and_cached_keys_keep_working() {
    let ec = es256("ec-1");
    let clock = ManualClock::default();
    let txn = transaction("12.50");
    // Nothing listens on a port that was just freed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = Verifier::new(&format!("http://127.0.0.1:{port}/jwks"), ISSUER, "payments")
        .unwrap()
        .with_clock(clock.clone());
    let result = dead.verify_payment(&ec.sign(&claims(&clock, &txn)), &txn).await;
    assert!(matches!(result, Err(VerifyError::KeysUnavailable(_))), "{result:?}");

    let server = serve_jwks(&[&ec]);
    let mut verifier = verifier(&server, &clock);
    verifier.keys.max_age = Duration::ZERO;
    verifier.keys.min_refetch = Duration::ZERO;
    assert_eq!(verifier.refresh_keys().await, Ok(1));
    verifier.keys.url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/jwks")).unwrap();
    assert!(verifier.verify_payment(&ec.sign(&claims(&clock, &txn)), &txn).await.is_ok());
}

#[test]
fn the_replay_cache_forgets_a_token_only_once_it_would_be_refused_as_expired() {
    let ec = es256("ec-1");
    let server = serve_jwks(&[&ec]);
    let clock = ManualClock::default();
    let verifier = verifier(&server, &clock);
    let txn = transaction("12.50");
    let token = ec.sign(&claims(&clock, &txn));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    assert!(runtime.block_on(verifier.verify_payment(&token, &txn)).is_ok());
    clock.advance(Duration::from_secs(124));
    assert_eq!(runtime.block_on(verifier.verify_payment(&token, &txn)), Err(VerifyError::Replayed));
    clock.advance(Duration::from_secs(1));
    assert_eq!(runtime.block_on(verifier.verify_payment(&token, &txn)), Err(VerifyError::Expired));
    // Sweeps drop what can no longer be replayed.
    clock.advance(Duration::from_secs(SWEEP_EVERY_SECS as u64));
    let fresh = ec.sign(&claims(&clock, &txn));
    assert!(runtime.block_on(verifier.verify_payment(&fresh, &txn)).is_ok());
    assert_eq!(verifier.replay.lock().unwrap().seen.len(), 1);
}

#[test]
fn verification_can_run_on_any_runtime_thread() {
    // axum and tokio::spawn need Send futures; actix does not, so
    // nothing else in the suite would notice a lock held across .await.
    fn assert_send<T: Send>(_: &T) {}
    let verifier = Verifier::new("http://localhost/jwks", ISSUER, "payments").unwrap();
    let txn = transaction("1");
    assert_send(&verifier.verify_payment("a.b.c", &txn));
    assert_send(&verifier.refresh_keys());
}

#[test]
fn refuses_insecure_urls_and_unusable_keys() {
    for url in ["http://auth.example/jwks", "ftp://localhost/jwks", "not a url"] {
        assert!(Verifier::new(url, ISSUER, "payments").is_err(), "{url}");
    }
    for url in ["https://auth.example/jwks", "http://localhost:8080/j", "http://[::1]/j"] {
        assert!(Verifier::new(url, ISSUER, "payments").is_ok(), "{url}");
    }
    let jwk = |v: Value| serde_json::from_value::<Jwk>(v).unwrap();
    let ec = es256("k").jwk;
    assert!(public_key(&jwk(ec.clone())).is_some());
    let mut enc = ec.clone();
    enc["use"] = json!("enc");
    let mut es384 = ec.clone();
    es384["alg"] = json!("ES384");
    for unusable in [enc, es384, json!({ "kty": "oct", "kid": "k", "k": "c2VjcmV0" })] {
        assert!(public_key(&jwk(unusable.clone())).is_none(), "{unusable}");
    }
}
