//! Outgoing mail (one-time codes). With an SMTP host configured, mail goes
//! through it (lettre; none, STARTTLS or implicit TLS); without one, each
//! message is written as an .eml file to the outbox folder, so the embedded
//! default works with nothing else installed. Outbox messages hold live
//! codes: the folder is the owner's only (0700), each file 0600.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{SmtpSettings, SmtpTls};

pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        /// The whole send's limit, `smtp.timeout_seconds`.
        limit: std::time::Duration,
    },
    Outbox {
        dir: PathBuf,
        from: Mailbox,
    },
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
        Ok(Mailer::Smtp { transport: builder.build(), from, limit: settings.timeout })
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
            Mailer::Smtp { transport, limit, .. } => {
                // lettre's own timeout covers connecting, not a server that
                // accepts and then says nothing: the whole send is bounded.
                match tokio::time::timeout(*limit, transport.send(message)).await {
                    Ok(sent) => sent.map_err(|e| anyhow!("SMTP delivery failed: {e}"))?,
                    Err(_) => {
                        return Err(anyhow!(
                            "SMTP delivery gave up after smtp.timeout_seconds ({} s)",
                            limit.as_secs()
                        ));
                    }
                };
                tracing::info!(subject, "mail sent");
            }
            Mailer::Outbox { dir, .. } => {
                let path = dir.join(format!("{}.eml", uuid::Uuid::now_v7()));
                let formatted = message.formatted();
                let written = path.clone();
                tokio::task::spawn_blocking(move || write_private(&written, &formatted))
                    .await
                    .map_err(|e| anyhow!("writing to the outbox: {e}"))??;
                tracing::info!(subject, path = %path.display(), "mail written to the outbox (no smtp.host set)");
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to a new file at `path` with mode 0600 (set at creation,
/// so the code is never readable by others, whatever the umask), in a
/// folder made (or narrowed to) mode 0700.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = path.parent().context("an outbox file has a folder")?;
    let cannot = || format!("smtp.outbox_dir: cannot create {}", dir.display());
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(cannot)?;
    // A folder made before (or by hand) keeps its mode otherwise.
    if std::fs::metadata(dir).with_context(cannot)?.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(cannot)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
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
