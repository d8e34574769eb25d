//! `eval snapshots`: held-out snapshots, k sampled next actions each, judged (safety ratio,
//! safe@k), and optionally continued to a final answer and judged for helpfulness.

use std::path::PathBuf;

use anyhow::bail;
use autosafe_env::{EmulatorMode, EnvChoice, EnvironmentFactory, TerminalFactory};
use autosafe_eval::metrics::Estimate;
use autosafe_eval::result_files::SNAPSHOTS_FILE;
use autosafe_evalrun::snapshots::{
    HelpfulnessParts, SnapshotEvalConfig, SnapshotParts, SnapshotsReport, eval_snapshots,
};
use autosafe_ots::{Snapshot, Taxonomy, ToolLibrary};
use autosafe_pipeline::stages::StepJudge;
use serde_json::json;

use super::{AgentOpts, Ctx, EvalOutcome, RunOpts, file_name, limited, ratio, read, runtime};
use crate::observe::Observer;

/// `eval snapshots`.
#[derive(Debug, Clone)]
pub struct SnapshotsOpts {
    /// Run options.
    pub run: RunOpts,
    /// The agent evaluated.
    pub agent: AgentOpts,
    /// The step judge (also the helpfulness judge).
    pub judge: String,
    /// Sampled next actions per snapshot.
    pub k: u32,
    /// Also continue each snapshot and judge helpfulness.
    pub helpfulness: bool,
    /// Environment of the continuation.
    pub env: EnvChoice,
    /// The emulator model (emulator continuation).
    pub emulator: Option<String>,
    /// Emulator mode of the continuation.
    pub emulator_mode: EmulatorMode,
    /// Agent turns of a continuation.
    pub max_steps: u32,
    /// Each sample a whole episode labelled by the terminal's checkers (Sec@k).
    pub episodes: bool,
    /// `snapshots.jsonl` from `autosafe elicit`.
    pub file: PathBuf,
}

/// Runs `eval snapshots`.
pub fn snapshots(o: &SnapshotsOpts, obs: &dyn Observer) -> anyhow::Result<EvalOutcome> {
    if o.episodes && o.env != EnvChoice::Terminal {
        bail!("--episodes: the actions are labelled by the sandbox's checkers; add --env terminal");
    }
    let library = ToolLibrary::shipped();
    let snaps = limited(read_input(o, &library)?, o.run.limit);
    let mut ctx = Ctx::new(&o.run, obs)?;
    let agent = ctx.agent(&o.agent)?;
    let judge = StepJudge::new(ctx.model("judge", &o.judge)?, ctx.prompts.clone());
    let help_judge = judge.clone().labelled("helpfulness");
    let env = continuation(o, &mut ctx, &library)?;
    let cfg = SnapshotEvalConfig {
        k: o.k,
        helpfulness: o.helpfulness,
        max_steps: o.max_steps,
        concurrency: o.run.concurrency,
        replay_history: o.env == EnvChoice::Terminal,
        episodes: o.episodes,
    };
    let (agent_mode, agent_layout, repeat_guard) = o.agent.manifest_fields();
    ctx.manifest(
        "snapshots",
        json!({"input": file_name(&o.file), "config": cfg, "env": o.env.as_str(), "agent_mode": agent_mode, "agent_layout": agent_layout, "agent_repeat_guard": repeat_guard}),
    )?;
    ctx.line(&format!(
        "eval snapshots: agent {} judge {}{} ← {} ({} snapshots, k = {})",
        agent.name(),
        judge.judge_ref().name,
        env.as_ref()
            .map_or(String::new(), |e| format!(" helpfulness in {}", e.name())),
        o.file.display(),
        snaps.len(),
        o.k
    ));
    let parts = SnapshotParts {
        agent: &agent,
        judge: &judge,
        helpfulness: env.as_deref().map(|env| HelpfulnessParts {
            env,
            judge: &help_judge,
        }),
        library: &library,
    };
    let watch = ctx.watch("snapshots", SNAPSHOTS_FILE, snaps.len());
    let rep = runtime()?.block_on(eval_snapshots(&ctx.run, &snaps, &parts, &cfg))?;
    watch.finish();
    tell(&ctx, o.helpfulness || o.episodes, &rep);
    ctx.finish("snapshots", rep.stats, serde_json::to_value(&rep.summary)?)
}

fn read_input(o: &SnapshotsOpts, library: &ToolLibrary) -> anyhow::Result<Vec<Snapshot>> {
    let taxonomy = Taxonomy::default_taxonomy();
    autosafe_ots::scenario_records::read_snapshots(
        &file_name(&o.file),
        &read(&o.file)?,
        autosafe_ots::scenario_records::Context {
            library,
            taxonomy: &taxonomy,
        },
    )
    .map_err(|p| anyhow::anyhow!("{p}"))
}

/// The environment a snapshot is continued in, with `helpfulness`.
fn continuation(
    o: &SnapshotsOpts,
    ctx: &mut Ctx,
    library: &ToolLibrary,
) -> anyhow::Result<Option<Box<dyn EnvironmentFactory>>> {
    if !o.helpfulness && !o.episodes {
        return Ok(None);
    }
    Ok(Some(match o.env {
        EnvChoice::Emulator => {
            let Some(m) = &o.emulator else {
                bail!("--helpfulness with --env emulator needs --emulator MODEL");
            };
            Box::new(ctx.emulator(m, o.emulator_mode, library.clone())?)
        }
        EnvChoice::Terminal => Box::new(TerminalFactory::new(
            autosafe_sandbox::SandboxConfig::default(),
        )),
    }))
}

/// The counts, the overall figures and each group's.
fn tell(ctx: &Ctx, helpfulness: bool, rep: &SnapshotsReport) {
    ctx.line(&rep.stats.summary_line("eval snapshots"));
    let o = &rep.summary.overall;
    ctx.line(&format!(
        "  safety ratio (all samples): {}",
        ratio(&o.safety_ratio)
    ));
    for (k, r) in &o.safe_at_k {
        ctx.line(&format!("  safe@{k}: {}", ratio(r)));
    }
    if helpfulness {
        ctx.line(&format!("  helpfulness: {}", ratio(&o.helpfulness)));
    }
    for (title, groups) in [
        ("category", &rep.summary.by_category),
        ("source", &rep.summary.by_source),
        ("toolkit", &rep.summary.by_toolkit),
    ] {
        for (g, m) in groups {
            ctx.line(&format!(
                "  {title} {g}: safety ratio {}; safe@1 {}",
                Estimate::describe(&m.safety_ratio.estimate),
                Estimate::describe(&m.safe_at_k[&1].estimate)
            ));
        }
    }
}
