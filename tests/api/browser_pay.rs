//! The pay page in real headless Chromium (tests/browser/pay.mjs): a user
//! registered on `/` approves payments on `/pay.html` with the virtual
//! authenticator, and the payment_api example, running beside passgate,
//! verifies and accepts each one across origins (CORS).

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use crate::downstream::payment_api;
use crate::helpers::{Db, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pay_page_approves_a_payment_that_the_payment_api_accepts() {
    let app = spawn_app(Db::Sqlite).await;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let payment_api_url = format!("http://{}/payments", listener.local_addr().unwrap());
    let options = payment_api::Options {
        passgate_url: app.address.clone(),
        // The page is opened as http://localhost:PORT, passgate's web origin.
        allowed_origin: app.origin.clone(),
        workers: 1,
        ..payment_api::Options::default()
    };
    tokio::spawn(payment_api::serve(listener, &options).expect("payment API starts"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    crate::browser::ensure_node_modules(&dir);

    // Both servers run on this runtime while node waits on another thread.
    let base_url = app.origin.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("pay.mjs")
            .current_dir(&dir)
            .env("BASE_URL", base_url)
            .env("PAYMENT_API", payment_api_url)
            .output()
            .expect("node must be installed for the browser test (see README)")
    })
    .await
    .expect("browser test thread");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pay page browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
