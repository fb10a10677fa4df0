//! The command line: serving (no command, or `serve`) and the operator's
//! commands, each run against the server's own configuration. Parsed with
//! clap; every failure ends the process with one line on stderr and a
//! non-zero exit code.

mod accounts;
mod keys;
mod ops;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "passgate",
    version,
    about = "FIDO2/WebAuthn passwordless authentication server",
    long_about = "FIDO2/WebAuthn passwordless authentication server.\n\n\
        With no command it serves HTTP. Settings come from the compiled-in \
        defaults, then the --config file, then PASSGATE__SECTION__KEY \
        environment variables; every command reads them the same way.",
    after_help = "See README.md for every setting."
)]
pub struct Cli {
    /// A TOML file of settings, over the defaults and under the
    /// PASSGATE__SECTION__KEY environment variables
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (what no command does too)
    Serve,
    /// Check the settings
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Bring the database's schema up to date, then exit (every start does
    /// it too; PostgreSQL nodes starting together migrate once)
    Migrate,
    /// Ask the configured server.bind for GET /healthz: exit 0 when it
    /// answers 200 (for a container's HEALTHCHECK; 0.0.0.0 and :: mean
    /// this host's loopback)
    Healthcheck {
        /// Give up after this many seconds
        #[arg(long, value_name = "SECONDS", default_value_t = 2)]
        timeout: u64,
    },
    /// Accounts
    #[command(subcommand)]
    User(UserCommand),
    /// Copy the SQLite database, while it serves, to a new file (never
    /// overwrites; for PostgreSQL use pg_dump)
    Backup {
        /// The file to write; it must not exist
        path: PathBuf,
    },
    /// Token signing keys and the key-encryption key
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The admin role
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and check the settings as a start would, without touching the
    /// database, and print a summary (secrets hidden)
    Check,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account with no passkey yet, and print a one-time
    /// enrolment code with which its owner binds one at /enrol.html
    Create {
        username: String,
        /// Give the account the admin role (the first admin of a new
        /// deployment)
        #[arg(long)]
        admin: bool,
    },
    /// Break-glass: unbind every passkey of the account and end every
    /// session, as the admin API's reset does, and print a one-time
    /// enrolment code to hand over (the owner is mailed a notice without it)
    ResetDevices {
        username: String,
        /// Why, for the audit trail
        #[arg(long, default_value = "break-glass reset with passgate user reset-devices")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key: published at once, signing once the JWKS
    /// cache lifetime has passed; the current one stays valid as the
    /// previous key
    Rotate,
    /// List the stored signing keys and their state (next, signing,
    /// previous, retired, revoked), never their secrets
    List,
    /// Withdraw a signing key at once (out of the JWKS, its tokens
    /// refused); if it was signing, the next key signs at once
    Revoke { kid: String },
    /// Seal every stored secret under a new key-encryption key, taken from
    /// the file given with --new-key-file or from
    /// PASSGATE_NEW_KEY_ENCRYPTION_KEY (32 bytes, base64), never from the
    /// command line; stop the nodes first, restart them with the new key
    Reseal {
        /// A file holding the new key
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
        /// Refused, unseen: a key typed here would show in `ps`.
        #[arg(hide = true, num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
        refused: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Give an account the admin role (its next token carries it)
    Grant { username: String },
    /// Take the admin role away
    Revoke { username: String },
}

/// Runs `command` with the loaded settings.
pub async fn run(settings: passgate::config::Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => ops::serve(settings).await,
        Command::Config(ConfigCommand::Check) => ops::config_check(&settings),
        Command::Migrate => ops::migrate(&settings).await,
        Command::Healthcheck { timeout } => ops::healthcheck(&settings, timeout).await,
        Command::Backup { path } => ops::backup(&settings, &path).await,
        Command::User(UserCommand::Create { username, admin }) => {
            accounts::create(settings, &username, admin).await
        }
        Command::User(UserCommand::ResetDevices { username, reason }) => {
            accounts::reset_devices(settings, &username, &reason).await
        }
        Command::Admin(AdminCommand::Grant { username }) => {
            accounts::set_admin(settings, true, &username).await
        }
        Command::Admin(AdminCommand::Revoke { username }) => {
            accounts::set_admin(settings, false, &username).await
        }
        Command::Keys(command) => keys::run(settings, command).await,
    }
}
