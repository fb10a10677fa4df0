//! Running the server, and the operator's commands around it: checking
//! the settings, migrating, the health check a container runs, backups.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use passgate::config::{LogFormat, Settings, SmtpTls};
use passgate::startup::Application;
use secrecy::ExposeSecret;

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.server.bind;
    let database = settings.database.url.redacted();
    let app = Application::build(settings).await?;
    tracing::info!(%bind, %database, "passgate listening on http://{bind}");
    app.run_until_stopped().await?;
    Ok(())
}

/// `config check`: the settings loaded (that already refused bad values,
/// naming the key), the checks a start makes before it opens the database,
/// then what is in force, with every secret shown only as set or not.
pub fn config_check(settings: &Settings) -> anyhow::Result<()> {
    passgate::service::check_settings(settings)?;
    let list = |urls: &[url::Url]| {
        let listed: Vec<&str> = urls.iter().map(|u| u.as_str().trim_end_matches('/')).collect();
        if listed.is_empty() { "(none)".to_owned() } else { listed.join(", ") }
    };
    let set = |yes: bool| if yes { "set (hidden)" } else { "not set" };
    let smtp = &settings.smtp;
    let mail = match &smtp.host {
        None => format!("written to the outbox folder {}", smtp.outbox_dir.display()),
        Some(host) => {
            let tls = match smtp.tls {
                SmtpTls::None => "no TLS",
                SmtpTls::StartTls => "STARTTLS",
                SmtpTls::Tls => "TLS",
            };
            let login = match &smtp.username {
                Some(user) => format!(
                    ", as {user}, password {}",
                    set(!smtp.password.expose_secret().is_empty())
                ),
                None => String::new(),
            };
            format!("sent through {host}:{} with {tls}{login}", smtp.port)
        }
    };
    let log = match settings.log.format {
        LogFormat::Json => "json",
        LogFormat::Pretty => "pretty",
    };
    let static_dir = &settings.server.static_dir;
    let pages = if static_dir.is_dir() { "" } else { " (missing: the pages will answer 404)" };
    let rows = [
        ("server.bind", settings.server.bind.to_string()),
        ("server.static_dir", format!("{}{pages}", static_dir.display())),
        (
            "server.admin_bind",
            match settings.server.admin_bind {
                Some(admin) => format!("{admin} (/metrics and /v1/admin only there)"),
                None => "(off: /metrics and /v1/admin on server.bind)".to_owned(),
            },
        ),
        (
            "server.cors_origins",
            if settings.server.cors_origins.is_empty() {
                "(none: no cross-origin calls)".to_owned()
            } else {
                settings.server.cors_origins.join(", ")
            },
        ),
        ("database.url", settings.database.url.redacted()),
        ("webauthn.rp_id", settings.webauthn.rp_id.clone()),
        ("webauthn.origins", list(&settings.webauthn.origins)),
        ("tokens.issuer", settings.tokens.issuer.clone()),
        ("tokens.audience", settings.tokens.audience.clone()),
        ("tokens.key_encryption_key", set(settings.tokens.key_encryption_key.is_some()).into()),
        ("smtp", mail),
        ("log", format!("{}, {log}", settings.log.level)),
        (
            "anomaly.webhook_url",
            match &settings.anomaly.webhook {
                // The URL may carry the receiver's token: the host only.
                Some(hook) => format!(
                    "to {} (secret set (hidden), {} attempts)",
                    hook.url.host_str().unwrap_or(""),
                    hook.attempts
                ),
                None => "(off: alerts are recorded and counted, not sent)".to_owned(),
            },
        ),
        (
            "risk",
            match (settings.risk.enabled, &settings.risk.rules_file) {
                (false, _) => "off".to_owned(),
                (true, None) => "the built-in rules".to_owned(),
                (true, Some(path)) => format!("rules from {}", path.display()),
            },
        ),
    ];
    println!("configuration is valid");
    for (key, value) in rows {
        println!("  {key:<27}{value}");
    }
    for warning in &settings.warnings {
        println!("  warning: {warning}");
    }
    Ok(())
}

/// `migrate`: connecting runs the migrations (once, under a lock, on
/// PostgreSQL), so this connects and reports.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let _store = passgate::store::connect(&settings.database).await?;
    let (count, newest) = passgate::store::maintenance::migrations();
    println!(
        "{}: schema up to date ({count} migrations, the newest {newest})",
        settings.database.url.redacted()
    );
    Ok(())
}

/// `backup PATH`: an online copy of the SQLite database.
pub async fn backup(settings: &Settings, path: &Path) -> anyhow::Result<()> {
    let done = passgate::store::maintenance::backup_sqlite(&settings.database, path).await?;
    println!(
        "backup written to {} ({} bytes, {} accounts)",
        path.display(),
        done.bytes,
        done.accounts
    );
    Ok(())
}

/// `healthcheck`: GET /healthz of this host's server, over plain TCP (the
/// server speaks HTTP/1.1 behind a TLS proxy), so that the image needs no
/// curl. 0 when it answers 200 within `timeout_seconds`.
pub async fn healthcheck(settings: &Settings, timeout_seconds: u64) -> anyhow::Result<()> {
    let address = loopback_for(settings.server.bind);
    let timeout = Duration::from_secs(timeout_seconds.max(1));
    let status = tokio::task::spawn_blocking(move || get_status(address, "/healthz", timeout))
        .await
        .context("the health check did not finish")?
        .with_context(|| format!("http://{address}/healthz"))?;
    if status != 200 {
        bail!("http://{address}/healthz answered {status}, not 200");
    }
    println!("http://{address}/healthz answered 200");
    Ok(())
}

/// Where to reach a server bound to `bind` from this host: a wildcard
/// address means every interface, loopback among them.
fn loopback_for(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, bind.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, bind.port()).into(),
        _ => bind,
    }
}

/// The status code of `GET path` at `address`, each step within `timeout`.
fn get_status(address: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, timeout).context("cannot connect")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: passgate-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).context("cannot send the request")?;
    // The status line is all that is needed; it comes first.
    let mut head = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 256 {
        match stream.read(&mut byte).context("no answer")? {
            0 => break,
            _ => head.push(byte[0]),
        }
    }
    parse_status_line(&head).context("not an HTTP answer")
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_reached_on_loopback_and_others_as_they_are() {
        let at = |text: &str| loopback_for(text.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(at("[::]:9000"), "[::1]:9000");
        assert_eq!(at("10.1.2.3:80"), "10.1.2.3:80");
        assert_eq!(at("[::1]:8080"), "[::1]:8080");
    }

    #[test]
    fn only_an_http_status_line_gives_a_status() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH_9.6\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 abc\r\n"), None);
    }
}
