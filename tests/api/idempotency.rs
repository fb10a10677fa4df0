//! `Idempotency-Key` (issue 20 item 6) on payment approval and the admin
//! actions: a retry with the same key gets the first answer, byte for byte,
//! marked `Idempotent-Replayed: true`, and never a second effect; 50 at
//! once make one effect and 50 equal answers. The key is the caller's own,
//! is refused with another request, and the stored answers are sealed and
//! purged. On both stores.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_util::future::join_all;
use passgate::clock::Clock;
use passgate::error::ApiError;
use passgate::service::idempotency::{Answer, Begun, Caller, IdempotencyKey, IdempotentRequest};
use reqwest::Response;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::admin::admin;
use crate::authenticator::SoftAuthenticator;
use crate::fallback::{db_tag, verified_email};
use crate::helpers::{
    Db, TestApp, assert_problem, captured_logs, claims_of, on_both, spawn_app_configured,
};
use crate::smtp;

on_both!(
    a_retried_payment_approval_gets_the_same_token_and_approves_once,
    fifty_approvals_with_one_key_approve_once_and_answer_alike,
    a_key_sent_with_another_request_is_refused_and_changes_nothing,
    a_key_is_its_callers_own,
    a_refusal_is_answered_again_as_it_was_first,
    fifty_locks_with_one_key_lock_once_and_mail_once,
    fifty_resets_with_one_key_reset_once_and_mail_one_code,
    a_malformed_key_is_refused_before_anything_is_done,
    stored_answers_are_sealed_at_rest_and_purged_once_expired,
    a_retry_waits_for_the_first_and_a_dead_attempts_key_is_taken_over,
    a_retried_unbind_answers_204_again_and_unbinds_once,
    fifty_claims_of_one_key_at_the_store_make_one_holder,
);

const AT_ONCE: usize = 50;
const FINISH: &str = "/v1/stepup/finish";
const KEY: &str = "5f0c6a52-1f0e-4a8e-9d55-5d8c3e0b7a11";

/// Limits out of the way: a race counts every request against one IP.
const ROOMY_LIMITS: [(&str, &str); 2] = [
    ("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "10000"),
    ("PASSGATE__LIMITS__ACCOUNT_REQUESTS_PER_MINUTE", "10000"),
];

async fn spawn_app(db: Db) -> TestApp {
    spawn_app_configured(db, &ROOMY_LIMITS).await
}

/// One answer, read whole.
struct Reply {
    status: u16,
    replayed: bool,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON answer")
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

async fn reply(response: Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let replayed = match headers.get("idempotent-replayed") {
        Some(value) => {
            assert_eq!(value, "true");
            true
        }
        None => false,
    };
    let body = response.bytes().await.expect("a body").to_vec();
    assert!(status < 500, "never a 5xx: {status} {}", String::from_utf8_lossy(&body));
    Reply { status, replayed, headers, body }
}

/// `method path` as `bearer`, with `key` as the Idempotency-Key (raw
/// bytes, so that malformed ones can be sent) and a JSON body.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    bearer: &str,
    key: Option<&[u8]>,
    body: Option<String>,
) -> Response {
    let mut request = app
        .client
        .request(method.parse().unwrap(), format!("{}{path}", app.address))
        .bearer_auth(bearer);
    if let Some(key) = key {
        request = request.header("idempotency-key", HeaderValue::from_bytes(key).unwrap());
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    request.send().await.expect("request sent")
}

async fn keyed(app: &TestApp, path: &str, bearer: &str, key: &str, body: &Value) -> Reply {
    reply(send(app, "POST", path, bearer, Some(key.as_bytes()), Some(body.to_string())).await).await
}

/// Fires the requests together and reads every answer.
async fn race<F: Future<Output = Response>>(requests: impl IntoIterator<Item = F>) -> Vec<Reply> {
    let responses = join_all(requests).await;
    join_all(responses.into_iter().map(reply)).await
}

/// All answers alike, the first one fresh and the others replayed.
fn one_fresh_answer(replies: &[Reply], status: u16) -> &Reply {
    for reply in replies {
        assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.body, replies[0].body, "byte for byte the first answer");
    }
    let fresh: Vec<&Reply> = replies.iter().filter(|r| !r.replayed).collect();
    assert_eq!(fresh.len(), 1, "one request ran; the others got its answer");
    fresh[0]
}

/// A user with a passkey: the passkey, the access token, the user id.
async fn payer(app: &TestApp, name: &str) -> (SoftAuthenticator, String, String) {
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, name).await;
    let bearer = tokens["access_token"].as_str().unwrap().to_owned();
    (phone, bearer, tokens["user_id"].as_str().unwrap().to_owned())
}

/// A step-up started and answered by `phone`: the finish's body.
async fn approval(
    app: &TestApp,
    phone: &mut SoftAuthenticator,
    bearer: &str,
    amount: &str,
) -> Value {
    let transaction = json!({ "amount": amount, "currency": "EUR", "payee": "Coffee Shop" });
    let body = json!({ "transaction": transaction });
    let started: Value =
        app.post_bearer("/v1/stepup/start", bearer, &body).await.json().await.unwrap();
    let assertion = phone.login(&started["publicKey"]);
    json!({ "ceremony_id": started["ceremony_id"], "credential": assertion })
}

async fn count(app: &TestApp, sql: &'static str, arg: &str) -> i64 {
    app.observer(Duration::from_secs(5)).await.count(sql, arg).await
}

const APPROVALS: &str =
    "select count(*) from audit_event where event = 'payment_approved' and user_id = $1";

async fn a_retried_payment_approval_gets_the_same_token_and_approves_once(db: Db) {
    let app = spawn_app(db).await;
    let (mut phone, bearer, user_id) = payer(&app, "idem-alice").await;
    let body = approval(&app, &mut phone, &bearer, "12.50").await;

    let first = keyed(&app, FINISH, &bearer, KEY, &body).await;
    // The retry, its members in another order and spaced out: the same request.
    let reordered = format!(
        "{{\n  \"credential\": {},\n  \"ceremony_id\": {}\n}}",
        serde_json::to_string_pretty(&body["credential"]).unwrap(),
        body["ceremony_id"]
    );
    let retry =
        reply(send(&app, "POST", FINISH, &bearer, Some(KEY.as_bytes()), Some(reordered)).await)
            .await;
    let quoted = format!("\"{KEY}\"");
    let again = keyed(&app, FINISH, &bearer, &quoted, &body).await;

    assert_eq!(first.status, 200);
    assert!(!first.replayed, "the first answer is no replay");
    let token = first.json()["authorization_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&token)["sub"], user_id.as_str());
    for later in [&retry, &again] {
        assert_eq!(later.status, 200);
        assert!(later.replayed, "marked Idempotent-Replayed");
        assert_eq!(later.body, first.body, "the same token, byte for byte");
    }
    assert_eq!(count(&app, APPROVALS, &user_id).await, 1, "approved once");
    let logs = captured_logs();
    assert!(!logs.contains(KEY) && !logs.contains(&token), "neither key nor answer is logged");
    // Without a key a second finish is what it always was.
    let plain =
        reply(send(&app, "POST", FINISH, &bearer, None, Some(body.to_string())).await).await;
    assert_eq!((plain.status, plain.code().as_str()), (404, "ceremony_not_found"));
}

async fn fifty_approvals_with_one_key_approve_once_and_answer_alike(db: Db) {
    let app = spawn_app(db).await;
    let (mut phone, bearer, user_id) = payer(&app, "idem-race").await;
    let body = approval(&app, &mut phone, &bearer, "99.00").await;

    let replies = race((0..AT_ONCE).map(|_| {
        send(&app, "POST", FINISH, &bearer, Some(KEY.as_bytes()), Some(body.to_string()))
    }))
    .await;

    let fresh = one_fresh_answer(&replies, 200);
    assert!(fresh.json()["authorization_token"].is_string());
    assert_eq!(count(&app, APPROVALS, &user_id).await, 1, "one approval, one audit row");
    let uses = "select count(*) from credential where user_id = $1 and last_used_at is not null";
    assert_eq!(count(&app, uses, &user_id).await, 1);
}

async fn a_key_sent_with_another_request_is_refused_and_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let (mut phone, bearer, user_id) = payer(&app, "idem-reuse").await;
    let coffee = approval(&app, &mut phone, &bearer, "3.20").await;
    assert_eq!(keyed(&app, FINISH, &bearer, KEY, &coffee).await.status, 200);

    let car = approval(&app, &mut phone, &bearer, "18000.00").await;
    let before = app.fingerprint().await;
    let reused = keyed(&app, FINISH, &bearer, KEY, &car).await;

    assert_eq!((reused.status, reused.code().as_str()), (422, "idempotency_key_reused"));
    assert!(!reused.replayed);
    assert!(!String::from_utf8_lossy(&reused.body).contains("authorization_token"));
    assert_eq!(app.fingerprint().await, before, "nothing done: the ceremony is still there");
    assert_eq!(count(&app, APPROVALS, &user_id).await, 1);
    // The refused request's ceremony was left alone: with a new key it runs.
    assert_eq!(keyed(&app, FINISH, &bearer, "another-key", &car).await.status, 200);
    assert_eq!(count(&app, APPROVALS, &user_id).await, 2);
}

/// Alice's key in Bob's hands, with Alice's very request, is Bob's own
/// new key: he gets his own answer (he cannot finish her ceremony), never
/// her token. And the same key string serves both for their own requests.
async fn a_key_is_its_callers_own(db: Db) {
    let app = spawn_app(db).await;
    let (mut alice_phone, alice, alice_id) = payer(&app, "idem-own-a").await;
    let (mut bob_phone, bob, bob_id) = payer(&app, "idem-own-b").await;
    let (_, mallory, _) = payer(&app, "idem-own-m").await;
    let hers = approval(&app, &mut alice_phone, &alice, "10.00").await;
    let his = approval(&app, &mut bob_phone, &bob, "10.00").await;

    let alice_answer = keyed(&app, FINISH, &alice, KEY, &hers).await;
    let bob_answer = keyed(&app, FINISH, &bob, KEY, &his).await;
    let stolen = keyed(&app, FINISH, &mallory, KEY, &hers).await;

    assert_eq!((alice_answer.status, bob_answer.status), (200, 200));
    assert!(!bob_answer.replayed, "Bob's request ran: the key string is also his");
    let sub = |reply: &Reply| {
        claims_of(reply.json()["authorization_token"].as_str().unwrap())["sub"].clone()
    };
    assert_eq!(sub(&alice_answer), alice_id.as_str());
    assert_eq!(sub(&bob_answer), bob_id.as_str());
    assert_eq!((stolen.status, stolen.code().as_str()), (404, "ceremony_not_found"));
    assert!(
        !stolen.replayed && !String::from_utf8_lossy(&stolen.body).contains("authorization_token")
    );
    assert_eq!(count(&app, APPROVALS, &alice_id).await, 1);
}

/// The draft: the first answer is kept whatever it is, a refusal too; the
/// retry gets it (the body names the first request's id) rather than
/// what running again would say (the ceremony is gone: 404).
async fn a_refusal_is_answered_again_as_it_was_first(db: Db) {
    let app = spawn_app(db).await;
    let (mut phone, bearer, _) = payer(&app, "idem-refused").await;
    let mut body = approval(&app, &mut phone, &bearer, "5.00").await;
    body["transaction"] = json!({ "amount": "500.00", "currency": "EUR", "payee": "Coffee Shop" });

    let first = keyed(&app, FINISH, &bearer, KEY, &body).await;
    let retry = keyed(&app, FINISH, &bearer, KEY, &body).await;

    assert_eq!((first.status, first.code().as_str()), (401, "invalid_credentials"));
    assert!(!first.replayed && retry.replayed);
    assert_eq!(retry.status, 401);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.headers["content-type"], "application/problem+json");
    assert_eq!(retry.headers["www-authenticate"], "Bearer");
    assert_eq!(first.json()["request_id"], first.headers["x-request-id"].to_str().unwrap());
    assert_ne!(
        retry.headers["x-request-id"], first.headers["x-request-id"],
        "a request of its own"
    );
}

/// A user with a verified address: (user id, address).
async fn mailed_user(app: &TestApp, name: &str) -> (String, String) {
    let (_, bearer, user_id) = payer(app, name).await;
    let address = format!("{name}-{}@example.test", db_tag(app));
    verified_email(app, &bearer, &address).await;
    (user_id, address)
}

fn mails_with(address: &str, needle: &str) -> usize {
    smtp::mails_to(address).iter().filter(|m| m.contains(needle)).count()
}

async fn fifty_locks_with_one_key_lock_once_and_mail_once(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "idem-admin").await;
    let (user_id, address) = mailed_user(&app, "idem-lockme").await;
    let (other_id, _) = mailed_user(&app, "idem-other").await;
    let lock = format!("/v1/admin/users/{user_id}/lock");
    let body = json!({ "reason": "card fraud reported" }).to_string();

    let replies = race((0..AT_ONCE).map(|_| {
        send(&app, "POST", &lock, &admin_bearer, Some(KEY.as_bytes()), Some(body.clone()))
    }))
    .await;

    let fresh = one_fresh_answer(&replies, 200);
    assert_eq!(fresh.json()["locked"], true);
    let locks =
        "select count(*) from audit_event where event = 'account_disabled' and user_id = $1";
    assert_eq!(count(&app, locks, &user_id).await, 1, "locked once");
    smtp::wait_for_mail(&address, "locked by an administrator").await;
    // The other notices, had there been any, were sent as this one was; a
    // reset, whose mail is sent before it answers, comes after them all.
    let reset = format!("/v1/admin/users/{user_id}/reset-devices");
    let reset =
        keyed(&app, &reset, &admin_bearer, "barrier", &json!({ "reason": "barrier" })).await;
    assert_eq!(reset.status, 200);
    assert_eq!(mails_with(&address, "locked by an administrator"), 1, "one notice");

    // The key with another account is another request: refused, and the
    // other account stays unlocked.
    let other = format!("/v1/admin/users/{other_id}/lock");
    let refused =
        keyed(&app, &other, &admin_bearer, KEY, &json!({ "reason": "card fraud reported" })).await;
    assert_eq!((refused.status, refused.code().as_str()), (422, "idempotency_key_reused"));
    let detail: Value = app
        .get(&format!("/v1/admin/users/{other_id}"), Some(&admin_bearer))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["locked"], false, "{detail}");
    // Another operation is another key's scope: unlock runs.
    let unlock = format!("/v1/admin/users/{user_id}/unlock");
    let unlocked = keyed(&app, &unlock, &admin_bearer, KEY, &json!({ "reason": "resolved" })).await;
    assert_eq!(unlocked.status, 200);
    assert!(!unlocked.replayed);
    assert_eq!(unlocked.json()["locked"], false);
}

async fn fifty_resets_with_one_key_reset_once_and_mail_one_code(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "idem-resetter").await;
    let (user_id, address) = mailed_user(&app, "idem-lost-phone").await;
    let path = format!("/v1/admin/users/{user_id}/reset-devices");
    let body = json!({ "reason": "phone stolen" }).to_string();

    let replies = race((0..AT_ONCE).map(|_| {
        send(&app, "POST", &path, &admin_bearer, Some(KEY.as_bytes()), Some(body.clone()))
    }))
    .await;

    let fresh = one_fresh_answer(&replies, 200);
    assert_eq!(fresh.json()["enrolment_code_sent_to"], address.as_str());
    for reply in &replies {
        assert_eq!(reply.headers["cache-control"], "no-store", "replays are not cached either");
    }
    let resets = "select count(*) from audit_event where event = 'devices_reset' and user_id = $1";
    assert_eq!(count(&app, resets, &user_id).await, 1, "reset once");
    let codes = "select count(*) from enrolment_code where user_id = $1";
    assert_eq!(count(&app, codes, &user_id).await, 1);
    assert_eq!(mails_with(&address, "Bind a new device"), 1, "one code mailed");
}

async fn a_malformed_key_is_refused_before_anything_is_done(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "idem-strict").await;
    let (mut phone, bearer, user_id) = payer(&app, "idem-target").await;
    let body = approval(&app, &mut phone, &bearer, "1.00").await;
    let lock = format!("/v1/admin/users/{user_id}/lock");
    let long = "k".repeat(256);
    let bad: [&[u8]; 6] = [b"", b"   ", long.as_bytes(), b"\"unfinished", b"caf\xe9", b"\"a\\b\""];
    let before = app.fingerprint().await;

    for key in bad {
        let finish = send(&app, "POST", FINISH, &bearer, Some(key), Some(body.to_string())).await;
        let problem = assert_problem(finish, 400, "bad_request").await;
        assert!(problem["detail"].as_str().unwrap().contains("Idempotency-Key"), "{problem}");
        let locked = send(&app, "POST", &lock, &admin_bearer, Some(key), Some("{}".into())).await;
        assert_problem(locked, 400, "bad_request").await;
    }

    assert_eq!(app.fingerprint().await, before, "nothing done: no lock, the ceremony unused");
    let rows = "select count(*) from idempotency_key where key_hash <> $1";
    assert_eq!(count(&app, rows, "").await, 0, "no key stored");
    let at_most = "k".repeat(255);
    assert_eq!(keyed(&app, FINISH, &bearer, &at_most, &body).await.status, 200);
}

/// Every way a thief could read a stored text: as it is, and each base64
/// reading of it or of what follows its last colon.
fn readings(stored: &str) -> Vec<Vec<u8>> {
    let mut out = vec![stored.as_bytes().to_vec()];
    let tail = stored.rsplit(':').next().unwrap_or(stored);
    for text in [stored, tail] {
        out.extend(STANDARD.decode(text).ok());
        out.extend(URL_SAFE_NO_PAD.decode(text).ok());
    }
    out
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn stored_rows(app: &TestApp) -> Vec<(String, String, Option<String>)> {
    let sql = "select key_hash, fingerprint, answer from idempotency_key";
    match app.db.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&pool).await.unwrap()
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db.url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&pool).await.unwrap()
        }
    }
}

async fn stored_answers_are_sealed_at_rest_and_purged_once_expired(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "idem-sealer").await;
    let (mut phone, bearer, user_id) = payer(&app, "idem-sealed").await;
    let body = approval(&app, &mut phone, &bearer, "42.00").await;
    let approved = keyed(&app, FINISH, &bearer, KEY, &body).await;
    let token = approved.json()["authorization_token"].as_str().unwrap().to_owned();
    // No verified address: the enrolment code is in the answer itself.
    let (_, _, lost_id) = payer(&app, "idem-lost").await;
    let reset = format!("/v1/admin/users/{lost_id}/reset-devices");
    let reset_key = "reset-7f3a";
    let outcome = keyed(&app, &reset, &admin_bearer, reset_key, &json!({ "reason": "lost" })).await;
    let code = outcome.json()["enrolment_code"].as_str().unwrap().to_owned();

    let rows = stored_rows(&app).await;
    assert_eq!(rows.len(), 2);
    for (key_hash, fingerprint, answer) in &rows {
        let answer = answer.as_deref().expect("a stored answer");
        assert!(answer.starts_with("sealed:v1:"), "sealed");
        let token_signature = token.rsplit('.').next().unwrap();
        for reading in readings(answer) {
            for secret in [token.as_str(), token_signature, code.as_str(), &code.replace('-', "")] {
                assert!(!holds(&reading, secret), "an answer's secret readable at rest");
            }
        }
        for text in [key_hash, fingerprint] {
            assert!(!text.contains(KEY) && !text.contains(reset_key) && !text.contains(&user_id));
        }
    }

    // Past the token's life the payment's answer goes; the admin's stays a day.
    app.clock.advance(Duration::from_secs(121));
    app.core.housekeeping.round(Duration::from_secs(10)).await;
    assert_eq!(stored_rows(&app).await.len(), 1);
    // A retry now runs again, and the used-up ceremony gives no second token.
    let late = keyed(&app, FINISH, &bearer, KEY, &body).await;
    assert_eq!(
        (late.status, late.code().as_str(), late.replayed),
        (404, "ceremony_not_found", false)
    );
    assert_eq!(count(&app, APPROVALS, &user_id).await, 1);
    let again = keyed(&app, &reset, &admin_bearer, reset_key, &json!({ "reason": "lost" })).await;
    assert!(again.replayed && again.body == outcome.body);
    app.clock.advance(Duration::from_secs(24 * 60 * 60));
    app.core.housekeeping.round(Duration::from_secs(10)).await;
    assert!(stored_rows(&app).await.is_empty(), "every expired key purged");
}

/// The service itself, where a first request can be held still: a retry
/// meanwhile waits and then gives up with 409 (within a 1 s deadline); the
/// key with another request is refused at once; once the first attempt's
/// lease has run out (its node died), the same request may run again, and
/// the dead attempt can no longer store an answer over the new one.
async fn a_retry_waits_for_the_first_and_a_dead_attempts_key_is_taken_over(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__SERVER__REQUEST_TIMEOUT_SECONDS", "1")]).await;
    let (_, bearer, _) = payer(&app, "idem-service").await;
    let claims = app.core.tokens.verify_access(&bearer).await.unwrap();
    let caller = Caller::payer(&claims);
    let key = IdempotencyKey::parse(KEY.as_bytes()).unwrap();
    let asked = |target: &'static str| IdempotentRequest {
        key: &key,
        caller: &caller,
        operation: "POST /v1/stepup/finish",
        target,
        body_digest: [7; 32],
    };
    let idempotency = &app.core.idempotency;
    let answer = |body: &[u8]| Answer { status: 200, headers: vec![], body: body.to_vec() };

    let Ok(Begun::Run(dead)) = idempotency.begin(&asked("POST /v1/stepup/finish?")).await else {
        panic!("the first request runs");
    };
    let waited = idempotency.begin(&asked("POST /v1/stepup/finish?")).await;
    assert!(matches!(waited, Err(ApiError::IdempotencyInProgress { retry_after_secs: 1 })));
    let other = idempotency.begin(&asked("POST /v1/stepup/finish?x")).await;
    assert!(matches!(other, Err(ApiError::IdempotencyKeyReused)));

    app.clock.advance(Duration::from_secs(4));
    let other = idempotency.begin(&asked("POST /v1/stepup/finish?x")).await;
    assert!(
        matches!(other, Err(ApiError::IdempotencyKeyReused)),
        "only the same request takes over"
    );
    let Ok(Begun::Run(second)) = idempotency.begin(&asked("POST /v1/stepup/finish?")).await else {
        panic!("past the lease the request runs again");
    };
    second.settle(&answer(b"{\"second\":true}"), None).await;
    dead.settle(&answer(b"{\"dead\":true}"), None).await;

    let Ok(Begun::Replay(stored)) = idempotency.begin(&asked("POST /v1/stepup/finish?")).await
    else {
        panic!("the stored answer");
    };
    assert_eq!((stored.status, stored.body.as_slice()), (200, &b"{\"second\":true}"[..]));
    // A released key (an answer that says "try later") is free again.
    let key2 = IdempotencyKey::parse(b"released").unwrap();
    let released = IdempotentRequest { key: &key2, ..asked("POST /v1/stepup/finish?") };
    let Ok(Begun::Run(attempt)) = idempotency.begin(&released).await else { panic!() };
    attempt
        .settle(
            &Answer { status: 503, headers: vec![], body: vec![] },
            Some(&ApiError::Unavailable),
        )
        .await;
    assert!(matches!(idempotency.begin(&released).await, Ok(Begun::Run(_))));
}

async fn a_retried_unbind_answers_204_again_and_unbinds_once(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "idem-unbinder").await;
    let tokens = app.register(&mut app.authenticator(), "idem-device").await;
    let (user_id, device) =
        (tokens["user_id"].as_str().unwrap(), tokens["device_id"].as_str().unwrap());
    let path = format!("/v1/admin/users/{user_id}/devices/{device}?reason=stolen");
    let unbind = |path: String, key: Option<&'static str>| {
        let app = &app;
        let bearer = admin_bearer.clone();
        async move {
            reply(send(app, "DELETE", &path, &bearer, key.map(str::as_bytes), None).await).await
        }
    };

    let first = unbind(path.clone(), Some(KEY)).await;
    let retry = unbind(path.clone(), Some(KEY)).await;
    let other_reason = unbind(path.replace("stolen", "lost"), Some(KEY)).await;
    let plain = unbind(path, None).await;

    assert_eq!((first.status, first.replayed), (204, false));
    assert_eq!((retry.status, retry.replayed, retry.body.len()), (204, true, 0));
    assert_eq!(
        (other_reason.status, other_reason.code().as_str()),
        (422, "idempotency_key_reused")
    );
    assert_eq!((plain.status, plain.code().as_str()), (404, "not_found"), "gone, unbound once");
    let unbound =
        "select count(*) from audit_event where event = 'device_unbound' and user_id = $1";
    assert_eq!(count(&app, unbound, user_id).await, 1);
}

/// The store's claim on its own, as two nodes would race for it: of 50
/// claims of one key at once exactly one holds it.
async fn fifty_claims_of_one_key_at_the_store_make_one_holder(db: Db) {
    let app = spawn_app(db).await;
    let now = app.clock.now_ms();
    let row = |attempt: usize| passgate::store::IdempotencyRow {
        key_hash: "k".repeat(64),
        fingerprint: "f".repeat(64),
        attempt: format!("attempt-{attempt}"),
        state: "pending".into(),
        lease_until: now + 60_000,
        status: None,
        answer: None,
        created_at: now,
        expires_at: now + 120_000,
    };
    let rows: Vec<_> = (0..AT_ONCE).map(row).collect();

    let claims = join_all(rows.iter().map(|row| app.store.claim_idempotency_key(row, now))).await;

    let holders: Vec<usize> =
        claims.iter().enumerate().filter(|(_, c)| *c.as_ref().unwrap()).map(|(i, _)| i).collect();
    assert_eq!(holders.len(), 1, "one holder");
    let held = format!("attempt-{}", holders[0]);
    let stored = app.store.idempotency_key(&"k".repeat(64)).await.unwrap().unwrap();
    assert_eq!(stored.attempt, held);
    // Only the holder completes it; a loser's answer is not stored.
    let loser = format!("attempt-{}", (holders[0] + 1) % AT_ONCE);
    let key_hash = "k".repeat(64);
    assert!(!app.store.complete_idempotency_key(&key_hash, &loser, 200, "x").await.unwrap());
    assert!(app.store.complete_idempotency_key(&key_hash, &held, 200, "sealed").await.unwrap());
    assert!(!app.store.release_idempotency_key(&key_hash, &held).await.unwrap(), "done stays");
    // Done and unexpired: no claim takes it, even past its lease.
    assert!(!app.store.claim_idempotency_key(&row(99), now + 90_000).await.unwrap());
    // Expired: the next claim makes it new, and the purge finds nothing more.
    let renewed = passgate::store::IdempotencyRow { expires_at: now + 240_000, ..row(100) };
    assert!(app.store.claim_idempotency_key(&renewed, now + 120_000).await.unwrap());
    assert_eq!(app.store.purge_idempotency_keys(now + 120_000).await.unwrap(), 0);
    assert_eq!(app.store.purge_idempotency_keys(now + 240_000).await.unwrap(), 1);
}

/// /openapi.json offers the header, and its 409, on the payment approval
/// and on every admin operation that changes something, so that a new
/// admin action that does not take the key shows here.
#[tokio::test]
async fn every_admin_action_and_the_payment_approval_take_the_key_in_openapi() {
    let app = spawn_app(Db::Sqlite).await;
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let mut offered = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/admin/") && path != FINISH {
            continue;
        }
        for method in ["post", "put", "patch", "delete"] {
            let Some(operation) = item.get(method) else { continue };
            let takes_key = operation["parameters"].as_array().into_iter().flatten().any(|p| {
                p["name"] == "Idempotency-Key" && p["in"] == "header" && p["required"] != true
            });
            assert!(takes_key, "{method} {path} does not take Idempotency-Key");
            assert!(operation["responses"]["409"].is_object(), "{method} {path}: no 409");
            offered += 1;
        }
    }
    assert!(offered >= 6, "stepup finish, reset-devices, unbind, lock, unlock, roles: {offered}");
}
