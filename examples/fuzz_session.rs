//! Makes the signed-in user that `.ci/fuzz` hands to schemathesis, so that
//! the fuzzer gets past the bearer check of every route. On a running node
//! it registers a passkey user (with the test suite's software
//! authenticator), makes it an admin with the node's own CLI, signs in
//! again with the passkey (a fresh passkey sign-in opens the admin actions
//! and the sensitive changes to the fuzzer too), and prints the access
//! token on stdout. The CLI inherits the node's `PASSGATE__*` settings from
//! this process's environment.
//!
//!   cargo run --example fuzz_session -- BASE_URL ORIGIN USERNAME PASSGATE_BINARY

#[path = "../tests/api/authenticator.rs"]
mod authenticator;

use std::process::Command;

use authenticator::SoftAuthenticator;
use serde_json::{Value, json};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, origin, username, binary] = args.as_slice() else {
        eprintln!("usage: fuzz_session BASE_URL ORIGIN USERNAME PASSGATE_BINARY");
        std::process::exit(2);
    };
    let client = Client { http: reqwest::Client::new(), base: base.clone() };
    let mut authenticator = SoftAuthenticator::new(origin);

    let started = client.post("/v1/register/start", json!({ "username": username })).await;
    let credential = authenticator.register(&started["publicKey"]);
    client
        .post(
            "/v1/register/finish",
            json!({ "ceremony_id": started["ceremony_id"], "credential": credential }),
        )
        .await;

    // Its report goes to stderr: stdout carries only the token.
    let granted = Command::new(binary).args(["admin", "grant", username]).output().expect(binary);
    eprint!("{}", String::from_utf8_lossy(&granted.stdout));
    assert!(granted.status.success(), "passgate admin grant {username}");

    let started = client.post("/v1/login/start", json!({ "username": username })).await;
    let assertion = authenticator.login(&started["publicKey"]);
    let tokens = client
        .post(
            "/v1/login/finish",
            json!({ "ceremony_id": started["ceremony_id"], "credential": assertion }),
        )
        .await;
    println!("{}", tokens["access_token"].as_str().expect("an access token"));
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// Posts JSON and returns the answer's JSON; any refusal ends the run,
    /// since the fuzzer would otherwise run signed out without saying so.
    async fn post(&self, path: &str, body: Value) -> Value {
        let response =
            self.http.post(format!("{}{path}", self.base)).json(&body).send().await.expect(path);
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}
