//! `autosafe eval <runner>`: the evaluation runners (`docs/eval.md`). Arguments only: the
//! work is `autosafe_run::eval`'s, the printing the console's.

mod agent;
mod common;
mod runners;

use std::path::PathBuf;
use std::process::ExitCode;

use autosafe_run::eval;
use clap::{Args, Subcommand};

use common::RunOpts;
pub use runners::{AsbArgs, SnapshotsArgs, ToolEmuArgs};

use super::console::{Console, exit};

/// The evaluation runners.
#[derive(Subcommand)]
pub enum EvalCommand {
    /// Held-out snapshots: k sampled next actions each, judged (safety ratio, safe@k), and with
    /// --helpfulness a continuation to a final answer, judged for helpfulness.
    Snapshots(SnapshotsArgs),
    /// Full ToolEmu episodes (default: its 144 shipped cases), scored with its 0-3 safety and
    /// helpfulness rubrics; trajectories in ToolEmu's JSONL format.
    Toolemu(ToolEmuArgs),
    /// Agent-SafetyBench cases in the emulator, each action judged before it runs; safety per
    /// its 8 risk categories and for fulfillable / unfulfillable cases.
    #[command(name = "agent-safetybench")]
    AgentSafetybench(AsbArgs),
    /// Agreement of a step judge with labelled data (ASSEBench records, ToolEmu evaluator rows):
    /// accuracy, precision / recall / F1 per class, confusion matrix, Cohen's kappa.
    Judge(JudgeArgs),
    /// The plausibility review of synthesized cases (`[synthesize] review`) on scenario records
    /// or ToolEmu cases; with --labels, its agreement with a reader's verdicts.
    Review(ReviewArgs),
}

/// `autosafe eval review`.
#[derive(Args, Debug)]
pub struct ReviewArgs {
    #[command(flatten)]
    run: RunOpts,
    /// The reviewing model.
    #[arg(long)]
    judge: String,
    /// A reader's verdicts, one JSON object a line: {"id": SCENARIO_ID, "accept": true|false}.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Scenario records (a run's scenarios.jsonl) or ToolEmu cases.
    file: PathBuf,
}

/// `autosafe eval judge`.
#[derive(Args, Debug)]
pub struct JudgeArgs {
    #[command(flatten)]
    run: RunOpts,
    /// The step judge measured.
    #[arg(long)]
    judge: String,
    /// For ToolEmu evaluator rows: their trajectory file (default: `trajectories.jsonl` beside
    /// FILE).
    #[arg(long)]
    trajectories: Option<PathBuf>,
    /// Verdicts asked per step (self-consistency; 1: one greedy verdict), as `[judge] votes`.
    #[arg(long, default_value_t = 1)]
    votes: u32,
    /// "unsafe" votes needed to call a step unsafe (default: more than half of --votes).
    #[arg(long)]
    unsafe_votes: Option<u32>,
    /// Sampling temperature of the votes when --votes > 1.
    #[arg(long, default_value_t = 0.7)]
    vote_temperature: f32,
    /// A second look (`judge_second_look.j2`) at every step called unsafe; its answer is final.
    #[arg(long)]
    second_look: bool,
    /// Labelled data: ASSEBench records, ToolEmu evaluator rows, or `labelled_steps.jsonl` of a
    /// terminal elicitation (the sandbox checkers' labels); the format is told by content.
    file: PathBuf,
}

/// Runs `autosafe eval <runner>`.
pub fn run(cmd: EvalCommand) -> anyhow::Result<ExitCode> {
    let outcome = match cmd {
        EvalCommand::Snapshots(a) => eval::snapshots(&a.opts(), &Console)?,
        EvalCommand::Toolemu(a) => eval::toolemu(&a.opts(), &Console)?,
        EvalCommand::AgentSafetybench(a) => eval::asb(&a.opts(), &Console)?,
        EvalCommand::Review(a) => eval::review(
            &eval::ReviewOpts {
                run: a.run.opts(),
                judge: a.judge,
                file: a.file,
                labels: a.labels,
            },
            &Console,
        )?,
        EvalCommand::Judge(a) => eval::judge(
            &eval::JudgeOpts {
                run: a.run.opts(),
                judge: a.judge,
                options: autosafe_pipeline::stages::JudgeOptions {
                    votes: a.votes,
                    unsafe_votes: a.unsafe_votes,
                    temperature: a.vote_temperature,
                    second_look: a.second_look,
                },
                trajectories: a.trajectories,
                file: a.file,
            },
            &Console,
        )?,
    };
    Ok(exit(&format!("eval {}", outcome.runner), &outcome.pending))
}
