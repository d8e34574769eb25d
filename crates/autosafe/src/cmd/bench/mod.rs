//! `autosafe bench …`: throughput benchmarks.

pub mod client;
pub mod engine;

use std::process::ExitCode;
use std::time::Duration;

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

/// CPU time (user + system) this process has used so far, from /proc/self/stat (Linux).
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports these in USER_HZ clock ticks, 100 per second on every mainstream ABI.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Peak resident set size of this process in MB (VmHWM from /proc/self/status, Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
