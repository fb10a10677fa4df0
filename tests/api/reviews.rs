//! The review queue (issue 20 item 3): a held sign-in or payment, seen
//! and appealed by its owner with the review's token, approved or denied
//! by an admin with a reason; mails both ways; one decision wins.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::admin;
use crate::helpers::{Db, TestApp, assert_problem, on_both, spawn_app};
use crate::smtp;
use passgate::domain::UserId;
use passgate::service::reviews::ReviewTicket;
use passgate::service::risk::{Held, HeldKind, Reason};

on_both!(
    the_owner_sees_the_hold_and_appeals_once,
    a_wrong_token_and_an_unknown_review_look_the_same_and_change_nothing,
    an_appeal_must_be_1_to_1000_characters,
    admins_list_the_queue_oldest_first_by_status_and_page,
    an_approval_lets_exactly_one_attempt_through,
    a_denial_is_final_and_its_reason_reaches_the_owner,
    decisions_need_an_admin_a_reason_and_a_held_review,
    an_admin_cannot_decide_a_review_of_their_own_account,
    an_expired_review_cannot_be_decided_or_appealed,
    fifty_racing_decisions_leave_exactly_one,
    the_owner_and_the_admins_are_mailed,
    the_audit_trail_names_the_admin_and_no_token,
    housekeeping_purges_long_expired_reviews,
    a_decision_retried_with_its_idempotency_key_gets_the_first_answer,
);

/// A user with a verified address (set directly: the mail flow is tested
/// elsewhere); returns (user_id, address).
async fn user_with_mail(app: &TestApp, name: &str) -> (String, String) {
    let mut passkey = app.authenticator();
    let tokens = app.register(&mut passkey, name).await;
    let user_id = tokens["user_id"].as_str().unwrap().to_owned();
    let address = format!("{name}-{:?}-{}@example.test", app.db.db, app.port).to_lowercase();
    app.store.set_email(&user_id, &address).await.unwrap();
    assert!(app.store.verify_email(&user_id, &address).await.unwrap());
    (user_id, address)
}

fn reasons() -> Vec<Reason> {
    vec![
        Reason {
            rule: "new_network".into(),
            score: 40,
            words: "a sign-in from a network this account has not used before".into(),
        },
        Reason {
            rule: "new_user_agent".into(),
            score: 35,
            words: "a browser this account has not used before".into(),
        },
    ]
}

async fn hold(app: &TestApp, user_id: &str, kind: HeldKind, subject: &str) -> ReviewTicket {
    let held = Held {
        user_id: UserId::parse(user_id.to_owned()).unwrap(),
        kind,
        subject: subject.to_owned(),
        score: 75,
        reasons: reasons(),
        context: json!({"network": "203.0.113.0/24", "user_agent": "Firefox"}),
    };
    app.core.reviews.hold(held).await.unwrap()
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method.parse().unwrap(), format!("{}{path}", app.address));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn owner_get(app: &TestApp, ticket: &ReviewTicket) -> reqwest::Response {
    let auth = format!("Review {}", ticket.token.expose());
    send(app, "GET", &format!("/v1/reviews/{}", ticket.review_id), Some(&auth), None).await
}

async fn appeal(app: &TestApp, ticket: &ReviewTicket, message: &str) -> reqwest::Response {
    let auth = format!("Review {}", ticket.token.expose());
    let path = format!("/v1/reviews/{}/appeal", ticket.review_id);
    send(app, "POST", &path, Some(&auth), Some(json!({"message": message}))).await
}

async fn decide(
    app: &TestApp,
    bearer: &str,
    review_id: &str,
    verdict: &str,
    reason: &str,
) -> reqwest::Response {
    let path = format!("/v1/admin/reviews/{review_id}/{verdict}");
    app.post_bearer(&path, bearer, &json!({"reason": reason})).await
}

async fn the_owner_sees_the_hold_and_appeals_once(db: Db) {
    let app = spawn_app(db).await;
    let (user_id, _) = user_with_mail(&app, "rv-owner").await;
    let ticket = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    let response = owner_get(&app, &ticket).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["review_id"], ticket.review_id.as_str());
    assert_eq!(seen["status"], "held");
    assert_eq!(seen["kind"], "signin");
    assert_eq!(seen["expired"], false);
    assert_eq!(seen["reasons"][0]["words"], reasons()[0].words.as_str());
    assert!(seen["appeal"].is_null());
    // The owner is not shown the reviewer's context, score or subject.
    assert!(seen.get("context").is_none() && seen.get("subject").is_none(), "{seen}");
    assert!(seen.get("decided_by").is_none(), "{seen}");
    // The scheme is case-insensitive, as for Bearer.
    let lower = format!("review {}", ticket.token.expose());
    let path = format!("/v1/reviews/{}", ticket.review_id);
    assert_eq!(send(&app, "GET", &path, Some(&lower), None).await.status(), StatusCode::OK);

    let appealed = appeal(&app, &ticket, "  That was me, on holiday in Lisbon.  ").await;
    assert_eq!(appealed.status(), StatusCode::OK);
    let appealed: Value = appealed.json().await.unwrap();
    assert_eq!(appealed["appeal"], "That was me, on holiday in Lisbon.");
    assert!(appealed["appealed_at"].is_string());
    // One appeal: a second (which would mail every admin again) is refused
    // and the first stays.
    let again = appeal(&app, &ticket, "Please, it was me").await;
    assert_problem(again, 409, "review_closed").await;
    let seen: Value = owner_get(&app, &ticket).await.json().await.unwrap();
    assert_eq!(seen["appeal"], "That was me, on holiday in Lisbon.");
}

async fn a_wrong_token_and_an_unknown_review_look_the_same_and_change_nothing(db: Db) {
    let app = spawn_app(db).await;
    let (user_id, _) = user_with_mail(&app, "rv-guess").await;
    let ticket = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    let other = hold(&app, &user_id, HeldKind::Payment, "digest").await;
    let before = app.fingerprint().await;
    let id = &ticket.review_id;
    let wrong = format!("Review {}", passgate::domain::OpaqueToken::generate().expose());
    let others_token = format!("Review {}", other.token.expose());
    let unknown = uuid::Uuid::now_v7().to_string();
    let mine = format!("Review {}", ticket.token.expose());
    let cases: Vec<(String, Option<String>)> = vec![
        (id.clone(), Some(wrong.clone())),
        // The token of another review of the same owner opens only that one.
        (id.clone(), Some(others_token)),
        (unknown.clone(), Some(mine.clone())),
        (unknown, Some(wrong)),
        (id.clone(), Some("Review not-a-token".into())),
        ("../admin".into(), Some(mine.clone())),
    ];
    let mut details = std::collections::BTreeSet::new();
    for (review, auth) in &cases {
        let got = send(&app, "GET", &format!("/v1/reviews/{review}"), auth.as_deref(), None).await;
        if review == "../admin" {
            assert_eq!(got.status(), StatusCode::NOT_FOUND);
            continue;
        }
        details.insert(assert_problem(got, 404, "not_found").await["detail"].to_string());
        let path = format!("/v1/reviews/{review}/appeal");
        let body = Some(json!({"message": "me"}));
        let appealed = send(&app, "POST", &path, auth.as_deref(), body).await;
        details.insert(assert_problem(appealed, 404, "not_found").await["detail"].to_string());
    }
    assert_eq!(details.len(), 1, "one answer for all: {details:?}");
    // No token, or a bearer token in its place: 401.
    for auth in [None, Some(format!("Bearer {}", ticket.token.expose())), Some("Review ".into())] {
        let got = send(&app, "GET", &format!("/v1/reviews/{id}"), auth.as_deref(), None).await;
        assert_problem(got, 401, "unauthorized").await;
    }
    assert_eq!(before, app.fingerprint().await, "refused calls change nothing");
}

async fn an_appeal_must_be_1_to_1000_characters(db: Db) {
    let app = spawn_app(db).await;
    let (user_id, _) = user_with_mail(&app, "rv-long").await;
    let ticket = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    for message in [String::new(), "   \n ".into(), "x".repeat(1001)] {
        assert_problem(appeal(&app, &ticket, &message).await, 422, "validation_failed").await;
    }
    let auth = format!("Review {}", ticket.token.expose());
    let path = format!("/v1/reviews/{}/appeal", ticket.review_id);
    for body in [json!({}), json!({"message": 5})] {
        let got = send(&app, "POST", &path, Some(&auth), Some(body)).await;
        assert_problem(got, 422, "validation_failed").await;
    }
    let seen: Value = owner_get(&app, &ticket).await.json().await.unwrap();
    assert!(seen["appeal"].is_null(), "no refused appeal was kept");
    // 1000 characters, not bytes: Chinese text counts by character.
    let longest = "我".repeat(1000);
    assert_eq!(appeal(&app, &ticket, &longest).await.status(), StatusCode::OK);
}

async fn admins_list_the_queue_oldest_first_by_status_and_page(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "rv-lister").await;
    let (user_id, _) = user_with_mail(&app, "rv-listed").await;
    let mut tickets = Vec::new();
    for n in 0..5 {
        tickets.push(hold(&app, &user_id, HeldKind::Payment, &format!("digest-{n}")).await);
        app.clock.advance(Duration::from_millis(5));
    }
    let page: Value =
        app.get("/v1/admin/reviews?limit=2", Some(&bearer)).await.json().await.unwrap();
    let ids = |page: &Value| -> Vec<String> {
        page["reviews"].as_array().unwrap().iter().map(|r| r["review_id"].to_string()).collect()
    };
    assert_eq!(ids(&page).len(), 2);
    assert_eq!(page["reviews"][0]["review_id"], tickets[0].review_id.as_str());
    assert_eq!(page["reviews"][0]["username"], "rv-listed");
    assert_eq!(page["reviews"][0]["score"], 75);
    assert_eq!(page["reviews"][0]["context"]["network"], "203.0.113.0/24");
    assert_eq!(page["reviews"][0]["subject"], "digest-0");
    assert!(page["reviews"][0].get("token_hash").is_none());
    let mut seen = ids(&page);
    let mut cursor = page["next_cursor"].as_str().unwrap().to_owned();
    loop {
        let path = format!("/v1/admin/reviews?limit=2&cursor={cursor}");
        let page: Value = app.get(&path, Some(&bearer)).await.json().await.unwrap();
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = tickets.iter().map(|t| format!("\"{}\"", t.review_id)).collect();
    assert_eq!(seen, expected, "every held review once, oldest first");

    let first = &tickets[0].review_id;
    assert_eq!(decide(&app, &bearer, first, "deny", "not them").await.status(), StatusCode::OK);
    let held: Value = app.get("/v1/admin/reviews", Some(&bearer)).await.json().await.unwrap();
    assert_eq!(held["reviews"].as_array().unwrap().len(), 4, "held is the default filter");
    let denied: Value =
        app.get("/v1/admin/reviews?status=denied", Some(&bearer)).await.json().await.unwrap();
    assert_eq!(denied["reviews"].as_array().unwrap().len(), 1);
    assert_eq!(denied["reviews"][0]["decision_reason"], "not them");
    let all: Value =
        app.get("/v1/admin/reviews?status=all", Some(&bearer)).await.json().await.unwrap();
    assert_eq!(all["reviews"].as_array().unwrap().len(), 5);
    let one: Value =
        app.get(&format!("/v1/admin/reviews/{first}"), Some(&bearer)).await.json().await.unwrap();
    assert_eq!(one["status"], "denied");
    let unknown = format!("/v1/admin/reviews/{}", uuid::Uuid::now_v7());
    assert_problem(app.get(&unknown, Some(&bearer)).await, 404, "not_found").await;
    let bad = app.get("/v1/admin/reviews?status=pending", Some(&bearer)).await;
    assert_problem(bad, 422, "validation_failed").await;
}

async fn an_approval_lets_exactly_one_attempt_through(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "rv-approver").await;
    let (user_id, _) = user_with_mail(&app, "rv-approved").await;
    let id = UserId::parse(user_id.clone()).unwrap();
    let reviews = &app.core.reviews;
    let ticket = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    assert!(!reviews.take_approval(&id, HeldKind::SignIn, "passkey").await.unwrap(), "held");
    let approved = decide(&app, &bearer, &ticket.review_id, "approve", "it was her").await;
    assert_eq!(approved.status(), StatusCode::OK);
    let approved: Value = approved.json().await.unwrap();
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decision_reason"], "it was her");
    // Another kind or subject is not what was approved.
    assert!(!reviews.take_approval(&id, HeldKind::Payment, "passkey").await.unwrap());
    assert!(!reviews.take_approval(&id, HeldKind::SignIn, "password_totp").await.unwrap());
    // Fifty attempts at once: exactly one goes through.
    let attempts = (0..50).map(|_| {
        let reviews = reviews.clone();
        tokio::spawn(async move { reviews.take_approval(&id, HeldKind::SignIn, "passkey").await })
    });
    let mut through = 0;
    for attempt in futures_util::future::join_all(attempts).await {
        through += usize::from(attempt.unwrap().unwrap());
    }
    assert_eq!(through, 1, "one approval, one attempt");
    let seen: Value = owner_get(&app, &ticket).await.json().await.unwrap();
    assert_eq!(seen["status"], "used");
    assert!(!reviews.take_approval(&id, HeldKind::SignIn, "passkey").await.unwrap());

    // An approval not used within its window lets nothing through.
    let late = hold(&app, &user_id, HeldKind::Payment, "digest").await;
    assert_eq!(
        decide(&app, &bearer, &late.review_id, "approve", "ok").await.status(),
        StatusCode::OK
    );
    app.clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    assert!(!reviews.take_approval(&id, HeldKind::Payment, "digest").await.unwrap());
    let seen: Value = owner_get(&app, &late).await.json().await.unwrap();
    assert_eq!(
        (seen["status"].as_str(), seen["expired"].as_bool()),
        (Some("approved"), Some(true))
    );
}

async fn a_denial_is_final_and_its_reason_reaches_the_owner(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "rv-denier").await;
    let (user_id, _) = user_with_mail(&app, "rv-denied").await;
    let id = UserId::parse(user_id.clone()).unwrap();
    let ticket = hold(&app, &user_id, HeldKind::Payment, "digest").await;
    let reason = "the payee is on a fraud list";
    let denied = decide(&app, &bearer, &ticket.review_id, "deny", reason).await;
    assert_eq!(denied.status(), StatusCode::OK);
    let seen: Value = owner_get(&app, &ticket).await.json().await.unwrap();
    assert_eq!(seen["status"], "denied");
    assert_eq!(seen["decision_reason"], reason);
    assert!(seen["decided_at"].is_string());
    assert!(!app.core.reviews.take_approval(&id, HeldKind::Payment, "digest").await.unwrap());
    assert_problem(appeal(&app, &ticket, "but it was me").await, 409, "review_closed").await;
}

async fn decisions_need_an_admin_a_reason_and_a_held_review(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "rv-strict").await;
    let (user_id, _) = user_with_mail(&app, "rv-subject").await;
    let mut phone = app.authenticator();
    let user = app.register(&mut phone, "rv-nobody").await;
    let user_bearer = user["access_token"].as_str().unwrap().to_owned();
    let ticket = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    let id = &ticket.review_id;
    let before = app.fingerprint().await;
    let routes = [
        ("GET", "/v1/admin/reviews".to_owned(), None),
        ("GET", format!("/v1/admin/reviews/{id}"), None),
        ("POST", format!("/v1/admin/reviews/{id}/approve"), Some(json!({"reason": "ok"}))),
        ("POST", format!("/v1/admin/reviews/{id}/deny"), Some(json!({"reason": "no"}))),
    ];
    for (method, path, body) in &routes {
        let none = send(&app, method, path, None, body.clone()).await;
        assert_problem(none, 401, "unauthorized").await;
        let as_user =
            send(&app, method, path, Some(&format!("Bearer {user_bearer}")), body.clone()).await;
        assert_problem(as_user, 403, "forbidden").await;
        // The review's token is no admin's bearer.
        let token = format!("Bearer {}", ticket.token.expose());
        assert_problem(
            send(&app, method, path, Some(&token), body.clone()).await,
            401,
            "unauthorized",
        )
        .await;
    }
    for reason in ["", "   ", &"r".repeat(501)] {
        for verdict in ["approve", "deny"] {
            let got = decide(&app, &bearer, id, verdict, reason).await;
            assert_problem(got, 422, "validation_failed").await;
        }
    }
    let path = format!("/v1/admin/reviews/{id}/approve");
    assert_problem(app.post_bearer(&path, &bearer, &json!({})).await, 422, "validation_failed")
        .await;
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_problem(decide(&app, &bearer, &unknown, "approve", "ok").await, 404, "not_found").await;
    assert_eq!(before, app.fingerprint().await, "refused decisions change nothing");

    // A stale admin sign-in (a phished password and code would give no
    // fresh passkey either) cannot decide.
    app.clock.advance(Duration::from_secs(3600));
    let stale = decide(&app, &bearer, id, "approve", "ok").await;
    assert!(matches!(stale.status().as_u16(), 401 | 403), "{}", stale.status());
    let (_, fresh) = admin(&app, "rv-strict-2").await;
    assert_eq!(decide(&app, &fresh, id, "deny", "no").await.status(), StatusCode::OK);
    // Deciding twice: the first decision stays.
    assert_problem(decide(&app, &fresh, id, "approve", "yes").await, 409, "review_closed").await;
    assert_problem(decide(&app, &fresh, id, "deny", "again").await, 409, "review_closed").await;
    let seen: Value = owner_get(&app, &ticket).await.json().await.unwrap();
    assert_eq!(
        (seen["status"].as_str(), seen["decision_reason"].as_str()),
        (Some("denied"), Some("no"))
    );
}

async fn an_admin_cannot_decide_a_review_of_their_own_account(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "rv-rogue").await;
    let me: Value = app.me(&bearer).await.json().await.unwrap();
    let my_id = me["user_id"].as_str().unwrap();
    let ticket = hold(&app, my_id, HeldKind::Payment, "digest").await;
    for verdict in ["approve", "deny"] {
        let got = decide(&app, &bearer, &ticket.review_id, verdict, "trust me").await;
        assert_problem(got, 403, "forbidden").await;
    }
    let seen: Value = owner_get(&app, &ticket).await.json().await.unwrap();
    assert_eq!(seen["status"], "held");
    // Another admin may.
    let (_, other) = admin(&app, "rv-colleague").await;
    assert_eq!(
        decide(&app, &other, &ticket.review_id, "approve", "checked by phone").await.status(),
        StatusCode::OK
    );
}

async fn an_expired_review_cannot_be_decided_or_appealed(db: Db) {
    let app = spawn_app(db).await;
    let (user_id, _) = user_with_mail(&app, "rv-late").await;
    let ticket = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    app.clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    let (_, bearer) = admin(&app, "rv-slow").await;
    let seen: Value = owner_get(&app, &ticket).await.json().await.unwrap();
    assert_eq!((seen["status"].as_str(), seen["expired"].as_bool()), (Some("held"), Some(true)));
    assert_problem(appeal(&app, &ticket, "me").await, 409, "review_closed").await;
    let got = decide(&app, &bearer, &ticket.review_id, "approve", "ok").await;
    assert_problem(got, 409, "review_closed").await;
    // Out of the waiting queue, in the expired one.
    let held: Value = app.get("/v1/admin/reviews", Some(&bearer)).await.json().await.unwrap();
    assert!(held["reviews"].as_array().unwrap().is_empty());
    let expired: Value =
        app.get("/v1/admin/reviews?status=expired", Some(&bearer)).await.json().await.unwrap();
    assert_eq!(expired["reviews"][0]["review_id"], ticket.review_id.as_str());
    let id = UserId::parse(user_id).unwrap();
    assert!(!app.core.reviews.take_approval(&id, HeldKind::SignIn, "passkey").await.unwrap());
}

async fn fifty_racing_decisions_leave_exactly_one(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "rv-racer").await;
    let (user_id, _) = user_with_mail(&app, "rv-raced").await;
    let ticket = hold(&app, &user_id, HeldKind::Payment, "digest").await;
    let path =
        |verdict: &str| format!("{}/v1/admin/reviews/{}/{verdict}", app.address, ticket.review_id);
    let requests = (0..50).map(|n| {
        let verdict = if n % 2 == 0 { "approve" } else { "deny" };
        app.client
            .post(path(verdict))
            .bearer_auth(&bearer)
            .json(&json!({"reason": format!("decision {n}")}))
            .send()
    });
    let mut won = Vec::new();
    for (n, response) in futures_util::future::join_all(requests).await.into_iter().enumerate() {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => won.push(n),
            409 => {
                assert_problem(response, 409, "review_closed").await;
            }
            other => panic!("decision {n}: {other}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one decision wins: {won:?}");
    let seen: Value = owner_get(&app, &ticket).await.json().await.unwrap();
    let expected_status = if won[0] % 2 == 0 { "approved" } else { "denied" };
    assert_eq!(seen["status"], expected_status);
    assert_eq!(seen["decision_reason"], format!("decision {}", won[0]));
    let audited = app
        .observer(Duration::from_secs(5))
        .await
        .count(
            "select count(*) from audit_event where event in ('review_approved', 'review_denied') \
             and reason like '%' || $1 || '%'",
            &ticket.review_id,
        )
        .await;
    assert_eq!(audited, 1, "one decision, one audit row");
}

async fn the_owner_and_the_admins_are_mailed(db: Db) {
    let app = spawn_app(db).await;
    let (admin_id, admin_address) = {
        let (_, bearer) = admin(&app, "rv-mailadmin").await;
        let me: Value = app.me(&bearer).await.json().await.unwrap();
        let id = me["user_id"].as_str().unwrap().to_owned();
        let address =
            format!("rv-mailadmin-{:?}-{}@example.test", app.db.db, app.port).to_lowercase();
        app.store.set_email(&id, &address).await.unwrap();
        app.store.verify_email(&id, &address).await.unwrap();
        (id, address)
    };
    let (_, bearer) = admin(&app, "rv-mailadmin-2").await;
    let (user_id, address) = user_with_mail(&app, "rv-mailed").await;
    let ticket = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    let held = smtp::wait_for_mail(&address, "held").await;
    assert!(held.contains("a sign-in"), "{held}");
    assert!(held.contains(&reasons()[0].words), "the reasons in plain words: {held}");
    let link = format!("/review.html#id={}&token={}", ticket.review_id, ticket.token.expose());
    assert!(held.contains(&link), "the link to see and appeal: {held}");

    assert_eq!(appeal(&app, &ticket, "It was me <b>really</b>").await.status(), StatusCode::OK);
    let told = smtp::wait_for_mail(&admin_address, "appealed").await;
    assert!(told.contains("rv-mailed") && told.contains("/admin.html"), "{told}");
    assert!(!told.contains("<b>really</b>"), "the appeal's words stay in the console: {told}");
    assert!(!told.contains(ticket.token.expose()), "admins get no token");
    assert_ne!(admin_id, user_id);

    let approved = decide(&app, &bearer, &ticket.review_id, "approve", "verified by phone").await;
    assert_eq!(approved.status(), StatusCode::OK);
    let mail = smtp::wait_for_mail(&address, "approved").await;
    assert!(mail.contains("verified by phone") && mail.contains("within 7 days"), "{mail}");

    let second = hold(&app, &user_id, HeldKind::Payment, "digest").await;
    let denied = decide(&app, &bearer, &second.review_id, "deny", "payee on a fraud list").await;
    assert_eq!(denied.status(), StatusCode::OK);
    let mail = smtp::wait_for_mail(&address, "denied").await;
    assert!(mail.contains("a payment") && mail.contains("payee on a fraud list"), "{mail}");
}

async fn the_audit_trail_names_the_admin_and_no_token(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "rv-auditor").await;
    let me: Value = app.me(&bearer).await.json().await.unwrap();
    let admin_id = me["user_id"].as_str().unwrap().to_owned();
    let (user_id, _) = user_with_mail(&app, "rv-audited").await;
    let ticket = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    assert_eq!(appeal(&app, &ticket, "me").await.status(), StatusCode::OK);
    let decided = decide(&app, &bearer, &ticket.review_id, "approve", "looks fine").await;
    assert_eq!(decided.status(), StatusCode::OK);
    let path = format!("/v1/admin/audit?user_id={user_id}");
    let page: Value = app.get(&path, Some(&bearer)).await.json().await.unwrap();
    let events = page["events"].as_array().unwrap();
    let approved = events.iter().find(|e| e["event"] == "review_approved").unwrap();
    assert_eq!(approved["actor_id"], admin_id.as_str());
    let reason = approved["reason"].as_str().unwrap();
    assert!(reason.contains(&ticket.review_id) && reason.contains("looks fine"), "{reason}");
    assert!(events.iter().any(|e| e["event"] == "review_appealed"));
    let everything = page.to_string();
    assert!(!everything.contains(ticket.token.expose()), "no token in the audit trail");
    let observer = app.observer(Duration::from_secs(5)).await;
    let rows = observer
        .count(
            "select count(*) from audit_event where coalesce(reason, '') like '%' || $1 || '%'",
            ticket.token.expose(),
        )
        .await;
    assert_eq!(rows, 0);
    let stored = observer
        .count("select count(*) from risk_review where token_hash = $1", ticket.token.expose())
        .await;
    assert_eq!(stored, 0, "the token is stored only hashed");
    assert!(!crate::helpers::captured_logs().contains(ticket.token.expose()), "nor in the logs");
}

async fn housekeeping_purges_long_expired_reviews(db: Db) {
    let app = spawn_app(db).await;
    let (user_id, _) = user_with_mail(&app, "rv-purged").await;
    let old = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    app.clock.advance(Duration::from_secs(30 * 24 * 3600));
    let recent = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    // Expired 7 days after it was made: kept 30 days more, then deleted.
    app.clock.advance(Duration::from_secs(8 * 24 * 3600));
    app.core.housekeeping.round(Duration::from_secs(10)).await;
    assert_eq!(owner_get(&app, &old).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(owner_get(&app, &recent).await.status(), StatusCode::OK, "expired, still kept");
}

async fn a_decision_retried_with_its_idempotency_key_gets_the_first_answer(db: Db) {
    let app = spawn_app(db).await;
    let (_, bearer) = admin(&app, "rv-retry").await;
    let (user_id, _) = user_with_mail(&app, "rv-retried").await;
    let ticket = hold(&app, &user_id, HeldKind::SignIn, "passkey").await;
    let path = format!("{}/v1/admin/reviews/{}/approve", app.address, ticket.review_id);
    let approve = |key: &str| {
        app.client
            .post(&path)
            .bearer_auth(&bearer)
            .header("idempotency-key", key)
            .json(&json!({"reason": "checked"}))
            .send()
    };
    let first = approve("retry-key-1").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    // The connection dropped: the retry gets the first answer, not 409.
    let again = approve("retry-key-1").await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // A new key is a new decision, and the review is decided.
    assert_problem(approve("retry-key-2").await.unwrap(), 409, "review_closed").await;
    let audited = app
        .observer(Duration::from_secs(5))
        .await
        .count(
            "select count(*) from audit_event where event = 'review_approved' \
             and reason like '%' || $1 || '%'",
            &ticket.review_id,
        )
        .await;
    assert_eq!(audited, 1, "one decision, one audit row");
}
