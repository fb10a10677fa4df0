//! Fallback sign-in: a password (argon2id) plus TOTP, a recovery code or a
//! mailed code; the policy; rate limits and lockout. TOTP codes are
//! computed here by a second implementation (RFC 6238 over hmac + sha1),
//! mail is read from the loopback SMTP server.

use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::authenticator::SoftAuthenticator;
use crate::helpers::{
    Db, TestApp, assert_problem, claims_of, on_both, spawn_app, spawn_app_configured,
    spawn_app_with,
};
pub use crate::otp::{base32_decode, totp_at};
use crate::smtp;

pub const PASSWORD: &str = "correct horse battery staple";

#[test]
fn the_test_side_totp_matches_the_rfc_6238_vectors() {
    let seed = b"12345678901234567890";
    for (time, expected) in [(59, "287082"), (1111111109, "081804"), (2000000000, "279037")] {
        assert_eq!(totp_at(seed, time), expected);
    }
    assert_eq!(base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), seed);
}

/// A user with a passkey, a password and confirmed TOTP.
pub struct Account {
    pub passkey: SoftAuthenticator,
    pub access_token: String,
    pub secret: Vec<u8>,
    pub recovery_codes: Vec<String>,
}

impl TestApp {
    pub async fn put_bearer(&self, path: &str, bearer: &str, body: &Value) -> Response {
        self.client
            .put(format!("{}{path}", self.address))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_bearer(&self, path: &str, bearer: &str) -> Response {
        self.client
            .delete(format!("{}{path}", self.address))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }

    pub fn now_secs(&self) -> i64 {
        use passgate::clock::Clock;
        self.clock.now_secs()
    }

    pub async fn password_login(&self, username: &str, password: &str) -> Response {
        self.post("/v1/login/password", &json!({"username": username, "password": password})).await
    }

    /// The mfa_token of a good password step.
    pub async fn mfa_token(&self, username: &str, password: &str) -> String {
        let response = self.password_login(username, password).await;
        assert_eq!(response.status(), StatusCode::OK, "password step of {username}");
        let body: Value = response.json().await.unwrap();
        body["mfa_token"].as_str().unwrap().to_owned()
    }

    pub async fn totp_login(&self, mfa_token: &str, code: &str) -> Response {
        self.post("/v1/login/mfa/totp", &json!({"mfa_token": mfa_token, "code": code})).await
    }

    /// Registers a passkey user and gives them a password and TOTP.
    pub async fn fallback_account(&self, username: &str) -> Account {
        let mut passkey = self.authenticator();
        let tokens = self.register(&mut passkey, username).await;
        let access_token = tokens["access_token"].as_str().unwrap().to_owned();
        let set =
            self.put_bearer("/v1/me/password", &access_token, &json!({"password": PASSWORD})).await;
        assert_eq!(set.status(), StatusCode::NO_CONTENT);
        let started: Value = self
            .post_bearer("/v1/me/totp/start", &access_token, &json!({}))
            .await
            .json()
            .await
            .unwrap();
        let secret = base32_decode(started["secret"].as_str().unwrap());
        let code = totp_at(&secret, self.now_secs());
        let finished =
            self.post_bearer("/v1/me/totp/finish", &access_token, &json!({"code": code})).await;
        assert_eq!(finished.status(), StatusCode::OK);
        let finished: Value = finished.json().await.unwrap();
        let recovery_codes = finished["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        // The enrolment used this step's code; sign-ins start at the next.
        self.clock.advance(Duration::from_secs(30));
        Account { passkey, access_token, secret, recovery_codes }
    }
}

on_both!(
    password_then_totp_signs_in_and_each_code_works_once,
    recovery_codes_stand_in_for_totp_once_each,
    unknown_users_and_wrong_passwords_get_the_same_answer,
    unknown_users_and_wrong_passwords_take_about_the_same_time,
    the_password_policy_follows_nist,
    changing_a_password_needs_the_current_one_or_a_fresh_passkey_sign_in,
    a_hash_with_old_parameters_is_upgraded_at_the_next_sign_in,
    totp_enrolment_shows_secret_uri_and_qr_and_is_inactive_until_confirmed,
    totp_secrets_are_encrypted_at_rest,
    removing_totp_needs_a_fresh_sign_in_and_leaves_no_second_factor,
    an_email_address_is_verified_then_signs_in_with_a_mailed_code,
    two_sends_at_once_mail_one_code,
    mailed_codes_expire_and_allow_five_tries,
    mfa_tokens_expire_and_are_good_for_one_sign_in,
    requests_over_the_ip_limit_get_429_on_every_node,
    repeated_failures_lock_the_account_but_not_its_passkey,
    bad_fallback_input_is_refused_and_changes_nothing,
    without_smtp_mail_goes_to_the_outbox_folder,
    an_unreachable_mail_server_answers_503_and_keeps_no_code,
);

async fn password_then_totp_signs_in_and_each_code_works_once(db: Db) {
    let app = spawn_app(db).await;
    let account = app.fallback_account("fb-alice").await;
    let response = app.password_login("fb-alice", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let challenge: Value = response.json().await.unwrap();
    assert_eq!(challenge["methods"], json!(["totp"]));
    assert!(challenge["expires_in"].as_u64().unwrap() <= 300);
    let mfa_token = challenge["mfa_token"].as_str().unwrap();

    let code = totp_at(&account.secret, app.now_secs());
    let signed_in = app.totp_login(mfa_token, &code).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let tokens: Value = signed_in.json().await.unwrap();
    let claims = claims_of(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert!(claims.get("device_id").is_none(), "no passkey was used");
    let me: Value = app.me(tokens["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(me["factors"], json!(["passkey", "password", "totp", "recovery_code"]));
    let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), StatusCode::OK, "a fallback session refreshes like any other");

    // The same code again, within its 30 seconds: a replay.
    let again = app.mfa_token("fb-alice", PASSWORD).await;
    assert_problem(app.totp_login(&again, &code).await, 401, "invalid_code").await;
    // An older step than the one used is no good either.
    let older = totp_at(&account.secret, app.now_secs() - 30);
    assert_problem(app.totp_login(&again, &older).await, 401, "invalid_code").await;
    // The next step's code works (one step of skew), then not twice.
    let next = totp_at(&account.secret, app.now_secs() + 30);
    assert_eq!(app.totp_login(&again, &next).await.status(), StatusCode::OK);
    let third = app.mfa_token("fb-alice", PASSWORD).await;
    app.clock.advance(Duration::from_secs(30));
    assert_problem(app.totp_login(&third, &next).await, 401, "invalid_code").await;
    // Two steps away is outside the window.
    let far = totp_at(&account.secret, app.now_secs() + 90);
    assert_problem(app.totp_login(&third, &far).await, 401, "invalid_code").await;
}

async fn recovery_codes_stand_in_for_totp_once_each(db: Db) {
    let app = spawn_app(db).await;
    let mut account = app.fallback_account("fb-rec").await;
    assert_eq!(account.recovery_codes.len(), 10);
    let unique: std::collections::HashSet<_> = account.recovery_codes.iter().collect();
    assert_eq!(unique.len(), 10);

    let first = &account.recovery_codes[0];
    let mfa = app.mfa_token("fb-rec", PASSWORD).await;
    // Typed in capitals and without the dash, it is the same code.
    let typed = first.replace('-', "").to_uppercase();
    assert_eq!(app.totp_login(&mfa, &typed).await.status(), StatusCode::OK);
    let mfa = app.mfa_token("fb-rec", PASSWORD).await;
    assert_problem(app.totp_login(&mfa, first).await, 401, "invalid_code").await;

    // New codes void the old set. Making them needs a fresh sign-in.
    let fresh: Value = app.login(&mut account.passkey, Some("fb-rec")).await.json().await.unwrap();
    let bearer = fresh["access_token"].as_str().unwrap();
    let renewed: Value =
        app.post_bearer("/v1/me/recovery-codes", bearer, &json!({})).await.json().await.unwrap();
    let renewed: Vec<String> = renewed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(renewed.len(), 10);
    assert_problem(app.totp_login(&mfa, &account.recovery_codes[1]).await, 401, "invalid_code")
        .await;
    assert_eq!(app.totp_login(&mfa, &renewed[0]).await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(301));
    let stale = app.post_bearer("/v1/me/recovery-codes", &account.access_token, &json!({})).await;
    // The first access token has expired by now as well: either way, no.
    assert!(matches!(stale.status().as_u16(), 401 | 403));
}

async fn unknown_users_and_wrong_passwords_get_the_same_answer(db: Db) {
    let app = spawn_app(db).await;
    app.fallback_account("fb-known").await;
    let mut passkey_only = app.authenticator();
    app.register(&mut passkey_only, "fb-nopassword").await;
    let mut bodies = Vec::new();
    for (name, password) in [
        ("fb-known", "not the password at all"),
        ("fb-nobody", "not the password at all"),
        ("fb-nopassword", "not the password at all"),
    ] {
        let mut body =
            assert_problem(app.password_login(name, password).await, 401, "invalid_credentials")
                .await;
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0], bodies[2]);
}

/// The stated ratio: the median time of a wrong password for a real
/// account and of any password for an unknown name differ by less than
/// 1.5× either way. Both pay one argon2 check; without the dummy hash the
/// unknown name would answer in well under a tenth of the time.
async fn unknown_users_and_wrong_passwords_take_about_the_same_time(db: Db) {
    let app = spawn_app_configured(
        db,
        &[
            ("PASSGATE__PASSWORD__MEMORY_KIB", "19456"),
            ("PASSGATE__PASSWORD__ITERATIONS", "2"),
            ("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "1000"),
            ("PASSGATE__LIMITS__ACCOUNT_REQUESTS_PER_MINUTE", "1000"),
            ("PASSGATE__LIMITS__LOCKOUT_THRESHOLD", "100"),
            ("PASSGATE__LIMITS__LOCKOUT_PERMANENT_THRESHOLD", "100"),
        ],
    )
    .await;
    app.fallback_account("fb-timing").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for round in 0..24 {
        // Interleaved, so that drift on the machine hits both alike.
        for (name, times) in [("fb-timing", &mut known), ("fb-ghost", &mut unknown)] {
            let started = Instant::now();
            let response = app.password_login(name, &format!("wrong guess {round}")).await;
            times.push(started.elapsed());
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64()
    };
    let (known, unknown) = (median(&mut known), median(&mut unknown));
    let ratio = known / unknown;
    assert!(
        (1.0 / 1.5..1.5).contains(&ratio),
        "known {known:.4}s vs unknown {unknown:.4}s: ratio {ratio:.2}"
    );
}

async fn the_password_policy_follows_nist(db: Db) {
    let app = spawn_app(db).await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "fb-policy").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    for (password, why) in [
        ("short", "too short"),
        ("password123", "common"),
        ("Password123", "common, in any case"),
        ("fb-policy", "the username"),
    ] {
        let response =
            app.put_bearer("/v1/me/password", bearer, &json!({"password": password})).await;
        let body = assert_problem(response, 422, "validation_failed").await;
        assert!(body["detail"].as_str().unwrap().starts_with("password:"), "{why}: {body}");
    }
    let too_long = "x".repeat(257);
    assert_problem(
        app.put_bearer("/v1/me/password", bearer, &json!({"password": too_long})).await,
        422,
        "validation_failed",
    )
    .await;
    let fingerprint = app.fingerprint().await;
    assert_eq!(fingerprint, app.fingerprint().await);
    // No composition rules; a 64-character passphrase is fine.
    let passphrase = "the quick brown fox jumps over the lazy dog and keeps on running!";
    assert_eq!(passphrase.chars().count(), 65);
    let ok = app.put_bearer("/v1/me/password", bearer, &json!({"password": passphrase})).await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    let me: Value = app.me(bearer).await.json().await.unwrap();
    assert_eq!(me["factors"], json!(["passkey", "password"]));
    // A password alone is not enough: no second factor yet.
    assert_problem(app.password_login("fb-policy", passphrase).await, 403, "mfa_required").await;
}

async fn changing_a_password_needs_the_current_one_or_a_fresh_passkey_sign_in(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__TOKENS__ACCESS_TTL_SECONDS", "900")]).await;
    let mut account = app.fallback_account("fb-change").await;
    let bearer = account.access_token.as_str();
    app.clock.advance(Duration::from_secs(301));
    let new = "a whole new passphrase";
    let stale = app.put_bearer("/v1/me/password", bearer, &json!({"password": new})).await;
    assert_problem(stale, 403, "passkey_required").await;
    let wrong = app
        .put_bearer(
            "/v1/me/password",
            bearer,
            &json!({"password": new, "current_password": "guess guess"}),
        )
        .await;
    assert_problem(wrong, 401, "invalid_credentials").await;
    let right = app
        .put_bearer(
            "/v1/me/password",
            bearer,
            &json!({"password": new, "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(right.status(), StatusCode::NO_CONTENT);
    assert_problem(app.password_login("fb-change", PASSWORD).await, 401, "invalid_credentials")
        .await;
    app.mfa_token("fb-change", new).await;

    // A session that began with a password and code is not a passkey
    // sign-in: it needs the current password to change it.
    let mfa = app.mfa_token("fb-change", new).await;
    let code = totp_at(&account.secret, app.now_secs());
    let tokens: Value = app.totp_login(&mfa, &code).await.json().await.unwrap();
    let by_password = tokens["access_token"].as_str().unwrap();
    let refused =
        app.put_bearer("/v1/me/password", by_password, &json!({"password": PASSWORD})).await;
    assert_problem(refused, 403, "passkey_required").await;
    // A fresh passkey sign-in may.
    let fresh: Value = app.login(&mut account.passkey, None).await.json().await.unwrap();
    let by_passkey = fresh["access_token"].as_str().unwrap();
    let ok = app.put_bearer("/v1/me/password", by_passkey, &json!({"password": PASSWORD})).await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
}

async fn a_hash_with_old_parameters_is_upgraded_at_the_next_sign_in(db: Db) {
    let app = spawn_app(db).await;
    app.fallback_account("fb-upgrade").await;
    let user = app.store.find_user_by_username("fb-upgrade").await.unwrap().unwrap();
    let before = app.store.password_hash(&user.user_id.to_string()).await.unwrap().unwrap();
    assert!(before.starts_with("$argon2id$v=19$m=4096,t=1,p=1$"), "{before}");
    // A node with the default (OWASP) parameters, on the same database.
    let owasp = spawn_app_with(
        app.db_share(),
        &[],
        &[("PASSGATE__PASSWORD__MEMORY_KIB", "7168"), ("PASSGATE__PASSWORD__ITERATIONS", "5")],
    )
    .await;
    assert_problem(
        owasp.password_login("fb-upgrade", "wrong password!").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        app.store.password_hash(&user.user_id.to_string()).await.unwrap().unwrap(),
        before,
        "not on a failure"
    );
    owasp.mfa_token("fb-upgrade", PASSWORD).await;
    let after = app.store.password_hash(&user.user_id.to_string()).await.unwrap().unwrap();
    assert!(after.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{after}");
    owasp.mfa_token("fb-upgrade", PASSWORD).await;
}

async fn totp_enrolment_shows_secret_uri_and_qr_and_is_inactive_until_confirmed(db: Db) {
    let app = spawn_app(db).await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "fb-enrol").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    app.put_bearer("/v1/me/password", bearer, &json!({"password": PASSWORD})).await;
    let started: Value =
        app.post_bearer("/v1/me/totp/start", bearer, &json!({})).await.json().await.unwrap();
    let secret = started["secret"].as_str().unwrap();
    assert_eq!(base32_decode(secret).len(), 20);
    let uri = started["otpauth_uri"].as_str().unwrap();
    assert_eq!(uri, format!("otpauth://totp/passgate:fb-enrol?secret={secret}&issuer=passgate"));
    let svg = started["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.ends_with("</svg>"), "{svg}");
    // Not active yet: the password step offers no second factor.
    assert_problem(app.password_login("fb-enrol", PASSWORD).await, 403, "mfa_required").await;
    let wrong = app.post_bearer("/v1/me/totp/finish", bearer, &json!({"code": "000000"})).await;
    // (000000 could be right once in a million runs.)
    if wrong.status() != StatusCode::OK {
        assert_problem(wrong, 400, "invalid_code").await;
        let code = totp_at(&base32_decode(secret), app.now_secs());
        let finished = app.post_bearer("/v1/me/totp/finish", bearer, &json!({"code": code})).await;
        assert_eq!(finished.status(), StatusCode::OK);
    }
    let again = app.post_bearer("/v1/me/totp/start", bearer, &json!({})).await;
    assert_problem(again, 422, "validation_failed").await;
    let challenge: Value = app.password_login("fb-enrol", PASSWORD).await.json().await.unwrap();
    assert_eq!(challenge["methods"], json!(["totp"]));
}

async fn totp_secrets_are_encrypted_at_rest(db: Db) {
    let kek = "dG90cC1zZWNyZXQtc2VhbGluZy1rZXktMzItYnl0ZXM=";
    let app = spawn_app_configured(db, &[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY", kek)]).await;
    let account = app.fallback_account("fb-sealed").await;
    let user = app.store.find_user_by_username("fb-sealed").await.unwrap().unwrap();
    let row = app.store.totp(&user.user_id.to_string()).await.unwrap().unwrap();
    assert!(row.secret.starts_with("sealed:v1:"), "{}", row.secret);
    use base64::Engine;
    let stored = base64::engine::general_purpose::STANDARD
        .decode(&row.secret["sealed:v1:".len()..])
        .unwrap();
    assert!(
        !stored.windows(account.secret.len()).any(|w| w == account.secret),
        "the raw secret is not stored"
    );
    // And it still signs in, on another node that has the key.
    let other =
        spawn_app_with(app.db_share(), &[], &[("PASSGATE__TOKENS__KEY_ENCRYPTION_KEY", kek)]).await;
    let mfa = other.mfa_token("fb-sealed", PASSWORD).await;
    let code = totp_at(&account.secret, app.now_secs());
    assert_eq!(other.totp_login(&mfa, &code).await.status(), StatusCode::OK);
}

async fn removing_totp_needs_a_fresh_sign_in_and_leaves_no_second_factor(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__TOKENS__ACCESS_TTL_SECONDS", "900")]).await;
    let mut account = app.fallback_account("fb-remove").await;
    app.clock.advance(Duration::from_secs(301));
    let stale = &account.access_token;
    assert_problem(app.delete_bearer("/v1/me/totp", stale).await, 403, "passkey_required").await;
    // Nor may a stale session add a second factor of its own.
    let email = json!({"email": "attacker@example.test"});
    assert_problem(app.post_bearer("/v1/me/email", stale, &email).await, 403, "passkey_required")
        .await;
    let totp = app.post_bearer("/v1/me/totp/start", stale, &json!({})).await;
    assert_problem(totp, 403, "passkey_required").await;
    assert!(smtp::mails_to("attacker@example.test").is_empty());
    let fresh: Value = app.login(&mut account.passkey, None).await.json().await.unwrap();
    let bearer = fresh["access_token"].as_str().unwrap();
    assert_eq!(app.delete_bearer("/v1/me/totp", bearer).await.status(), StatusCode::NO_CONTENT);
    assert_problem(app.delete_bearer("/v1/me/totp", bearer).await, 404, "not_found").await;
    assert_problem(app.password_login("fb-remove", PASSWORD).await, 403, "mfa_required").await;
    let me: Value = app.me(bearer).await.json().await.unwrap();
    assert_eq!(me["factors"], json!(["passkey", "password"]), "recovery codes went with TOTP");
}

pub async fn verified_email(app: &TestApp, bearer: &str, address: &str) {
    let set = app.post_bearer("/v1/me/email", bearer, &json!({"email": address})).await;
    assert_eq!(set.status(), StatusCode::ACCEPTED);
    let code = smtp::last_code_to(address);
    let verified = app.post_bearer("/v1/me/email/verify", bearer, &json!({"code": code})).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
}

/// Both requests find no code within the resend wait when they start;
/// the store checks again, so one code is stored and mailed.
async fn two_sends_at_once_mail_one_code(db: Db) {
    let app = spawn_app(db).await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "fb-twice").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let address = format!("fb-twice-{}@example.test", db_tag(&app));
    let body = json!({"email": address});
    let (a, b) = tokio::join!(
        app.post_bearer("/v1/me/email", bearer, &body),
        app.post_bearer("/v1/me/email", bearer, &body)
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [202, 429]);
    assert_eq!(smtp::mails_to(&address).len(), 1);
    // The one mailed code is the one that works.
    let code = smtp::last_code_to(&address);
    let verified = app.post_bearer("/v1/me/email/verify", bearer, &json!({"code": code})).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
}

async fn an_email_address_is_verified_then_signs_in_with_a_mailed_code(db: Db) {
    let app = spawn_app(db).await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "fb-mail").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    app.put_bearer("/v1/me/password", bearer, &json!({"password": PASSWORD})).await;
    let address = format!("fb-mail-{}@example.test", db_tag(&app));

    let set = app.post_bearer("/v1/me/email", bearer, &json!({"email": address})).await;
    assert_eq!(set.status(), StatusCode::ACCEPTED);
    let me: Value = app.me(bearer).await.json().await.unwrap();
    assert_eq!(
        (me["email"].as_str(), me["email_verified"].as_bool()),
        (Some(address.as_str()), Some(false))
    );
    let mail = smtp::mails_to(&address).pop().unwrap();
    assert!(mail.contains("Subject: Confirm your email address"), "{mail}");
    // A second code within the resend wait is refused, with Retry-After.
    let soon = app.post_bearer("/v1/me/email", bearer, &json!({"email": address})).await;
    assert!(soon.headers().contains_key("retry-after"));
    assert_problem(soon, 429, "rate_limited").await;
    let wrong = app
        .post_bearer(
            "/v1/me/email/verify",
            bearer,
            &json!({"code": wrong_code(&smtp::last_code_to(&address))}),
        )
        .await;
    assert_problem(wrong, 400, "invalid_code").await;
    let code = smtp::last_code_to(&address);
    let verified = app.post_bearer("/v1/me/email/verify", bearer, &json!({"code": code})).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
    let again = app.post_bearer("/v1/me/email/verify", bearer, &json!({"code": code})).await;
    assert_problem(again, 400, "invalid_code").await;
    let me: Value = app.me(bearer).await.json().await.unwrap();
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["factors"], json!(["passkey", "password", "email_otp"]));

    let challenge: Value = app.password_login("fb-mail", PASSWORD).await.json().await.unwrap();
    assert_eq!(challenge["methods"], json!(["email_otp"]));
    let mfa = challenge["mfa_token"].as_str().unwrap();
    let sent = app.post("/v1/login/mfa/email/send", &json!({"mfa_token": mfa})).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let mails = smtp::mails_to(&address);
    assert_eq!(mails.len(), 2);
    assert!(mails[1].contains("Subject: Your sign-in code"));
    let code = smtp::last_code_to(&address);
    let signed_in =
        app.post("/v1/login/mfa/email/verify", &json!({"mfa_token": mfa, "code": code})).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let tokens: Value = signed_in.json().await.unwrap();
    assert_eq!(
        claims_of(tokens["access_token"].as_str().unwrap())["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    // The code is spent, and so is the mfa_token.
    let mfa = app.mfa_token("fb-mail", PASSWORD).await;
    let reused =
        app.post("/v1/login/mfa/email/verify", &json!({"mfa_token": mfa, "code": code})).await;
    assert_problem(reused, 401, "invalid_code").await;
}

async fn mailed_codes_expire_and_allow_five_tries(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__LIMITS__LOCKOUT_THRESHOLD", "50")]).await;
    let account = app.fallback_account("fb-tries").await;
    let address = format!("fb-tries-{}@example.test", db_tag(&app));
    verified_email(&app, &account.access_token, &address).await;

    let mfa = app.mfa_token("fb-tries", PASSWORD).await;
    let send =
        async |mfa: &str| app.post("/v1/login/mfa/email/send", &json!({"mfa_token": mfa})).await;
    assert_eq!(send(&mfa).await.status(), StatusCode::ACCEPTED);
    let code = smtp::last_code_to(&address);
    let verify = async |code: String| {
        app.post("/v1/login/mfa/email/verify", &json!({"mfa_token": mfa, "code": code})).await
    };
    for _ in 0..5 {
        assert_problem(verify(wrong_code(&code)).await, 401, "invalid_code").await;
    }
    // Five wrong tries used the code up: the right one is refused now.
    assert_problem(verify(code.clone()).await, 401, "invalid_code").await;

    app.clock.advance(Duration::from_secs(61));
    assert_eq!(send(&mfa).await.status(), StatusCode::ACCEPTED);
    let code = smtp::last_code_to(&address);
    app.clock.advance(Duration::from_secs(601));
    let mfa = app.mfa_token("fb-tries", PASSWORD).await;
    let late =
        app.post("/v1/login/mfa/email/verify", &json!({"mfa_token": mfa, "code": code})).await;
    assert_problem(late, 401, "invalid_code").await;
}

async fn mfa_tokens_expire_and_are_good_for_one_sign_in(db: Db) {
    let app = spawn_app(db).await;
    let account = app.fallback_account("fb-mfa").await;
    let mfa = app.mfa_token("fb-mfa", PASSWORD).await;
    app.clock.advance(Duration::from_secs(301));
    let code = totp_at(&account.secret, app.now_secs());
    assert_problem(app.totp_login(&mfa, &code).await, 401, "invalid_credentials").await;
    let mfa = app.mfa_token("fb-mfa", PASSWORD).await;
    assert_eq!(app.totp_login(&mfa, &code).await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(30));
    let next = totp_at(&account.secret, app.now_secs());
    assert_problem(app.totp_login(&mfa, &next).await, 401, "invalid_credentials").await;
    // Nor is an mfa_token a bearer token, or a refresh token.
    assert_problem(app.me(&mfa).await, 401, "unauthorized").await;
    assert_problem(app.refresh(&mfa).await, 401, "invalid_credentials").await;
}

async fn requests_over_the_ip_limit_get_429_on_every_node(db: Db) {
    let limits = [("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "4")];
    let app = spawn_app_configured(db, &limits).await;
    let other = spawn_app_with(app.db_share(), &[], &limits).await;
    // Two nodes share one clock here only through the database's counters:
    // keep theirs in step.
    for (n, node) in [&app, &other, &app, &other].into_iter().enumerate() {
        let response = node.password_login(&format!("fb-ip-{n}"), "some password").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = other.password_login("fb-ip-x", "some password").await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_problem(limited, 429, "rate_limited").await;
    assert_problem(app.password_login("fb-ip-y", "some password").await, 429, "rate_limited").await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("passgate_rate_limited_total{scope=\"ip\"} 1"), "{metrics}");
    assert!(metrics.contains("passgate_password_hash_queue_depth 0"), "{metrics}");
    // Passkey sign-in is not behind this limit.
    assert_eq!(app.login_start(Some("fb-ip-y")).await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(61));
    other.clock.advance(Duration::from_secs(61));
    assert_problem(
        app.password_login("fb-ip-z", "some password").await,
        401,
        "invalid_credentials",
    )
    .await;
}

async fn repeated_failures_lock_the_account_but_not_its_passkey(db: Db) {
    let app = spawn_app_configured(
        db,
        &[
            ("PASSGATE__LIMITS__LOCKOUT_THRESHOLD", "3"),
            ("PASSGATE__LIMITS__LOCKOUT_BASE_SECONDS", "60"),
            ("PASSGATE__LIMITS__ACCOUNT_REQUESTS_PER_MINUTE", "100"),
            ("PASSGATE__LIMITS__IP_REQUESTS_PER_MINUTE", "100"),
        ],
    )
    .await;
    let mut account = app.fallback_account("fb-lock").await;
    for _ in 0..3 {
        assert_problem(
            app.password_login("fb-lock", "a wrong guess").await,
            401,
            "invalid_credentials",
        )
        .await;
        assert_problem(
            app.password_login("fb-nobody-here", "a wrong guess").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    // Locked: even the right password is not checked. An unknown name
    // locks the same way, so a lockout reveals nothing.
    let locked = app.password_login("fb-lock", PASSWORD).await;
    let retry_after: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_problem(locked, 403, "account_locked").await;
    assert_problem(app.password_login("fb-nobody-here", PASSWORD).await, 403, "account_locked")
        .await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("passgate_lockouts_total 2"), "{metrics}");

    app.clock.advance(Duration::from_secs(61));
    // One more failure after the lock doubles it (120 s).
    assert_problem(
        app.password_login("fb-lock", "a wrong guess").await,
        401,
        "invalid_credentials",
    )
    .await;
    app.clock.advance(Duration::from_secs(61));
    assert_problem(app.password_login("fb-lock", PASSWORD).await, 403, "account_locked").await;
    app.clock.advance(Duration::from_secs(60));
    // Wrong second-factor codes count too: one more failure, a longer
    // lock (240 s), even for the right code.
    let mfa = app.mfa_token("fb-lock", PASSWORD).await;
    let code = totp_at(&account.secret, app.now_secs());
    assert_problem(app.totp_login(&mfa, &wrong_code(&code)).await, 401, "invalid_code").await;
    assert_problem(app.totp_login(&mfa, &code).await, 403, "account_locked").await;
    app.clock.advance(Duration::from_secs(241));
    // A full sign-in clears the count.
    let mfa = app.mfa_token("fb-lock", PASSWORD).await;
    let code = totp_at(&account.secret, app.now_secs());
    assert_eq!(app.totp_login(&mfa, &code).await.status(), StatusCode::OK);
    for _ in 0..2 {
        assert_problem(
            app.password_login("fb-lock", "a wrong guess").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    app.mfa_token("fb-lock", PASSWORD).await;
    // Locked again; the passkey still signs in, and its sign-in opens
    // the fallback again (the owner proved who they are).
    assert_problem(
        app.password_login("fb-lock", "a wrong guess").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_problem(app.password_login("fb-lock", PASSWORD).await, 403, "account_locked").await;
    assert_eq!(app.login(&mut account.passkey, Some("fb-lock")).await.status(), StatusCode::OK);
    app.mfa_token("fb-lock", PASSWORD).await;
}

async fn bad_fallback_input_is_refused_and_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let account = app.fallback_account("fb-bad").await;
    let bearer = account.access_token.as_str();
    let mfa = app.mfa_token("fb-bad", PASSWORD).await;
    let before = app.fingerprint().await;
    for (path, body) in [
        ("/v1/login/password", json!({"username": "fb-bad"})),
        ("/v1/login/password", json!({"username": "no spaces allowed", "password": "x"})),
        ("/v1/login/mfa/totp", json!({"mfa_token": "short", "code": "123456"})),
        ("/v1/login/mfa/totp", json!({"mfa_token": mfa, "code": "12;456"})),
        ("/v1/login/mfa/email/send", json!({"mfa_token": 42})),
        ("/v1/login/mfa/email/verify", json!({"mfa_token": mfa})),
    ] {
        let response = app.post(path, &body).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}");
        assert_problem(response, 422, "validation_failed").await;
    }
    let malformed =
        app.post_raw("/v1/login/password", "application/json", b"{\"username\":".to_vec()).await;
    assert_problem(malformed, 400, "bad_request").await;
    let forged = app.post_bearer("/v1/me/totp/start", "eyJhbGciOiJub25lIn0.e30.", &json!({})).await;
    assert_problem(forged, 401, "unauthorized").await;
    let no_token = app
        .client
        .put(format!("{}/v1/me/password", app.address))
        .json(&json!({"password": "whatever it is"}))
        .send()
        .await
        .unwrap();
    assert_problem(no_token, 401, "unauthorized").await;
    assert_problem(
        app.post_bearer("/v1/me/email", bearer, &json!({"email": "not an address"})).await,
        422,
        "validation_failed",
    )
    .await;
    // A refused email send (no verified address) mails nothing.
    assert_problem(
        app.post("/v1/login/mfa/email/send", &json!({"mfa_token": mfa})).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(before, app.fingerprint().await);
}

async fn without_smtp_mail_goes_to_the_outbox_folder(db: Db) {
    let outbox = tempfile::tempdir().unwrap();
    let dir = outbox.path().join("outbox");
    let app = spawn_app_configured(
        db,
        &[("PASSGATE__SMTP__HOST", ""), ("PASSGATE__SMTP__OUTBOX_DIR", dir.to_str().unwrap())],
    )
    .await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "fb-outbox").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let set =
        app.post_bearer("/v1/me/email", bearer, &json!({"email": "outbox@example.test"})).await;
    assert_eq!(set.status(), StatusCode::ACCEPTED);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].extension().unwrap(), "eml");
    let message = std::fs::read_to_string(&files[0]).unwrap();
    assert!(message.contains("To: outbox@example.test"), "{message}");
    let code: String = message.split(" is ").nth(1).unwrap().chars().take(6).collect();
    let verified = app.post_bearer("/v1/me/email/verify", bearer, &json!({"code": code})).await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
}

async fn an_unreachable_mail_server_answers_503_and_keeps_no_code(db: Db) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port = closed.to_string();
    let app = spawn_app_configured(
        db,
        &[("PASSGATE__SMTP__PORT", &port), ("PASSGATE__SMTP__TIMEOUT_SECONDS", "2")],
    )
    .await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "fb-nomail").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let body = json!({"email": "nomail@example.test"});
    let before = app.fingerprint().await;
    assert_problem(app.post_bearer("/v1/me/email", bearer, &body).await, 503, "unavailable").await;
    assert_eq!(before, app.fingerprint().await);
    // Not counted as sent: asking again is not held back by the resend wait.
    assert_problem(app.post_bearer("/v1/me/email", bearer, &body).await, 503, "unavailable").await;
}

/// A six-digit code that is not `code`.
fn wrong_code(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// Tells the two engines' runs apart in shared places (mail addresses).
pub fn db_tag(app: &TestApp) -> String {
    format!("{:?}-{}", app.db.db, app.port).to_lowercase()
}

/// Mail over STARTTLS (the default) and over implicit TLS, to a server
/// whose certificate only `smtp.ca_file` vouches for: the code arrives
/// over TLS and works.
#[tokio::test]
async fn mail_goes_over_starttls_and_implicit_tls_to_a_server_trusted_by_ca_file() {
    let ca_file = smtp::ca_file();
    for (tls, port) in [("starttls", smtp::port()), ("tls", smtp::tls_port())] {
        let port = port.to_string();
        let app = spawn_app_configured(
            Db::Sqlite,
            &[
                ("PASSGATE__SMTP__TLS", tls),
                ("PASSGATE__SMTP__PORT", &port),
                ("PASSGATE__SMTP__CA_FILE", ca_file.to_str().unwrap()),
            ],
        )
        .await;
        let mut passkey = app.authenticator();
        let tokens = app.register(&mut passkey, &format!("fb-{tls}")).await;
        let bearer = tokens["access_token"].as_str().unwrap();
        let address = format!("fb-{tls}-{}@example.test", db_tag(&app));
        verified_email(&app, bearer, &address).await;
        assert_eq!(smtp::all_over_tls(&address), Some(true), "{tls}");
    }
}

/// The same server without `smtp.ca_file`: its certificate is trusted by
/// nothing, so no mail goes, and the caller gets a 503.
#[tokio::test]
async fn mail_is_not_sent_to_a_server_whose_certificate_is_not_trusted() {
    let port = smtp::port().to_string();
    let app = spawn_app_configured(
        Db::Sqlite,
        &[("PASSGATE__SMTP__TLS", "starttls"), ("PASSGATE__SMTP__PORT", &port)],
    )
    .await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "fb-untrusted").await;
    let bearer = tokens["access_token"].as_str().unwrap();
    let address = format!("fb-untrusted-{}@example.test", db_tag(&app));
    let set = app.post_bearer("/v1/me/email", bearer, &json!({"email": address})).await;
    assert_problem(set, 503, "unavailable").await;
    assert_eq!(smtp::all_over_tls(&address), None);
}

/// A `smtp.ca_file` that cannot be read, or holds no certificate, stops
/// the node at start, naming the key.
#[tokio::test]
async fn an_unreadable_or_empty_ca_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for path in [&empty, &missing] {
        let settings = crate::helpers::test_settings(
            "sqlite::memory:",
            1,
            &[],
            &[
                ("PASSGATE__SMTP__TLS", "starttls"),
                ("PASSGATE__SMTP__CA_FILE", path.to_str().unwrap()),
            ],
        );
        let Err(error) = passgate::mailer::Mailer::new(&settings.smtp) else {
            panic!("{} was accepted", path.display());
        };
        let error = format!("{error:#}");
        assert!(error.contains("smtp.ca_file"), "{error}");
    }
}
