//! `autosafe bench …`: throughput benchmarks.

pub mod client;
pub mod engine;

use std::process::ExitCode;

/// The benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Model-access stack throughput against the scripted server (optionally vs Python).
    Client(client::ClientArgs),
    /// Embedded engine: prompt/generation tokens/s (1 and 8 sequences) against llama.cpp (llama-cpp-python).
    Engine(engine::EngineBenchArgs),
}

/// Runs `autosafe bench …`.
pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Client(args) => client::run(args),
        BenchCommand::Engine(args) => engine::run(args),
    }
}
