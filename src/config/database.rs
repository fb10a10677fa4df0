//! `[database]`: which database, and how many connections to it.

use std::fmt;

use anyhow::bail;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    url: SecretString,
    max_connections: u32,
}

impl fmt::Debug for RawDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawDatabase").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub max_connections: u32,
}

/// Which engine a database URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL whose `Debug` never shows the password.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn backend(&self) -> anyhow::Result<Backend> {
        let text = self.0.expose_secret();
        if text.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            bail!(
                "database.url: the scheme must be sqlite: or postgres:// (got {})",
                self.redacted()
            )
        }
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with any password replaced, fit for logs and errors.
    pub fn redacted(&self) -> String {
        match Url::parse(self.0.expose_secret()) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            Ok(url) => url.to_string(),
            Err(_) => "<unparseable url>".to_owned(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

pub(super) fn validate_database(raw: RawDatabase) -> anyhow::Result<DatabaseSettings> {
    let url = DatabaseUrl(raw.url);
    url.backend()?;
    if raw.max_connections == 0 {
        bail!("database.max_connections: must be at least 1");
    }
    Ok(DatabaseSettings { url, max_connections: raw.max_connections })
}
