//! One integration-test binary: every API test runs the real app in-process
//! on a loopback port, against SQLite and PostgreSQL (`name::sqlite`,
//! `name::postgres`), plus one browser test in headless Chromium.
mod admin;
mod apps;
mod assertion;
mod authenticator;
mod bad_input;
mod browser;
mod cli;
mod container;
mod cors;
mod devices;
mod discovery;
mod downstream;
mod fallback;
mod faults;
mod helpers;
mod keys;
mod logs;
mod mail_language;
mod metrics;
mod operations;
mod otp;
mod passkeys;
mod phishing;
mod proxies;
mod races;
mod recovery;
mod risk;
mod secrets;
mod security_headers;
mod smtp;
mod stepup;
mod store;
mod store_aggregates;
mod tokens;
mod unauthenticated;
