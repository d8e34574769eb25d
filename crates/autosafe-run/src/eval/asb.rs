//! `eval agent-safetybench`: Agent-SafetyBench cases in the emulator, each action judged before
//! it runs; safety per risk category and for fulfillable / unfulfillable cases.

use std::path::{Path, PathBuf};

use anyhow::bail;
use autosafe_env::{EmulatorMode, EnvironmentFactory};
use autosafe_eval::result_files::ASB_FILE;
use autosafe_evalrun::asb::{AsbConfig, AsbParts, AsbReport, eval_asb};
use autosafe_ots::Taxonomy;
use autosafe_pipeline::stages::StepJudge;
use serde_json::json;

use super::{AgentOpts, Ctx, EvalOutcome, RunOpts, file_name, limited, ratio, read, runtime};
use crate::observe::Observer;

/// `eval agent-safetybench`.
#[derive(Debug, Clone)]
pub struct AsbOpts {
    /// Run options.
    pub run: RunOpts,
    /// The agent evaluated.
    pub agent: AgentOpts,
    /// The step judge.
    pub judge: String,
    /// The emulator model (default: the judge's).
    pub emulator: Option<String>,
    /// Emulator mode.
    pub emulator_mode: EmulatorMode,
    /// The environment schemas (default: `environments/` beside the case file).
    pub environments: Option<PathBuf>,
    /// Agent turns before an episode ends at the step limit.
    pub max_steps: u32,
    /// The case file.
    pub file: PathBuf,
}

/// Runs `eval agent-safetybench`.
pub fn asb(o: &AsbOpts, obs: &dyn Observer) -> anyhow::Result<EvalOutcome> {
    let dir = o.environments.clone().unwrap_or_else(|| {
        o.file
            .parent()
            .unwrap_or(Path::new("."))
            .join("environments")
    });
    let (library, problems) = crate::inputs::read_environments(&dir)?;
    if !problems.is_empty() {
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!("{}", problems.join("\n"));
    }
    let taxonomy = Taxonomy::default_taxonomy();
    let cases = autosafe_ots::asb::read_cases(&file_name(&o.file), &read(&o.file)?, &library)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let cases = limited(cases, o.run.limit);
    let mut ctx = Ctx::new(&o.run, obs)?;
    let agent = ctx.agent(&o.agent)?;
    let judge = StepJudge::new(ctx.model("judge", &o.judge)?, ctx.prompts.clone());
    let emulator = o.emulator.as_ref().unwrap_or(&o.judge);
    let env = ctx.emulator(emulator, o.emulator_mode, library.clone())?;
    let cfg = AsbConfig {
        max_steps: o.max_steps,
        concurrency: o.run.concurrency,
    };
    let (agent_mode, agent_layout, repeat_guard) = o.agent.manifest_fields();
    ctx.manifest(
        "agent_safetybench",
        json!({"input": file_name(&o.file), "environments": file_name(&dir), "config": cfg, "emulator_mode": o.emulator_mode.as_str(), "agent_mode": agent_mode, "agent_layout": agent_layout, "agent_repeat_guard": repeat_guard}),
    )?;
    ctx.line(&format!(
        "eval agent-safetybench: agent {} judge {} emulator {} ← {} ({} cases, {} environments)",
        agent.name(),
        judge.judge_ref().name,
        env.name(),
        o.file.display(),
        cases.len(),
        library.len()
    ));
    let parts = AsbParts {
        agent: &agent,
        judge: &judge,
        env: &env,
        library: &library,
        taxonomy: &taxonomy,
    };
    let watch = ctx.watch("agent-safetybench", ASB_FILE, cases.len());
    let rep = runtime()?.block_on(eval_asb(&ctx.run, &cases, &parts, &cfg))?;
    watch.finish();
    tell(&ctx, &rep);
    ctx.finish(
        "agent_safetybench",
        rep.stats,
        serde_json::to_value(&rep.summary)?,
    )
}

/// The counts and the safety figures.
fn tell(ctx: &Ctx, rep: &AsbReport) {
    ctx.line(&rep.stats.summary_line("eval agent-safetybench"));
    let s = &rep.summary;
    ctx.line(&format!("  safety ratio: {}", ratio(&s.safety_ratio)));
    ctx.line(&format!("  fulfillable: {}", ratio(&s.fulfillable)));
    ctx.line(&format!("  unfulfillable: {}", ratio(&s.unfulfillable)));
    for (c, r) in &s.by_category {
        ctx.line(&format!("  category {c}: {}", ratio(r)));
    }
}
