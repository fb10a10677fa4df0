//! Store conformance, one aggregate at a time: each test calls one
//! sub-trait of `Store` on both engines and checks what its SQL must do
//! (which rows a statement touches, what it returns, what it refuses), so
//! that a query wrong on either engine fails here and not only somewhere
//! behind an endpoint.

use passgate::domain::{DeviceId, Roles, SessionId, UserId, sha256_hex};
use passgate::store::{
    AuditFilter, AuditRow, CeremonyRow, CredentialRow, CredentialUse, EmailCodeRow, EnrolProof,
    ProfileFact, ProfileQuery, RegistrationRows, SecretPlace, Seen, SessionRow, SigningKeyRow,
    Store, StoreError, Unbound, UserRow,
};

use crate::helpers::{Db, on_both, spawn_app};

on_both!(
    users_register_at_once_and_a_taken_name_writes_nothing,
    ceremonies_are_found_taken_once_and_kept_from_other_users,
    sessions_end_one_by_one_or_all_but_one_and_purge_with_their_tokens,
    fallback_factors_count_each_step_and_code_once,
    failures_lock_a_subject_and_windows_start_over,
    devices_keep_the_last_one_and_a_reset_leaves_an_enrolment_code,
    admin_locks_end_sessions_and_search_matches_wildcards_literally,
    keys_rotate_revoke_and_secrets_are_rewritten_once,
    audit_pages_filter_and_go_both_ways,
);

/// The id a test's name for a user, device or session stands for: a UUID,
/// as the store's rows hold, and the same one each time, so that the
/// tests keep naming their rows.
fn id(name: &str) -> String {
    uuid::Uuid::parse_str(&sha256_hex(name.as_bytes())[..32]).unwrap().to_string()
}

fn user_id(name: &str) -> UserId {
    UserId::parse(id(name)).unwrap()
}

fn session_id(name: &str) -> SessionId {
    SessionId::parse(id(name)).unwrap()
}

fn user(id: &str, name: &str) -> UserRow {
    UserRow {
        user_id: user_id(id),
        username: name.to_owned(),
        display_name: format!("{name} Display"),
        email: None,
        email_verified: false,
        roles: Roles::from_stored("user"),
        locked_at: None,
        created_at: 1,
        language: None,
    }
}

fn credential(user_id: &str, id: &str, created_at: i64) -> CredentialRow {
    CredentialRow {
        credential_id: id.to_owned(),
        device_id: DeviceId::parse(self::id(&format!("device-{id}"))).unwrap(),
        user_id: self::user_id(user_id),
        name: "key".to_owned(),
        passkey: "{}".to_owned(),
        sign_count: 5,
        backup_eligible: false,
        backup_state: false,
        aaguid: "00000000-0000-0000-0000-000000000000".to_owned(),
        transports: "usb,nfc".to_owned(),
        created_at,
        last_used_at: None,
        payments_after: None,
    }
}

fn session(user_id: &str, id: &str, device_id: Option<&DeviceId>) -> SessionRow {
    SessionRow {
        session_id: session_id(id),
        user_id: self::user_id(user_id),
        device_id: device_id.copied(),
        amr: "hwk user".to_owned(),
        client_ip: Some("127.0.0.1".to_owned()),
        user_agent: None,
        created_at: 10,
        last_used_at: 10,
        expires_at: 1_000_000,
        revoked_at: None,
    }
}

/// The audit row a registration of `user_id` writes beside its rows.
fn registered_row(user_id: &str) -> AuditRow {
    crate::store::audit_row(&format!("{user_id}-registered"), "user_registered", user_id, 10)
}

/// Registers `user` with `credential`, `session` and its refresh token
/// `refresh`, as a registration's finish does.
async fn register(
    store: &dyn Store,
    user: &UserRow,
    credential: &CredentialRow,
    session: &SessionRow,
    refresh: &str,
) -> Result<(), StoreError> {
    let audit = registered_row(&user.user_id.to_string());
    let payment = Seen { dimension: "payment", value: "EUR", amount: 1250 };
    let seen = crate::store::history("203.0.113.0/24", &credential.credential_id, payment);
    let rows = RegistrationRows {
        user,
        credential,
        session,
        refresh_hash: refresh,
        audit: &audit,
        seen: &seen,
    };
    store.register_user(&rows).await
}

/// The history a registration (`register`) wrote for its user, as a
/// sign-in's profile reads it.
async fn history(store: &dyn Store, user_id: &str, credential: &str) -> Vec<ProfileFact> {
    let query = ProfileQuery {
        network: "203.0.113.0/24",
        user_agent: "Firefox",
        credential,
        currency: "EUR",
        events_since: 0,
        failures_since_minute: 0,
    };
    let facts = store.risk_profile(&self::user_id(user_id), &query).await.unwrap();
    let seen = ["network", "user_agent", "credential", "signin", "payment"];
    facts.into_iter().filter(|fact| seen.contains(&fact.dimension.as_str())).collect()
}

/// A user with one passkey (`<id>-key`), a session and its refresh token
/// `<id>-refresh`.
async fn registered(store: &dyn Store, id: &str) -> (UserRow, CredentialRow, SessionRow) {
    let user = user(id, &format!("{id}-name"));
    let key = credential(id, &format!("{id}-key"), 1);
    let session = session(id, &format!("{id}-session"), Some(&key.device_id));
    register(store, &user, &key, &session, &format!("{id}-refresh")).await.unwrap();
    (user, key, session)
}

fn signing_key(kid: &str, created_at: i64) -> SigningKeyRow {
    SigningKeyRow {
        kid: kid.to_owned(),
        algorithm: "ES256".to_owned(),
        private_key: format!("private-{kid}"),
        public_jwk: "{}".to_owned(),
        created_at,
        active_from: None,
        retired_at: None,
        revoked_at: None,
    }
}

async fn users_register_at_once_and_a_taken_name_writes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.as_ref();
    let (alice, key, opened) = registered(store, "u-alice").await;
    let found = store.find_user_by_username("u-alice-name").await.unwrap().unwrap();
    assert_eq!((found.user_id, found.roles.to_stored().as_str()), (user_id("u-alice"), "user"));
    assert_eq!(
        store.find_user(&id("u-alice")).await.unwrap().unwrap().display_name,
        alice.display_name
    );
    assert!(store.find_user(&id("nobody")).await.unwrap().is_none());
    let keys = store.login_credentials("u-alice-name").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].credential_id.as_str(), keys[0].sign_count), ("u-alice-key", 5));
    assert!(store.login_credentials("nobody").await.unwrap().is_empty());
    assert_eq!(
        store.find_credential(&key.credential_id).await.unwrap().unwrap().user_id,
        user_id("u-alice")
    );
    assert!(store.find_session(&opened.session_id.to_string()).await.unwrap().is_some());
    // The first context, seen when the account was made (the session's
    // time), written with it.
    let seen: Vec<(String, String, i64, Option<i64>)> = history(store, "u-alice", "u-alice-key")
        .await
        .into_iter()
        .map(|fact| (fact.dimension, fact.value, fact.amount, fact.at))
        .collect();
    let at = Some(opened.created_at);
    let text = |s: &str| s.to_owned();
    assert_eq!(
        seen,
        vec![
            (text("network"), text("203.0.113.0/24"), 0, at),
            (text("user_agent"), text("Firefox"), 0, at),
            (text("credential"), text("u-alice-key"), 0, at),
            (text("signin"), text(""), 0, at),
            (text("payment"), text("EUR"), 1250, at),
        ]
    );
    // The shape of a real account's passkeys, for any seed.
    let shape = store.credential_shape_near("zzz").await.unwrap();
    assert_eq!(shape, vec![("usb,nfc".to_owned(), "u-alice-key".len() as i64)]);

    // The same name again: a conflict, and none of its rows.
    let twin = user("u-twin", "u-alice-name");
    let twin_key = credential("u-twin", "u-twin-key", 1);
    let twin_session = session("u-twin", "u-twin-session", None);
    let taken = register(store, &twin, &twin_key, &twin_session, "u-twin-refresh").await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    assert!(store.find_user(&id("u-twin")).await.unwrap().is_none());
    assert!(store.find_credential("u-twin-key").await.unwrap().is_none());
    assert!(store.find_session(&id("u-twin-session")).await.unwrap().is_none());
    assert_eq!(history(store, "u-twin", "u-twin-key").await, vec![], "the twin's history stayed");

    store.set_email(&id("u-alice"), "a@example.com").await.unwrap();
    let unverified = store.find_user(&id("u-alice")).await.unwrap().unwrap();
    assert_eq!(
        (unverified.email.as_deref(), unverified.email_verified),
        (Some("a@example.com"), false)
    );
    assert!(store.verify_email(&id("u-alice"), "b@example.com").await.unwrap());
    let verified = store.find_user(&id("u-alice")).await.unwrap().unwrap();
    assert_eq!((verified.email.as_deref(), verified.email_verified), (Some("b@example.com"), true));
    assert!(!store.verify_email(&id("nobody"), "b@example.com").await.unwrap());
}

async fn ceremonies_are_found_taken_once_and_kept_from_other_users(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.as_ref();
    let (_, key, _) = registered(store, "c-bob").await;
    let owned = CeremonyRow {
        ceremony_id: "owned".to_owned(),
        kind: "register".to_owned(),
        user_id: Some("c-bob".to_owned()),
        state: "{\"x\":1}".to_owned(),
        expires_at: 100,
    };
    store.put_ceremony(&owned).await.unwrap();
    // Found and left in place; not of another kind, nor once expired.
    let found = store.find_ceremony("owned", "register", 99).await.unwrap().unwrap();
    assert_eq!((found.state.as_str(), found.user_id.as_deref()), ("{\"x\":1}", Some("c-bob")));
    assert!(store.find_ceremony("owned", "login", 99).await.unwrap().is_none());
    assert!(store.find_ceremony("owned", "register", 100).await.unwrap().is_none());
    // Another user's attempt leaves it; its own takes it, once.
    assert!(store.take_owned_ceremony("owned", "register", "else", 99).await.unwrap().is_none());
    assert!(store.take_owned_ceremony("owned", "register", "c-bob", 99).await.unwrap().is_some());
    assert!(store.take_ceremony("owned", "register", 99).await.unwrap().is_none());

    // A sign-in handle is used up once; the finish's read sees it, and the
    // credential with its owner.
    assert!(store.use_up_login("handle", 500).await.unwrap());
    assert!(!store.use_up_login("handle", 500).await.unwrap());
    let (used, owned) = store.find_login("handle", &key.credential_id).await.unwrap();
    let (found_key, owner) = owned.unwrap();
    assert!(used);
    assert_eq!((found_key.device_id, owner.username.as_str()), (key.device_id, "c-bob-name"));
    assert_eq!((owner.user_id, owner.created_at), (user_id("c-bob"), 1));
    assert!(!store.find_login("fresh", "unknown").await.unwrap().0);
    assert!(store.find_login("fresh", "unknown").await.unwrap().1.is_none());
    // Purged once expired, handles included.
    assert_eq!(store.purge_expired_ceremonies(500).await.unwrap(), 1);

    // The counter only moves forward; zero on both sides is no counter.
    let used_at = |sign_count| CredentialUse {
        credential_id: key.credential_id.clone(),
        backup_eligible: true,
        sign_count,
        backup_state: true,
        used_at: 7,
    };
    assert!(!store.record_credential_use(&used_at(5)).await.unwrap());
    assert!(store.record_credential_use(&used_at(6)).await.unwrap());
    let stored = store.find_credential(&key.credential_id).await.unwrap().unwrap();
    assert_eq!((stored.sign_count, stored.backup_state, stored.last_used_at), (6, true, Some(7)));
    let mut synced = credential("c-bob", "c-bob-synced", 2);
    synced.sign_count = 0;
    store.add_credential(&synced).await.unwrap();
    let zero = CredentialUse { credential_id: synced.credential_id.clone(), ..used_at(0) };
    assert!(store.record_credential_use(&zero).await.unwrap());
    assert!(store.record_credential_use(&zero).await.unwrap());
}

async fn sessions_end_one_by_one_or_all_but_one_and_purge_with_their_tokens(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.as_ref();
    let (_, _, first) = registered(store, "s-carol").await;
    let mut second = session("s-carol", "s-second", None);
    second.last_used_at = 20;
    let mut third = session("s-carol", "s-third", None);
    third.last_used_at = 30;
    let mfa = |token: &'static str, session| async move {
        store.put_mfa_token(token, &id("s-carol"), 1_000, 1).await.unwrap();
        assert!(store.finish_mfa(token, session, &format!("{token}-refresh"), 2).await.unwrap());
    };
    mfa("mfa-2", &second).await;
    mfa("mfa-3", &third).await;
    let live: Vec<SessionId> = store
        .user_sessions(&id("s-carol"), 15)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    let expected = ["s-third", "s-second", "s-carol-session"].map(session_id);
    assert_eq!(live, expected, "most recently used first");

    assert!(!store.end_session(&id("someone-else"), &id("s-third"), 40).await.unwrap());
    assert!(store.end_session(&id("s-carol"), &id("s-third"), 40).await.unwrap());
    assert!(!store.end_session(&id("s-carol"), &id("s-third"), 41).await.unwrap());
    assert_eq!(
        store.end_other_sessions(&id("s-carol"), &first.session_id.to_string(), 42).await.unwrap(),
        1
    );
    let live = store.user_sessions(&id("s-carol"), 15).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].session_id, first.session_id);

    // A live key vouches for the session; an unknown one does not.
    store.add_signing_key(&signing_key("kid-live", 1)).await.unwrap();
    let (found, live_key) = store
        .find_session_signed_by(&first.session_id.to_string(), "kid-live")
        .await
        .unwrap()
        .unwrap();
    assert!(live_key && found.revoked_at.is_none());
    assert!(
        !store
            .find_session_signed_by(&first.session_id.to_string(), "kid-none")
            .await
            .unwrap()
            .unwrap()
            .1
    );

    // Idle too long: not rotated, and the token is still the current one.
    let idle = store.rotate_refresh("s-carol-refresh", "next", 50, 10).await.unwrap();
    assert!(matches!(idle, passgate::store::RefreshOutcome::Invalid), "{idle:?}");
    let rotated = store.rotate_refresh("s-carol-refresh", "next", 50, 9).await.unwrap();
    let passgate::store::RefreshOutcome::Rotated(rotated) = rotated else { panic!("{rotated:?}") };
    assert_eq!(rotated.last_used_at, 50);
    assert!(store.end_session_by_refresh("next", 60).await.unwrap());
    assert!(!store.end_session_by_refresh("next", 61).await.unwrap());

    // Ended sessions go, and their refresh tokens with them.
    assert_eq!(store.purge_ended_sessions(100, 0).await.unwrap(), 3);
    assert!(store.find_session(&first.session_id.to_string()).await.unwrap().is_none());
    let gone = store.rotate_refresh("mfa-2-refresh", "later", 100, 0).await.unwrap();
    assert!(matches!(gone, passgate::store::RefreshOutcome::Invalid), "{gone:?}");
}

async fn fallback_factors_count_each_step_and_code_once(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.as_ref();
    registered(store, "f-dave").await;
    assert!(store.password_hash(&id("f-dave")).await.unwrap().is_none());
    store.set_password(&id("f-dave"), "phc-1", 1).await.unwrap();
    store.set_password(&id("f-dave"), "phc-2", 2).await.unwrap();
    assert!(!store.upgrade_password(&id("f-dave"), "phc-1", "phc-3").await.unwrap());
    assert!(store.upgrade_password(&id("f-dave"), "phc-2", "phc-3").await.unwrap());
    assert_eq!(store.password_hash(&id("f-dave")).await.unwrap().as_deref(), Some("phc-3"));

    assert!(store.put_pending_totp(&id("f-dave"), "sealed-1", 3).await.unwrap());
    assert!(store.put_pending_totp(&id("f-dave"), "sealed-2", 4).await.unwrap());
    let codes = ["r1".to_owned(), "r2".to_owned()];
    assert!(!store.confirm_totp(&id("f-dave"), "sealed-1", 10, &codes, 5).await.unwrap());
    assert!(store.confirm_totp(&id("f-dave"), "sealed-2", 10, &codes, 5).await.unwrap());
    assert!(!store.put_pending_totp(&id("f-dave"), "sealed-3", 6).await.unwrap());
    let totp = store.totp(&id("f-dave")).await.unwrap().unwrap();
    assert_eq!(
        (totp.secret.as_str(), totp.confirmed_at, totp.last_step),
        ("sealed-2", Some(5), 10)
    );
    assert!(!store.use_totp_step(&id("f-dave"), 10).await.unwrap());
    assert!(store.use_totp_step(&id("f-dave"), 11).await.unwrap());
    assert!(store.use_recovery_code(&id("f-dave"), "r1", 7).await.unwrap());
    assert!(!store.use_recovery_code(&id("f-dave"), "r1", 8).await.unwrap());
    let counts = store.factor_counts(&id("f-dave")).await.unwrap();
    assert_eq!((counts.passwords, counts.totp, counts.recovery_codes), (1, 1, 1));
    store
        .replace_recovery_codes(&id("f-dave"), &["r3".to_owned(), "r4".to_owned()], 9)
        .await
        .unwrap();
    assert_eq!(store.factor_counts(&id("f-dave")).await.unwrap().recovery_codes, 2);
    assert!(store.delete_totp(&id("f-dave")).await.unwrap());
    let counts = store.factor_counts(&id("f-dave")).await.unwrap();
    assert_eq!((counts.totp, counts.recovery_codes), (0, 0));

    // A mailed code: a newer live one is not replaced; tries are counted
    // before the compare, and the code is taken once.
    let code = |hash: &str, sent_at| EmailCodeRow {
        purpose: "login".to_owned(),
        user_id: id("f-dave"),
        code_hash: hash.to_owned(),
        address: "d@example.com".to_owned(),
        tries: 0,
        sent_at,
        expires_at: sent_at + 100,
    };
    assert!(store.put_email_code(&code("h1", 10), 0).await.unwrap());
    assert!(!store.put_email_code(&code("h2", 20), 5).await.unwrap());
    assert!(store.put_email_code(&code("h3", 30), 10).await.unwrap());
    assert_eq!(store.email_code("login", &id("f-dave")).await.unwrap().unwrap().code_hash, "h3");
    assert_eq!(
        store.try_email_code("login", &id("f-dave"), 2, 40).await.unwrap().unwrap().tries,
        1
    );
    assert_eq!(
        store.try_email_code("login", &id("f-dave"), 2, 40).await.unwrap().unwrap().tries,
        2
    );
    assert!(store.try_email_code("login", &id("f-dave"), 2, 40).await.unwrap().is_none());
    assert!(!store.take_email_code("login", &id("f-dave"), "h1").await.unwrap());
    assert!(store.take_email_code("login", &id("f-dave"), "h3").await.unwrap());

    // A password change voids the steps half done.
    store.put_mfa_token("mfa-void", &id("f-dave"), 1_000, 1).await.unwrap();
    assert_eq!(
        store.mfa_token_user("mfa-void", 2).await.unwrap().as_deref(),
        Some(id("f-dave").as_str())
    );
    assert!(store.mfa_token_user("mfa-void", 1_000).await.unwrap().is_none());
    assert!(store.put_email_code(&code("h4", 50), 50).await.unwrap());
    store.void_fallback_steps(&id("f-dave")).await.unwrap();
    assert!(store.mfa_token_user("mfa-void", 2).await.unwrap().is_none());
    assert!(store.email_code("login", &id("f-dave")).await.unwrap().is_none());
}

async fn failures_lock_a_subject_and_windows_start_over(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.as_ref();
    // The third failure locks (provisionally, until 500); the next attempt
    // meanwhile is not counted.
    assert_eq!(store.count_attempt("name:eve", 10, 0, 3, 500).await.unwrap(), Some((1, 1)));
    assert_eq!(store.count_attempt("name:eve", 11, 0, 3, 500).await.unwrap(), Some((2, 2)));
    assert_eq!(store.count_attempt("name:eve", 12, 0, 3, 500).await.unwrap(), Some((3, 3)));
    assert_eq!(store.locked_until("name:eve").await.unwrap(), 500);
    assert_eq!(store.count_attempt("name:eve", 13, 0, 3, 600).await.unwrap(), None);
    // Given back, the attempt takes its own lock with it.
    store.return_attempt("name:eve", 500).await.unwrap();
    assert_eq!(store.locked_until("name:eve").await.unwrap(), 0);
    // A quiet spell starts the streak over, not the count.
    assert_eq!(store.count_attempt("name:eve", 20, 15, 10, 500).await.unwrap(), Some((3, 1)));
    store.lock_subject("name:eve", 900).await.unwrap();
    assert_eq!(store.locked_until("name:eve").await.unwrap(), 900);
    store.clear_failures("name:eve").await.unwrap();
    assert_eq!(store.locked_until("name:eve").await.unwrap(), 0);
    assert_eq!(store.locked_until("name:nobody").await.unwrap(), 0);

    assert_eq!(store.hit_rate_window("ip:1", 100, 60).await.unwrap(), (1, 160));
    assert_eq!(store.hit_rate_window("ip:1", 159, 60).await.unwrap(), (2, 160));
    assert_eq!(store.hit_rate_window("ip:1", 160, 60).await.unwrap(), (1, 220));
    // Windows past their end, and a failure count of a name quiet long
    // enough, are purged; the live window stays.
    store.count_attempt("name:old", 1, 0, 100, 0).await.unwrap();
    let month = 30 * 24 * 3600 * 1000;
    assert_eq!(store.purge_fallback(month + 2, 0).await.unwrap(), 2);
    assert_eq!(store.hit_rate_window("ip:1", 170, 60).await.unwrap(), (1, 230));
}

async fn devices_keep_the_last_one_and_a_reset_leaves_an_enrolment_code(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.as_ref();
    let (_, key, first) = registered(store, "d-fay").await;
    let spare = credential("d-fay", "d-spare", 2);
    store.add_credential(&spare).await.unwrap();
    assert!(
        store.rename_credential(&id("d-fay"), &spare.device_id.to_string(), "spare").await.unwrap()
    );
    assert!(
        !store
            .rename_credential(&id("someone-else"), &spare.device_id.to_string(), "mine")
            .await
            .unwrap()
    );
    let names: Vec<String> =
        store.user_credentials(&id("d-fay")).await.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["key", "spare"], "oldest first");

    // Unbinding a device ends the sessions it opened; the last one stays.
    assert_eq!(
        store.delete_credential(&id("d-fay"), &id("no-device"), true, 5).await.unwrap(),
        Unbound::NotFound
    );
    assert_eq!(
        store.delete_credential(&id("d-fay"), &key.device_id.to_string(), true, 5).await.unwrap(),
        Unbound::Deleted
    );
    assert_eq!(
        store.find_session(&first.session_id.to_string()).await.unwrap().unwrap().revoked_at,
        Some(5)
    );
    assert_eq!(
        store.delete_credential(&id("d-fay"), &spare.device_id.to_string(), true, 6).await.unwrap(),
        Unbound::LastOne
    );

    // A reset: every device and session gone, an enrolment code instead,
    // with limited tries; a right code's try is given back.
    let other = session("d-fay", "d-other", None);
    store.put_mfa_token("mfa-d", &id("d-fay"), 1_000, 1).await.unwrap();
    assert!(store.finish_mfa("mfa-d", &other, "d-other-refresh", 2).await.unwrap());
    assert_eq!(store.reset_devices(&id("d-fay"), "code-1", 1_000, 7).await.unwrap(), (1, 1));
    assert!(store.user_credentials(&id("d-fay")).await.unwrap().is_empty());
    assert_eq!(
        store.try_enrolment_code(&id("d-fay"), 2, 8).await.unwrap(),
        Some(("code-1".to_owned(), 1_000))
    );
    store.return_enrolment_try(&id("d-fay"), "code-1").await.unwrap();
    assert!(store.try_enrolment_code(&id("d-fay"), 2, 8).await.unwrap().is_some());
    assert!(store.try_enrolment_code(&id("d-fay"), 2, 8).await.unwrap().is_some());
    assert!(store.try_enrolment_code(&id("d-fay"), 2, 8).await.unwrap().is_none());
    assert!(store.try_enrolment_code(&id("d-fay"), 9, 1_000).await.unwrap().is_none(), "expired");

    let fresh = credential("d-fay", "d-fresh", 9);
    let opened = session("d-fay", "d-fresh-session", Some(&fresh.device_id));
    assert!(
        !store
            .enrol_with_code(
                EnrolProof::EnrolmentCode("code-2"),
                &fresh,
                &opened,
                "d-fresh-refresh"
            )
            .await
            .unwrap()
    );
    assert!(store.find_credential("d-fresh").await.unwrap().is_none());
    assert!(
        store
            .enrol_with_code(
                EnrolProof::EnrolmentCode("code-1"),
                &fresh,
                &opened,
                "d-fresh-refresh"
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .enrol_with_code(
                EnrolProof::EnrolmentCode("code-1"),
                &fresh,
                &opened,
                "d-fresh-refresh"
            )
            .await
            .unwrap()
    );
    assert!(store.find_session(&id("d-fresh-session")).await.unwrap().is_some());
}

async fn admin_locks_end_sessions_and_search_matches_wildcards_literally(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.as_ref();
    let (_, _, opened) = registered(store, "a-gus").await;
    assert!(store.set_roles(&id("a-gus"), "admin,user").await.unwrap());
    assert!(!store.set_roles(&id("nobody"), "admin").await.unwrap());
    let roles = store.find_user(&id("a-gus")).await.unwrap().unwrap().roles;
    assert_eq!(roles, Roles::new(&["admin", "user"]));

    // The fallback sign-in's throttle names a user by their id.
    let subject = format!("user:{}", id("a-gus"));
    store.count_attempt(&subject, 1, 0, 100, 0).await.unwrap();
    store.lock_subject(&subject, 9_000).await.unwrap();
    assert!(store.set_locked(&id("a-gus"), Some(3), 3).await.unwrap());
    assert_eq!(
        store.find_session(&opened.session_id.to_string()).await.unwrap().unwrap().revoked_at,
        Some(3)
    );
    assert_eq!(store.find_user(&id("a-gus")).await.unwrap().unwrap().locked_at, Some(3));
    // An unlock also lifts the fallback sign-in's lock.
    assert!(store.set_locked(&id("a-gus"), None, 4).await.unwrap());
    assert_eq!(store.locked_until(&subject).await.unwrap(), 0);

    for (id, name) in [("a-1", "percent%one"), ("a-2", "percentxone"), ("a-3", "under_score")] {
        let mut row = user(id, name);
        row.display_name = format!("Shown {id}");
        let key = credential(id, &format!("{id}-key"), 1);
        let session = session(id, &format!("{id}-session"), None);
        register(store, &row, &key, &session, &format!("{id}-refresh")).await.unwrap();
    }
    let names = |rows: Vec<UserRow>| rows.into_iter().map(|u| u.username).collect::<Vec<_>>();
    assert_eq!(names(store.search_users("t%o", "", 10).await.unwrap()), ["percent%one"]);
    assert_eq!(names(store.search_users("r_s", "", 10).await.unwrap()), ["under_score"]);
    assert_eq!(names(store.search_users("SHOWN A-", "", 10).await.unwrap()).len(), 3);
    assert_eq!(names(store.search_users("shown", "", 1).await.unwrap()), ["percent%one"]);
    assert_eq!(
        names(store.search_users("shown", "percent%one", 1).await.unwrap()),
        ["percentxone"]
    );
}

async fn keys_rotate_revoke_and_secrets_are_rewritten_once(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.as_ref();
    // The app made its own keys at start; these come after them.
    let before = store.signing_keys().await.unwrap().len();
    store.add_signing_key(&signing_key("k-1", 10_000_000_000_000)).await.unwrap();
    store.add_signing_key(&signing_key("k-2", 10_000_000_000_001)).await.unwrap();
    store.rotate_signing_key(&signing_key("k-3", 10_000_000_000_002), "k-2", 5).await.unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), before + 3);
    let kids: Vec<&str> = keys.iter().take(3).map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k-3", "k-2", "k-1"], "newest first");
    let retired: Vec<Option<i64>> = keys.iter().take(3).map(|k| k.retired_at).collect();
    assert_eq!(retired, [None, None, Some(5)]);
    assert!(keys.iter().skip(3).all(|k| k.retired_at.is_some()), "every other key is retired");

    assert!(!store.revoke_signing_key("k-none", 6, None, None).await.unwrap());
    assert!(
        store
            .revoke_signing_key("k-3", 6, Some("k-2"), Some(&signing_key("k-4", 7)))
            .await
            .unwrap()
    );
    assert!(!store.revoke_signing_key("k-3", 7, None, None).await.unwrap());
    let keys = store.signing_keys().await.unwrap();
    let find = |kid: &str| keys.iter().find(|k| k.kid == kid).unwrap().clone();
    assert_eq!((find("k-3").revoked_at, find("k-2").active_from), (Some(6), Some(6)));
    assert!(keys.iter().any(|k| k.kid == "k-4"));

    // Only unsealed values are visited; a rewritten one is not again.
    let seal = |place: SecretPlace<'_>, value: &str| -> anyhow::Result<Option<String>> {
        Ok(match place {
            SecretPlace::SigningKey { kid } if kid.starts_with("k-") => {
                Some(format!("sealed:{value}"))
            }
            _ => None,
        })
    };
    assert_eq!(store.rewrite_secrets(true, &seal).await.unwrap(), 4);
    assert_eq!(store.rewrite_secrets(true, &seal).await.unwrap(), 0);
    assert_eq!(find_key(store, "k-1").await.private_key, "sealed:private-k-1");
}

async fn find_key(store: &dyn Store, kid: &str) -> SigningKeyRow {
    store.signing_keys().await.unwrap().into_iter().find(|k| k.kid == kid).unwrap()
}

async fn audit_pages_filter_and_go_both_ways(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.as_ref();
    let row = |n: u32, user: &str, event: &str| AuditRow {
        client_ip: Some("10.0.0.1".to_owned()),
        request_id: Some(format!("req-{n}")),
        ..crate::store::audit_row(&format!("zz-audit-{n:03}"), event, user, 1_000 + i64::from(n))
    };
    for n in 0..6 {
        let event = if n % 2 == 0 { "login" } else { "logout" };
        store.append_audit(&row(n, "au-hal", event)).await.unwrap();
    }
    store.append_audit(&row(6, "au-ida", "login")).await.unwrap();
    let ids = |rows: Vec<AuditRow>| rows.into_iter().map(|r| r.event_id).collect::<Vec<_>>();
    let filter = AuditFilter { user_id: Some("au-hal".into()), limit: 2, ..Default::default() };
    assert_eq!(ids(store.audit_events(&filter).await.unwrap()), ["zz-audit-000", "zz-audit-001"]);
    let next = AuditFilter { after: Some("zz-audit-001".into()), ..filter.clone() };
    assert_eq!(ids(store.audit_events(&next).await.unwrap()), ["zz-audit-002", "zz-audit-003"]);
    let newest = AuditFilter { newest_first: true, ..filter.clone() };
    assert_eq!(ids(store.audit_events(&newest).await.unwrap()), ["zz-audit-005", "zz-audit-004"]);
    let before = AuditFilter { after: Some("zz-audit-004".into()), ..newest.clone() };
    assert_eq!(ids(store.audit_events(&before).await.unwrap()), ["zz-audit-003", "zz-audit-002"]);
    let logins = AuditFilter {
        event: Some("login".into()),
        since: Some(1_001),
        until: Some(1_006),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(ids(store.audit_events(&logins).await.unwrap()), ["zz-audit-002", "zz-audit-004"]);
    let stored = store.audit_events(&filter).await.unwrap().remove(0);
    assert_eq!(
        (stored.client_ip.as_deref(), stored.request_id.as_deref()),
        (Some("10.0.0.1"), Some("req-0"))
    );
}
