//! The admin API: roles, user search and detail, device reset with an
//! enrolment code, lock and unlock, and the audit trail.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::authenticator::SoftAuthenticator;
use crate::fallback::PASSWORD;
use crate::helpers::{Db, TestApp, assert_problem, claims_of, on_both, spawn_app};
use crate::smtp;

on_both!(
    admin_endpoints_answer_401_without_a_token_and_403_to_users,
    the_cli_grants_and_revokes_the_admin_role,
    users_are_searched_with_a_cursor_and_shown_in_detail,
    a_device_reset_ends_everything_and_the_enrolment_code_binds_one_new_passkey_once,
    a_reset_mails_the_code_to_a_verified_address,
    locking_ends_sessions_and_refuses_sign_in_until_unlocked,
    actions_on_admins_need_a_reason,
    the_audit_trail_records_events_with_request_ids_and_no_secrets,
    the_audit_trail_is_append_only,
);

/// Registers `name`, makes it an admin, and signs in again so the token
/// carries the role. Returns the passkey and the admin's access token.
pub async fn admin(app: &TestApp, name: &str) -> (SoftAuthenticator, String) {
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, name).await;
    let user_id = tokens["user_id"].as_str().unwrap();
    app.core.admin.set_roles(None, user_id, &["admin".to_owned()], None).await.unwrap();
    let signed_in: Value = app.login(&mut passkey, None).await.json().await.unwrap();
    let bearer = signed_in["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&bearer)["roles"], json!(["admin"]));
    (passkey, bearer)
}

async fn admin_endpoints_answer_401_without_a_token_and_403_to_users(db: Db) {
    let app = spawn_app(db).await;
    let (_, admin_bearer) = admin(&app, "adm-root").await;
    let mut phone = app.authenticator();
    let user = app.register(&mut phone, "adm-user").await;
    let user_bearer = user["access_token"].as_str().unwrap();
    let id = user["user_id"].as_str().unwrap();
    let device = user["device_id"].as_str().unwrap();
    let endpoints: Vec<(&str, String, Value)> = vec![
        ("GET", "/v1/admin/users?q=adm".into(), Value::Null),
        ("GET", format!("/v1/admin/users/{id}"), Value::Null),
        ("POST", format!("/v1/admin/users/{id}/lock"), json!({"reason": "test"})),
        ("POST", format!("/v1/admin/users/{id}/unlock"), json!({"reason": "test"})),
        // A user making themselves admin, were the check missing.
        ("PUT", format!("/v1/admin/users/{id}/roles"), json!({"roles": ["admin"]})),
        ("GET", "/v1/admin/audit".into(), Value::Null),
        ("DELETE", format!("/v1/admin/users/{id}/devices/{device}?reason=test"), Value::Null),
        ("POST", format!("/v1/admin/users/{id}/reset-devices"), json!({"reason": "test"})),
    ];
    let send = |method: &str, path: &str, body: &Value, bearer: Option<&str>| {
        let mut request =
            app.client.request(method.parse().unwrap(), format!("{}{path}", app.address));
        if !body.is_null() {
            request = request.json(body);
        }
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send()
    };
    let before = app.fingerprint().await;
    for (method, path, body) in &endpoints {
        assert_problem(send(method, path, body, None).await.unwrap(), 401, "unauthorized").await;
        let as_user = send(method, path, body, Some(user_bearer)).await.unwrap();
        assert_problem(as_user, 403, "forbidden").await;
    }
    assert_eq!(before, app.fingerprint().await, "refused admin calls change nothing");
    for (method, path, body) in &endpoints {
        let status = send(method, path, body, Some(&admin_bearer)).await.unwrap().status();
        assert!(status.is_success(), "{method} {path} as admin: {status}");
    }
}

async fn the_cli_grants_and_revokes_the_admin_role(db: Db) {
    let app = spawn_app(db).await;
    let mut phone = app.authenticator();
    app.register(&mut phone, "adm-cli").await;
    let run = |verb: &str, name: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_passgate"))
            .args(["admin", verb, name])
            .env("PASSGATE__DATABASE__URL", &app.db.url)
            .output()
            .expect("run passgate")
    };
    let granted = run("grant", "adm-cli");
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    assert_eq!(String::from_utf8_lossy(&granted.stdout).trim(), "adm-cli: roles [admin]");
    let tokens: Value = app.login(&mut phone, None).await.json().await.unwrap();
    assert_eq!(claims_of(tokens["access_token"].as_str().unwrap())["roles"], json!(["admin"]));
    let me: Value = app.me(tokens["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(me["roles"], json!(["admin"]));
    // A refresh picks up a revocation.
    assert!(run("revoke", "adm-cli").status.success());
    let refreshed: Value =
        app.refresh(tokens["refresh_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(claims_of(refreshed["access_token"].as_str().unwrap())["roles"], json!([]));
    // A revoked admin's unexpired token no longer opens the admin API.
    assert_problem(
        app.get("/v1/admin/users", Some(tokens["access_token"].as_str().unwrap())).await,
        403,
        "forbidden",
    )
    .await;
    let missing = run("grant", "adm-nobody");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no account named"));
}

async fn users_are_searched_with_a_cursor_and_shown_in_detail(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "adm-search").await;
    for n in 0..5 {
        app.register(&mut app.authenticator(), &format!("findme-{n}")).await;
    }
    let mut names = Vec::new();
    let mut cursor = String::new();
    for _ in 0..3 {
        let page: Value = app
            .get(&format!("/v1/admin/users?q=FINDME&limit=2&cursor={cursor}"), Some(&bearer))
            .await
            .json()
            .await
            .unwrap();
        for user in page["users"].as_array().unwrap() {
            names.push(user["username"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(names, ["findme-0", "findme-1", "findme-2", "findme-3", "findme-4"]);
    // LIKE wildcards are matched as themselves.
    let none: Value = app.get("/v1/admin/users?q=%25", Some(&bearer)).await.json().await.unwrap();
    assert_eq!(none["users"], json!([]));

    let page: Value =
        app.get("/v1/admin/users?q=findme-3", Some(&bearer)).await.json().await.unwrap();
    let id = page["users"][0]["user_id"].as_str().unwrap();
    let detail: Value =
        app.get(&format!("/v1/admin/users/{id}"), Some(&bearer)).await.json().await.unwrap();
    assert_eq!(detail["username"], "findme-3");
    assert_eq!(detail["factors"], json!(["passkey"]));
    assert_eq!(detail["locked"], false);
    assert_eq!(detail["devices"].as_array().unwrap().len(), 1);
    assert_eq!(detail["sessions"].as_array().unwrap().len(), 1);
    let unknown = uuid::Uuid::new_v4();
    assert_problem(
        app.get(&format!("/v1/admin/users/{unknown}"), Some(&bearer)).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(app.get("/v1/admin/users/not-an-id", Some(&bearer)).await, 404, "not_found")
        .await;
}

async fn a_device_reset_ends_everything_and_the_enrolment_code_binds_one_new_passkey_once(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "adm-reset").await;
    let mut lost = app.authenticator();
    let tokens = app.register(&mut lost, "lost-phone").await;
    let second: Value = app.login(&mut lost, None).await.json().await.unwrap();
    let id = tokens["user_id"].as_str().unwrap();
    let path = format!("/v1/admin/users/{id}/reset-devices");
    assert_problem(
        app.post_bearer(&path, &bearer, &json!({"reason": "  "})).await,
        422,
        "validation_failed",
    )
    .await;
    let reset = app.post_bearer(&path, &bearer, &json!({"reason": "phone stolen"})).await;
    assert_eq!(reset.status(), StatusCode::OK);
    let reset: Value = reset.json().await.unwrap();
    assert_eq!(reset["revoked_devices"], 1);
    assert_eq!(reset["revoked_sessions"], 2);
    assert!(reset["enrolment_code_sent_to"].is_null(), "no verified address");
    let code = reset["enrolment_code"].as_str().unwrap().to_owned();

    // Every session and refresh token issued before the reset is dead, and
    // the old passkey no longer signs in.
    for signed_in in [&tokens, &second] {
        assert_problem(
            app.refresh(signed_in["refresh_token"].as_str().unwrap()).await,
            401,
            "invalid_credentials",
        )
        .await;
        assert_problem(
            app.me(signed_in["access_token"].as_str().unwrap()).await,
            401,
            "unauthorized",
        )
        .await;
    }
    assert_problem(app.login(&mut lost, None).await, 401, "invalid_credentials").await;

    // A wrong code, then the right one binds a new passkey, once.
    let wrong = app
        .post("/v1/enrol/start", &json!({"username": "lost-phone", "code": "aaaaa-aaaaa"}))
        .await;
    assert_problem(wrong, 401, "invalid_code").await;
    // Prompts the user cancelled: the right code is not used up by them
    // (five tries are for wrong codes).
    for _ in 0..6 {
        let cancelled =
            app.post("/v1/enrol/start", &json!({"username": "lost-phone", "code": code})).await;
        assert_eq!(cancelled.status(), StatusCode::OK);
    }
    let mut new_phone = app.authenticator();
    let started =
        app.post("/v1/enrol/start", &json!({"username": "lost-phone", "code": code})).await;
    assert_eq!(started.status(), StatusCode::OK);
    let started: Value = started.json().await.unwrap();
    let credential = new_phone.register(&started["publicKey"]);
    let body = json!({"ceremony_id": started["ceremony_id"], "credential": credential, "device_name": "New phone"});
    let enrolled = app.post("/v1/enrol/finish", &body).await;
    assert_eq!(enrolled.status(), StatusCode::CREATED);
    let enrolled: Value = enrolled.json().await.unwrap();
    assert_eq!(enrolled["user_id"], id);
    assert_eq!(app.login(&mut new_phone, None).await.status(), StatusCode::OK);
    let again = app.post("/v1/enrol/start", &json!({"username": "lost-phone", "code": code})).await;
    assert_problem(again, 401, "invalid_code").await;
    let devices = app.devices(enrolled["access_token"].as_str().unwrap()).await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["name"], "New phone");
}

async fn a_reset_mails_the_code_to_a_verified_address(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "adm-mail").await;
    let account = app.fallback_account("reset-mail").await;
    let address = format!("reset-{:?}-{}@example.test", app.db.db, app.port).to_lowercase();
    app.post_bearer("/v1/me/email", &account.access_token, &json!({"email": address})).await;
    let code = smtp::last_code_to(&address);
    app.post_bearer("/v1/me/email/verify", &account.access_token, &json!({"code": code})).await;
    let user = app.store.find_user_by_username("reset-mail").await.unwrap().unwrap();
    let path = format!("/v1/admin/users/{}/reset-devices", user.user_id);
    let reset: Value =
        app.post_bearer(&path, &bearer, &json!({"reason": "lost"})).await.json().await.unwrap();
    assert_eq!(reset["enrolment_code_sent_to"], address.as_str());
    assert!(reset["enrolment_code"].is_null(), "mailed, not shown to the admin");
    let mail = smtp::mails_to(&address).pop().unwrap();
    assert!(mail.contains("Subject: Bind a new device"));
    // When, from where (the admin's request), and what to do if unasked.
    assert!(mail.contains("When: ") && mail.contains("From: 127.0.0.1"), "{mail}");
    assert!(mail.contains("If you did not ask for this"), "{mail}");
    let code: String = mail.split("    ").nth(1).unwrap().chars().take(11).collect();
    let started =
        app.post("/v1/enrol/start", &json!({"username": "reset-mail", "code": code})).await;
    assert_eq!(started.status(), StatusCode::OK);
    // The fallback still works after a reset: the password was not a device.
    app.mfa_token("reset-mail", PASSWORD).await;
}

async fn locking_ends_sessions_and_refuses_sign_in_until_unlocked(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "adm-lock").await;
    let mut phone = app.authenticator();
    let tokens = app.register(&mut phone, "lock-me").await;
    let id = tokens["user_id"].as_str().unwrap();
    let locked = app.post_bearer(&format!("/v1/admin/users/{id}/lock"), &bearer, &json!({})).await;
    assert_eq!(locked.status(), StatusCode::OK);
    assert_eq!(locked.json::<Value>().await.unwrap()["locked"], true);
    assert_problem(app.me(tokens["access_token"].as_str().unwrap()).await, 401, "unauthorized")
        .await;
    // The passkey proved who this is, so they are told why (not 401).
    assert_problem(app.login(&mut phone, Some("lock-me")).await, 403, "account_locked").await;
    let unlocked =
        app.post_bearer(&format!("/v1/admin/users/{id}/unlock"), &bearer, &json!({})).await;
    assert_eq!(unlocked.json::<Value>().await.unwrap()["locked"], false);
    assert_eq!(app.login(&mut phone, Some("lock-me")).await.status(), StatusCode::OK);
    // An admin cannot lock themselves out.
    let me = claims_of(&bearer)["sub"].as_str().unwrap().to_owned();
    assert_problem(
        app.post_bearer(&format!("/v1/admin/users/{me}/lock"), &bearer, &json!({"reason": "oops"}))
            .await,
        403,
        "forbidden",
    )
    .await;
}

async fn actions_on_admins_need_a_reason(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "adm-one").await;
    let (_, other) = admin(&app, "adm-two").await;
    let other_id = claims_of(&other)["sub"].as_str().unwrap().to_owned();
    let lock = format!("/v1/admin/users/{other_id}/lock");
    assert_problem(app.post_bearer(&lock, &bearer, &json!({})).await, 422, "validation_failed")
        .await;
    assert_eq!(
        app.post_bearer(&lock, &bearer, &json!({"reason": "left the company"})).await.status(),
        StatusCode::OK
    );
    let roles = format!("/v1/admin/users/{other_id}/roles");
    assert_problem(
        app.put_bearer(&roles, &bearer, &json!({"roles": []})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.put_bearer(&roles, &bearer, &json!({"roles": ["root"], "reason": "x"})).await,
        422,
        "validation_failed",
    )
    .await;
    let revoked = app.put_bearer(&roles, &bearer, &json!({"roles": [], "reason": "left"})).await;
    assert_eq!(revoked.json::<Value>().await.unwrap()["roles"], json!([]));
    // Once not an admin, no reason is needed.
    let unlock = format!("/v1/admin/users/{other_id}/unlock");
    assert_eq!(app.post_bearer(&unlock, &bearer, &json!({})).await.status(), StatusCode::OK);
}

async fn the_audit_trail_records_events_with_request_ids_and_no_secrets(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "adm-audit").await;
    let account = app.fallback_account("audited").await;
    let user = app.store.find_user_by_username("audited").await.unwrap().unwrap();
    let failed = app.password_login("audited", "a wrong password here").await;
    let failed_request = failed.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mfa = app.mfa_token("audited", PASSWORD).await;
    app.totp_login(&mfa, &account.recovery_codes[0]).await;
    let reset = app
        .post_bearer(
            &format!("/v1/admin/users/{}/reset-devices", user.user_id),
            &bearer,
            &json!({"reason": "lost it, wrote to audited@example.com"}),
        )
        .await;
    let reset: Value = reset.json().await.unwrap();
    let code = reset["enrolment_code"].as_str().unwrap().to_owned();

    let page: Value = app
        .get(&format!("/v1/admin/audit?user_id={}&limit=1000", user.user_id), Some(&bearer))
        .await
        .json()
        .await
        .unwrap();
    let events = page["events"].as_array().unwrap();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for expected in [
        "user_registered",
        "password_set",
        "totp_enrolled",
        "login",
        "recovery_code_used",
        "devices_reset",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let failure = events
        .iter()
        .find(|e| e["request_id"] == failed_request.as_str())
        .expect("the failed sign-in's row carries its request id");
    assert_eq!(
        (failure["event"].as_str(), failure["outcome"].as_str()),
        (Some("login"), Some("failure"))
    );
    assert_eq!(failure["client_ip"], "127.0.0.x", "IPs are masked in exports");
    let reset_row = events.iter().find(|e| e["event"] == "devices_reset").unwrap();
    assert_eq!(reset_row["actor_id"], claims_of(&bearer)["sub"]);
    assert_eq!(reset_row["reason"], "lost it, wrote to a***@example.com");
    // Ordered by time, filterable by event and time.
    let ids: Vec<&str> = events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Newest first, two at a time, each page's cursor leading to older rows.
    let mut newest = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!(
            "/v1/admin/audit?user_id={}&order=newest&limit=2&cursor={cursor}",
            user.user_id
        );
        let page: Value = app.get(&path, Some(&bearer)).await.json().await.unwrap();
        let rows = page["events"].as_array().unwrap();
        assert!(rows.len() <= 2);
        newest.extend(rows.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let oldest: Vec<String> = ids.iter().rev().map(|id| id.to_string()).collect();
    assert_eq!(newest, oldest, "newest first is oldest first reversed");
    assert_problem(
        app.get("/v1/admin/audit?order=sideways", Some(&bearer)).await,
        422,
        "validation_failed",
    )
    .await;
    let only: Value =
        app.get("/v1/admin/audit?event=devices_reset", Some(&bearer)).await.json().await.unwrap();
    assert_eq!(only["events"].as_array().unwrap().len(), 1);
    let future: Value = app
        .get("/v1/admin/audit?since=2999-01-01T00:00:00Z", Some(&bearer))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["events"], json!([]));
    assert_problem(
        app.get("/v1/admin/audit?since=yesterday", Some(&bearer)).await,
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.get("/v1/admin/audit?format=xml", Some(&bearer)).await,
        422,
        "validation_failed",
    )
    .await;

    let csv = app.get("/v1/admin/audit?format=csv", Some(&bearer)).await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("event_id,occurred_at,event,outcome,user_id,actor_id,device_id,client_ip,user_agent,reason,request_id\r\n"));
    assert!(csv.contains(",devices_reset,success,"));
    assert!(!csv.contains("127.0.0.1"));

    // No secret in the table or the exports.
    let table = all_audit_text(&app).await;
    assert!(table.contains("devices_reset"), "the dump works");
    let mut secrets = vec![
        PASSWORD.to_owned(),
        "a wrong password here".to_owned(),
        code,
        mfa,
        bearer.clone(),
        account.access_token.clone(),
    ];
    secrets.extend(account.recovery_codes.iter().cloned());
    for secret in &secrets {
        for text in [&table, &csv, &page.to_string()] {
            assert!(!text.contains(secret.as_str()), "a secret in the audit trail: {secret}");
        }
    }
}

pub async fn all_audit_text(app: &TestApp) -> String {
    let rows: Vec<(String,)> = match app.db.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
            sqlx::query_as("select event_id || event || outcome || coalesce(user_id, '') || coalesce(actor_id, '') || coalesce(device_id, '') || coalesce(client_ip, '') || coalesce(user_agent, '') || coalesce(reason, '') || coalesce(request_id, '') from audit_event").fetch_all(&pool).await.unwrap()
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db.url).await.unwrap();
            sqlx::query_as("select event_id || event || outcome || coalesce(user_id, '') || coalesce(actor_id, '') || coalesce(device_id, '') || coalesce(client_ip, '') || coalesce(user_agent, '') || coalesce(reason, '') || coalesce(request_id, '') from audit_event").fetch_all(&pool).await.unwrap()
        }
    };
    rows.into_iter().map(|(r,)| r).collect::<Vec<_>>().join("\n")
}

async fn the_audit_trail_is_append_only(db: Db) {
    let app = spawn_app(db).await;
    app.register(&mut app.authenticator(), "adm-append").await;
    let (update, delete) =
        ("update audit_event set reason = 'rewritten'", "delete from audit_event");
    match app.db.db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db.url).await.unwrap();
            for sql in [update, delete] {
                let error = sqlx::query(sql).execute(&pool).await.unwrap_err().to_string();
                assert!(error.contains("append-only"), "{sql}: {error}");
            }
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db.url).await.unwrap();
            for sql in [update, delete] {
                let error = sqlx::query(sql).execute(&pool).await.unwrap_err().to_string();
                assert!(error.contains("append-only"), "{sql}: {error}");
            }
        }
    }
    assert!(all_audit_text(&app).await.contains("user_registered"));
}
