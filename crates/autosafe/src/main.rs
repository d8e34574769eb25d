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
    /// Benchmarks: `bench client` (model-access throughput vs ideal and vs Python), `bench engine`.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Check data files (format detected by content); print counts and taxonomy coverage.
    Validate(cmd::validate::Args),
    /// List the risk categories; map the risky outcomes of given files onto them.
    Taxonomy(cmd::taxonomy::Args),
    /// Write a self-contained evaluation report (HTML with SVG plots, Markdown, JSON) over runs.
    Report(cmd::report::Args),
    /// Compare two runs on shared snapshots (safe@1, McNemar's test).
    Compare(cmd::compare::Args),
    /// Local GGUF models: `model list` shows aliases, paths, presence and sizes.
    Model(cmd::model::ModelArgs),
    /// Serve a local model as an OpenAI-compatible HTTP API (loopback by default).
    Serve(cmd::serve::ServeArgs),
    /// Real terminal sandbox: `sandbox check` (can this machine run it), `sandbox selftest` (escape attempts).
    Sandbox(cmd::sandbox::SandboxArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Bench(c) => cmd::bench::run(c),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Taxonomy(args) => cmd::taxonomy::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Compare(args) => cmd::compare::run(args),
        Command::Model(args) => cmd::model::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Sandbox(args) => cmd::sandbox::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
