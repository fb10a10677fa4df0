//! The passgate binary: the command line (`cli`), then configuration, then
//! telemetry, then the command (serving, when there is none).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use passgate::config::Settings;

/// mimalloc instead of glibc's malloc: a sign-in allocates and frees a
/// few hundred small blocks across the request threads and sqlx-sqlite's
/// connection thread, which mimalloc serves from per-thread pages. 3 %
/// fewer instructions per sign-in, for about 16 MiB more resident at idle
/// (BENCHMARKS.md, "Machine K").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error)
            if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) =>
        {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            // clap's first paragraph says what is wrong (a missing
            // argument on its second line); the usage is for --help.
            let text = error.to_string();
            let what: Vec<&str> =
                text.lines().map(str::trim).take_while(|line| !line.is_empty()).collect();
            let what = what.join(" ");
            let what = what.strip_prefix("error: ").unwrap_or(&what);
            eprintln!("passgate: {what} (see passgate --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, whatever the causes' texts hold.
            let message = format!("{error:#}").replace(['\n', '\r'], " ");
            eprintln!("passgate: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    let command = cli.command.unwrap_or(cli::Command::Serve);
    // The server logs to stdout; the other commands to stderr, so that
    // their output is their own.
    let serving = matches!(command, cli::Command::Serve);
    passgate::telemetry::init(&settings.log.level, settings.log.format, !serving);
    cli::run(settings, command).await
}
