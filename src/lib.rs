//! passgate: a FIDO2/WebAuthn passwordless authentication server.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod clock;
pub mod config;
pub mod context;
pub mod domain;
pub mod error;
pub mod mailer;
pub mod metrics;
pub mod net;
pub mod routes;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;

#[cfg(test)]
mod layering;
