//! Outgoing mail (one-time codes). With an SMTP host configured, mail goes
//! through it (lettre; none, STARTTLS or implicit TLS); without one, each
//! message is written as an .eml file to the outbox folder, so the embedded
//! default works with nothing else installed.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{SmtpSettings, SmtpTls};

pub enum Mailer {
    Smtp { transport: AsyncSmtpTransport<Tokio1Executor>, from: Mailbox },
    Outbox { dir: PathBuf, from: Mailbox },
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Mailer> {
        let from: Mailbox = settings.from.parse().context("smtp.from")?;
        let Some(host) = &settings.host else {
            return Ok(Mailer::Outbox { dir: settings.outbox_dir.clone(), from });
        };
        let mut builder = match settings.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .with_context(|| format!("smtp.host: {host}"))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .with_context(|| format!("smtp.host: {host}"))?,
        };
        if let Some(path) = &settings.ca_file {
            let parameters = trusting(host, path)
                .with_context(|| format!("smtp.ca_file: {}", path.display()))?;
            builder = builder.tls(match settings.tls {
                SmtpTls::Tls => Tls::Wrapper(parameters),
                _ => Tls::Required(parameters),
            });
        }
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let Some(username) = &settings.username {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                settings.password.expose_secret().to_owned(),
            ));
        }
        Ok(Mailer::Smtp { transport: builder.build(), from })
    }

    /// Sends a plain-text message. The body may hold a code: it goes to the
    /// mail server or the outbox, never to the log.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> anyhow::Result<()> {
        let (Mailer::Smtp { from, .. } | Mailer::Outbox { from, .. }) = self;
        let message = Message::builder()
            .from(from.clone())
            .to(to.parse().context("recipient address")?)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .context("building the message")?;
        match self {
            Mailer::Smtp { transport, .. } => {
                transport.send(message).await.map_err(|e| anyhow!("SMTP delivery failed: {e}"))?;
                tracing::info!(subject, "mail sent");
            }
            Mailer::Outbox { dir, .. } => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .with_context(|| format!("smtp.outbox_dir: cannot create {}", dir.display()))?;
                let path = dir.join(format!("{}.eml", uuid::Uuid::now_v7()));
                tokio::fs::write(&path, message.formatted())
                    .await
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!(subject, path = %path.display(), "mail written to the outbox (no smtp.host set)");
            }
        }
        Ok(())
    }
}

/// TLS to `host` trusting the certificates in the PEM file at `path` (one
/// or a bundle) as well as the system's.
fn trusting(host: &str, path: &std::path::Path) -> anyhow::Result<TlsParameters> {
    let pem = std::fs::read(path).context("cannot read it")?;
    let certificates = openssl::x509::X509::stack_from_pem(&pem).context("not PEM certificates")?;
    if certificates.is_empty() {
        anyhow::bail!("no certificate in it");
    }
    let mut parameters = TlsParameters::builder(host.to_owned());
    for certificate in certificates {
        parameters = parameters.add_root_certificate(Certificate::from_der(certificate.to_der()?)?);
    }
    Ok(parameters.build()?)
}
