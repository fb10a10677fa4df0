//! `[smtp]`: how passgate sends mail (emailed codes, enrolment codes), or
//! writes it to an outbox directory instead.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    host: String,
    port: u16,
    tls: String,
    username: String,
    password: SecretString,
    from: String,
    outbox_dir: PathBuf,
    timeout_seconds: u64,
    ca_file: String,
}

impl fmt::Debug for RawSmtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSmtp").field("host", &self.host).finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Tls,
}

#[derive(Clone)]
pub struct SmtpSettings {
    /// None: mail is written to `outbox_dir` instead of sent.
    pub host: Option<String>,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: SecretString,
    pub from: String,
    pub outbox_dir: PathBuf,
    pub timeout: Duration,
    /// A PEM file of certificates to trust for the mail server, besides
    /// the system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("from", &self.from)
            .field("outbox_dir", &self.outbox_dir)
            .finish_non_exhaustive()
    }
}

pub(super) fn validate_smtp(raw: RawSmtp) -> anyhow::Result<SmtpSettings> {
    let tls = match raw.tls.trim().to_ascii_lowercase().as_str() {
        "none" => SmtpTls::None,
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Tls,
        other => bail!("smtp.tls: {other:?} is not one of none, starttls, tls"),
    };
    let host = Some(raw.host.trim().to_owned()).filter(|h| !h.is_empty());
    if host.is_some() && raw.port == 0 {
        bail!("smtp.port: must not be 0");
    }
    if raw.from.parse::<lettre::message::Mailbox>().is_err() {
        bail!(
            "smtp.from: {:?} is not an address like \"passgate <no-reply@example.com>\"",
            raw.from
        );
    }
    if raw.timeout_seconds == 0 {
        bail!("smtp.timeout_seconds: must be at least 1");
    }
    let username = Some(raw.username.trim().to_owned()).filter(|u| !u.is_empty());
    if username.is_some() && tls == SmtpTls::None {
        bail!("smtp.username: credentials are refused over smtp.tls = none; use starttls or tls");
    }
    let ca_file = Some(raw.ca_file.trim()).filter(|f| !f.is_empty()).map(PathBuf::from);
    if ca_file.is_some() && tls == SmtpTls::None {
        bail!("smtp.ca_file: there is no TLS to trust it for with smtp.tls = none");
    }
    Ok(SmtpSettings {
        host,
        port: raw.port,
        tls,
        username,
        password: raw.password,
        from: raw.from,
        outbox_dir: raw.outbox_dir,
        timeout: Duration::from_secs(raw.timeout_seconds),
        ca_file,
    })
}
