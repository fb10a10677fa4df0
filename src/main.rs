//! The passgate binary: configuration, then telemetry, then the server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use passgate::clock::{Clock, SystemClock};
use passgate::config::Settings;
use passgate::service::Core;
use passgate::service::keys::KeyState;
use passgate::startup::Application;
use secrecy::ExposeSecret;

/// What the command line asks for.
enum Command {
    Serve,
    /// `keys rotate`: make a new signing key now.
    RotateKeys,
    /// `keys list`: show the stored signing keys (never their secrets).
    ListKeys,
    /// `keys revoke KID`: withdraw a key at once.
    RevokeKey {
        kid: String,
    },
    /// `keys reseal [--new-key-file FILE]`: seal every secret at rest under
    /// a new key-encryption key, read from that file or from
    /// `PASSGATE_NEW_KEY_ENCRYPTION_KEY` (never from the command line,
    /// which other users can read in `ps`).
    Reseal {
        key_file: Option<PathBuf>,
    },
    /// `admin grant USERNAME` / `admin revoke USERNAME`: the first admin
    /// has to come from somewhere other than the API.
    Admin {
        grant: bool,
        username: String,
    },
}

const USAGE: &str = "usage: passgate [--config FILE] [keys rotate | keys list | keys revoke KID | keys reseal [--new-key-file FILE] | admin grant|revoke USERNAME]
  (no command)           serve HTTP
  keys rotate            make a new token signing key: published at once, signing once the JWKS
                         cache lifetime has passed; the current one stays valid as the previous key
  keys list              list stored signing keys and their state (next, signing, previous,
                         retired, revoked)
  keys revoke KID        withdraw a signing key at once (out of the JWKS, its tokens refused);
                         if it was signing, the next key signs at once (one is made if needed)
  keys reseal            seal every stored secret under a new key-encryption key, taken from the
                         file given with --new-key-file or from PASSGATE_NEW_KEY_ENCRYPTION_KEY
                         (32 bytes, base64); stop the nodes first, restart them with the new key
  admin grant USERNAME   give an account the admin role (its next token carries it)
  admin revoke USERNAME  take the admin role away
See README.md for every setting.";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("passgate: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let (config_file, command) = parse_args(std::env::args().skip(1))?;
    let settings = Settings::load(config_file.as_deref())?;
    let serving = matches!(command, Command::Serve);
    passgate::telemetry::init(&settings.log.level, settings.log.format, !serving);
    match command {
        Command::Serve => serve(settings).await,
        Command::RotateKeys | Command::ListKeys | Command::RevokeKey { .. } => {
            keys(settings, command).await
        }
        Command::Reseal { key_file } => reseal(settings, key_file).await,
        Command::Admin { grant, username } => admin(settings, grant, &username).await,
    }
}

/// Runs against the server's database, safely while it serves: the role
/// is one column, and tokens pick it up at their next refresh.
async fn admin(settings: Settings, grant: bool, username: &str) -> anyhow::Result<()> {
    let store = passgate::store::connect(&settings.database).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let core = Core::new(settings, store.clone(), clock).await?;
    let name = passgate::domain::Username::parse(username.to_owned())?;
    let Some(user) = store.find_user_by_username(name.as_ref()).await? else {
        bail!("no account named {:?}", name.as_ref());
    };
    let mut roles = user.roles.names().to_vec();
    roles.retain(|r| r != "admin");
    if grant {
        roles.push("admin".to_owned());
    }
    let reason = if grant {
        "granted with passgate admin grant"
    } else {
        "revoked with passgate admin revoke"
    };
    core.admin
        .set_roles(None, &user.user_id.to_string(), &roles, Some(reason))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}: roles [{}]", name.as_ref(), roles.join(", "));
    Ok(())
}

/// Key commands run against the same database as the server, safely while
/// it serves: nodes pick up a new key within a minute, and keep accepting
/// tokens of the previous one.
async fn keys(settings: Settings, command: Command) -> anyhow::Result<()> {
    let store = passgate::store::connect(&settings.database).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let core = Core::new(settings, store, clock.clone()).await?;
    match &command {
        Command::RotateKeys => {
            let kid = core.keys.rotate(clock.now_ms()).await?;
            let wait = passgate::service::keys::JWKS_MAX_AGE.as_secs();
            println!("new signing key {kid}: published now, signing in {wait} s");
        }
        Command::RevokeKey { kid } => match core.revoke_signing_key(kid).await? {
            Some(next) => println!("revoked {kid}; {next} signs from now on"),
            None => println!("revoked {kid}"),
        },
        _ => {}
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

/// The environment variable `keys reseal` reads the new key from.
const NEW_KEY_VARIABLE: &str = "PASSGATE_NEW_KEY_ENCRYPTION_KEY";

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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.server.bind;
    let database = settings.database.url.redacted();
    let app = Application::build(settings).await?;
    tracing::info!(%bind, %database, "passgate listening on http://{bind}");
    app.run_until_stopped().await?;
    Ok(())
}

fn parse_args(
    mut args: impl Iterator<Item = String>,
) -> anyhow::Result<(Option<PathBuf>, Command)> {
    let mut config = None;
    let mut key_file = None;
    let mut words = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => match args.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => bail!("--config needs a file path"),
            },
            "--new-key-file" => match args.next() {
                Some(path) => key_file = Some(PathBuf::from(path)),
                None => bail!("--new-key-file needs a file path"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            word => words.push(word.to_owned()),
        }
    }
    let command = match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Command::Serve,
        ["keys", "rotate"] => Command::RotateKeys,
        ["keys", "list"] => Command::ListKeys,
        ["keys", "revoke", kid] => Command::RevokeKey { kid: (*kid).to_owned() },
        ["keys", "reseal"] => Command::Reseal { key_file: key_file.take() },
        // Not echoed: what follows may be the key itself.
        ["keys", "reseal", ..] => bail!(
            "keys reseal takes no argument: give the new key in {NEW_KEY_VARIABLE} or in a \
             file named by --new-key-file (the command line shows in ps)"
        ),
        ["admin", verb @ ("grant" | "revoke"), username] => {
            Command::Admin { grant: *verb == "grant", username: (*username).to_owned() }
        }
        other => bail!("unknown command {:?}\n{USAGE}", other.join(" ")),
    };
    if key_file.is_some() {
        bail!("--new-key-file belongs to keys reseal\n{USAGE}");
    }
    Ok((config, command))
}
