//! `autosafe bench client`: arguments and the figures' table; the benchmark is
//! `autosafe_run::bench::client`'s.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use autosafe_run::bench::ClientBench;

use crate::cmd::console::Console;

/// Options of `autosafe bench client`.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// Requests to send (after a warm-up of `--concurrency` requests).
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
    /// Most requests in flight.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Server latency per request in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Uniform server jitter (±) in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub jitter_ms: u64,
    /// Also run the Python reference against the same server and compare.
    #[arg(long)]
    pub vs_python: bool,
    /// Python interpreter for --vs-python (default: $AUTOSAFE_HOME/venv/bench/bin/python).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Client runtime worker threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs the benchmark; fails when any request failed.
pub fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    if args.requests == 0 || args.concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let bench = ClientBench {
        requests: args.requests,
        concurrency: args.concurrency,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        vs_python: args.vs_python,
        python: args.python,
        threads: args.threads,
    };
    let out = autosafe_run::bench::client(&bench, &Console)?;
    print_table(&out);
    println!("{out}");
    Ok(if out["errors"].as_u64() == Some(0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(v: &serde_json::Value) {
    println!("{:<30} {:>14}", "metric", "value");
    if let Some(map) = v.as_object() {
        for (k, x) in map {
            let s = match x.as_f64() {
                Some(f) if x.is_f64() => format!("{f:.3}"),
                _ => x.to_string(),
            };
            println!("{k:<30} {s:>14}");
        }
    }
}
