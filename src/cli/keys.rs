//! `keys …`: token signing keys and the key-encryption key. They run
//! against the same database as the server, safely while it serves: nodes
//! pick up a new key within a minute, and keep accepting tokens of the
//! previous one. `reseal` is the exception: see there.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use passgate::clock::{Clock, SystemClock};
use passgate::config::Settings;
use passgate::service::Core;
use passgate::service::keys::KeyState;
use secrecy::ExposeSecret;

use super::KeysCommand;

/// The environment variable `keys reseal` reads the new key from.
pub const NEW_KEY_VARIABLE: &str = "PASSGATE_NEW_KEY_ENCRYPTION_KEY";

pub async fn run(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    if let KeysCommand::Reseal { new_key_file, refused } = command {
        if !refused.is_empty() {
            // Not echoed: what was typed may be the key itself.
            bail!(
                "keys reseal takes no argument: give the new key in {NEW_KEY_VARIABLE} or in a \
                 file named by --new-key-file (the command line shows in ps)"
            );
        }
        return reseal(settings, new_key_file).await;
    }
    let store = passgate::store::connect(&settings.database).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let core = Core::new(settings, store, clock.clone()).await?;
    match &command {
        KeysCommand::Rotate => {
            let kid = core.keys.rotate(clock.now_ms()).await?;
            let wait = passgate::service::keys::JWKS_MAX_AGE.as_secs();
            println!("new signing key {kid}: published now, signing in {wait} s");
        }
        KeysCommand::Revoke { kid } => match core.revoke_signing_key(kid).await? {
            Some(next) => println!("revoked {kid}; {next} signs from now on"),
            None => println!("revoked {kid}"),
        },
        KeysCommand::List | KeysCommand::Reseal { .. } => {}
    }
    let rfc3339 = passgate::clock::rfc3339;
    for key in core.keys.list(clock.now_ms()).await? {
        let when = match (key.state, key.revoked_at, key.retired_at) {
            (_, Some(at), _) | (_, None, Some(at)) => format!(" {}", rfc3339(at)),
            (KeyState::Next, ..) => format!(" from {}", rfc3339(key.active_from)),
            _ => String::new(),
        };
        let sealed = if key.sealed { "sealed" } else { "unsealed" };
        println!(
            "{}  {:<5}  created {}  {}{when}  {sealed}",
            key.kid,
            key.algorithm,
            rfc3339(key.created_at),
            key.state
        );
    }
    Ok(())
}

/// Re-seals under a new key-encryption key. Run it with the nodes stopped:
/// a node still running with the old key would seal what it writes
/// meanwhile (a TOTP enrolment) under the old key.
async fn reseal(settings: Settings, key_file: Option<PathBuf>) -> anyhow::Result<()> {
    let (text, source) = match &key_file {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("--new-key-file {}: cannot read it", path.display()))?,
            format!("--new-key-file {}", path.display()),
        ),
        None => (
            std::env::var(NEW_KEY_VARIABLE).with_context(|| {
                format!("keys reseal: set {NEW_KEY_VARIABLE} or give --new-key-file FILE")
            })?,
            NEW_KEY_VARIABLE.to_owned(),
        ),
    };
    let text = secrecy::SecretString::from(text);
    let Some(new_key) = passgate::config::parse_key_encryption_key(text.expose_secret()) else {
        bail!("{source}: the new key-encryption key must be 32 bytes, base64-encoded");
    };
    let new_key = secrecy::zeroize::Zeroizing::new(new_key);
    let store = passgate::store::connect(&settings.database).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let core = Core::new(settings, store, clock).await?;
    let resealed = core.reseal_secrets(&new_key).await?;
    println!(
        "{resealed} secrets sealed under the new key; restart every node with \
         PASSGATE__TOKENS__KEY_ENCRYPTION_KEY set to it (the old key opens nothing now)"
    );
    Ok(())
}
