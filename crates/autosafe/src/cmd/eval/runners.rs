//! The arguments of the runners that play an agent: `snapshots`, `toolemu` and
//! `agent-safetybench`.

use std::path::PathBuf;

use autosafe_run::eval;
use clap::Args;

use super::agent::Played;
use super::common::{EmuModeArg, EnvArg};

/// `autosafe eval snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    played: Played,
    /// The step judge labelling each sampled action (also the helpfulness judge).
    #[arg(long)]
    judge: String,
    /// Sampled next actions per snapshot.
    #[arg(long, default_value_t = 5)]
    k: u32,
    /// Also continue each snapshot to a final answer and judge helpfulness.
    #[arg(long)]
    helpfulness: bool,
    /// Environment of the continuation.
    #[arg(long = "env", value_enum, default_value_t = EnvArg::Emulator)]
    env: EnvArg,
    /// The emulator model (with --env emulator and --helpfulness).
    #[arg(long)]
    emulator: Option<String>,
    /// Emulator mode of the continuation.
    #[arg(long, value_enum, default_value_t = EmuModeArg::Standard)]
    emulator_mode: EmuModeArg,
    /// Agent turns of a continuation (of each episode with --episodes).
    #[arg(long, default_value_t = 8)]
    max_steps: u32,
    /// Each of the k samples is a whole episode whose actions the terminal's checkers label
    /// before they run (needs --env terminal): safe@k is then the paper's Sec@k, helpfulness
    /// comes from sample 0's episode (done_if).
    #[arg(long)]
    episodes: bool,
    /// snapshots.jsonl from `autosafe elicit`.
    file: PathBuf,
}

/// `autosafe eval toolemu`.
#[derive(Args, Debug)]
pub struct ToolEmuArgs {
    #[command(flatten)]
    played: Played,
    /// The emulator model.
    #[arg(long)]
    emulator: String,
    /// Emulator mode (ToolEmu's safety evaluation uses the adversarial emulator).
    #[arg(long, value_enum, default_value_t = EmuModeArg::Adversarial)]
    emulator_mode: EmuModeArg,
    /// The evaluator model (both rubrics).
    #[arg(long)]
    evaluator: String,
    /// A ToolEmu case list (default: the shipped 144 cases, data/toolemu/all_cases.json).
    #[arg(long)]
    cases: Option<PathBuf>,
    /// Agent turns before an episode ends at the step limit (ToolEmu: 15).
    #[arg(long, default_value_t = 15)]
    max_steps: u32,
}

/// `autosafe eval agent-safetybench`.
#[derive(Args, Debug)]
pub struct AsbArgs {
    #[command(flatten)]
    played: Played,
    /// The step judge.
    #[arg(long)]
    judge: String,
    /// The emulator model (default: the judge's).
    #[arg(long)]
    emulator: Option<String>,
    /// Emulator mode.
    #[arg(long, value_enum, default_value_t = EmuModeArg::Standard)]
    emulator_mode: EmuModeArg,
    /// The benchmark's environment schemas (default: `environments/` beside FILE).
    #[arg(long)]
    environments: Option<PathBuf>,
    /// Agent turns before an episode ends at the step limit.
    #[arg(long, default_value_t = 10)]
    max_steps: u32,
    /// The benchmark's case file (a JSON list).
    file: PathBuf,
}

impl SnapshotsArgs {
    pub(super) fn opts(self) -> eval::SnapshotsOpts {
        eval::SnapshotsOpts {
            run: self.played.run.opts(),
            agent: self.played.agent.opts(),
            judge: self.judge,
            k: self.k,
            helpfulness: self.helpfulness,
            env: self.env.into(),
            emulator: self.emulator,
            emulator_mode: self.emulator_mode.into(),
            max_steps: self.max_steps,
            episodes: self.episodes,
            file: self.file,
        }
    }
}

impl ToolEmuArgs {
    pub(super) fn opts(self) -> eval::ToolEmuOpts {
        eval::ToolEmuOpts {
            run: self.played.run.opts(),
            agent: self.played.agent.opts(),
            emulator: self.emulator,
            emulator_mode: self.emulator_mode.into(),
            evaluator: self.evaluator,
            cases: self.cases,
            max_steps: self.max_steps,
        }
    }
}

impl AsbArgs {
    pub(super) fn opts(self) -> eval::AsbOpts {
        eval::AsbOpts {
            run: self.played.run.opts(),
            agent: self.played.agent.opts(),
            judge: self.judge,
            emulator: self.emulator,
            emulator_mode: self.emulator_mode.into(),
            environments: self.environments,
            max_steps: self.max_steps,
            file: self.file,
        }
    }
}
