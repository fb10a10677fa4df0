//! A soak test: one server under a steady mix of load for ten minutes (by
//! default), judged on what a long run shows and a short test cannot: its
//! memory and open files stay bounded, housekeeping keeps the tables of
//! short-lived rows bounded, and nothing answers 5xx.
//!
//! It starts the server binary (the debug build that `cargo test` leaves,
//! by default) as a child process on a loopback port, with lifetimes of
//! seconds and housekeeping every 5 s, registers users with the test
//! suite's software authenticator, then runs these clients together until
//! the time is up:
//!
//! - passkey sign-ins (start + finish; one in ten started and abandoned),
//! - refresh-token rotations, each session until its end, then a new
//!   sign-in (one in 25 ended by a logout instead),
//! - payment step-ups (start + finish with a transaction; one in ten
//!   abandoned), refreshing or signing in again when the access token ends,
//! - password + TOTP sign-ins (one in ten left at the mfa_token),
//! - a flood of wrong passwords against accounts and unknown names, from
//!   many client addresses: 401, 403 (locked) and 429 are its answers.
//!
//! Every request names its client in X-Forwarded-For, which the server
//! believes of loopback: a documentation address (RFC 3849, RFC 5737) of
//! its own for most, a few shared ones for a quarter of the flood, so the
//! per-address limits hold as in production without making every client
//! one.
//! Every few seconds it samples the server's RSS and open files from /proc
//! and counts the rows of the ceremony, session, refresh-token, rate-limit,
//! mfa-token and lockout tables with a connection of its own; at the end it
//! checks them (TESTING.md, "Soak") and exits 1 when any check fails.
//!
//!   cargo build && cargo run --example soak -- [--db sqlite|postgres] \
//!       [--minutes 10 | --seconds N] [--sample-seconds 10] [--server PATH]

#[path = "../tests/api/authenticator.rs"]
mod authenticator;
#[path = "../tests/api/otp.rs"]
mod otp;

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authenticator::SoftAuthenticator;
use common::{PASSWORD, now_secs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

// The node's lifetimes, short enough that each kind of row is made and
// deleted many times over in a run of minutes (the lowest each setting
// takes, where it has a floor).
const CEREMONY_TTL: u64 = 10;
const ACCESS_TTL: u64 = 10;
const IDLE_TIMEOUT: u64 = 20;
const REFRESH_TTL: u64 = 40;
const MFA_TTL: u64 = 30;
const HOUSEKEEPING_INTERVAL: u64 = 5;
const ENDED_SESSIONS_KEPT: u64 = 10;
/// Rate-limit windows are fixed minutes (src/service/throttle.rs).
const RATE_WINDOW: u64 = 60;
/// A housekeeping round's own time and the sampler's lag behind it.
const SLACK: u64 = 5;

/// Clients of each kind (each one request at a time), and users each owns.
const SIGN_IN: (usize, usize) = (4, 8);
const REFRESH: (usize, usize) = (2, 8);
const STEP_UP: (usize, usize) = (2, 8);
const PASSWORD_TOTP: (usize, usize) = (2, 32);
const FLOOD_CLIENTS: usize = 8;
/// Flood targets: accounts with a password, and names that are none.
const FLOOD_ACCOUNTS: usize = 32;
const FLOOD_UNKNOWN: usize = 4096;
const CLIENTS: usize = SIGN_IN.0 + REFRESH.0 + STEP_UP.0 + PASSWORD_TOTP.0 + FLOOD_CLIENTS;

struct Options {
    db: String,
    seconds: u64,
    sample_seconds: u64,
    server: String,
}

fn options() -> Options {
    let mut o = Options {
        db: "sqlite".into(),
        seconds: 600,
        sample_seconds: 10,
        server: concat!(env!("CARGO_MANIFEST_DIR"), "/target/debug/passgate").into(),
    };
    for (flag, value) in common::flags() {
        let number = || value.parse::<u64>().unwrap_or_else(|_| panic!("{flag} N"));
        match flag.as_str() {
            "--db" => o.db = value.clone(),
            "--minutes" => o.seconds = number() * 60,
            "--seconds" => o.seconds = number(),
            "--sample-seconds" => o.sample_seconds = number().max(1),
            "--server" => o.server = value.clone(),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

/// The soak's settings on top of the defaults: short lifetimes, frequent
/// housekeeping, and loopback trusted as the proxy that names clients.
fn node_env() -> Vec<(&'static str, String)> {
    [
        ("PASSGATE__SERVER__TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
        ("PASSGATE__WEBAUTHN__CEREMONY_TTL_SECONDS", CEREMONY_TTL.to_string()),
        ("PASSGATE__TOKENS__ACCESS_TTL_SECONDS", ACCESS_TTL.to_string()),
        ("PASSGATE__TOKENS__IDLE_TIMEOUT_SECONDS", IDLE_TIMEOUT.to_string()),
        ("PASSGATE__TOKENS__REFRESH_TTL_SECONDS", REFRESH_TTL.to_string()),
        ("PASSGATE__MFA__TOKEN_TTL_SECONDS", MFA_TTL.to_string()),
        ("PASSGATE__HOUSEKEEPING__INTERVAL_SECONDS", HOUSEKEEPING_INTERVAL.to_string()),
        ("PASSGATE__HOUSEKEEPING__ENDED_SESSIONS_KEPT_SECONDS", ENDED_SESSIONS_KEPT.to_string()),
    ]
    .into()
}

// ---- requests and their answers

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    RegisterStart,
    RegisterFinish,
    SetPassword,
    TotpStart,
    TotpFinish,
    LoginStart,
    LoginFinish,
    Refresh,
    Logout,
    StepupStart,
    StepupFinish,
    Password,
    PasswordTotp,
    Flood,
}

impl Op {
    fn route(self) -> (Method, &'static str) {
        match self {
            Op::RegisterStart => (Method::POST, "/v1/register/start"),
            Op::RegisterFinish => (Method::POST, "/v1/register/finish"),
            Op::SetPassword => (Method::PUT, "/v1/me/password"),
            Op::TotpStart => (Method::POST, "/v1/me/totp/start"),
            Op::TotpFinish => (Method::POST, "/v1/me/totp/finish"),
            Op::LoginStart => (Method::POST, "/v1/login/start"),
            Op::LoginFinish => (Method::POST, "/v1/login/finish"),
            Op::Refresh => (Method::POST, "/v1/token/refresh"),
            Op::Logout => (Method::POST, "/v1/logout"),
            Op::StepupStart => (Method::POST, "/v1/stepup/start"),
            Op::StepupFinish => (Method::POST, "/v1/stepup/finish"),
            Op::Password | Op::Flood => (Method::POST, "/v1/login/password"),
            Op::PasswordTotp => (Method::POST, "/v1/login/mfa/totp"),
        }
    }

    /// The refusals this load earns on purpose, which a real client meets
    /// and handles; any other 4xx is a failure of the run.
    fn refusal_expected(self, status: u16, code: &str) -> bool {
        match self {
            // Wrong passwords, locked names, limits per address and name.
            Op::Flood => matches!(status, 401 | 403 | 429),
            // The session reached its end (its lifetime or idle timeout),
            // also between a step-up's start and its finish.
            Op::Refresh => status == 401,
            Op::StepupStart | Op::StepupFinish => status == 401 && code == "unauthorized",
            // The hashing queue full, behind the flood.
            Op::Password => status == 429,
            _ => false,
        }
    }

    /// Requests of the rate-limited groups: each counts in at most two
    /// windows (its client address's and its account's).
    fn throttled(self) -> bool {
        matches!(
            self,
            Op::RegisterStart
                | Op::RegisterFinish
                | Op::SetPassword
                | Op::TotpStart
                | Op::TotpFinish
                | Op::Password
                | Op::PasswordTotp
                | Op::Flood
        )
    }
}

/// Answers by operation and status (0: no answer), those that fail the
/// run, and the ceremonies the clients left unfinished on purpose.
#[derive(Clone, Default)]
struct Counts {
    answers: BTreeMap<(Op, u16), u64>,
    /// 5xx, no answer, or a refusal the load did not ask for.
    failed: u64,
    abandoned_sign_ins: u64,
    abandoned_step_ups: u64,
    /// Finishes answered 404 `ceremony_not_found` after their ceremony's
    /// lifetime had passed: right answers, of a machine too busy to keep up.
    late_finishes: u64,
}

impl Counts {
    fn ok(&self, op: Op) -> u64 {
        self.answers.range((op, 200)..(op, 300)).map(|(_, n)| n).sum()
    }

    fn all(&self, op: Op) -> u64 {
        self.answers.range((op, 0)..=(op, u16::MAX)).map(|(_, n)| n).sum()
    }

    fn sessions_made(&self) -> u64 {
        self.ok(Op::RegisterFinish) + self.ok(Op::LoginFinish) + self.ok(Op::PasswordTotp)
    }

    fn throttle_windows_made(&self) -> u64 {
        2 * self.answers.iter().filter(|((op, _), _)| op.throttled()).map(|(_, n)| n).sum::<u64>()
    }

    /// A finished sign-in's handle is recorded as used for two ceremony
    /// lifetimes (src/service/login_handle.rs); an abandoned step-up's
    /// state stays for one. Abandoned sign-ins and finished step-ups and
    /// registrations leave no row.
    fn ceremony_rows_made(&self) -> u64 {
        self.all(Op::LoginFinish) + self.abandoned_step_ups
    }

    fn total(&self) -> u64 {
        self.answers.values().sum()
    }

    fn with_status(&self, status: impl Fn(u16) -> bool) -> u64 {
        self.answers.iter().filter(|((_, s), _)| status(*s)).map(|(_, n)| n).sum()
    }
}

struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The clients' shared HTTP client and tally.
struct Load {
    http: reqwest::Client,
    base: String,
    counts: Mutex<Counts>,
    /// The first few failed requests, for the report: status, problem code
    /// and request id only (never a body: it could hold a token).
    problems: Mutex<Vec<String>>,
    /// Set when the server is gone: the run ends early.
    stop: AtomicBool,
}

impl Load {
    async fn call(&self, op: Op, from: &str, bearer: Option<&str>, body: &Value) -> Answer {
        let answer = self.send(op, from, bearer, body).await;
        self.count(op, &answer, None);
        answer
    }

    async fn send(&self, op: Op, from: &str, bearer: Option<&str>, body: &Value) -> Answer {
        let (method, path) = op.route();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-forwarded-for", from)
            .json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) => {
                        Answer { status, body: serde_json::from_slice(&bytes).unwrap_or_default() }
                    }
                    Err(error) => self.no_answer(op, &error),
                }
            }
            Err(error) => self.no_answer(op, &error),
        }
    }

    fn no_answer(&self, op: Op, error: &reqwest::Error) -> Answer {
        self.note(format!("{op:?}: no answer: {error}"));
        Answer { status: 0, body: Value::Null }
    }

    /// `took`: for a ceremony's finish, the time from the start's request
    /// to this answer.
    fn count(&self, op: Op, answer: &Answer, took: Option<Duration>) {
        let (status, code) = (answer.status, answer.body["code"].as_str().unwrap_or_default());
        let late = took.is_some_and(|took| took >= Duration::from_secs(CEREMONY_TTL));
        let expired = late && status == 404 && code == "ceremony_not_found";
        let failed = !answer.ok() && !op.refusal_expected(status, code) && !expired;
        {
            let mut counts = self.counts.lock().unwrap();
            *counts.answers.entry((op, status)).or_default() += 1;
            counts.failed += u64::from(failed);
            counts.late_finishes += u64::from(expired);
        }
        if status != 0 && failed {
            let id = &answer.body["request_id"];
            let took = took.map(|took| format!(", {} ms after its start", took.as_millis()));
            self.note(format!(
                "{op:?}: {status} {code:?} (request {id}){}",
                took.unwrap_or_default()
            ));
        }
    }

    fn note(&self, problem: String) {
        let mut problems = self.problems.lock().unwrap();
        if problems.len() < 20 {
            problems.push(problem);
        }
    }

    fn abandon(&self, op: Op) {
        let mut counts = self.counts.lock().unwrap();
        match op {
            Op::LoginStart => counts.abandoned_sign_ins += 1,
            _ => counts.abandoned_step_ups += 1,
        }
    }

    fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    fn running(&self, until: Instant) -> bool {
        Instant::now() < until && !self.stop.load(Ordering::Relaxed)
    }
}

/// A client address: a /64 of its own in the IPv6 documentation prefix
/// (RFC 3849), so that nearly every flow makes rate-limit windows of its
/// own for housekeeping to delete.
fn client_ip(rng: &mut StdRng) -> String {
    format!("2001:db8:{:x}:{:x}::1", rng.r#gen::<u16>(), rng.r#gen::<u16>())
}

/// One flood request in four comes from a few IPv4 documentation addresses
/// (RFC 5737), which then meet the per-address limit.
fn flood_ip(rng: &mut StdRng) -> String {
    match rng.gen_range(0..4) {
        0 => format!("203.0.113.{}", rng.gen_range(1..=4)),
        _ => client_ip(rng),
    }
}

// ---- users and what they do

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    SignIn,
    Refresh,
    StepUp,
    PasswordTotp,
    FloodTarget,
}

struct User {
    name: String,
    role: Role,
    authenticator: SoftAuthenticator,
    /// The access token and when to stop using it (a little before it ends).
    access: Option<(String, Instant)>,
    refresh: Option<String>,
    totp_secret: Vec<u8>,
    /// The last TOTP step used: each is accepted once.
    last_step: i64,
}

impl User {
    fn new(name: String, role: Role, origin: &str) -> User {
        User {
            name,
            role,
            authenticator: SoftAuthenticator::new(origin),
            access: None,
            refresh: None,
            totp_secret: Vec::new(),
            last_step: 0,
        }
    }

    fn bearer(&self) -> Option<&str> {
        self.access.as_ref().filter(|(_, until)| Instant::now() < *until).map(|(t, _)| t.as_str())
    }

    /// Keeps the tokens of a successful sign-in or refresh; forgets them
    /// when the session has ended.
    fn take_tokens(&mut self, answer: &Answer) -> bool {
        if !answer.ok() {
            self.access = None;
            self.refresh = None;
            return false;
        }
        let lasts = answer.body["expires_in"].as_u64().unwrap_or(0).saturating_sub(2);
        let access = answer.body["access_token"].as_str().unwrap_or_default().to_owned();
        self.access = Some((access, Instant::now() + Duration::from_secs(lasts)));
        self.refresh = answer.body["refresh_token"].as_str().map(str::to_owned);
        true
    }

    /// A ceremony's start, then its finish with the authenticator's answer
    /// (no finish: abandoned); the finish's answer.
    async fn ceremony(
        &mut self,
        load: &Load,
        from: &str,
        (start, finish): (Op, Option<Op>),
        bearer: Option<&str>,
        body: Value,
    ) -> Option<Answer> {
        let began = Instant::now();
        let started = load.call(start, from, bearer, &body).await;
        if !started.ok() {
            return None;
        }
        let Some(finish) = finish else {
            load.abandon(start);
            return None;
        };
        let public_key = &started.body["publicKey"];
        let credential = match start {
            Op::RegisterStart => self.authenticator.register(public_key),
            _ => self.authenticator.login(public_key),
        };
        let body = json!({"ceremony_id": started.body["ceremony_id"], "credential": credential});
        let answer = load.send(finish, from, bearer, &body).await;
        // Past the handle's lifetime the server must refuse the finish (a
        // machine too busy, CI's with schemathesis beside the soak, can get
        // there); before it, a refusal is a failure as any other.
        load.count(finish, &answer, Some(began.elapsed()));
        Some(answer)
    }

    async fn register(&mut self, load: &Load, from: &str) -> bool {
        let ops = (Op::RegisterStart, Some(Op::RegisterFinish));
        let body = json!({"username": self.name});
        let tokens = self.ceremony(load, from, ops, None, body).await;
        tokens.is_some_and(|tokens| self.take_tokens(&tokens))
    }

    /// A password, and TOTP too for password sign-ins, while the
    /// registration's sign-in is fresh enough for both.
    async fn set_up_fallback(&mut self, load: &Load, from: &str) -> bool {
        let bearer = self.bearer().map(str::to_owned);
        let body = json!({"password": PASSWORD});
        if !load.call(Op::SetPassword, from, bearer.as_deref(), &body).await.ok() {
            return false;
        }
        if self.role != Role::PasswordTotp {
            return true;
        }
        let started = load.call(Op::TotpStart, from, bearer.as_deref(), &json!({})).await;
        self.totp_secret = otp::base32_decode(started.body["secret"].as_str().unwrap_or_default());
        let code = otp::totp_at(&self.totp_secret, now_secs());
        self.last_step = now_secs() / 30;
        let body = json!({"code": code});
        started.ok() && load.call(Op::TotpFinish, from, bearer.as_deref(), &body).await.ok()
    }

    async fn set_up(&mut self, load: &Load, from: &str) -> bool {
        let fallback = matches!(self.role, Role::PasswordTotp | Role::FloodTarget);
        self.register(load, from).await && (!fallback || self.set_up_fallback(load, from).await)
    }

    async fn passkey_sign_in(&mut self, load: &Load, from: &str, abandon: bool) -> bool {
        let ops = (Op::LoginStart, (!abandon).then_some(Op::LoginFinish));
        let body = json!({"username": self.name});
        let tokens = self.ceremony(load, from, ops, None, body).await;
        tokens.is_some_and(|tokens| self.take_tokens(&tokens))
    }

    /// One rotation; a 401 means the session ended, and the next turn
    /// signs in again.
    async fn rotate(&mut self, load: &Load, from: &str) -> bool {
        let Some(refresh) = self.refresh.take() else { return false };
        let body = json!({"refresh_token": refresh});
        let answer = load.call(Op::Refresh, from, None, &body).await;
        self.take_tokens(&answer)
    }

    async fn log_out(&mut self, load: &Load, from: &str) {
        if let Some(refresh) = self.refresh.take() {
            load.call(Op::Logout, from, None, &json!({"refresh_token": refresh})).await;
        }
        self.access = None;
    }

    /// An access token that is still good: refreshed, or a new sign-in.
    async fn fresh_bearer(&mut self, load: &Load, from: &str) -> Option<String> {
        if self.bearer().is_none() && !self.rotate(load, from).await {
            self.passkey_sign_in(load, from, false).await;
        }
        self.bearer().map(str::to_owned)
    }

    async fn step_up(&mut self, load: &Load, from: &str, n: u64, abandon: bool) {
        let Some(bearer) = self.fresh_bearer(load, from).await else { return };
        let amount = format!("{}.{:02}", 1 + n % 500, n % 100);
        let transaction = json!({"amount": amount, "currency": "EUR", "payee": "Coffee Shop"});
        let body = json!({"transaction": transaction});
        let ops = (Op::StepupStart, (!abandon).then_some(Op::StepupFinish));
        self.ceremony(load, from, ops, Some(&bearer), body).await;
    }

    /// Password, then the code of the current step, which must be later
    /// than the last one used.
    async fn password_sign_in(&mut self, load: &Load, from: &str, abandon: bool) {
        let body = json!({"username": self.name, "password": PASSWORD});
        let challenge = load.call(Op::Password, from, None, &body).await;
        if !challenge.ok() || abandon {
            return;
        }
        let now = now_secs();
        let code = otp::totp_at(&self.totp_secret, now);
        self.last_step = now / 30;
        let body = json!({"mfa_token": challenge.body["mfa_token"], "code": code});
        load.call(Op::PasswordTotp, from, None, &body).await;
    }
}

// ---- the clients

struct Client {
    load: Arc<Load>,
    kind: Role,
    users: Vec<User>,
    rng: StdRng,
}

impl Client {
    async fn run(mut self, until: Instant) -> Vec<User> {
        let mut n = 0u64;
        while self.load.running(until) {
            self.turn(n).await;
            n += 1;
        }
        self.users
    }

    async fn turn(&mut self, n: u64) {
        if self.kind == Role::FloodTarget {
            return self.flood().await;
        }
        let from = client_ip(&mut self.rng);
        if self.kind == Role::PasswordTotp {
            return self.password_turn(&from, n).await;
        }
        let load = self.load.clone();
        let index = n as usize % self.users.len();
        let user = &mut self.users[index];
        match self.kind {
            Role::SignIn => {
                user.passkey_sign_in(&load, &from, n % 10 == 9).await;
            }
            Role::Refresh if user.refresh.is_none() => {
                user.passkey_sign_in(&load, &from, false).await;
            }
            Role::Refresh if n % 25 == 24 => user.log_out(&load, &from).await,
            Role::Refresh => {
                user.rotate(&load, &from).await;
            }
            _ => user.step_up(&load, &from, n, n % 10 == 9).await,
        }
    }

    /// The user whose last code is oldest, when one may use the current
    /// step; otherwise a wait for the next step.
    async fn password_turn(&mut self, from: &str, n: u64) {
        let step = now_secs() / 30;
        let load = self.load.clone();
        let Some(user) = self.users.iter_mut().min_by_key(|u| u.last_step) else { return };
        if user.last_step >= step {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        user.password_sign_in(&load, from, n % 10 == 9).await;
    }

    async fn flood(&mut self) {
        let from = flood_ip(&mut self.rng);
        let target = self.rng.gen_range(0..FLOOD_ACCOUNTS + FLOOD_UNKNOWN);
        let name = match target.checked_sub(FLOOD_ACCOUNTS) {
            None => format!("soak-flood-{target}"),
            Some(unknown) => format!("soak-nobody-{unknown}"),
        };
        let body = json!({"username": name, "password": "wrong guess, again"});
        self.load.call(Op::Flood, &from, None, &body).await;
    }
}

fn users(origin: &str) -> Vec<User> {
    let mut users = Vec::new();
    let mut add = |role: Role, prefix: &str, count: usize| {
        users.extend((0..count).map(|i| User::new(format!("soak-{prefix}-{i}"), role, origin)));
    };
    add(Role::SignIn, "signin", SIGN_IN.0 * SIGN_IN.1);
    add(Role::Refresh, "refresh", REFRESH.0 * REFRESH.1);
    add(Role::StepUp, "stepup", STEP_UP.0 * STEP_UP.1);
    add(Role::PasswordTotp, "password", PASSWORD_TOTP.0 * PASSWORD_TOTP.1);
    add(Role::FloodTarget, "flood", FLOOD_ACCOUNTS);
    users
}

/// Registers everyone (and sets passwords and TOTP) eight at a time; a
/// failed check when any of it failed.
async fn set_up(load: &Arc<Load>, users: Vec<User>) -> Result<Vec<User>, Check> {
    let began = Instant::now();
    let users = set_up_all(load, users).await;
    println!("set up {} users in {:.1} s", users.len(), began.elapsed().as_secs_f64());
    match load.counts().failed {
        0 => Ok(users),
        n => Err(check(false, format!("set-up: {n} requests failed"))),
    }
}

async fn set_up_all(load: &Arc<Load>, users: Vec<User>) -> Vec<User> {
    let mut chunks: Vec<Vec<User>> = (0..8).map(|_| Vec::new()).collect();
    for (i, user) in users.into_iter().enumerate() {
        chunks[i % 8].push(user);
    }
    let tasks: Vec<_> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, mut chunk)| {
            let load = load.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(1000 + i as u64);
                for user in &mut chunk {
                    user.set_up(&load, &client_ip(&mut rng)).await;
                }
                chunk
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("set-up task"));
    }
    all
}

/// The clients, each with its share of users of its kind.
fn clients(load: &Arc<Load>, users: Vec<User>) -> Vec<Client> {
    let mut clients = Vec::new();
    let mut users = users;
    for (kind, (count, each)) in [
        (Role::SignIn, SIGN_IN),
        (Role::Refresh, REFRESH),
        (Role::StepUp, STEP_UP),
        (Role::PasswordTotp, PASSWORD_TOTP),
        (Role::FloodTarget, (FLOOD_CLIENTS, 0)),
    ] {
        let (mine, rest): (Vec<User>, Vec<User>) =
            users.into_iter().partition(|u| u.role == kind && kind != Role::FloodTarget);
        users = rest;
        let mut mine = mine.into_iter();
        for _ in 0..count {
            clients.push(Client {
                load: load.clone(),
                kind,
                users: mine.by_ref().take(each).collect(),
                rng: StdRng::seed_from_u64(clients.len() as u64),
            });
        }
    }
    clients
}

// ---- sampling

/// A table, and how many of its rows may be alive at once: those made in
/// the last `lifetime` seconds (or a fixed number), plus the requests in
/// flight.
struct Table {
    name: &'static str,
    count: &'static str,
    bound: Bound,
}

enum Bound {
    /// Rows live at most this many seconds, and `made` counts the requests
    /// that make them.
    Window {
        seconds: u64,
        made: fn(&Counts) -> u64,
    },
    Fixed(u64),
    /// Grows by design (the audit trail): reported, not judged.
    Unbounded,
}

fn tables() -> [Table; 7] {
    let ceremony = 2 * CEREMONY_TTL + HOUSEKEEPING_INTERVAL + SLACK;
    let session = REFRESH_TTL + ENDED_SESSIONS_KEPT + HOUSEKEEPING_INTERVAL + SLACK;
    let window = RATE_WINDOW + HOUSEKEEPING_INTERVAL + SLACK;
    let mfa = MFA_TTL + HOUSEKEEPING_INTERVAL + SLACK;
    // A row a name: each one the flood tries keeps its count (until a
    // sign-in, and a name that is no account for 30 days), and a password
    // user left at its mfa_token a zero count until its next sign-in.
    let names = (FLOOD_ACCOUNTS + FLOOD_UNKNOWN + PASSWORD_TOTP.0 * PASSWORD_TOTP.1) as u64;
    [
        Table {
            name: "ceremony",
            count: "select count(*) from ceremony",
            bound: Bound::Window { seconds: ceremony, made: Counts::ceremony_rows_made },
        },
        Table {
            name: "session",
            count: "select count(*) from session",
            bound: Bound::Window { seconds: session, made: Counts::sessions_made },
        },
        Table {
            name: "refresh_token",
            count: "select count(*) from refresh_token",
            bound: Bound::Window {
                seconds: session,
                made: |c| c.sessions_made() + c.ok(Op::Refresh),
            },
        },
        Table {
            name: "rate_window",
            count: "select count(*) from rate_window",
            bound: Bound::Window { seconds: window, made: Counts::throttle_windows_made },
        },
        Table {
            name: "mfa_token",
            count: "select count(*) from mfa_token",
            bound: Bound::Window { seconds: mfa, made: |c| c.ok(Op::Password) },
        },
        Table {
            name: "login_failure",
            count: "select count(*) from login_failure",
            bound: Bound::Fixed(names),
        },
        Table {
            name: "audit_event",
            count: "select count(*) from audit_event",
            bound: Bound::Unbounded,
        },
    ]
}

/// A connection of the soak's own to the server's database.
enum Observer {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Observer {
    async fn open(url: &str) -> Observer {
        if url.starts_with("sqlite:") {
            let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1);
            Observer::Sqlite(pool.connect(url).await.expect("open the soak database"))
        } else {
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1);
            Observer::Postgres(pool.connect(url).await.expect("open the soak database"))
        }
    }

    async fn count(&self, sql: &'static str) -> i64 {
        let counted = match self {
            Observer::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Observer::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        };
        counted.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

struct Sample {
    /// Seconds since the load began.
    t: f64,
    rss_kib: u64,
    anon_kib: u64,
    fds: usize,
    cpu_seconds: f64,
    rows: Vec<i64>,
    counts: Counts,
}

/// A `Name:   123 kB` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, name: &str) -> u64 {
    let line = common::status_line(pid, name);
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
}

/// Running: not exited (a child that exited and was not waited for yet
/// stays in /proc as a zombie, state Z).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    state.is_some_and(|s| s != 'Z' && s != 'X')
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count())
}

/// Rows first, then the counts: a row whose request is still in flight
/// is then covered by the in-flight allowance, never missed.
async fn sample(observer: &Observer, load: &Load, pid: u32, began: Instant) -> Sample {
    let mut rows = Vec::new();
    for table in tables() {
        rows.push(observer.count(table.count).await);
    }
    Sample {
        t: began.elapsed().as_secs_f64(),
        rss_kib: status_kib(pid, "VmRSS:"),
        anon_kib: status_kib(pid, "RssAnon:"),
        fds: open_files(pid),
        cpu_seconds: common::cpu_seconds(pid),
        rows,
        counts: load.counts(),
    }
}

fn print_header() {
    let names: Vec<String> =
        tables().iter().map(|t| format!(" {:>w$}", t.name, w = width(t))).collect();
    println!(
        "{:>5} {:>7} {:>8} {:>4} {:>5} {:>6}{}",
        "t s",
        "RSS MiB",
        "anon MiB",
        "fds",
        "cpu %",
        "req/s",
        names.join("")
    );
}

/// A table's column: its name, at least 8 wide.
fn width(table: &Table) -> usize {
    table.name.len().max(8)
}

fn print_sample(sample: &Sample, previous: Option<&Sample>) {
    let (rate, cpu) = previous.map_or((0.0, 0.0), |p| {
        let dt = (sample.t - p.t).max(0.001);
        let requests = sample.counts.total().saturating_sub(p.counts.total()) as f64;
        (requests / dt, (sample.cpu_seconds - p.cpu_seconds) / dt * 100.0)
    });
    let rows: Vec<String> =
        tables().iter().zip(&sample.rows).map(|(t, r)| format!(" {r:>w$}", w = width(t))).collect();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{:>5.0} {:>7.1} {:>8.1} {:>4} {:>5.0} {:>6.0}{}",
        sample.t,
        mib(sample.rss_kib),
        mib(sample.anon_kib),
        sample.fds,
        cpu,
        rate,
        rows.join("")
    );
}

async fn sampler(
    load: Arc<Load>,
    observer: Observer,
    pid: u32,
    began: Instant,
    until: Instant,
    every: Duration,
) -> (Vec<Sample>, Observer) {
    let mut samples: Vec<Sample> = Vec::new();
    while load.running(until) {
        let next = sample(&observer, &load, pid, began).await;
        print_sample(&next, samples.last());
        samples.push(next);
        if !alive(pid) {
            println!("the server is gone: the run ends here");
            load.stop.store(true, Ordering::Relaxed);
        }
        let left = until.saturating_duration_since(Instant::now());
        tokio::time::sleep(every.min(left)).await;
    }
    (samples, observer)
}

// ---- the verdict

/// One check's line for the report, and whether it passed.
struct Check {
    passed: bool,
    line: String,
}

fn check(passed: bool, line: String) -> Check {
    Check { passed, line }
}

fn check_answers(counts: &Counts) -> Check {
    let failed = counts.failed;
    let errors = counts.with_status(|s| s >= 500);
    let silent = counts.with_status(|s| s == 0);
    check(
        failed == 0,
        format!(
            "answers: {errors} 5xx, {silent} without an answer, {} other unexpected, of {}",
            failed - errors - silent,
            counts.total()
        ),
    )
}

/// The samples from `settled` seconds on, in thirds by time.
fn thirds(samples: &[Sample], settled: f64) -> Option<[Range<usize>; 3]> {
    let first = samples.iter().position(|s| s.t >= settled)?;
    let (t0, t1) = (samples[first].t, samples[samples.len() - 1].t);
    let cut = |fraction: f64| {
        first + samples[first..].iter().filter(|s| s.t < t0 + (t1 - t0) * fraction).count()
    };
    let parts =
        [first..cut(1.0 / 3.0), cut(1.0 / 3.0)..cut(2.0 / 3.0), cut(2.0 / 3.0)..samples.len()];
    parts.iter().all(|p| !p.is_empty()).then_some(parts)
}

/// Memory may not creep: after the warm-up, the highest of the last third
/// at most the highest of the first plus 10 % or `floor_mib`. Judged for
/// the whole RSS and for its anonymous part (heap and stacks, where a leak
/// shows; the rest is mapped files: the binary and the SQLite file).
fn check_memory(samples: &[Sample], warm_up: f64) -> Check {
    let Some([first, _, last]) = thirds(samples, warm_up) else {
        return check(false, "memory: too few samples after the warm-up; run longer".into());
    };
    let mut passed = true;
    let mut parts = Vec::new();
    for (what, kib, floor_mib) in [
        ("RSS", (|s: &Sample| s.rss_kib) as fn(&Sample) -> u64, 8),
        ("anonymous", |s: &Sample| s.anon_kib, 4),
    ] {
        let max = |part: &Range<usize>| samples[part.clone()].iter().map(kib).max().unwrap_or(0);
        let (early, late) = (max(&first), max(&last));
        let allowed = early + (early / 10).max(floor_mib * 1024);
        passed &= late <= allowed;
        let mib = |kib: u64| kib as f64 / 1024.0;
        parts.push(format!(
            "{what} max {:.1} MiB in the first third, {:.1} in the last (allowed {:.1})",
            mib(early),
            mib(late),
            mib(allowed)
        ));
    }
    check(passed, format!("memory: {}", parts.join("; ")))
}

/// The server's open files: at ready, and again once the load is over
/// and the idle connections are closed.
struct Files {
    ready: usize,
    at_rest: usize,
    /// Connections the server's database pool may open after ready.
    pool: usize,
}

/// Under load, the files open at ready plus one socket for each client's
/// request in flight and each idle one in its pool (at most `CLIENTS`
/// each), the database pool and a little; at rest, back to those at ready.
fn check_fds(samples: &[Sample], files: &Files) -> Check {
    let max = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let ceiling = files.ready + 2 * CLIENTS + files.pool + 8;
    let rest_ceiling = files.ready + files.pool + 2;
    check(
        max <= ceiling && files.at_rest <= rest_ceiling,
        format!(
            "open files: {} at ready, max {max} under load (ceiling {ceiling}), {} at rest \
             (ceiling {rest_ceiling})",
            files.ready, files.at_rest
        ),
    )
}

/// In flight at a sample: a request per client, each of which may have
/// made its row without its answer counted yet, and a little.
const IN_FLIGHT: u64 = 2 * CLIENTS as u64 + 10;

/// Rows allowed at sample `j`: those made since the last sample at least
/// `seconds` earlier (or since the start), plus the requests in flight.
fn allowed_rows(samples: &[Sample], j: usize, seconds: u64, made: fn(&Counts) -> u64) -> u64 {
    let since = samples[..j].iter().rev().find(|s| s.t <= samples[j].t - seconds as f64);
    let before = since.map_or(0, |s| made(&s.counts));
    made(&samples[j].counts) - before + IN_FLIGHT
}

/// The samples over their bound, described.
fn over_bound(
    samples: &[Sample],
    rows: impl Fn(usize) -> u64,
    allowed: impl Fn(usize) -> u64,
) -> Vec<String> {
    (0..samples.len())
        .filter(|&j| rows(j) > allowed(j))
        .map(|j| format!("{} > {} at {:.0} s", rows(j), allowed(j), samples[j].t))
        .collect()
}

fn check_table(samples: &[Sample], index: usize, table: &Table, warm_up: f64) -> Check {
    let rows = |j: usize| samples[j].rows[index].max(0) as u64;
    let end = rows(samples.len() - 1);
    let name = table.name;
    match table.bound {
        Bound::Unbounded => check(true, format!("{name}: {end} rows at the end (grows by design)")),
        Bound::Fixed(n) => {
            let over = over_bound(samples, rows, |_| n + IN_FLIGHT);
            let line = format!("{name}: {end} rows at the end, at most {}", n + IN_FLIGHT);
            bounded(line, &over, false)
        }
        Bound::Window { seconds, made } => {
            let allowed = |j| allowed_rows(samples, j, seconds, made);
            let over = over_bound(samples, rows, allowed);
            // The rows reach their steady number one lifetime into the load.
            let settled = warm_up.max(seconds as f64);
            let (growing, growth) =
                growth(samples, settled, |j| rows(j) as f64 / allowed(j) as f64);
            let line = format!(
                "{name}: {end} rows at the end, at most those made in {seconds} s; {growth}"
            );
            bounded(line, &over, growing)
        }
    }
}

fn bounded(mut line: String, over: &[String], growing: bool) -> Check {
    if let Some(first) = over.first() {
        line += &format!("; over its bound {} times, first {first}", over.len());
    }
    check(over.is_empty() && !growing, line)
}

/// Growth once settled, of the share of its bound a table fills (so that
/// a change in the load's mix, a flood turned cheap, is not taken for
/// it): the highest of the last third more than 1.5 times the highest of
/// the first, plus 0.05. A run too short to have three parts after
/// settling is not judged on it.
fn growth(samples: &[Sample], settled: f64, share: impl Fn(usize) -> f64) -> (bool, String) {
    let Some([first, _, last]) = thirds(samples, settled) else {
        return (false, "growth not judged (too short a run)".into());
    };
    let max = |part: Range<usize>| part.map(&share).fold(0.0, f64::max);
    let (early, late) = (max(first), max(last));
    let growing = late > early * 1.5 + 0.05;
    let word = if growing { "growing" } else { "not growing" };
    (
        growing,
        format!(
            "share of it filled: max {early:.2} in the first third, {late:.2} in the last: {word}"
        ),
    )
}

fn report_answers(counts: &Counts, seconds: f64) {
    println!();
    println!("| operation | answers | by status | per second |");
    println!("|---|---|---|---|");
    let mut ops: Vec<Op> = counts.answers.keys().map(|(op, _)| *op).collect();
    ops.dedup();
    for op in ops {
        let statuses: Vec<String> = counts
            .answers
            .range((op, 0)..=(op, u16::MAX))
            .map(|((_, status), n)| format!("{status}: {n}"))
            .collect();
        let all = counts.all(op);
        println!("| {op:?} | {all} | {} | {:.1} |", statuses.join(", "), all as f64 / seconds);
    }
    println!(
        "abandoned on purpose: {} sign-ins, {} step-ups",
        counts.abandoned_sign_ins, counts.abandoned_step_ups
    );
    println!(
        "finished after the ceremony's lifetime ({CEREMONY_TTL} s), and refused as they must be: {}",
        counts.late_finishes
    );
}

/// The load's own counts: the end's less those at its start.
fn during_load(end: &Counts, start: &Counts) -> Counts {
    let mut counts = end.clone();
    for (key, n) in &start.answers {
        if let Some(total) = counts.answers.get_mut(key) {
            *total -= n;
        }
    }
    counts.answers.retain(|_, n| *n > 0);
    counts.failed -= start.failed;
    counts.abandoned_sign_ins -= start.abandoned_sign_ins;
    counts.abandoned_step_ups -= start.abandoned_step_ups;
    counts.late_finishes -= start.late_finishes;
    counts
}

fn verdict(samples: &[Sample], files: &Files, seconds: u64) -> Vec<Check> {
    let end = samples.last().expect("a sample");
    let warm_up = (seconds as f64 / 4.0).min(60.0);
    let mut checks =
        vec![check_answers(&end.counts), check_memory(samples, warm_up), check_fds(samples, files)];
    for (index, table) in tables().iter().enumerate() {
        checks.push(check_table(samples, index, table, warm_up));
    }
    checks
}

/// The checks, then a closing line in the form CI reads.
fn print_verdict(load: &Load, checks: &[Check]) -> ExitCode {
    println!();
    for problem in load.problems.lock().unwrap().iter() {
        println!("problem: {problem}");
    }
    for c in checks {
        println!("{} {}", if c.passed { "PASS" } else { "FAIL" }, c.line);
    }
    let passed = checks.iter().filter(|c| c.passed).count();
    println!("soak: {passed} passed, {} failed", checks.len() - passed);
    if passed == checks.len() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[tokio::main]
async fn main() -> ExitCode {
    let o = options();
    assert!(
        std::path::Path::new(&o.server).exists(),
        "build the server first: cargo build ({} is missing)",
        o.server
    );
    let scratch = tempfile::tempdir().expect("scratch dir");
    let url = common::database_url(&o.db, scratch.path(), "soak", "prefer").await;
    let env = node_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = common::start_server(&[o.server.as_str()], common::free_port(), &url, &env);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    common::wait_until_ready(&http, &server.base, Duration::from_secs(30)).await;
    let pid = server.child.id();
    let ready_fds = open_files(pid);
    let load = Arc::new(Load {
        http,
        base: server.base.clone(),
        counts: Mutex::default(),
        problems: Mutex::default(),
        stop: AtomicBool::new(false),
    });
    println!(
        "passgate soak: {}, {} s of load, server {} (pid {pid}), {ready_fds} open files at ready",
        o.db, o.seconds, o.server
    );
    let mut checks = match set_up(&load, users(&server.origin)).await {
        Ok(users) => soak(&load, users, &url, pid, ready_fds, &o).await,
        Err(failed) => vec![failed],
    };
    let exited = server.child.try_wait().ok().flatten();
    if let Some(status) = exited {
        checks.push(check(false, format!("the server exited during the run: {status}")));
    }
    drop(server);
    if o.db == "postgres" {
        common::drop_database(&url).await;
    }
    print_verdict(&load, &checks)
}

async fn soak(
    load: &Arc<Load>,
    users: Vec<User>,
    url: &str,
    pid: u32,
    ready_fds: usize,
    o: &Options,
) -> Vec<Check> {
    let observer = Observer::open(url).await;
    let began = Instant::now();
    let until = began + Duration::from_secs(o.seconds);
    print_header();
    let every = Duration::from_secs(o.sample_seconds);
    let sampling = tokio::spawn(sampler(load.clone(), observer, pid, began, until, every));
    let running: Vec<_> =
        clients(load, users).into_iter().map(|c| tokio::spawn(c.run(until))).collect();
    for client in running {
        client.await.expect("client");
    }
    let (mut samples, observer) = sampling.await.expect("sampler");
    let last = sample(&observer, load, pid, began).await;
    print_sample(&last, samples.last());
    samples.push(last);
    let seconds = began.elapsed().as_secs_f64();
    let start = &samples[0].counts;
    report_answers(&during_load(&samples[samples.len() - 1].counts, start), seconds);
    // The server closes a connection idle for 5 s (actix's keep-alive).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pool = if url.starts_with("postgres") { 8 } else { 0 };
    let files = Files { ready: ready_fds, at_rest: open_files(pid), pool };
    report_database_files(url);
    verdict(&samples, &files, o.seconds)
}

/// The SQLite file and its write-ahead log: the file grows with the
/// audit trail, the log is started over past 64 MiB (src/store/sqlite/checkpoint.rs).
fn report_database_files(url: &str) {
    let Some(path) = url.strip_prefix("sqlite:") else { return };
    let mib = |path: String| std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    println!(
        "SQLite file {:.1} MiB, write-ahead log {:.1} MiB",
        mib(path.to_owned()),
        mib(format!("{path}-wal"))
    );
}
