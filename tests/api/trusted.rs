//! Trusted browsers (issue 20 item 5): a fresh passkey sign-in may mark a
//! browser trusted with an HttpOnly `__Host-` cookie bound to a server
//! record; `TrustedDevices::is_trusted` is what the risk rules read; the
//! owner lists and removes them; an admin's device reset ends them; the
//! token is stored only hashed and never reaches a log, an audit row or a
//! mail. The cookie is read from Set-Cookie and sent back by hand (reqwest
//! keeps no `Secure` cookie over plain http).

use std::time::Duration;

use passgate::clock::Clock;
use passgate::domain::UserId;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::admin::{admin, all_audit_text};
use crate::fallback::{PASSWORD, db_tag, verified_email};
use crate::helpers::{
    Db, TestApp, assert_problem, captured_logs, on_both, spawn_app, spawn_app_configured,
};
use crate::smtp;

on_both!(
    trusting_after_a_passkey_sign_in_sets_a_host_cookie_and_mails_the_owner,
    a_phished_password_and_mailed_code_cannot_trust_a_browser,
    only_the_right_users_live_token_is_trusted,
    only_the_owner_removes_a_trusted_browser,
    an_admin_device_reset_ends_trust,
    the_token_is_stored_hashed_and_never_logged_audited_or_mailed,
    trusting_again_replaces_the_browsers_record_and_the_count_is_capped,
    ended_trust_is_purged_after_a_while,
);

const PATH: &str = "/v1/me/trusted-devices";
const COOKIE: &str = "__Host-passgate-trusted";

impl TestApp {
    /// POST /v1/me/trusted-devices, with this browser's cookie if any.
    async fn trust(&self, bearer: &str, cookie: Option<&str>) -> Response {
        let mut request = self.client.post(format!("{}{PATH}", self.address)).bearer_auth(bearer);
        if let Some(token) = cookie {
            request = request.header("cookie", format!("{COOKIE}={token}"));
        }
        request.send().await.unwrap()
    }

    async fn trusted_list(&self, bearer: &str, cookie: Option<&str>) -> Vec<Value> {
        let mut request = self.client.get(format!("{}{PATH}", self.address)).bearer_auth(bearer);
        if let Some(token) = cookie {
            request = request.header("cookie", format!("theme=dark; {COOKIE}={token}"));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn untrust(&self, bearer: &str, id: &str, cookie: Option<&str>) -> Response {
        let mut request =
            self.client.delete(format!("{}{PATH}/{id}", self.address)).bearer_auth(bearer);
        if let Some(token) = cookie {
            request = request.header("cookie", format!("{COOKIE}={token}"));
        }
        request.send().await.unwrap()
    }

    async fn is_trusted(&self, user_id: &str, cookie: Option<&str>) -> bool {
        let user = UserId::parse(user_id.to_owned()).unwrap();
        self.core.trusted_devices.is_trusted(&user, cookie).await.unwrap()
    }
}

/// A passkey user, just registered (so its session is a fresh passkey
/// sign-in): (user id, access token).
async fn passkey_user(app: &TestApp, name: &str) -> (String, String) {
    let tokens = app.register(&mut app.authenticator(), name).await;
    (
        tokens["user_id"].as_str().unwrap().to_owned(),
        tokens["access_token"].as_str().unwrap().to_owned(),
    )
}

/// The Set-Cookie header of a trust answer, which must be 201; and its
/// token.
async fn trusted(response: Response) -> (String, String, Value) {
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    let token = set_cookie
        .strip_prefix(&format!("{COOKIE}="))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("not the trusted cookie: {set_cookie}"))
        .to_owned();
    (set_cookie, token, response.json().await.unwrap())
}

async fn trusting_after_a_passkey_sign_in_sets_a_host_cookie_and_mails_the_owner(db: Db) {
    let app = spawn_app_configured(db, &[("PASSGATE__TRUST__DAYS", "7")]).await;
    let (user_id, bearer) = passkey_user(&app, "tr-owner").await;
    let address = format!("tr-owner-{}@example.test", db_tag(&app));
    verified_email(&app, &bearer, &address).await;
    let response = app
        .client
        .post(format!("{}{PATH}", app.address))
        .bearer_auth(&bearer)
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0 Safari/537.36")
        .send()
        .await
        .unwrap();
    let (set_cookie, token, body) = trusted(response).await;
    // __Host-: Secure, Path=/ and no Domain; a script cannot read it, and
    // no other site's request carries it.
    let attributes: Vec<&str> = set_cookie.split(';').skip(1).map(str::trim).collect();
    for wanted in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=604800"] {
        assert!(attributes.contains(&wanted), "{wanted} missing: {set_cookie}");
    }
    assert!(!set_cookie.to_ascii_lowercase().contains("domain"), "{set_cookie}");
    assert_eq!(token.len(), 43, "256 random bits, base64url");
    assert_eq!(body["label"], "Chrome on Linux");
    assert_eq!(body["current"], true);
    let created = body["created_at"].as_str().unwrap();
    let expires = body["expires_at"].as_str().unwrap();
    let seconds = |rfc: &str| {
        time::OffsetDateTime::parse(rfc, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    };
    assert_eq!(seconds(expires) - seconds(created), 7 * 86_400);
    assert!(app.is_trusted(&user_id, Some(&token)).await);

    // Listed, and marked current only where its cookie comes from.
    let here = app.trusted_list(&bearer, Some(&token)).await;
    assert_eq!(here.len(), 1);
    assert_eq!(here[0]["trusted_device_id"], body["trusted_device_id"]);
    assert_eq!(here[0]["current"], true);
    let elsewhere = app.trusted_list(&bearer, None).await;
    assert_eq!(elsewhere[0]["current"], false);

    let mail = smtp::wait_for_mail(&address, "marked trusted").await;
    assert!(mail.contains("Chrome on Linux"), "{mail}");
    assert!(mail.contains("Subject: A browser was marked trusted on your account"), "{mail}");
    let audit = all_audit_text(&app).await;
    assert!(audit.contains("browser_trusted"), "{audit}");
}

async fn a_phished_password_and_mailed_code_cannot_trust_a_browser(db: Db) {
    let app = spawn_app(db).await;
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, "tr-victim").await;
    let user_id = tokens["user_id"].as_str().unwrap();
    let owner = tokens["access_token"].as_str().unwrap();
    let set = app.put_bearer("/v1/me/password", owner, &json!({"password": PASSWORD})).await;
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let address = format!("tr-victim-{}@example.test", db_tag(&app));
    verified_email(&app, owner, &address).await;

    // A phishing page relays the password and the mailed code at once.
    let mfa = app.mfa_token("tr-victim", PASSWORD).await;
    let sent = app.post("/v1/login/mfa/email/send", &json!({"mfa_token": mfa})).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let code = smtp::last_code_to(&address);
    let signed_in =
        app.post("/v1/login/mfa/email/verify", &json!({"mfa_token": mfa, "code": code})).await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let stolen: Value = signed_in.json().await.unwrap();
    let stolen = stolen["access_token"].as_str().unwrap();

    let refused = app.trust(stolen, None).await;
    assert!(refused.headers().get("set-cookie").is_none(), "no cookie for a phisher");
    let body = assert_problem(refused, 403, "passkey_required").await;
    assert!(body["detail"].as_str().unwrap().contains("passkey"), "{body}");
    assert!(app.trusted_list(owner, None).await.is_empty(), "nothing stored");
    assert!(
        app.store.live_trusted_devices(&uid(user_id), app.clock.now_ms()).await.unwrap().is_empty()
    );

    // A passkey sign-in that is no longer fresh is not enough either
    // (refreshing its token does not make it fresh).
    app.clock.advance(Duration::from_secs(301));
    let refreshed: Value =
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await.json().await.unwrap();
    let stale = app.trust(refreshed["access_token"].as_str().unwrap(), None).await;
    assert!(stale.headers().get("set-cookie").is_none());
    assert_problem(stale, 403, "passkey_required").await;
    // A fresh one is.
    let fresh: Value = app.login(&mut passkey, None).await.json().await.unwrap();
    trusted(app.trust(fresh["access_token"].as_str().unwrap(), None).await).await;
    // Without a bearer token: 401.
    let anonymous = app.client.post(format!("{}{PATH}", app.address)).send().await.unwrap();
    assert_problem(anonymous, 401, "unauthorized").await;
}

async fn only_the_right_users_live_token_is_trusted(db: Db) {
    let app = spawn_app(db).await;
    let (alice, alice_bearer) = passkey_user(&app, "tr-alice").await;
    let (bob, bob_bearer) = passkey_user(&app, "tr-bob").await;
    let (_, alice_token, _) = trusted(app.trust(&alice_bearer, None).await).await;
    let (_, bob_token, _) = trusted(app.trust(&bob_bearer, None).await).await;

    assert!(app.is_trusted(&alice, Some(&alice_token)).await);
    assert!(app.is_trusted(&bob, Some(&bob_token)).await);
    // One account's cookie lowers nothing for another, both ways.
    assert!(!app.is_trusted(&bob, Some(&alice_token)).await);
    assert!(!app.is_trusted(&alice, Some(&bob_token)).await);
    // No cookie, a made-up token, or something else entirely.
    assert!(!app.is_trusted(&alice, None).await);
    let forged = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert!(!app.is_trusted(&alice, Some(forged)).await);
    let mut flipped = alice_token.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    assert!(!app.is_trusted(&alice, Some(&String::from_utf8(flipped).unwrap())).await);
    let longer = format!("{alice_token}x");
    for junk in ["", "x", "' or 1=1 --", longer.as_str()] {
        assert!(!app.is_trusted(&alice, Some(junk)).await, "{junk:?}");
    }

    // Seen: a check moves last_seen_at.
    let id = app.trusted_list(&alice_bearer, None).await[0]["trusted_device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.advance(Duration::from_secs(60));
    assert!(app.is_trusted(&alice, Some(&alice_token)).await);
    let row = app.store.find_trusted_device(&id).await.unwrap().unwrap();
    assert_eq!(row.last_seen_at, app.clock.now_ms());

    // Until it expires (trust.days, 30 by default), not after.
    app.clock.advance(Duration::from_secs(30 * 86_400 - 120));
    assert!(app.is_trusted(&alice, Some(&alice_token)).await);
    app.clock.advance(Duration::from_secs(120));
    assert!(!app.is_trusted(&alice, Some(&alice_token)).await);
    assert!(!app.is_trusted(&bob, Some(&bob_token)).await);
}

async fn only_the_owner_removes_a_trusted_browser(db: Db) {
    let app = spawn_app(db).await;
    let (alice, alice_bearer) = passkey_user(&app, "tr-rm-alice").await;
    let (_, mallory_bearer) = passkey_user(&app, "tr-rm-mallory").await;
    let (_, token, body) = trusted(app.trust(&alice_bearer, None).await).await;
    let id = body["trusted_device_id"].as_str().unwrap();

    // Another account cannot see or end it: the same 404 as no such id.
    assert!(app.trusted_list(&mallory_bearer, None).await.is_empty());
    assert_problem(app.untrust(&mallory_bearer, id, None).await, 404, "not_found").await;
    assert_problem(app.untrust(&mallory_bearer, id, Some(&token)).await, 404, "not_found").await;
    assert!(app.is_trusted(&alice, Some(&token)).await, "still trusted");
    for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        assert_problem(app.untrust(&alice_bearer, bad, None).await, 404, "not_found").await;
    }
    let anonymous = app.client.delete(format!("{}{PATH}/{id}", app.address)).send().await.unwrap();
    assert_problem(anonymous, 401, "unauthorized").await;

    // The owner, from another browser: ended, and no cookie is touched.
    let removed = app.untrust(&alice_bearer, id, None).await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert!(removed.headers().get("set-cookie").is_none());
    assert!(!app.is_trusted(&alice, Some(&token)).await);
    assert!(app.trusted_list(&alice_bearer, None).await.is_empty());
    assert_problem(app.untrust(&alice_bearer, id, None).await, 404, "not_found").await;
    let row = app.store.find_trusted_device(id).await.unwrap().unwrap();
    assert!(row.revoked_at.is_some());

    // From the browser itself: its cookie is cleared too.
    let (_, here, body) = trusted(app.trust(&alice_bearer, None).await).await;
    let id = body["trusted_device_id"].as_str().unwrap();
    let removed = app.untrust(&alice_bearer, id, Some(&here)).await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let cleared = removed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cleared.starts_with(&format!("{COOKIE}=;")), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(!app.is_trusted(&alice, Some(&here)).await);
    assert!(all_audit_text(&app).await.contains("browser_trust_revoked"));
}

async fn an_admin_device_reset_ends_trust(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "tr-admin").await;
    let (user, bearer) = passkey_user(&app, "tr-lost-phone").await;
    let (_, token, _) = trusted(app.trust(&bearer, None).await).await;
    let (_, other, _) = trusted(app.trust(&bearer, None).await).await;
    assert!(app.is_trusted(&user, Some(&token)).await);

    let reset = app
        .post_bearer(
            &format!("/v1/admin/users/{user}/reset-devices"),
            &admin_bearer,
            &json!({"reason": "phone stolen"}),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::OK);
    // The finder of the phone gets no lower score from its browser.
    assert!(!app.is_trusted(&user, Some(&token)).await);
    assert!(!app.is_trusted(&user, Some(&other)).await);
    assert!(
        app.store.live_trusted_devices(&uid(&user), app.clock.now_ms()).await.unwrap().is_empty()
    );

    // The operator's reset on the server's command line too.
    let (user, bearer) = passkey_user(&app, "tr-cli-reset").await;
    let (_, token, _) = trusted(app.trust(&bearer, None).await).await;
    app.core.admin.reset_devices_by_operator(&user, "lost everything").await.unwrap();
    assert!(!app.is_trusted(&user, Some(&token)).await);
}

async fn the_token_is_stored_hashed_and_never_logged_audited_or_mailed(db: Db) {
    let app = spawn_app(db).await;
    let (user, bearer) = passkey_user(&app, "tr-secret").await;
    let address = format!("tr-secret-{}@example.test", db_tag(&app));
    verified_email(&app, &bearer, &address).await;
    let (_, token, body) = trusted(app.trust(&bearer, None).await).await;
    let id = body["trusted_device_id"].as_str().unwrap();
    // The cookie travels through every layer: the list, a check, a
    // refused and a done removal, a trust that replaces it.
    app.trusted_list(&bearer, Some(&token)).await;
    assert!(app.is_trusted(&user, Some(&token)).await);
    app.untrust(&bearer, "00000000-0000-0000-0000-000000000000", Some(&token)).await;
    let (_, second, _) = trusted(app.trust(&bearer, Some(&token)).await).await;
    app.untrust(&bearer, id, Some(&second)).await;

    let row = app.store.find_trusted_device(id).await.unwrap().unwrap();
    assert_eq!(row.user_id.to_string(), user);
    assert_eq!(row.token_hash.len(), 64, "a SHA-256 sized hash");
    assert!(!row.token_hash.contains(&token));
    // Keyed: a plain SHA-256 of the token, which anyone holding a copy of
    // the database could match against a stolen cookie, it is not.
    assert_ne!(row.token_hash, sha256_hex(&token));

    smtp::wait_for_mail(&address, "marked trusted").await;
    let logs = captured_logs();
    let audit = all_audit_text(&app).await;
    let mails = smtp::mails_to(&address).join("\n");
    for secret in [&token, &second] {
        assert!(!logs.contains(secret.as_str()), "a trusted browser's token in the logs");
        assert!(!audit.contains(secret.as_str()), "a trusted browser's token in the audit trail");
        assert!(!mails.contains(secret.as_str()), "a trusted browser's token in a mail");
    }
}

async fn trusting_again_replaces_the_browsers_record_and_the_count_is_capped(db: Db) {
    let app = spawn_app(db).await;
    let (user, bearer) = passkey_user(&app, "tr-again").await;
    let (_, first, _) = trusted(app.trust(&bearer, None).await).await;
    let (_, second, body) = trusted(app.trust(&bearer, Some(&first)).await).await;
    assert_ne!(first, second);
    assert!(!app.is_trusted(&user, Some(&first)).await, "the old token ends");
    assert!(app.is_trusted(&user, Some(&second)).await);
    let listed = app.trusted_list(&bearer, Some(&second)).await;
    assert_eq!(listed.len(), 1, "one record per browser: {listed:?}");
    assert_eq!(listed[0]["trusted_device_id"], body["trusted_device_id"]);

    // Another account's cookie in the same browser is left alone.
    let (other_user, other_bearer) = passkey_user(&app, "tr-again-other").await;
    let (_, other_token, _) = trusted(app.trust(&other_bearer, Some(&second)).await).await;
    assert!(app.is_trusted(&user, Some(&second)).await);
    assert!(app.is_trusted(&other_user, Some(&other_token)).await);
    assert_eq!(app.trusted_list(&other_bearer, None).await.len(), 1);

    // At most twenty live ones: the twenty-first is refused, with no
    // cookie and nothing stored.
    for _ in 1..20 {
        trusted(app.trust(&bearer, None).await).await;
    }
    assert_eq!(app.trusted_list(&bearer, None).await.len(), 20);
    let refused = app.trust(&bearer, None).await;
    assert!(refused.headers().get("set-cookie").is_none());
    assert_problem(refused, 422, "validation_failed").await;
    assert_eq!(app.trusted_list(&bearer, None).await.len(), 20);
    // Re-trusting a browser already counted still works: it replaces itself.
    trusted(app.trust(&bearer, Some(&second)).await).await;
}

async fn ended_trust_is_purged_after_a_while(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = passkey_user(&app, "tr-purge").await;
    let (_, _, ended) = trusted(app.trust(&bearer, None).await).await;
    let (_, _, live) = trusted(app.trust(&bearer, None).await).await;
    let ended = ended["trusted_device_id"].as_str().unwrap();
    let live = live["trusted_device_id"].as_str().unwrap();
    assert_eq!(app.untrust(&bearer, ended, None).await.status(), StatusCode::NO_CONTENT);
    let now = app.clock.now_ms();
    assert_eq!(app.store.purge_trusted_devices(now - 1).await.unwrap(), 0, "just ended: kept");
    assert_eq!(app.store.purge_trusted_devices(now + 1).await.unwrap(), 1);
    assert!(app.store.find_trusted_device(ended).await.unwrap().is_none());
    assert!(app.store.find_trusted_device(live).await.unwrap().is_some(), "live: kept");
}

fn uid(user_id: &str) -> UserId {
    UserId::parse(user_id.to_owned()).unwrap()
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
