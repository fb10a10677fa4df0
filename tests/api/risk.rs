//! Risk decisions (issue 20 items 1-2): the signals, the rules, and what
//! a sign-in or payment gets when they say step up, hold or deny. The
//! client's network and browser come from X-Forwarded-For (the node trusts
//! the loopback proxy) and User-Agent, so a test can sign in from "home"
//! and attack from elsewhere.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::authenticator::SoftAuthenticator;
use crate::fallback::{Account, PASSWORD, totp_at};
use crate::helpers::{Db, TestApp, assert_problem, on_both, spawn_app_configured};
use crate::smtp;
use passgate::store::FailureCount;

on_both!(
    a_phished_password_and_mailed_code_from_a_new_place_is_stepped_up,
    a_failed_attempt_does_not_make_its_network_known,
    a_failure_flood_from_a_network_holds_then_denies_password_sign_ins,
    an_approval_lets_exactly_one_later_attempt_through,
    a_held_payment_issues_no_authorization_and_its_ceremony_is_spent,
    a_dry_run_rule_is_recorded_and_counted_but_never_acts,
    a_reload_swaps_good_rules_and_keeps_the_rules_in_force_for_a_bad_file,
    the_risk_profile_is_one_read_and_history_keeps_the_largest_amount,
    a_trusted_browser_lowers_the_score_and_its_cookie_alone_is_not_enough,
);

const LOOPBACK_PROXY: (&str, &str) = ("PASSGATE__SERVER__TRUSTED_PROXIES", "127.0.0.1/32");
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Where a request comes from.
#[derive(Clone, Copy)]
struct Place {
    ip: &'static str,
    user_agent: Option<&'static str>,
}

/// Where the accounts are made: the loopback address, no User-Agent (as
/// the helpers' own requests).
const HOME: Place = Place { ip: "127.0.0.1", user_agent: None };
const ATTACKER: Place = Place { ip: "203.0.113.66", user_agent: Some(CHROME_WINDOWS) };

async fn post_from(app: &TestApp, path: &str, body: &Value, place: Place) -> Response {
    post_with(app, path, body, place, None).await
}

/// The same, from a browser holding this trusted-device cookie.
async fn post_with(
    app: &TestApp,
    path: &str,
    body: &Value,
    place: Place,
    trusted: Option<&str>,
) -> Response {
    let mut request = app
        .client
        .post(format!("{}{path}", app.address))
        .header("x-forwarded-for", place.ip)
        .json(body);
    if let Some(user_agent) = place.user_agent {
        request = request.header("user-agent", user_agent);
    }
    if let Some(token) = trusted {
        request = request.header("cookie", format!("__Host-passgate-trusted={token}"));
    }
    request.send().await.unwrap()
}

async fn risk_app(db: Db, env: &[(&str, &str)]) -> TestApp {
    let mut all: Vec<(&str, &str)> = vec![LOOPBACK_PROXY];
    all.extend_from_slice(env);
    spawn_app_configured(db, &all).await
}

/// A password and TOTP sign-in from `place`: the answer of the second step.
async fn totp_sign_in(app: &TestApp, account: &Account, username: &str, place: Place) -> Response {
    totp_sign_in_with(app, account, username, place, None).await
}

async fn totp_sign_in_with(
    app: &TestApp,
    account: &Account,
    username: &str,
    place: Place,
    trusted: Option<&str>,
) -> Response {
    let password = json!({"username": username, "password": PASSWORD});
    let started = post_from(app, "/v1/login/password", &password, place).await;
    assert_eq!(started.status(), StatusCode::OK, "password step of {username}");
    let mfa: Value = started.json().await.unwrap();
    // Each TOTP step's code works once.
    app.clock.advance(Duration::from_secs(30));
    let code = totp_at(&account.secret, app.now_secs());
    let body = json!({"mfa_token": mfa["mfa_token"], "code": code});
    post_with(app, "/v1/login/mfa/totp", &body, place, trusted).await
}

async fn passkey_sign_in(
    app: &TestApp,
    passkey: &mut SoftAuthenticator,
    username: &str,
    place: Place,
) -> Response {
    let (ceremony_id, options) = app.started_login(Some(username)).await;
    let credential = passkey.login(&options);
    let body = json!({"ceremony_id": ceremony_id, "credential": credential});
    post_from(app, "/v1/login/finish", &body, place).await
}

async fn sessions_of(app: &TestApp, user_id: &str) -> i64 {
    let observer = app.observer(Duration::from_secs(5)).await;
    observer.count("select count(*) from session where user_id = $1", user_id).await
}

async fn decisions_of(app: &TestApp, user_id: &str) -> Vec<String> {
    let observer = app.observer(Duration::from_secs(5)).await;
    let sql = "select reason from audit_event where event = 'risk_decision' and user_id = $1 \
               order by event_id";
    match observer {
        crate::helpers::Observer::Sqlite(pool) => {
            sqlx::query_scalar(sql).bind(user_id).fetch_all(&pool).await.unwrap()
        }
        crate::helpers::Observer::Postgres(pool) => {
            sqlx::query_scalar(sql).bind(user_id).fetch_all(&pool).await.unwrap()
        }
    }
}

fn rule_names(problem: &Value) -> Vec<String> {
    problem["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_owned())
        .collect()
}

async fn user_id_of(app: &TestApp, account: &Account) -> String {
    let me: Value = app.me(&account.access_token).await.json().await.unwrap();
    me["user_id"].as_str().unwrap().to_owned()
}

async fn a_phished_password_and_mailed_code_from_a_new_place_is_stepped_up(db: Db) {
    let app = risk_app(db, &[]).await;
    let mut account = app.fallback_account("victim").await;
    let user_id = user_id_of(&app, &account).await;
    let address = format!("victim-{}@example.test", app.port);
    let bearer = account.access_token.clone();
    let set = app.post_bearer("/v1/me/email", &bearer, &json!({"email": address})).await;
    assert_eq!(set.status(), StatusCode::ACCEPTED);
    let code = smtp::last_code_to(&address);
    let verified = app.post_bearer("/v1/me/email/verify", &bearer, &json!({"code": code})).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
    let sessions_before = sessions_of(&app, &user_id).await;

    // The phishing page relays the password and the mailed code, from its
    // own network and browser.
    let password = json!({"username": "victim", "password": PASSWORD});
    let started = post_from(&app, "/v1/login/password", &password, ATTACKER).await;
    let mfa: Value = started.json().await.unwrap();
    let mfa = mfa["mfa_token"].as_str().unwrap().to_owned();
    let sent =
        post_from(&app, "/v1/login/mfa/email/send", &json!({"mfa_token": mfa}), ATTACKER).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let code = smtp::last_code_to(&address);
    let body = json!({"mfa_token": mfa, "code": code});
    let answer = post_from(&app, "/v1/login/mfa/email/verify", &body, ATTACKER).await;
    let problem = assert_problem(answer, 401, "step_up_required").await;
    assert_eq!(problem["needs"], "passkey");
    assert_eq!(rule_names(&problem), ["new_network", "new_user_agent", "password_from_new_place"]);
    assert!(problem["reasons"][0]["words"].as_str().unwrap().contains("network"));
    assert!(problem.get("access_token").is_none());
    assert_eq!(sessions_of(&app, &user_id).await, sessions_before, "no session was opened");
    // The mfa_token is spent: sending it again gets nowhere.
    let again = post_from(&app, "/v1/login/mfa/email/verify", &body, ATTACKER).await;
    assert_problem(again, 401, "invalid_credentials").await;
    let decisions = decisions_of(&app, &user_id).await;
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert!(
        decisions[0]
            .starts_with("score 45: new_network, new_user_agent, password_from_new_place; step_up"),
        "{decisions:?}"
    );
    assert!(!decisions[0].contains(&code), "no secret in the audit trail");

    // The owner, on that new laptop, signs in with the passkey: a
    // user-verified passkey is what a step-up asks for.
    let owner = passkey_sign_in(&app, &mut account.passkey, "victim", ATTACKER).await;
    assert_eq!(owner.status(), StatusCode::OK);
    // From then on the network and browser are known, and the password
    // works from there too.
    let later = totp_sign_in(&app, &account, "victim", ATTACKER).await;
    assert_eq!(later.status(), StatusCode::OK);
    // At home nothing was ever in the way, and nothing was recorded.
    let home = totp_sign_in(&app, &account, "victim", HOME).await;
    assert_eq!(home.status(), StatusCode::OK);
    assert_eq!(decisions_of(&app, &user_id).await.len(), 2, "only the step-up and the passkey");
}

async fn a_failed_attempt_does_not_make_its_network_known(db: Db) {
    let app = risk_app(db, &[]).await;
    let account = app.fallback_account("known").await;
    // A wrong password and a wrong code from the attacker's place.
    let wrong = json!({"username": "known", "password": "not the password at all"});
    let refused = post_from(&app, "/v1/login/password", &wrong, ATTACKER).await;
    assert_problem(refused, 401, "invalid_credentials").await;
    let password = json!({"username": "known", "password": PASSWORD});
    let started: Value =
        post_from(&app, "/v1/login/password", &password, ATTACKER).await.json().await.unwrap();
    let bad_code = json!({"mfa_token": started["mfa_token"], "code": "000000"});
    let refused = post_from(&app, "/v1/login/mfa/totp", &bad_code, ATTACKER).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // Still a new network and browser for a password sign-in.
    let answer = totp_sign_in(&app, &account, "known", ATTACKER).await;
    assert_problem(answer, 401, "step_up_required").await;
    // A new browser alone, at home, is an everyday change.
    let new_browser = Place { ip: "127.0.0.1", user_agent: Some(FIREFOX_LINUX) };
    let answer = totp_sign_in(&app, &account, "known", new_browser).await;
    assert_eq!(answer.status(), StatusCode::OK);
}

/// `count` failures in this minute for a network, as the anomaly counts
/// write them.
async fn flood(app: &TestApp, dimension: &str, key: &str, count: i64) {
    use passgate::clock::Clock;
    let minute = app.clock.now_ms().div_euclid(60_000);
    let row = FailureCount {
        minute,
        dimension: dimension.to_owned(),
        key: key.to_owned(),
        kind: "login".to_owned(),
        count,
    };
    app.store.add_failures(&[row]).await.unwrap();
}

async fn a_failure_flood_from_a_network_holds_then_denies_password_sign_ins(db: Db) {
    let app = risk_app(db, &[]).await;
    let mut account = app.fallback_account("flooded").await;
    let user_id = user_id_of(&app, &account).await;
    flood(&app, "network", "203.0.113.0/24", 600).await;
    let sessions_before = sessions_of(&app, &user_id).await;

    // A password from the flooded network, with a browser seen before.
    let same_browser = Place { ip: "203.0.113.7", user_agent: None };
    let held = totp_sign_in(&app, &account, "flooded", same_browser).await;
    let problem = assert_problem(held, 403, "held_for_review").await;
    assert_eq!(rule_names(&problem), ["new_network", "network_failures", "network_flood_password"]);
    let review_id = problem["review_id"].as_str().unwrap();
    let review_token = problem["review_token"].as_str().unwrap();
    assert!(review_token.len() >= 32);
    let observer = app.observer(Duration::from_secs(5)).await;
    let row = "select count(*) from risk_review where review_id = $1 and status = 'held' \
               and kind = 'signin' and subject = 'password_totp'";
    assert_eq!(observer.count(row, review_id).await, 1);
    let hashed = "select count(*) from risk_review where token_hash = $1";
    assert_eq!(observer.count(hashed, review_token).await, 0, "the token is stored hashed");
    assert_eq!(sessions_of(&app, &user_id).await, sessions_before, "a hold issues no session");

    // With a new browser as well, the same flood is a denial.
    let denied = totp_sign_in(&app, &account, "flooded", ATTACKER).await;
    let problem = assert_problem(denied, 403, "risk_denied").await;
    assert!(problem.get("review_id").is_none());
    assert_eq!(sessions_of(&app, &user_id).await, sessions_before);

    // The owner's passkey is not held by someone else's flood.
    flood(&app, "account", &user_id, 30).await;
    let owner = passkey_sign_in(&app, &mut account.passkey, "flooded", ATTACKER).await;
    assert_eq!(owner.status(), StatusCode::OK);
    let decisions = decisions_of(&app, &user_id).await;
    assert!(decisions[0].contains(&format!("hold (review {review_id})")), "{decisions:?}");
    assert!(decisions[1].contains("; deny"), "{decisions:?}");
    assert!(decisions[2].contains("satisfied by a user-verified passkey"), "{decisions:?}");
}

async fn an_approval_lets_exactly_one_later_attempt_through(db: Db) {
    let app = risk_app(db, &[]).await;
    let account = app.fallback_account("approved").await;
    let user_id = user_id_of(&app, &account).await;
    flood(&app, "network", "203.0.113.0/24", 600).await;
    let place = Place { ip: "203.0.113.7", user_agent: None };
    let held = totp_sign_in(&app, &account, "approved", place).await;
    let problem = assert_problem(held, 403, "held_for_review").await;
    let review_id = problem["review_id"].as_str().unwrap().to_owned();

    // An administrator approves it (as the review queue's endpoint does).
    let observer = app.observer(Duration::from_secs(5)).await;
    let approve = "update risk_review set status = 'approved' where review_id = $1";
    assert_eq!(observer.execute(approve, &review_id).await.unwrap(), 1);

    let through = totp_sign_in(&app, &account, "approved", place).await;
    assert_eq!(through.status(), StatusCode::OK, "the approval lets one sign-in through");
    let used = "select count(*) from risk_review where review_id = $1 and status = 'used'";
    assert_eq!(observer.count(used, &review_id).await, 1);
    // One: the next attempt is held again (a new review).
    let again = totp_sign_in(&app, &account, "approved", place).await;
    let problem = assert_problem(again, 403, "held_for_review").await;
    assert_ne!(problem["review_id"], review_id.as_str());
    let decisions = decisions_of(&app, &user_id).await;
    assert!(decisions[1].contains("let through by an administrator's approval"), "{decisions:?}");
}

fn rules_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("risk-rules.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

const THRESHOLDS: &str = "step_up_at = 40\nhold_at = 70\ndeny_at = 100\n";

async fn a_held_payment_issues_no_authorization_and_its_ceremony_is_spent(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "{THRESHOLDS}[[rule]]\nname = \"big_payment\"\nwhen = \"amount_ratio >= 10\"\n\
         score = 80\nwords = \"a payment much larger than usual\"\napplies_to = [\"payment\"]\n"
    );
    let file = rules_file(&dir, &rules);
    let app = risk_app(db, &[("PASSGATE__RISK__RULES_FILE", &file)]).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "payer").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let pay = async |phone: &mut SoftAuthenticator, amount: &str| -> (Value, Response) {
        let transaction = json!({"amount": amount, "currency": "EUR", "payee": "Shop"});
        let started: Value = app
            .post_bearer("/v1/stepup/start", bearer, &json!({"transaction": transaction}))
            .await
            .json()
            .await
            .unwrap();
        let assertion = phone.login(&started["publicKey"]);
        let body = json!({"ceremony_id": started["ceremony_id"], "credential": assertion});
        let answer = app.post_bearer("/v1/stepup/finish", bearer, &body).await;
        (body, answer)
    };
    // The first payment in a currency has nothing to be compared with.
    let (_, first) = pay(&mut phone, "12.00").await;
    assert_eq!(first.status(), StatusCode::OK);
    let (_, usual) = pay(&mut phone, "100.00").await;
    assert_eq!(usual.status(), StatusCode::OK, "8 times the largest so far");
    let (body, large) = pay(&mut phone, "5000.00").await;
    let problem = assert_problem(large, 403, "held_for_review").await;
    assert!(problem.get("authorization_token").is_none());
    assert_eq!(rule_names(&problem), ["big_payment"]);
    // The ceremony is spent: the same assertion again gets nothing.
    let replay = app.post_bearer("/v1/stepup/finish", bearer, &body).await;
    assert_problem(replay, 404, "ceremony_not_found").await;
    let observer = app.observer(Duration::from_secs(5)).await;
    let review = "select count(*) from risk_review where review_id = $1 and kind = 'payment' \
                  and context like '%5000.00%'";
    assert_eq!(observer.count(review, problem["review_id"].as_str().unwrap()).await, 1);
}

async fn a_dry_run_rule_is_recorded_and_counted_but_never_acts(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "{THRESHOLDS}[[rule]]\nname = \"everyone_denied\"\nwhen = \"factor = passkey\"\n\
         score = 500\nwords = \"a rule being tried out\"\nmode = \"dry_run\"\n"
    );
    let file = rules_file(&dir, &rules);
    let app = risk_app(db, &[("PASSGATE__RISK__RULES_FILE", &file)]).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "tried").await;
    let user_id = tokens["user_id"].as_str().unwrap();
    let signed_in = passkey_sign_in(&app, &mut phone, "tried", HOME).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let decisions = decisions_of(&app, user_id).await;
    assert_eq!(
        decisions,
        ["score 0: none; allow; factor passkey; dry run: everyone_denied (would be deny)"]
    );
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert_eq!(
        series(
            &metrics,
            "passgate_risk_rule_matches_total",
            &["mode=\"dry_run\"", "rule=\"everyone_denied\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            "passgate_risk_decisions_total",
            &["kind=\"signin\"", "outcome=\"allow\""]
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// The value of the series `name` with these labels, in any order.
fn series(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (inside, value) = rest.split_once("} ")?;
        let have: Vec<&str> = inside.split(',').collect();
        (have.len() == labels.len() && labels.iter().all(|l| have.contains(l)))
            .then(|| value.trim().parse().ok())?
    })
}

async fn a_reload_swaps_good_rules_and_keeps_the_rules_in_force_for_a_bad_file(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let file = rules_file(&dir, THRESHOLDS);
    let app = risk_app(db, &[("PASSGATE__RISK__RULES_FILE", &file)]).await;
    let account = app.fallback_account("reloaded").await;
    assert_eq!(totp_sign_in(&app, &account, "reloaded", HOME).await.status(), StatusCode::OK);

    // A bad file: refused, named by line, and the rules in force stay.
    let bad = format!(
        "{THRESHOLDS}\n[[rule]]\nname = \"typo\"\nwhen = \"new_netwrok\"\nscore = 10\nwords = \"w\"\n"
    );
    rules_file(&dir, &bad);
    let error = format!("{:#}", app.core.risk.reload().unwrap_err());
    assert!(error.contains("line 5") && error.contains("new_netwrok"), "{error}");
    assert_eq!(totp_sign_in(&app, &account, "reloaded", HOME).await.status(), StatusCode::OK);
    // A bad file also stops a start, with the same message.
    let settings = crate::helpers::test_settings(
        &app.db.url,
        app.port,
        &[],
        &[("PASSGATE__RISK__RULES_FILE", &file)],
    );
    let error = format!("{:#}", passgate::service::check_settings(&settings).unwrap_err());
    assert!(error.contains("new_netwrok"), "{error}");
    let store = passgate::store::connect(&settings.database).await.unwrap();
    let clock: std::sync::Arc<dyn passgate::clock::Clock> = std::sync::Arc::new(app.clock.clone());
    let start = passgate::service::Core::new(settings, store, clock).await;
    assert!(start.is_err(), "a bad rules file stops the start");

    // A good one replaces them.
    let deny = format!(
        "{THRESHOLDS}[[rule]]\nname = \"no_totp\"\nwhen = \"factor = password_totp\"\n\
         score = 100\nwords = \"password sign-ins are closed\"\n"
    );
    rules_file(&dir, &deny);
    app.core.risk.reload().unwrap();
    let denied = totp_sign_in(&app, &account, "reloaded", HOME).await;
    let problem = assert_problem(denied, 403, "risk_denied").await;
    assert_eq!(problem["reasons"][0]["words"], "password sign-ins are closed");
}

/// `passgate config check` refuses a bad rules file as a start would,
/// naming the rule's line.
#[test]
fn config_check_names_a_bad_rule_by_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = format!(
        "{THRESHOLDS}[[rule]]\nname = \"flood\"\nwhen = \"network_failures_15m >= many\"\n\
         score = 10\nwords = \"w\"\n"
    );
    let file = rules_file(&dir, &bad);
    let database = format!("sqlite:{}", dir.path().join("never.db").display());
    let checked = crate::cli::passgate(
        &database,
        &["config", "check"],
        &[("PASSGATE__RISK__RULES_FILE", &file)],
    );
    assert!(!checked.status.success());
    let error = String::from_utf8_lossy(&checked.stderr);
    assert!(error.contains("line 4") && error.contains("takes a number"), "{error}");
    let good = crate::cli::passgate(&database, &["config", "check"], &[]);
    assert!(good.status.success());
    assert!(String::from_utf8_lossy(&good.stdout).contains("the built-in rules"));
}

/// The store's side (both engines): what `risk_profile` gathers, and that
/// `record_seen` keeps each currency's largest amount.
async fn the_risk_profile_is_one_read_and_history_keeps_the_largest_amount(db: Db) {
    use passgate::clock::Clock;
    use passgate::domain::UserId;
    use passgate::store::{ProfileQuery, Seen};
    let app = risk_app(db, &[]).await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "profiled").await;
    let user_id = UserId::parse(tokens["user_id"].as_str().unwrap().to_owned()).unwrap();
    let now = app.clock.now_ms();
    let seen = |value: &'static str, amount: i64| Seen { dimension: "payment", value, amount };
    app.store.record_seen(&user_id, &[seen("EUR", 5_000)], now).await.unwrap();
    app.store.record_seen(&user_id, &[seen("EUR", 2_000), seen("USD", 9_000)], now).await.unwrap();
    flood(&app, "network", "198.51.100.0/24", 7).await;
    flood(&app, "account", &user_id.to_string(), 3).await;
    let query = ProfileQuery {
        network: "198.51.100.0/24",
        user_agent: "unknown",
        credential: "no such credential",
        currency: "EUR",
        events_since: now - 1,
        failures_since_minute: now.div_euclid(60_000) - 14,
    };
    let facts = app.store.risk_profile(&user_id, &query).await.unwrap();
    let fact = |dimension: &str, value: &str| {
        facts.iter().find(|f| f.dimension == dimension && f.value == value).cloned()
    };
    assert_eq!(fact("payment", "EUR").unwrap().amount, 5_000, "the largest stays");
    assert!(fact("payment", "USD").is_none(), "only the payment's currency");
    assert!(fact("user_agent", "unknown").is_some(), "the registration's browser");
    assert!(fact("network", "198.51.100.0/24").is_none());
    assert!(fact("credential", "no such credential").is_none());
    assert!(fact("signin", "").unwrap().at.is_some());
    assert_eq!(fact("passkeys", "").unwrap().amount, 1);
    assert_eq!(fact("network_failures", "").unwrap().amount, 7);
    assert_eq!(fact("account_failures", "").unwrap().amount, 3);
    assert!(fact("user", "").unwrap().at.is_some());
    assert!(fact("event", "clone_warning").is_none());
    // Failures older than the window do not count.
    let later = ProfileQuery { failures_since_minute: now.div_euclid(60_000) + 1, ..query };
    let facts = app.store.risk_profile(&user_id, &later).await.unwrap();
    let network = facts.iter().find(|f| f.dimension == "network_failures").unwrap();
    assert_eq!(network.amount, 0);

    // A sign-in's own read finds the same profile beside the passkey and
    // its owner; an unknown passkey finds neither.
    let key = app.store.user_credentials(&user_id.to_string()).await.unwrap().remove(0);
    let at_sign_in = ProfileQuery { credential: &key.credential_id, currency: "", ..query };
    let alone = app.store.risk_profile(&user_id, &at_sign_in).await.unwrap();
    assert!(alone.iter().any(|f| f.dimension == "credential"), "its registration made it known");
    let (used, owned) =
        app.store.find_login_with_profile("handle-never-used", &at_sign_in).await.unwrap();
    let (row, owner, facts) = owned.expect("the passkey and its owner");
    assert!(!used);
    assert_eq!((row.credential_id, owner.user_id), (key.credential_id.clone(), user_id));
    assert_eq!(facts, alone, "the sign-in's read holds the profile a read of its own does");
    let unknown = ProfileQuery { credential: "no such credential", ..at_sign_in };
    let (_, owned) =
        app.store.find_login_with_profile("handle-never-used", &unknown).await.unwrap();
    assert!(owned.is_none());
}

/// A serving binary reads its rules file again on SIGHUP: a bad file is
/// logged and the server goes on; a good one is taken.
#[test]
fn sighup_makes_a_serving_binary_read_its_rules_again() {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    /// Stops the server however the test ends.
    struct Serving(Child);
    impl Drop for Serving {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let file = rules_file(&dir, THRESHOLDS);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serving = Serving(
        Command::new(env!("CARGO_BIN_EXE_passgate"))
            .current_dir(dir.path())
            .env_clear()
            .env("PASSGATE__DATABASE__URL", format!("sqlite:{}", dir.path().join("p.db").display()))
            .env("PASSGATE__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("PASSGATE__RISK__RULES_FILE", &file)
            .env("PASSGATE__LOG__FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = serving.0.stdout.take().unwrap();
    let (lines, logged) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match logged.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("never logged: {needle}");
    };
    let pid = i32::try_from(serving.0.id()).unwrap();
    wait_for("passgate listening");

    let bad = format!(
        "{THRESHOLDS}[[rule]]\nname = \"typo\"\nwhen = \"new_netwrok\"\nscore = 10\nwords = \"w\"\n"
    );
    rules_file(&dir, &bad);
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let refused = wait_for("risk rules not reloaded");
    assert!(refused.contains("new_netwrok") && refused.contains("line 4"), "{refused}");

    let good = format!(
        "{THRESHOLDS}[[rule]]\nname = \"new_place\"\nwhen = \"new_network\"\nscore = 10\nwords = \"w\"\n"
    );
    rules_file(&dir, &good);
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for("risk rules reloaded");
    assert!(serving.0.try_wait().unwrap().is_none(), "SIGHUP does not stop the server");
}

/// The owner's trusted browser, on a new network with a new system,
/// lowers the score below a step-up; the same sign-in without the cookie
/// (a phisher's), or with a cookie another account trusted, does not.
async fn a_trusted_browser_lowers_the_score_and_its_cookie_alone_is_not_enough(db: Db) {
    let app = risk_app(db, &[]).await;
    let account = app.fallback_account("truster").await;
    let other = app.fallback_account("other").await;
    let trust = async |bearer: &str| -> String {
        let response = app
            .client
            .post(format!("{}/v1/me/trusted-devices", app.address))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
        let value = set_cookie.strip_prefix("__Host-passgate-trusted=").unwrap();
        value.split(';').next().unwrap().to_owned()
    };
    let cookie = trust(&account.access_token).await;
    let others_cookie = trust(&other.access_token).await;

    let phisher = totp_sign_in(&app, &account, "truster", ATTACKER).await;
    assert_problem(phisher, 401, "step_up_required").await;
    let borrowed = totp_sign_in_with(&app, &account, "truster", ATTACKER, Some(&others_cookie));
    assert_problem(borrowed.await, 401, "step_up_required").await;
    let owner = totp_sign_in_with(&app, &account, "truster", ATTACKER, Some(&cookie)).await;
    assert_eq!(owner.status(), StatusCode::OK, "45 - 20 is below the step-up");
    let user_id = user_id_of(&app, &account).await;
    let decisions = decisions_of(&app, &user_id).await;
    assert!(decisions.last().unwrap().starts_with("score 25: "), "{decisions:?}");
    assert!(decisions.last().unwrap().contains("trusted_device"), "{decisions:?}");
}
