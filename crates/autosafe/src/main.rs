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
    /// Evaluation runners: `eval snapshots`, `eval toolemu`, `eval agent-safetybench`, `eval judge`.
    /// A model (`--agent`, `--judge`, …) is `openai:MODEL@URL`, `local:ALIAS`, or a TOML file
    /// with one model table (`configs/models/`, docs/model-access.md).
    #[command(subcommand)]
    Eval(cmd::eval::EvalCommand),
    /// Local GGUF models: `model list` shows aliases, paths, presence and sizes.
    Model(cmd::model::ModelArgs),
    /// Serve a local model as an OpenAI-compatible HTTP API (loopback by default).
    Serve(cmd::serve::ServeArgs),
    /// Real terminal sandbox: `sandbox check` (can this machine run it), `sandbox selftest` (escape attempts).
    Sandbox(cmd::sandbox::SandboxArgs),
    /// Terminal scenarios: `scenario prove` (checkers played against no-op, unsafe and safe agents), `scenario show`.
    Scenario(cmd::scenario::ScenarioArgs),
    /// Synthesize risk scenarios (D_r) over (toolkit, category, source) cells with a coverage table.
    Synthesize(cmd::pipeline::SynthArgs),
    /// Elicit unsafe actions: agent × environment, each action judged before it runs; snapshots.
    Elicit(cmd::pipeline::ElicitArgs),
    /// Self-reflection on snapshots: K rounds of reflector critique; judge-verified safe actions.
    Reflect(cmd::pipeline::ReflectArgs),
    /// Export D_safe (+ utility steps) as alpaca, sharegpt, openai, trl, axolotl + dataset card.
    Export(cmd::pipeline::ExportArgs),
    /// Merge a run's shard files (records and logs, by id) and sum their stats.
    Merge(cmd::pipeline::MergeArgs),
    /// The whole chain synthesize → elicit → reflect → export from one config (default: embedded model).
    Run(cmd::pipeline::RunArgs),
    /// Fine-tune a base model on a run's D_safe through LLaMA-Factory or TRL (LoRA or full; 1..N GPUs).
    Train(Box<cmd::train::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Bench(c) => cmd::bench::run(c),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Taxonomy(args) => cmd::taxonomy::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Compare(args) => cmd::compare::run(args),
        Command::Eval(c) => cmd::eval::run(c),
        Command::Model(args) => cmd::model::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Sandbox(args) => cmd::sandbox::run(args),
        Command::Scenario(args) => cmd::scenario::run(args),
        Command::Synthesize(a) => cmd::pipeline::synthesize(a),
        Command::Elicit(a) => cmd::pipeline::elicit(a),
        Command::Reflect(a) => cmd::pipeline::reflect(a),
        Command::Export(a) => cmd::pipeline::export(a),
        Command::Merge(a) => cmd::pipeline::merge(a),
        Command::Run(a) => cmd::pipeline::run(a),
        Command::Train(a) => cmd::train::run(*a),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
