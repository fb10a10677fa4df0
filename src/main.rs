//! The passgate binary: configuration, then telemetry, then the server.

use std::path::PathBuf;

use anyhow::bail;
use passgate::config::Settings;
use passgate::startup::Application;

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
    let config_file = parse_args(std::env::args().skip(1))?;
    let settings = Settings::load(config_file.as_deref())?;
    passgate::telemetry::init(&settings.log.level, settings.log.format);
    let bind = settings.server.bind;
    let database = settings.database.url.redacted();
    let app = Application::build(settings).await?;
    tracing::info!(%bind, %database, "passgate listening on http://{bind}");
    app.run_until_stopped().await?;
    Ok(())
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<PathBuf>> {
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => match args.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                None => bail!("--config needs a file path"),
            },
            "-h" | "--help" => {
                println!("usage: passgate [--config FILE]\nSee README.md for every setting.");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; usage: passgate [--config FILE]"),
        }
    }
    Ok(config)
}
