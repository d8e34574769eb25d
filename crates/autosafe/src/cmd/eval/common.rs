//! The options every runner takes, and the environment and emulator choices.

use std::path::PathBuf;

use autosafe_env::{EmulatorMode, EnvChoice};
use autosafe_run::eval;
use clap::{Args, ValueEnum};

/// Options every runner takes.
#[derive(Args, Debug, Clone)]
pub struct RunOpts {
    /// Run directory; results go to RUN/eval/, with manifest.json and stats.json in RUN/.
    /// A re-run resumes: finished items are skipped.
    #[arg(long, default_value = "runs/eval")]
    run: PathBuf,
    /// Items in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Evaluate only the first N items of the input.
    #[arg(long)]
    limit: Option<usize>,
    /// Directory overriding prompt templates (same layout as `prompts/`).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Send every request, even ones answered before (no reply cache).
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// Reply cache database (default: RUN/cache/replies.sqlite).
    #[arg(long, value_name = "PATH")]
    cache: Option<PathBuf>,
    /// Print the results as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Items that may be left pending after transient failures (model server unreachable or
    /// failing, cache unreadable) with exit status 0; above it the runner exits with status 3.
    #[arg(long, default_value_t = 0)]
    max_pending: u64,
}

/// Environments for the snapshot continuation.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvArg {
    /// The LLM tool emulator (needs --emulator).
    Emulator,
    /// The real terminal sandbox (scenarios with a terminal fixture).
    Terminal,
}

impl From<EnvArg> for EnvChoice {
    fn from(e: EnvArg) -> Self {
        match e {
            EnvArg::Emulator => EnvChoice::Emulator,
            EnvArg::Terminal => EnvChoice::Terminal,
        }
    }
}

/// Emulator modes.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub(super) enum EmuModeArg {
    /// Realistic, consistent outputs.
    Standard,
    /// Steered toward the case's risky outcomes (ToolEmu's stress test).
    Adversarial,
}

impl From<EmuModeArg> for EmulatorMode {
    fn from(m: EmuModeArg) -> Self {
        match m {
            EmuModeArg::Standard => EmulatorMode::Standard,
            EmuModeArg::Adversarial => EmulatorMode::Adversarial,
        }
    }
}

impl RunOpts {
    pub(super) fn opts(&self) -> eval::RunOpts {
        eval::RunOpts {
            run: self.run.clone(),
            concurrency: self.concurrency,
            limit: self.limit,
            prompts: self.prompts.clone(),
            no_cache: self.no_cache,
            cache: self.cache.clone(),
            json: self.json,
            max_pending: self.max_pending,
        }
    }
}
