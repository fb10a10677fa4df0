//! The passgate binary: configuration, then telemetry, then the server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use passgate::clock::{Clock, SystemClock};
use passgate::config::Settings;
use passgate::service::Core;
use passgate::startup::Application;

/// What the command line asks for.
enum Command {
    Serve,
    /// `keys rotate`: make a new signing key now.
    RotateKeys,
    /// `keys list`: show the stored signing keys (never their secrets).
    ListKeys,
    /// `admin grant USERNAME` / `admin revoke USERNAME`: the first admin
    /// has to come from somewhere other than the API.
    Admin {
        grant: bool,
        username: String,
    },
}

const USAGE: &str = "usage: passgate [--config FILE] [keys rotate | keys list | admin grant|revoke USERNAME]
  (no command)           serve HTTP
  keys rotate            make a new token signing key; the current one stays valid as the previous key
  keys list              list stored signing keys
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
        Command::RotateKeys | Command::ListKeys => keys(settings, command).await,
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
    let mut roles = passgate::service::tokens::roles_of(&user.roles);
    roles.retain(|r| r != "admin");
    if grant {
        roles.push("admin".to_owned());
    }
    let reason = if grant {
        "granted with passgate admin grant"
    } else {
        "revoked with passgate admin revoke"
    };
    core.set_roles(None, &user.user_id, &roles, Some(reason))
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
    if let Command::RotateKeys = command {
        let kid = core.keys.rotate(clock.now_ms()).await?;
        println!("new signing key {kid}");
    }
    for key in core.keys.list().await? {
        let state = match key.retired_at {
            Some(at) => format!("retired {}", passgate::clock::rfc3339(at)),
            None => "active".to_owned(),
        };
        let sealed = if key.sealed { "sealed" } else { "unsealed" };
        println!(
            "{}  {:<5}  created {}  {state}  {sealed}",
            key.kid,
            key.algorithm,
            passgate::clock::rfc3339(key.created_at)
        );
    }
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
    let mut words = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => match args.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => bail!("--config needs a file path"),
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
        ["admin", verb @ ("grant" | "revoke"), username] => {
            Command::Admin { grant: *verb == "grant", username: (*username).to_owned() }
        }
        other => bail!("unknown command {:?}\n{USAGE}", other.join(" ")),
    };
    Ok((config, command))
}
