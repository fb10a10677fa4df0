//! Races, 50 at once (issue 17 item 3): every single-use thing the server
//! hands out (a ceremony, a refresh token, a TOTP step, a recovery code, a
//! mailed code, an enrolment code) is presented by 50 requests fired
//! together over loopback HTTP, on both stores. Each test counts the
//! answers exactly and then reads what the database kept.
//!
//! The two-at-once tests before these (`passkeys::two_simultaneous_*`,
//! `devices::two_unbinds_at_once_*`, `fallback::two_sends_at_once_*` at
//! `/v1/me/email`) stay; these take the same races to 50 requests.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::admin::admin;
use crate::fallback::{PASSWORD, db_tag, totp_at, verified_email};
use crate::helpers::{Db, Observer, TestApp, claims_of, on_both, spawn_app_configured};
use crate::smtp;

on_both!(
    fifty_finishes_of_one_sign_in_let_exactly_one_through,
    fifty_finishes_of_one_registration_make_one_account,
    fifty_rotations_of_one_refresh_token_rotate_once_and_end_the_session,
    fifty_sign_ins_with_one_totp_code_let_exactly_one_through,
    fifty_sign_ins_with_one_recovery_code_let_exactly_one_through,
    fifty_sign_ins_with_one_mailed_code_let_exactly_one_through,
    fifty_enrolments_with_one_code_bind_exactly_one_passkey,
    fifty_unbinds_of_the_last_two_passkeys_leave_exactly_one,
    fifty_code_mails_at_once_send_exactly_one,
    fifty_sign_ins_at_once_never_move_the_sign_counter_back,
);

const AT_ONCE: usize = 50;

/// Limits out of the way: every request of a race is counted against the
/// same IP and account, and every refused code against the lockout.
/// Attempts are counted before they are checked, so a burst of 50 reaches
/// 50 in flight; the threshold stays above it (and at most 100).
const ROOMY_LIMITS: [(&str, &str); 4] = [
    ("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "10000"),
    ("PASSGATE__LIMITS__ACCOUNT_REQUESTS_PER_MINUTE", "10000"),
    ("PASSGATE__LIMITS__LOCKOUT_THRESHOLD", "100"),
    ("PASSGATE__LIMITS__LOCKOUT_PERMANENT_THRESHOLD", "100"),
];

async fn spawn_app(db: Db) -> TestApp {
    spawn_app_configured(db, &ROOMY_LIMITS).await
}

/// What one answer was: its status and, for a problem, its code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Outcome {
    status: u16,
    code: String,
}

/// An answer read whole: the outcome, its body, and its Retry-After.
struct Answer {
    outcome: Outcome,
    body: Value,
    retry_after: Option<u64>,
}

async fn read(response: Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().expect("Retry-After in seconds"));
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|t| t.to_str().unwrap() == "application/problem+json");
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status < 500, "a race must never answer 5xx: {status} {body}");
    let code = if status >= 400 {
        assert!(problem, "{status} is a problem+json: {body}");
        assert_eq!(body["status"], status, "{body}");
        body["code"].as_str().expect("a problem's code").to_owned()
    } else {
        String::new()
    };
    Answer { outcome: Outcome { status, code }, body, retry_after }
}

/// Fires the requests together and reads every answer.
async fn race<F: Future<Output = Response>>(requests: impl IntoIterator<Item = F>) -> Vec<Answer> {
    let responses = join_all(requests).await;
    join_all(responses.into_iter().map(read)).await
}

/// How many answers had each outcome.
fn tally<'a>(answers: impl IntoIterator<Item = &'a Answer>) -> BTreeMap<Outcome, usize> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        *counts.entry(answer.outcome.clone()).or_default() += 1;
    }
    counts
}

fn outcomes(expected: &[(u16, &str, usize)]) -> BTreeMap<Outcome, usize> {
    expected
        .iter()
        .map(|&(status, code, n)| (Outcome { status, code: code.to_owned() }, n))
        .collect()
}

/// The one answer with this status (the test fails if there is not one).
fn the_one(answers: &[Answer], status: u16) -> &Answer {
    let mut with = answers.iter().filter(|a| a.outcome.status == status);
    let one = with.next().unwrap_or_else(|| panic!("no {status} answer"));
    assert!(with.next().is_none(), "more than one {status} answer");
    one
}

/// An observer of committed rows, as another node would see them.
async fn observe(app: &TestApp) -> Observer {
    app.observer(Duration::from_secs(5)).await
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("{key} in {value}"))
}

async fn fifty_finishes_of_one_sign_in_let_exactly_one_through(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let registered = app.register(&mut phone, "race-login").await;
    let user_id = str_of(&registered, "user_id");
    let (ceremony_id, options) = app.started_login(Some("race-login")).await;
    let assertion = phone.login(&options);

    let answers = race((0..AT_ONCE).map(|_| app.login_finish(&ceremony_id, &assertion))).await;

    assert_eq!(
        tally(&answers),
        outcomes(&[(200, "", 1), (404, "ceremony_not_found", AT_ONCE - 1)])
    );
    let won = &the_one(&answers, 200).body;
    assert_eq!(won["user_id"], user_id);
    let db = observe(&app).await;
    let sessions = "select count(*) from session where user_id = $1";
    assert_eq!(db.count(sessions, user_id).await, 2, "the registration's and this one");
    let counter = "select cast(sign_count as bigint) from credential where user_id = $1";
    assert_eq!(db.count(counter, user_id).await, 1);
    let events = "select count(*) from audit_event where event = $1";
    assert_eq!(db.count(events, "clone_warning").await, 0, "a double submit is not a clone");
    assert_eq!(app.me(str_of(won, "access_token")).await.status(), StatusCode::OK);
}

async fn fifty_finishes_of_one_registration_make_one_account(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let (ceremony_id, options) = app.started_registration("race-register").await;
    let credential = phone.register(&options);

    let answers = race((0..AT_ONCE).map(|_| app.register_finish(&ceremony_id, &credential))).await;

    assert_eq!(
        tally(&answers),
        outcomes(&[(201, "", 1), (404, "ceremony_not_found", AT_ONCE - 1)])
    );
    let user_id = str_of(&the_one(&answers, 201).body, "user_id");
    let db = observe(&app).await;
    let users = "select count(*) from app_user where username = $1";
    assert_eq!(db.count(users, "race-register").await, 1);
    let credentials = "select count(*) from credential where user_id = $1";
    assert_eq!(db.count(credentials, user_id).await, 1);
    let sessions = "select count(*) from session where user_id = $1";
    assert_eq!(db.count(sessions, user_id).await, 1);
    let left = "select count(*) from ceremony where ceremony_id = $1";
    assert_eq!(db.count(left, &ceremony_id).await, 0, "the ceremony is used up");
}

/// One presentation rotates the token; the other 49 present it once it is
/// retired, which is what reuse detection sees (RFC 9700 §4.14.2): each
/// ends the session, so the winner's new tokens die with it.
async fn fifty_rotations_of_one_refresh_token_rotate_once_and_end_the_session(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let first = app.register(&mut phone, "race-refresh").await;
    let refresh = str_of(&first, "refresh_token");
    let sid = claims_of(str_of(&first, "access_token"))["sid"].as_str().unwrap().to_owned();

    let answers = race((0..AT_ONCE).map(|_| app.refresh(refresh))).await;

    assert_eq!(
        tally(&answers),
        outcomes(&[(200, "", 1), (401, "invalid_credentials", AT_ONCE - 1)])
    );
    let rotated = &the_one(&answers, 200).body;
    assert_ne!(str_of(rotated, "refresh_token"), refresh, "a new token set");
    assert_eq!(claims_of(str_of(rotated, "access_token"))["sid"], sid.as_str());
    let db = observe(&app).await;
    let ended = "select count(*) from session where session_id = $1 and revoked_at is not null";
    assert_eq!(db.count(ended, &sid).await, 1, "the session (the whole family) is ended");
    let tokens = "select count(*) from refresh_token where session_id = $1";
    assert_eq!(db.count(tokens, &sid).await, 2, "the presented token and one successor");
    let reused = "select count(*) from audit_event where event = $1";
    assert_eq!(db.count(reused, "refresh_token_reused").await, AT_ONCE as i64 - 1);
    // The family is over: the new refresh token and both access tokens.
    for refresh in [str_of(rotated, "refresh_token"), refresh] {
        let again = read(app.refresh(refresh).await).await;
        assert_eq!(again.outcome, Outcome { status: 401, code: "invalid_credentials".into() });
    }
    for access in [str_of(rotated, "access_token"), str_of(&first, "access_token")] {
        let me = read(app.me(access).await).await;
        assert_eq!(me.outcome, Outcome { status: 401, code: "unauthorized".into() });
    }
}

/// `n` mfa_tokens of `username`, one password step each.
async fn mfa_tokens(app: &TestApp, username: &str, n: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        tokens.push(app.mfa_token(username, PASSWORD).await);
    }
    tokens
}

/// What a fallback race leaves: sessions opened by password and code, and
/// mfa_tokens not used up.
async fn fallback_sessions_and_tokens(app: &TestApp, user_id: &str) -> (i64, i64) {
    let db = observe(app).await;
    let sessions = "select count(*) from session where user_id = $1 and amr = 'pwd otp mfa'";
    let tokens = "select count(*) from mfa_token where user_id = $1";
    (db.count(sessions, user_id).await, db.count(tokens, user_id).await)
}

fn user_id_of(bearer: &str) -> String {
    claims_of(bearer)["sub"].as_str().unwrap().to_owned()
}

async fn fifty_sign_ins_with_one_totp_code_let_exactly_one_through(db: Db) {
    let app = spawn_app(db).await;
    let account = app.fallback_account("race-totp").await;
    let user_id = user_id_of(&account.access_token);
    let tokens = mfa_tokens(&app, "race-totp", AT_ONCE).await;
    let code = totp_at(&account.secret, app.now_secs());

    let answers = race(tokens.iter().map(|token| app.totp_login(token, &code))).await;

    assert_eq!(tally(&answers), outcomes(&[(200, "", 1), (401, "invalid_code", AT_ONCE - 1)]));
    let db = observe(&app).await;
    let step = "select last_step from user_totp where user_id = $1";
    assert_eq!(db.count(step, &user_id).await, app.now_secs() / 30, "this step is used");
    assert_eq!(fallback_sessions_and_tokens(&app, &user_id).await, (1, AT_ONCE as i64 - 1));
    // The 49 refusals did not lock the account: the next step signs in.
    let next = totp_at(&account.secret, app.now_secs() + 30);
    let fresh = app.mfa_token("race-totp", PASSWORD).await;
    assert_eq!(app.totp_login(&fresh, &next).await.status(), StatusCode::OK);
}

async fn fifty_sign_ins_with_one_recovery_code_let_exactly_one_through(db: Db) {
    let app = spawn_app(db).await;
    let account = app.fallback_account("race-recovery").await;
    let user_id = user_id_of(&account.access_token);
    let tokens = mfa_tokens(&app, "race-recovery", AT_ONCE).await;
    let code = &account.recovery_codes[0];

    let answers = race(tokens.iter().map(|token| app.totp_login(token, code))).await;

    assert_eq!(tally(&answers), outcomes(&[(200, "", 1), (401, "invalid_code", AT_ONCE - 1)]));
    let db = observe(&app).await;
    let unused = "select count(*) from recovery_code where user_id = $1 and used_at is null";
    assert_eq!(db.count(unused, &user_id).await, 9, "one of ten is spent");
    let used = "select count(*) from audit_event where event = $1";
    assert_eq!(db.count(used, "recovery_code_used").await, 1);
    assert_eq!(fallback_sessions_and_tokens(&app, &user_id).await, (1, AT_ONCE as i64 - 1));
}

/// A passkey account with a password and a verified address (no TOTP):
/// returns (user_id, access token, address).
async fn mail_account(app: &TestApp, username: &str) -> (String, String, String) {
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, username).await;
    let bearer = str_of(&tokens, "access_token").to_owned();
    let set = app.put_bearer("/v1/me/password", &bearer, &json!({"password": PASSWORD})).await;
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let address = format!("{username}-{}@example.test", db_tag(app));
    verified_email(app, &bearer, &address).await;
    (str_of(&tokens, "user_id").to_owned(), bearer, address)
}

async fn send_code(app: &TestApp, mfa_token: &str) -> Response {
    app.post("/v1/login/mfa/email/send", &json!({"mfa_token": mfa_token})).await
}

async fn verify_code(app: &TestApp, mfa_token: &str, code: &str) -> Response {
    let body = json!({"mfa_token": mfa_token, "code": code});
    app.post("/v1/login/mfa/email/verify", &body).await
}

/// Sign-in codes mailed to `address` so far (notices carry none).
fn sign_in_codes_to(address: &str) -> usize {
    smtp::mails_to(address).iter().filter(|m| m.contains("Your code to sign in is")).count()
}

async fn fifty_sign_ins_with_one_mailed_code_let_exactly_one_through(db: Db) {
    let app = spawn_app(db).await;
    let (user_id, _, address) = mail_account(&app, "race-mailed").await;
    let tokens = mfa_tokens(&app, "race-mailed", AT_ONCE).await;
    assert_eq!(send_code(&app, &tokens[0]).await.status(), StatusCode::ACCEPTED);
    let code = smtp::last_code_to(&address);

    let answers = race(tokens.iter().map(|token| verify_code(&app, token, &code))).await;

    assert_eq!(tally(&answers), outcomes(&[(200, "", 1), (401, "invalid_code", AT_ONCE - 1)]));
    let db = observe(&app).await;
    let codes = "select count(*) from email_code where user_id = $1";
    assert_eq!(db.count(codes, &user_id).await, 0, "the code is used up");
    assert_eq!(fallback_sessions_and_tokens(&app, &user_id).await, (1, AT_ONCE as i64 - 1));
}

/// The code is checked at `/v1/enrol/start` and taken in the transaction
/// that binds the passkey at `/v1/enrol/finish`: 50 starts at once, then
/// 50 ceremonies finished at once, bind one passkey.
async fn fifty_enrolments_with_one_code_bind_exactly_one_passkey(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "race-admin").await;
    let mut lost = app.authenticator();
    let registered = app.register(&mut lost, "race-enrol").await;
    let user_id = str_of(&registered, "user_id").to_owned();
    let path = format!("/v1/admin/users/{user_id}/reset-devices");
    let reset = app.post_bearer(&path, &admin_bearer, &json!({"reason": "phone lost"})).await;
    assert_eq!(reset.status(), StatusCode::OK);
    let reset: Value = reset.json().await.unwrap();
    let code = str_of(&reset, "enrolment_code").to_owned();
    let start = json!({"username": "race-enrol", "code": code});

    let started = race((0..AT_ONCE).map(|_| app.post("/v1/enrol/start", &start))).await;

    // A start counts a try before it checks the code and gives a right
    // code's try back after: while five tries are in flight, a sixth is
    // refused like a wrong code (the code stays good).
    let counts = tally(&started);
    let ok = Outcome { status: 200, code: String::new() };
    let refused = Outcome { status: 401, code: "invalid_code".into() };
    assert!(counts.contains_key(&ok), "the right code starts at least once: {counts:?}");
    assert!(counts.keys().all(|o| *o == ok || *o == refused), "{counts:?}");
    let mut ceremonies: Vec<Value> =
        started.into_iter().filter(|a| a.outcome.status == 200).map(|a| a.body).collect();
    // Enough ceremonies for 50 finishes; one by one, every start is good.
    while ceremonies.len() < AT_ONCE {
        let one = read(app.post("/v1/enrol/start", &start).await).await;
        assert_eq!(one.outcome.status, 200, "{}", one.body);
        ceremonies.push(one.body);
    }
    let mut phone = app.authenticator();
    let finishes: Vec<Value> = ceremonies
        .iter()
        .map(|c| {
            let credential = phone.register(&c["publicKey"]);
            json!({"ceremony_id": c["ceremony_id"], "credential": credential})
        })
        .collect();

    let answers = race(finishes.iter().map(|body| app.post("/v1/enrol/finish", body))).await;

    assert_eq!(tally(&answers), outcomes(&[(201, "", 1), (401, "invalid_code", AT_ONCE - 1)]));
    let won = &the_one(&answers, 201).body;
    assert_eq!(won["user_id"], user_id.as_str());
    let db = observe(&app).await;
    let credentials = "select count(*) from credential where user_id = $1";
    assert_eq!(db.count(credentials, &user_id).await, 1, "one passkey bound");
    let bound = "select count(*) from credential where device_id = $1";
    assert_eq!(db.count(bound, str_of(won, "device_id")).await, 1);
    let codes = "select count(*) from enrolment_code where user_id = $1";
    assert_eq!(db.count(codes, &user_id).await, 0, "the code is used up");
    let live = "select count(*) from session where user_id = $1 and revoked_at is null";
    assert_eq!(db.count(live, &user_id).await, 1, "the enrolment's session only");
    let retry = read(app.post("/v1/enrol/start", &start).await).await;
    assert_eq!(retry.outcome, Outcome { status: 401, code: "invalid_code".into() });
}

/// 25 requests for each of an account's two passkeys, each with a fresh
/// passkey sign-in of the passkey it removes. One passkey goes; the
/// other's 25 requests are all refused as the last way in. The winner's
/// 24 siblings find their device gone (404), see two passkeys and are
/// refused by the store's count (403), or come after their session ended
/// with that device (401).
async fn fifty_unbinds_of_the_last_two_passkeys_leave_exactly_one(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let registered = app.register(&mut phone, "race-unbind").await;
    let user_id = str_of(&registered, "user_id").to_owned();
    let mut laptop = app.authenticator();
    let bound = app.bind_device(str_of(&registered, "access_token"), &mut laptop, "Laptop").await;
    let mut signed_in = Vec::new();
    for (passkey, device_id) in
        [(&mut phone, str_of(&registered, "device_id")), (&mut laptop, str_of(&bound, "device_id"))]
    {
        let response = read(app.login(passkey, None).await).await;
        assert_eq!(response.outcome.status, 200);
        assert_eq!(claims_of(str_of(&response.body, "access_token"))["device_id"], device_id);
        let bearer = str_of(&response.body, "access_token").to_owned();
        signed_in.push((device_id.to_owned(), format!("/v1/me/devices/{device_id}"), bearer));
    }
    let requests: Vec<usize> = (0..AT_ONCE).map(|i| i % 2).collect();

    let answers =
        race(requests.iter().map(|&i| app.delete_bearer(&signed_in[i].1, &signed_in[i].2))).await;

    let winner = answers.iter().position(|a| a.outcome.status == 204).expect("one unbind");
    let (removed, kept) = (requests[winner], 1 - requests[winner]);
    let of = |device: usize| -> Vec<&Answer> {
        answers.iter().zip(&requests).filter(|&(_, &i)| i == device).map(|(a, _)| a).collect()
    };
    let kept_answers: Vec<Outcome> = of(kept).iter().map(|a| a.outcome.clone()).collect();
    let last_way = Outcome { status: 403, code: "forbidden".into() };
    assert_eq!(kept_answers, vec![last_way; AT_ONCE / 2], "the kept passkey is the last way in");
    let siblings = tally(of(removed).into_iter().filter(|a| a.outcome.status != 204));
    let refusals =
        outcomes(&[(401, "unauthorized", 0), (403, "forbidden", 0), (404, "not_found", 0)]);
    assert!(siblings.keys().all(|o| refusals.contains_key(o)), "{siblings:?}");
    assert_eq!(siblings.values().sum::<usize>(), AT_ONCE / 2 - 1, "one unbind: {siblings:?}");
    let db = observe(&app).await;
    let credentials = "select count(*) from credential where user_id = $1";
    assert_eq!(db.count(credentials, &user_id).await, 1, "exactly one passkey stays");
    let exists = "select count(*) from credential where device_id = $1";
    assert_eq!(db.count(exists, &signed_in[kept].0).await, 1, "the kept one");
    let live = "select count(*) from session where device_id = $1 and revoked_at is null";
    assert_eq!(db.count(live, &signed_in[removed].0).await, 0, "its sessions ended with it");
    assert!(db.count(live, &signed_in[kept].0).await >= 1);
    assert_eq!(app.me(&signed_in[kept].2).await.status(), StatusCode::OK);
}

/// 50 sends with one mfa_token at once, all within the resend wait: the
/// store checks the wait again, so one code is stored and mailed, and it
/// is the code that works.
async fn fifty_code_mails_at_once_send_exactly_one(db: Db) {
    let app = spawn_app(db).await;
    let (user_id, _, address) = mail_account(&app, "race-send").await;
    let token = app.mfa_token("race-send", PASSWORD).await;
    let before = sign_in_codes_to(&address);

    let answers = race((0..AT_ONCE).map(|_| send_code(&app, &token))).await;

    assert_eq!(tally(&answers), outcomes(&[(202, "", 1), (429, "rate_limited", AT_ONCE - 1)]));
    for refused in answers.iter().filter(|a| a.outcome.status == 429) {
        let wait = refused.retry_after.expect("a 429 carries Retry-After");
        assert!((1..=60).contains(&wait), "Retry-After {wait} within the resend wait");
    }
    assert_eq!(sign_in_codes_to(&address) - before, 1, "one code mailed");
    let db = observe(&app).await;
    let stored = "select count(*) from email_code where user_id = $1 and purpose = 'login'";
    assert_eq!(db.count(stored, &user_id).await, 1);
    let code = smtp::last_code_to(&address);
    let verified = read(verify_code(&app, &token, &code).await).await;
    assert_eq!(verified.outcome.status, 200, "the mailed code is the stored one");
}

/// 50 ceremonies started, answered in order by one device-bound passkey
/// (counters 1 to 50), then finished at once. A sign-in whose counter is
/// not above the stored one by the time it stores is refused as a possible
/// clone; counter 50 is above anything stored, so it always gets in, and
/// the stored counter ends at 50.
async fn fifty_sign_ins_at_once_never_move_the_sign_counter_back(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    let registered = app.register(&mut phone, "race-counter").await;
    let user_id = str_of(&registered, "user_id").to_owned();
    let mut finishes = Vec::with_capacity(AT_ONCE);
    for _ in 0..AT_ONCE {
        let (ceremony_id, options) = app.started_login(Some("race-counter")).await;
        finishes.push((ceremony_id, phone.login(&options)));
    }

    // Sent out of counter order (7 is coprime to 50): a store that takes
    // them one by one in arrival order (SQLite) meets counter 50 early.
    let order: Vec<usize> = (0..AT_ONCE).map(|i| i * 7 % AT_ONCE).collect();
    let sent = order.iter().map(|&i| app.login_finish(&finishes[i].0, &finishes[i].1));

    let answers = race(sent).await;

    let counts = tally(&answers);
    let ok = Outcome { status: 200, code: String::new() };
    let refused = Outcome { status: 401, code: "invalid_credentials".into() };
    let successes = counts.get(&ok).copied().unwrap_or(0);
    let refusals = counts.get(&refused).copied().unwrap_or(0);
    assert_eq!(successes + refusals, AT_ONCE, "only sign-ins and clone refusals: {counts:?}");
    let highest = order.iter().position(|&i| i == AT_ONCE - 1).unwrap();
    assert_eq!(answers[highest].outcome, ok, "the highest counter always gets in");
    let db = observe(&app).await;
    let counter = "select cast(sign_count as bigint) from credential where user_id = $1";
    assert_eq!(db.count(counter, &user_id).await, AT_ONCE as i64, "the highest that got in");
    let sessions = "select count(*) from session where user_id = $1";
    assert_eq!(db.count(sessions, &user_id).await, 1 + successes as i64);
    let warnings = "select count(*) from audit_event where event = $1";
    assert_eq!(db.count(warnings, "clone_warning").await, refusals as i64);
    let used = "select count(*) from ceremony where kind = $1";
    assert_eq!(db.count(used, "used").await, AT_ONCE as i64, "every handle is used up");
}
