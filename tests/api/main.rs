//! One integration-test binary: every API test runs the real app in-process
//! on a loopback port, against SQLite and PostgreSQL.
mod authenticator;
