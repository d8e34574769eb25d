//! `eval toolemu`: full ToolEmu episodes, scored with its 0-3 safety and helpfulness rubrics.

use std::path::PathBuf;

use autosafe_env::{EmulatorMode, EnvironmentFactory};
use autosafe_eval::result_files::TOOLEMU_FILE;
use autosafe_evalrun::toolemu::{IndexedCase, ToolEmuConfig, ToolEmuParts, eval_toolemu};
use autosafe_ots::{Taxonomy, ToolLibrary};
use autosafe_pipeline::stages::StepJudge;
use serde_json::json;

use super::{AgentOpts, Ctx, EvalOutcome, RunOpts, file_name, limited, read, rubric, runtime};
use crate::observe::Observer;

/// The shipped ToolEmu cases (Apache-2.0, see data/toolemu/PROVENANCE.md).
const SHIPPED_CASES: &str = include_str!("../../../../data/toolemu/all_cases.json");

/// `eval toolemu`.
#[derive(Debug, Clone)]
pub struct ToolEmuOpts {
    /// Run options.
    pub run: RunOpts,
    /// The agent evaluated.
    pub agent: AgentOpts,
    /// The emulator model.
    pub emulator: String,
    /// Emulator mode.
    pub emulator_mode: EmulatorMode,
    /// The evaluator model (both rubrics).
    pub evaluator: String,
    /// A case list (default: the shipped 144 cases).
    pub cases: Option<PathBuf>,
    /// Agent turns before an episode ends at the step limit.
    pub max_steps: u32,
}

/// Runs `eval toolemu`.
pub fn toolemu(o: &ToolEmuOpts, obs: &dyn Observer) -> anyhow::Result<EvalOutcome> {
    let library = ToolLibrary::shipped();
    let taxonomy = Taxonomy::default_taxonomy();
    let (name, cases) = read_cases(o, &library)?;
    let mut ctx = Ctx::new(&o.run, obs)?;
    let agent = ctx.agent(&o.agent)?;
    let env = ctx.emulator(&o.emulator, o.emulator_mode, library.clone())?;
    let mut evaluator = StepJudge::new(ctx.model("evaluator", &o.evaluator)?, ctx.prompts.clone())
        .labelled("evaluator");
    evaluator.max_tokens = 2048;
    let cfg = ToolEmuConfig {
        max_steps: o.max_steps,
        concurrency: o.run.concurrency,
    };
    let (agent_mode, agent_layout, repeat_guard) = o.agent.manifest_fields();
    ctx.manifest(
        "toolemu",
        json!({"cases": name, "config": cfg, "emulator_mode": o.emulator_mode.as_str(), "agent_mode": agent_mode, "agent_layout": agent_layout, "agent_repeat_guard": repeat_guard}),
    )?;
    ctx.line(&format!(
        "eval toolemu: agent {} emulator {} evaluator {} ← {} ({} cases)",
        agent.name(),
        env.name(),
        evaluator.judge_ref().name,
        name,
        cases.len()
    ));
    let parts = ToolEmuParts {
        agent: &agent,
        evaluator: &evaluator,
        env: &env,
        library: &library,
        taxonomy: &taxonomy,
    };
    let watch = ctx.watch("toolemu", TOOLEMU_FILE, cases.len());
    let rep = runtime()?.block_on(eval_toolemu(&ctx.run, &cases, &parts, &cfg))?;
    watch.finish();
    ctx.line(&rep.stats.summary_line("eval toolemu"));
    ctx.line(&rubric("safety", &rep.summary.safety));
    ctx.line(&rubric("helpfulness", &rep.summary.helpfulness));
    ctx.finish("toolemu", rep.stats, serde_json::to_value(&rep.summary)?)
}

/// The cases' file name and the cases, numbered in file order, up to the limit.
fn read_cases(
    o: &ToolEmuOpts,
    library: &ToolLibrary,
) -> anyhow::Result<(String, Vec<IndexedCase>)> {
    let (name, text) = match &o.cases {
        Some(p) => (file_name(p), read(p)?),
        None => (
            "data/toolemu/all_cases.json".to_string(),
            SHIPPED_CASES.to_string(),
        ),
    };
    let cases = autosafe_ots::toolemu::read_cases(&name, &text, library)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let cases = cases
        .into_iter()
        .enumerate()
        .map(|(i, case)| IndexedCase {
            idx: i as u32,
            case,
        })
        .collect();
    Ok((name, limited(cases, o.run.limit)))
}
