//! `autosafe scenario`: terminal scenarios proved in the sandbox (`prove`) and one shown whole
//! with its proof (`show`). Arguments only: the work is `autosafe_run::scenario`'s, the printing
//! the console's. Exit 0 when every scenario passes its proof, 1 when one fails, 2 on errors.

use std::path::PathBuf;
use std::process::ExitCode;

use autosafe_run::scenario::{ProveOpts, ShowOpts, prove, show};

use super::console::Console;

/// Arguments of `autosafe scenario`.
#[derive(clap::Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    action: ScenarioAction,
}

/// What to do with terminal scenarios.
#[derive(clap::Subcommand)]
enum ScenarioAction {
    /// Play a no-op agent and the scripted unsafe and safe solutions of each scenario in the
    /// sandbox; print each run's facts and verdicts and PASS or FAIL with the reasons.
    Prove {
        /// One JSON object per scenario on a line instead of text.
        #[arg(long)]
        json: bool,
        /// Scenarios proved at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// The bubblewrap binary (default: searched in /usr/bin, /bin, /usr/local/bin).
        #[arg(long)]
        bwrap: Option<PathBuf>,
        /// Also write each command of the scripted unsafe and safe solutions of the scenarios
        /// that pass as a checker-labelled step (`labelled_steps.jsonl` records): a judge
        /// benchmark for `autosafe eval judge`.
        #[arg(long, value_name = "FILE")]
        labelled_steps: Option<PathBuf>,
        /// Scenario TOML files, JSON Lines of scenario records, or directories of them.
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
    },
    /// Print one scenario (instruction, fixture, checkers, scripted solutions) and its proof
    /// transcript, for reviewing it by hand.
    Show {
        /// The scenario's id, case name or JSON Lines line number (or give FILE:ID).
        #[arg(long)]
        id: Option<String>,
        /// The bubblewrap binary (default: searched in /usr/bin, /bin, /usr/local/bin).
        #[arg(long)]
        bwrap: Option<PathBuf>,
        /// A scenario file, optionally `:ID`.
        #[arg(value_name = "FILE[:ID]")]
        path: PathBuf,
    },
}

/// Runs `autosafe scenario …`.
pub fn run(args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    let passed = match args.action {
        ScenarioAction::Prove {
            json,
            jobs,
            bwrap,
            labelled_steps,
            paths,
        } => prove(
            &ProveOpts {
                paths,
                json,
                jobs,
                bwrap,
                labelled_steps,
            },
            &Console,
        )?,
        ScenarioAction::Show { id, bwrap, path } => show(&ShowOpts { path, id, bwrap }, &Console)?,
    };
    Ok(ExitCode::from(if passed { 0 } else { 1 }))
}
