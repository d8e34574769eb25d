//! The `autosafe` command line. It parses arguments, loads configuration and calls into the
//! library crates; it holds no pipeline logic.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// AutoSafe: make tool-using LLM agents safer with synthetic risk scenarios.
#[derive(Parser)]
#[command(name = "autosafe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands. Each lives in its own module under `cmd/`.
#[derive(Subcommand)]
enum Command {
    // Each variant: one line here, one arm in `main`, one module in `cmd/`.
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {};
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
