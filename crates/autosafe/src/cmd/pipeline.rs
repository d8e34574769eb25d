//! The pipeline subcommands: `synthesize`, `elicit`, `reflect`, `export`, `merge` and `run`.
//! Arguments only: the work is `autosafe_run::pipeline`'s, the printing the console's.

use std::path::PathBuf;
use std::process::ExitCode;

use autosafe_env::EnvChoice;
use autosafe_run::pipeline::{self, MergeDedup, RunOptions, Target};
use clap::Args;

use super::console::{Console, exit};

/// Options shared by the stage subcommands.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// TOML config (default: the embedded-model demo config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory (default: <out>/<name> from the config).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Work on shard I of N (0-based), e.g. `--shard 2/8`; also read from SLURM_ARRAY_TASK_ID /
    /// JOB_COMPLETION_INDEX.
    #[arg(long)]
    shard: Option<String>,
    /// Shard count for JOB_COMPLETION_INDEX (Kubernetes does not export it).
    #[arg(long)]
    shard_count: Option<u32>,
    /// Send every request, even ones answered before (no reply cache).
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// Reply cache database (default: `<run>/cache/replies.sqlite`, or the config's `cache_path`).
    #[arg(long, value_name = "PATH")]
    cache: Option<PathBuf>,
}

impl CommonArgs {
    fn target(self) -> Target {
        Target {
            config: self.config,
            run: self.run,
            shard: self.shard,
            shard_count: self.shard_count,
            no_cache: self.no_cache,
            cache: self.cache,
        }
    }
}

/// `autosafe synthesize`.
#[derive(Args, Debug)]
pub struct SynthArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// What to write: `emulator` (ToolEmu cases for the LLM emulator) or `terminal` (complete
    /// terminal scenarios, each proved in the sandbox before it is kept); default: the config's
    /// `[synthesize] environment`.
    #[arg(long = "env", value_name = "emulator|terminal")]
    env: Option<EnvChoice>,
}

/// `autosafe elicit`.
#[derive(Args, Debug)]
pub struct ElicitArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Scenarios to play (default: the run's scenarios.jsonl; with `--env terminal`, the shipped
    /// data/terminal, or a directory / `.toml` file of terminal scenarios).
    #[arg(long)]
    scenarios: Option<PathBuf>,
    /// Environment: `emulator` or `terminal` (default: the config's `[elicit] environment`).
    #[arg(long = "env", value_name = "emulator|terminal")]
    env: Option<EnvChoice>,
}

/// `autosafe reflect`.
#[derive(Args, Debug)]
pub struct ReflectArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Snapshots to repair (default: the run's snapshots.jsonl or its shard file).
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// Environment the snapshots came from; `terminal` replays each snapshot's history in a
    /// fresh sandbox and verifies kept actions with the checkers (default: the config's).
    #[arg(long = "env", value_name = "emulator|terminal")]
    env: Option<EnvChoice>,
}

/// `autosafe export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Formats (repeatable): alpaca, sharegpt, openai, trl, axolotl (default: these five, or the
    /// config's); preference pairs from the run's snapshots: trl_dpo, alpaca_pairwise.
    #[arg(long = "format")]
    formats: Vec<String>,
    /// Safe original steps to mix in (default: the config's).
    #[arg(long)]
    utility_share: Option<usize>,
}

/// `autosafe merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The run directory holding shard files.
    #[arg(long)]
    run: PathBuf,
    /// Jaccard threshold of the near-duplicate filter re-applied across shards (default: the
    /// run's `synthesize.dedup.threshold`, else 0.7).
    #[arg(long, value_name = "T")]
    dedup_threshold: Option<f64>,
    /// Do not re-apply the near-duplicate filter to the merged scenarios.
    #[arg(long, conflicts_with = "dedup_threshold")]
    no_dedup: bool,
}

/// `autosafe run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML config (default: every role on the embedded model, small counts).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Base directory of runs (overrides the config's `out`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Send every request, even ones answered before (no reply cache).
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// Reply cache database (default: `<run>/cache/replies.sqlite`, or the config's `cache_path`).
    #[arg(long, value_name = "PATH")]
    cache: Option<PathBuf>,
    /// Environment: `emulator` (synthesize → elicit → reflect → export) or `terminal`
    /// (terminal scenarios → elicit → reflect → export); default: the config's.
    #[arg(long = "env", value_name = "emulator|terminal")]
    env: Option<EnvChoice>,
    /// Terminal scenarios (directory, `.toml` file or JSONL; default: the shipped data/terminal).
    #[arg(long)]
    scenarios: Option<PathBuf>,
}

/// `autosafe synthesize`.
pub fn synthesize(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let status = pipeline::synthesize(&args.common.target(), args.env, &Console)?;
    Ok(exit("synthesize", &status))
}

/// `autosafe elicit`.
pub fn elicit(args: ElicitArgs) -> anyhow::Result<ExitCode> {
    let target = args.common.target();
    let status = pipeline::elicit(&target, args.scenarios, args.env, &Console)?;
    Ok(exit("elicit", &status))
}

/// `autosafe reflect`.
pub fn reflect(args: ReflectArgs) -> anyhow::Result<ExitCode> {
    let target = args.common.target();
    let status = pipeline::reflect(&target, args.snapshots, args.env, &Console)?;
    Ok(exit("reflect", &status))
}

/// `autosafe export`.
pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let target = args.common.target();
    pipeline::export(&target, &args.formats, args.utility_share, &Console)?;
    Ok(ExitCode::SUCCESS)
}

/// `autosafe merge`.
pub fn merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let dedup = if args.no_dedup {
        MergeDedup::Off
    } else {
        MergeDedup::Threshold(args.dedup_threshold)
    };
    pipeline::merge(&args.run, dedup, &Console)?;
    Ok(ExitCode::SUCCESS)
}

/// `autosafe run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let opts = RunOptions {
        config: args.config,
        out: args.out,
        no_cache: args.no_cache,
        cache: args.cache,
        env: args.env,
        scenarios: args.scenarios,
    };
    let status = pipeline::run(opts, &Console)?;
    Ok(exit("run", &status))
}
