//! Store conformance: the guarantees the services rely on, checked
//! directly against both engines, with racing callers.

use passgate::domain::{SessionId, UserId};
use passgate::store::{
    AuditRow, CeremonyRow, LoginStored, ProfileQuery, RefreshOutcome, Seen, SessionRow, StoreError,
};

use std::time::Duration;

use futures_util::FutureExt;

use crate::helpers::{Db, on_both, spawn_app};

on_both!(
    of_many_racing_takes_of_one_ceremony_exactly_one_gets_it,
    a_sign_ins_writes_land_whole_or_not_at_all_and_of_two_racing_rotations_one_wins,
    the_first_shared_secret_stored_wins,
    every_write_answered_amid_a_crowd_is_already_committed,
    a_failing_write_amid_a_crowd_fails_alone,
    a_write_cancelled_midway_leaves_the_database_to_other_writers,
);

/// A successful `event` of `user_id` at `occurred_at`, with no client.
pub fn audit_row(event_id: &str, event: &str, user_id: &str, occurred_at: i64) -> AuditRow {
    AuditRow {
        event_id: event_id.to_owned(),
        occurred_at,
        event: event.to_owned(),
        outcome: "success".to_owned(),
        user_id: Some(user_id.to_owned()),
        actor_id: None,
        device_id: None,
        client_ip: None,
        user_agent: None,
        reason: None,
        request_id: None,
    }
}

/// A success's history rows (network, browser, passkey, factor, sign-in),
/// then `last`: one row more than a write's own text takes, so that the
/// last goes in a statement of its own.
pub fn history<'a>(network: &'a str, credential: &'a str, last: Seen<'a>) -> [Seen<'a>; 6] {
    [
        Seen { dimension: "network", value: network, amount: 0 },
        Seen { dimension: "user_agent", value: "Firefox", amount: 0 },
        Seen { dimension: "credential", value: credential, amount: 0 },
        Seen { dimension: "factor", value: "passkey", amount: 0 },
        Seen { dimension: "signin", value: "", amount: 0 },
        last,
    ]
}

pub fn ceremony(id: &str, expires_at: i64) -> CeremonyRow {
    CeremonyRow {
        ceremony_id: id.to_owned(),
        kind: "login".to_owned(),
        user_id: None,
        state: "{}".to_owned(),
        expires_at,
    }
}

async fn of_many_racing_takes_of_one_ceremony_exactly_one_gets_it(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.clone();
    store.put_ceremony(&ceremony("racing-ceremony", i64::MAX)).await.unwrap();
    store.put_ceremony(&ceremony("expired-ceremony", 1_000)).await.unwrap();

    let takes = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.take_ceremony("racing-ceremony", "login", 2_000).await })
    });
    let mut winners = 0;
    for take in takes {
        if take.await.unwrap().unwrap().is_some() {
            winners += 1;
        }
    }

    assert_eq!(winners, 1);
    assert!(store.take_ceremony("expired-ceremony", "login", 2_000).await.unwrap().is_none());
    assert_eq!(store.purge_expired_ceremonies(2_000).await.unwrap(), 1);
}

async fn a_sign_ins_writes_land_whole_or_not_at_all_and_of_two_racing_rotations_one_wins(db: Db) {
    let app = spawn_app(db).await;
    let store = app.store.clone();
    let tokens = app.register(&mut app.authenticator(), "alice").await;
    let user_id = tokens["user_id"].as_str().unwrap().to_owned();
    let session = SessionRow {
        session_id: SessionId::new(),
        user_id: UserId::parse(user_id.clone()).unwrap(),
        device_id: None,
        amr: "hwk user".into(),
        client_ip: None,
        user_agent: None,
        created_at: 1,
        last_used_at: 1,
        expires_at: i64::MAX,
        revoked_at: None,
    };
    let credential = store.user_credentials(&user_id).await.unwrap().remove(0);
    let used = passgate::store::CredentialUse {
        credential_id: credential.credential_id.clone(),
        backup_eligible: false,
        sign_count: credential.sign_count + 1,
        backup_state: false,
        used_at: 2,
    };
    let audit = |id: &str| audit_row(id, "login", &user_id, 2);
    let ceremony = |id: &str| CeremonyRow {
        ceremony_id: id.to_owned(),
        kind: "login".into(),
        user_id: None,
        state: "{}".into(),
        expires_at: i64::MAX,
    };
    // The history a sign-in adds, named by a network of its own: one row
    // more than a sign-in's text takes (the last goes in a statement of
    // its own), or one row for the sign-ins that are refused.
    let also = Seen { dimension: "network", value: "first-net-too", amount: 0 };
    let first_seen = history("first-net", &credential.credential_id, also);
    let seen_of = |network| [Seen { dimension: "network", value: network, amount: 0 }];
    let (again_seen, counter_seen) = (seen_of("again-net"), seen_of("counter-net"));
    let (clash_seen, replay_seen) = (seen_of("clash-net"), seen_of("replay-net"));
    let user = UserId::parse(user_id.clone()).unwrap();
    let network_seen = |network: &'static str| {
        let (store, user) = (store.clone(), user);
        async move {
            let query = ProfileQuery {
                network,
                user_agent: "",
                credential: "",
                currency: "",
                events_since: 0,
                failures_since_minute: 0,
            };
            let facts = store.risk_profile(&user, &query).await.unwrap();
            facts.iter().any(|fact| fact.dimension == "network")
        }
    };
    let login = |used_id, session, refresh_hash, audit, seen| passgate::store::LoginRows {
        used_id,
        handle_expires_at: i64::MAX,
        used: &used,
        session,
        refresh_hash,
        audit,
        seen,
    };
    let first = audit("0190f000-0000-7000-8000-000000000001");
    let done = login("used:1", &session, "first-hash", &first, &first_seen);
    assert_eq!(store.complete_login(&done).await.unwrap(), LoginStored::Done);
    assert!(network_seen("first-net").await && network_seen("first-net-too").await);
    // The same sign-in handle again, or the same counter again, is refused
    // and opens nothing: no session, no audit row.
    let mut again = session.clone();
    again.session_id = SessionId::new();
    let second = audit("0190f000-0000-7000-8000-000000000002");
    let gone = login("used:1", &again, "other-hash", &second, &again_seen);
    assert_eq!(store.complete_login(&gone).await.unwrap(), LoginStored::CeremonyGone);
    let not_counted = login("used:2", &again, "other-hash", &second, &counter_seen);
    assert_eq!(store.complete_login(&not_counted).await.unwrap(), LoginStored::CounterNotIncreased);
    // That handle is used up all the same, on both engines.
    assert!(store.find_login("used:2", "").await.unwrap().0);
    assert!(store.find_session(&again.session_id.to_string()).await.unwrap().is_none());
    assert!(matches!(
        store.rotate_refresh("other-hash", "third-hash", 3, 0).await.unwrap(),
        RefreshOutcome::Invalid
    ));
    // A write that fails half-way (the session id is taken) stores
    // nothing, not even the handle's use, and leaves the store usable.
    let newer = passgate::store::CredentialUse { sign_count: used.sign_count + 1, ..used.clone() };
    let third = audit("0190f000-0000-7000-8000-000000000003");
    let clash = passgate::store::LoginRows {
        used_id: "used:3",
        handle_expires_at: i64::MAX,
        used: &newer,
        session: &session,
        refresh_hash: "third-hash",
        audit: &third,
        seen: &clash_seen,
    };
    assert!(matches!(
        store.complete_login(&clash).await,
        Err(passgate::store::StoreError::Conflict(_))
    ));
    assert!(!store.find_login("used:3", "").await.unwrap().0);
    let credential_now = store.user_credentials(&user_id).await.unwrap().remove(0);
    assert_eq!(credential_now.sign_count, used.sign_count, "the counter is rolled back");
    // The same write amid others waiting for the connection fails alone:
    // on SQLite it joins their group under a savepoint and goes back to it.
    let beside = futures_util::future::join_all((0..8).map(|n| {
        let (store, row) = (store.clone(), ceremony(&format!("beside-{n}")));
        async move { store.put_ceremony(&row).await }
    }));
    let (beside, clashed) = tokio::join!(beside, store.complete_login(&clash));
    assert!(beside.iter().all(Result::is_ok), "{beside:?}");
    assert!(matches!(clashed, Err(passgate::store::StoreError::Conflict(_))), "{clashed:?}");
    assert!(!store.find_login("used:3", "").await.unwrap().0);
    assert!(store.find_ceremony("beside-7", "login", 0).await.unwrap().is_some());
    let credential_now = store.user_credentials(&user_id).await.unwrap().remove(0);
    assert_eq!(credential_now.sign_count, used.sign_count, "the counter is rolled back");
    // A handle already used stops everything after it, even with a
    // counter that would have moved on.
    let mut replayed = session.clone();
    replayed.session_id = SessionId::new();
    let replay = passgate::store::LoginRows {
        used_id: "used:1",
        handle_expires_at: i64::MAX,
        used: &newer,
        session: &replayed,
        refresh_hash: "replayed-hash",
        audit: &third,
        seen: &replay_seen,
    };
    assert_eq!(store.complete_login(&replay).await.unwrap(), LoginStored::CeremonyGone);
    assert!(store.find_session(&replayed.session_id.to_string()).await.unwrap().is_none());
    let credential_now = store.user_credentials(&user_id).await.unwrap().remove(0);
    assert_eq!(credential_now.sign_count, used.sign_count, "the counter did not move");
    // A refused sign-in adds nothing to the history.
    for refused in ["again-net", "counter-net", "clash-net", "replay-net"] {
        assert!(!network_seen(refused).await, "{refused} was added to the history");
    }
    let filter = passgate::store::AuditFilter {
        user_id: Some(user_id.clone()),
        event: Some("login".into()),
        limit: 100,
        ..Default::default()
    };
    let ids: Vec<String> =
        store.audit_events(&filter).await.unwrap().into_iter().map(|row| row.event_id).collect();
    assert!(ids.contains(&first.event_id) && !ids.contains(&second.event_id), "{ids:?}");

    let (a, b) = tokio::join!(
        store.rotate_refresh("first-hash", "second-a", 3, 0),
        store.rotate_refresh("first-hash", "second-b", 3, 0)
    );

    let outcomes = [a.unwrap(), b.unwrap()];
    let rotated = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Rotated(_))).count();
    let reused = outcomes.iter().filter(|o| matches!(o, RefreshOutcome::Reused)).count();
    assert_eq!((rotated, reused), (1, 1));
    let ended = store.find_session(&session.session_id.to_string()).await.unwrap().unwrap();
    assert!(ended.revoked_at.is_some(), "reuse ends the session");
    for token in ["second-a", "second-b"] {
        assert!(matches!(
            store.rotate_refresh(token, "third", 4, 0).await.unwrap(),
            RefreshOutcome::Invalid | RefreshOutcome::Reused
        ));
    }
}

async fn the_first_shared_secret_stored_wins(db: Db) {
    let app = spawn_app(db).await;
    let first = app.store.shared_secret("test-secret", "one", 1).await.unwrap();
    let second = app.store.shared_secret("test-secret", "two", 2).await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("one", "one"));
}

/// SQLite commits writes that wait for the connection together; each is
/// answered only once its group is committed. Sixteen writers keep groups
/// forming, and each checks every answered write at once through a
/// connection of its own, which sees committed rows only.
async fn every_write_answered_amid_a_crowd_is_already_committed(db: Db) {
    let app = spawn_app(db).await;
    let sql = "select count(*) from ceremony where ceremony_id = $1";
    let mut writers = Vec::new();
    for writer in 0..16 {
        let (store, observer) = (app.store.clone(), app.observer(Duration::from_secs(5)).await);
        assert_eq!(observer.count(sql, "warm-up").await, 0);
        writers.push(tokio::spawn(async move {
            for n in 0..16 {
                let id = format!("crowd-{writer}-{n}");
                store.put_ceremony(&ceremony(&id, i64::MAX)).await.unwrap();
                assert_eq!(observer.count(sql, &id).await, 1, "{id} answered before committed");
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

/// A write that fails (here a ceremony id already taken) while others
/// wait with it fails alone: on SQLite it is taken back to its savepoint
/// and the rest of its group commits.
async fn a_failing_write_amid_a_crowd_fails_alone(db: Db) {
    let app = spawn_app(db).await;
    app.store.put_ceremony(&ceremony("crowd-taken", i64::MAX)).await.unwrap();
    let writes: Vec<_> = (0..16)
        .map(|n| {
            let store = app.store.clone();
            let id = if n == 8 { "crowd-taken".to_owned() } else { format!("crowd-{n}") };
            tokio::spawn(async move { (n, store.put_ceremony(&ceremony(&id, i64::MAX)).await) })
        })
        .collect();
    for write in writes {
        match write.await.unwrap() {
            (8, stored) => assert!(
                matches!(stored, Err(passgate::store::StoreError::Conflict(_))),
                "{stored:?}"
            ),
            (n, stored) => assert!(stored.is_ok(), "crowd-{n}: {stored:?}"),
        }
    }
    let observer = app.observer(Duration::from_secs(5)).await;
    let sql = "select count(*) from ceremony where ceremony_id like $1";
    assert_eq!(observer.count(sql, "crowd-%").await, 16);
}

/// Polls a future once, as a request does before it goes away; its output
/// if that poll finished it. (Fused: a finished one is not polled again.)
async fn poll_once<F: Future>(future: &mut std::pin::Pin<Box<F>>) -> Option<F::Output> {
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx)));
    match polled.await {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// A request that goes away midway (its future dropped) must not leave a
/// transaction open: on SQLite that would hold the write lock against
/// every other process, such as `passgate admin`, until the next request.
async fn a_write_cancelled_midway_leaves_the_database_to_other_writers(db: Db) {
    let app = spawn_app(db).await;
    let mut rows = ["first", "cancelled", "queued"].map(|id| ceremony(id, i64::MAX));
    // Large enough that its write is still running when it goes away.
    rows[1].state = format!("\"{}\"", "x".repeat(16 << 20));
    let [mut first, mut cancelled, mut queued] =
        rows.each_ref().map(|row| Box::pin(app.store.put_ceremony(row).fuse()));
    let first_done = poll_once(&mut first).await;
    let _ = poll_once(&mut cancelled).await;
    let _ = poll_once(&mut queued).await;
    match first_done {
        Some(done) => done.unwrap(),
        None => first.await.unwrap(),
    }
    // The connection is `cancelled`'s now, with `queued` waiting behind:
    // on SQLite it opens a group of writes, sends its statements, and goes.
    let _ = poll_once(&mut cancelled).await;
    drop((cancelled, queued));

    let observer = app.observer(Duration::from_secs(2)).await;
    let insert = "insert into ceremony (ceremony_id, kind, state, expires_at) \
                  values ($1, 'login', '{}', 9000000000000)";
    observer.execute(insert, "from-another-process").await.expect("the write lock is free");
    let sql = "select count(*) from ceremony where ceremony_id = $1";
    assert_eq!(observer.count(sql, "first").await, 1);
    app.store.put_ceremony(&ceremony("afterwards", i64::MAX)).await.unwrap();
    assert_eq!(observer.count(sql, "afterwards").await, 1);
}

/// SQLite's log is copied into the file by a task of the store's own; a
/// copy never catches up with steady writes by itself (they add to the log
/// while it runs), so past 16,000 pages the task finishes the copy with
/// writes held back and the next write starts the log over. Without that
/// the log would grow to the writer's own backstop at 40,000 pages. The
/// log file keeps its size when it starts over, so its size tells.
#[tokio::test]
async fn the_sqlite_write_ahead_log_starts_over_under_steady_writes() {
    let app = spawn_app(Db::Sqlite).await;
    let path = app.db.url.strip_prefix("sqlite:").unwrap().to_owned() + "-wal";
    // Each state spills onto eight overflow pages: 4,000 writes are about
    // 40,000 pages, 160 MB of log if it never started over (70 MB with
    // the held-back copy, as measured when this test was written). At one
    // write a millisecond the copy keeps up but never catches up by
    // itself, as under steady sign-ins.
    let mut big = ceremony("big", i64::MAX);
    big.state = format!("\"{}\"", "x".repeat(32 << 10));
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0..4_000 {
        pace.tick().await;
        big.ceremony_id = format!("big-{n}");
        app.store.put_ceremony(&big).await.unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 100 << 20, "the log grew to {size} bytes");
}

/// STAT4 samples (from an ANALYZE run on the file by hand) make SQLite plan
/// every statement again each time it runs; a node removes them at start.
#[tokio::test]
async fn sqlite_plan_samples_left_by_analyze_are_removed_at_start() {
    let app = spawn_app(Db::Sqlite).await;
    for n in 0..50 {
        app.store.put_ceremony(&ceremony(&format!("sampled-{n}"), i64::MAX)).await.unwrap();
    }
    let observer = app.observer(Duration::from_secs(5)).await;
    observer.execute("analyze", "unused").await.unwrap_or_else(|error| panic!("{error}"));
    let samples = "select count(*) from sqlite_stat4 where tbl <> $1";
    assert!(observer.count(samples, "").await > 0, "ANALYZE left samples");

    let restarted = crate::helpers::spawn_app_on(&app).await;

    assert_eq!(observer.count(samples, "").await, 0);
    let plans = "select count(*) from sqlite_stat1 where tbl = $1";
    assert!(observer.count(plans, "ceremony").await > 0, "the other statistics stay");
    restarted.store.put_ceremony(&ceremony("afterwards", i64::MAX)).await.unwrap();
}

/// PostgreSQL restarted, or a proxy cut the node's connections: every
/// pooled connection is dead at once, though none sat idle. The first step
/// to meet one fails (a 503 to its caller); from then on every pooled
/// connection is checked before it is lent, and the next steps run on new
/// ones. Without that check each dead connection would go back to the pool
/// and fail a step in turn, for as long as the load kept it busy.
#[tokio::test]
async fn postgresql_connections_cut_by_the_server_are_replaced_after_one_failed_step() {
    use sqlx::Connection;
    let app = spawn_app(Db::Postgres).await;
    // Four writes held up at once by a lock open four connections (a quick
    // step may be over before the next starts, and leave its connection).
    let mut admin = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let mut lock = admin.begin().await.unwrap();
    sqlx::query("lock table ceremony in exclusive mode").execute(&mut *lock).await.unwrap();
    let rows: Vec<_> = (0..4).map(|n| ceremony(&format!("cut-{n}"), i64::MAX)).collect();
    let writes = futures_util::future::join_all(rows.iter().map(|row| app.store.put_ceremony(row)));
    let (written, _) = tokio::join!(writes, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        lock.commit().await.unwrap();
    });
    assert!(written.iter().all(Result::is_ok), "{written:?}");
    let last_used = std::time::Instant::now();
    let (open, idle) = app.store.pool_state();
    assert!(open >= 4 && idle >= 4, "{open} open, {idle} idle");

    let cut: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(cut.len() >= 4 && cut.iter().all(|done| *done), "{cut:?}");
    // Let each backend finish going away, well within the second after
    // which an idle connection is pinged anyway.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Idle under a second: nothing but the failure has them checked.
    let checked_for_idleness = last_used.elapsed() >= Duration::from_millis(900);
    let mut failed = 0;
    for _ in 0..8 {
        if let Err(error) = app.store.ping().await {
            assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
            failed += 1;
        }
    }
    assert!(failed <= 1, "{failed} of 8 steps failed after the cut");
    assert!(failed == 1 || checked_for_idleness, "the first step on a dead connection failed");
    admin.close().await.unwrap();
}

/// A transaction that fails midway is dropped with its rollback queued on
/// the connection, not sent; the pool sends it as the connection comes
/// back, so its locks go at once rather than whenever that connection is
/// next lent.
#[tokio::test]
async fn a_postgresql_transaction_that_fails_midway_lets_go_of_its_locks_at_once() {
    let app = spawn_app(Db::Postgres).await;
    let existing = app.store.signing_keys().await.unwrap().remove(0);
    // A rotation to a key whose id is taken fails inside its transaction.
    let failed = app.store.rotate_signing_key(&existing, &existing.kid, 1).await;
    assert!(matches!(failed, Err(StoreError::Conflict(_))), "{failed:?}");
    let observer = app.observer(Duration::from_secs(5)).await;
    let open = "select count(*) from pg_stat_activity \
                where datname = current_database() and state like $1";
    let mut left = -1;
    for _ in 0..20 {
        left = observer.count(open, "idle in transaction%").await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "a connection stayed inside the failed transaction");
}
