//! `autosafe eval <runner>`: the evaluation runners of `autosafe-evalrun` (`docs/eval.md`).
//!
//! This module parses arguments, builds the models (remote specs through `autosafe-llm`,
//! `local:` specs through the embedded engine), loads the input files, calls the runner and
//! prints its figures; with `--json` the last line is one JSON object.

use autosafe_run::PendingStatus;

use super::console::{Console, exit};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use autosafe_env::{
    EmulatorFactory, EmulatorMode, EmulatorOptions, EnvironmentFactory, TerminalFactory,
};
use autosafe_eval::metrics::{Estimate, Ratio, RubricSummary};
use autosafe_eval::result_files::{ASB_FILE, JUDGE_FILE, SNAPSHOTS_FILE, TOOLEMU_FILE};
use autosafe_evalrun::EvalRun;
use autosafe_llm::{ChatModel, ModelSpec, ProviderKind, StackOptions, UsageLedger};
use autosafe_ots::{Format, Taxonomy, ToolLibrary};
use autosafe_pipeline::StageStats;
use autosafe_pipeline::prompts::{AgentLayout, AgentMode, Prompts};
use autosafe_pipeline::stages::agent::AgentOptions;
use autosafe_pipeline::stages::{Agent, StepJudge};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

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
}

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

/// How the evaluated agent is prompted.
#[derive(Args, Debug, Clone)]
pub struct AgentOpts {
    /// The agent evaluated: `openai:MODEL@URL`, `local:ALIAS`, …
    #[arg(long)]
    agent: String,
    /// Agent prompt mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Plain)]
    mode: ModeArg,
    /// Native tool calls instead of ReAct text.
    #[arg(long)]
    native: bool,
    /// The agent's user message (ReAct text): `agent` (the agent prompt) or `training` (the
    /// exported Alpaca `input`: numbered trajectory, "… for this round (round k)"), for a model
    /// fine-tuned on `autosafe export`/`train` data.
    #[arg(long, value_enum, default_value_t = LayoutArg::Agent)]
    layout: LayoutArg,
    /// Sampling temperature of the agent.
    #[arg(long, default_value_t = 0.7, value_parser = autosafe_run::temperature_arg)]
    temperature: f32,
    /// Token budget of one agent turn.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: u32,
}

/// Agent prompt modes.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum ModeArg {
    /// No safety framing (the agent as it is).
    Plain,
    /// A safety system prompt.
    Safety,
    /// The elicitation prompt (ignore safety).
    Elicit,
}

/// Agent user-message layouts.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum LayoutArg {
    /// The agent prompt (`agent_user.j2`).
    Agent,
    /// The training records' input (`training_input.j2`).
    Training,
}

impl From<LayoutArg> for AgentLayout {
    fn from(l: LayoutArg) -> Self {
        match l {
            LayoutArg::Agent => AgentLayout::Agent,
            LayoutArg::Training => AgentLayout::Training,
        }
    }
}

/// Environments for the snapshot continuation.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum EnvArg {
    /// The LLM tool emulator (needs --emulator).
    Emulator,
    /// The real terminal sandbox (scenarios with a terminal fixture).
    Terminal,
}

/// Emulator modes.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum EmuModeArg {
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

/// `autosafe eval snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    run: RunOpts,
    #[command(flatten)]
    agent: AgentOpts,
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
    /// Agent turns of a continuation.
    #[arg(long, default_value_t = 8)]
    max_steps: u32,
    /// snapshots.jsonl from `autosafe elicit`.
    file: PathBuf,
}

/// `autosafe eval toolemu`.
#[derive(Args, Debug)]
pub struct ToolEmuArgs {
    #[command(flatten)]
    run: RunOpts,
    #[command(flatten)]
    agent: AgentOpts,
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
    run: RunOpts,
    #[command(flatten)]
    agent: AgentOpts,
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
    /// Labelled data: ASSEBench records, ToolEmu evaluator rows, or `labelled_steps.jsonl` of a
    /// terminal elicitation (the sandbox checkers' labels); the format is told by content.
    file: PathBuf,
}

/// Models, prompts and the run directory of one invocation.
struct Ctx {
    run: EvalRun,
    prompts: Arc<Prompts>,
    stack: StackOptions,
    built: BTreeMap<String, Arc<dyn ChatModel>>,
    specs: BTreeMap<String, autosafe_pipeline::ModelSpec>,
    max_pending: u64,
}

impl Ctx {
    fn new(o: &RunOpts) -> anyhow::Result<Ctx> {
        let run = EvalRun::at(&o.run)?;
        let prompts = Arc::new(match &o.prompts {
            Some(d) => Prompts::from_dir(d)?,
            None => Prompts::embedded(),
        });
        let cache = if o.no_cache {
            None
        } else {
            let path = o
                .cache
                .clone()
                .unwrap_or_else(|| run.path().join("cache").join("replies.sqlite"));
            Some(autosafe_run::session::open_cache(&path, &Console)?)
        };
        Ok(Ctx {
            run,
            prompts,
            stack: StackOptions {
                cache,
                ledger: UsageLedger::new(),
                max_repairs: 2,
            },
            built: BTreeMap::new(),
            specs: BTreeMap::new(),
            max_pending: o.max_pending,
        })
    }

    /// Builds (once per distinct spec) the model of a role given in compact form.
    fn model(&mut self, role: &str, compact: &str) -> anyhow::Result<Arc<dyn ChatModel>> {
        let spec = ModelSpec::parse(compact).with_context(|| format!("--{role} {compact}"))?;
        let provider = match spec.provider {
            ProviderKind::Openai => "openai-compatible",
            ProviderKind::Local => "embedded",
        };
        self.specs.insert(
            role.to_string(),
            autosafe_pipeline::ModelSpec::redacted(
                provider,
                spec.display_name(),
                &spec.base_urls,
                json!({"api_key_env": spec.api_key_env}),
            ),
        );
        let key = serde_json::to_string(&spec)?;
        if let Some(m) = self.built.get(&key) {
            return Ok(m.clone());
        }
        let what = format!("--{role} {compact}");
        let model = autosafe_run::models::build(&spec, &self.stack, role, &what, &Console)?;
        self.built.insert(key, model.clone());
        Ok(model)
    }

    fn agent(&mut self, a: &AgentOpts) -> anyhow::Result<Agent> {
        let model = self.model("agent", &a.agent)?;
        Ok(Agent::new(
            model,
            self.prompts.clone(),
            AgentOptions {
                mode: match a.mode {
                    ModeArg::Plain => AgentMode::Plain,
                    ModeArg::Safety => AgentMode::Safety,
                    ModeArg::Elicit => AgentMode::Elicit,
                },
                native: a.native,
                layout: a.layout.into(),
                temperature: a.temperature,
                max_tokens: a.max_tokens,
                ..Default::default()
            },
        ))
    }

    fn emulator(
        &mut self,
        compact: &str,
        mode: EmuModeArg,
        library: ToolLibrary,
    ) -> anyhow::Result<EmulatorFactory> {
        Ok(EmulatorFactory::new(
            self.model("emulator", compact)?,
            mode.into(),
            Arc::new(library),
            EmulatorOptions {
                prompts: self.prompts.clone(),
                ..Default::default()
            },
        ))
    }

    /// Progress of a runner: items done (lines of its result file) / total, tokens, ETA.
    fn progress(&self, runner: &str, file: &str, total: usize) -> super::progress::StageProgress {
        super::progress::StageProgress::start(
            &format!("eval {runner}"),
            &self.run.eval_file(file),
            Some(total as u64),
            self.stack.ledger.clone(),
        )
    }

    fn manifest(&self, runner: &str, settings: Value) -> anyhow::Result<()> {
        self.run.write_manifest(
            runner,
            settings,
            &self.prompts,
            self.specs.clone(),
            Path::new(env!("CARGO_MANIFEST_DIR")),
        )?;
        Ok(())
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.display().to_string()
}

fn limited<T>(mut items: Vec<T>, limit: Option<usize>) -> Vec<T> {
    if let Some(n) = limit {
        items.truncate(n);
    }
    items
}

fn stats_line(name: &str, s: &StageStats) {
    println!("{}", s.summary_line(name));
}

fn ratio(r: &Ratio) -> String {
    let mut s = Estimate::describe(&r.estimate);
    if r.unmeasured.total > 0 {
        let reasons: Vec<String> = r
            .unmeasured
            .by_reason
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s.push_str(&format!(
            "; unmeasured {} [{}]",
            r.unmeasured.total,
            reasons.join(" ")
        ));
    }
    s
}

fn rubric(name: &str, r: &RubricSummary) {
    println!(
        "  {name}: mean {} over {} scored; distribution 0/1/2/3 = {}/{}/{}/{}; failure incidence (score <= 1) {}; unmeasured {}",
        r.mean.map_or("no data".into(), |m| format!("{m:.2}")),
        r.n,
        r.distribution[0],
        r.distribution[1],
        r.distribution[2],
        r.distribution[3],
        Estimate::describe(&r.failure_incidence),
        r.unmeasured.total
    );
}

/// The `--json` object: the runner, the run directory, the stats, then the summary's fields.
fn json_line(runner: &str, run: &EvalRun, stats: &StageStats, summary: Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("runner".into(), json!(runner));
    out.insert("run".into(), json!(run.path().display().to_string()));
    out.insert("stats".into(), json!(stats));
    if let Value::Object(m) = summary {
        out.extend(m);
    }
    Value::Object(out)
}

fn finish(ctx: &Ctx, json: bool, runner: &str, stats: &StageStats, summary: Value) -> ExitCode {
    print!("{}", ctx.stack.ledger.summary_table());
    for l in autosafe_run::models::engine_summaries() {
        println!("{l}");
    }
    println!(
        "{runner}: results in {}",
        ctx.run.path().join("eval").display()
    );
    if json {
        println!("{}", json_line(runner, &ctx.run, stats, summary));
    }
    exit(
        &format!("eval {runner}"),
        &PendingStatus::of(&[(runner, stats)], ctx.max_pending),
    )
}

/// Runs `autosafe eval <runner>`.
pub fn run(cmd: EvalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EvalCommand::Snapshots(a) => snapshots(a),
        EvalCommand::Toolemu(a) => toolemu(a),
        EvalCommand::AgentSafetybench(a) => asb(a),
        EvalCommand::Judge(a) => judge(a),
    }
}

fn snapshots(a: SnapshotsArgs) -> anyhow::Result<ExitCode> {
    use autosafe_evalrun::snapshots::{
        HelpfulnessParts, SnapshotEvalConfig, SnapshotParts, eval_snapshots,
    };
    let library = ToolLibrary::shipped();
    let taxonomy = Taxonomy::default_taxonomy();
    let text = read(&a.file)?;
    let snaps = autosafe_ots::scenario_records::read_snapshots(
        &file_name(&a.file),
        &text,
        autosafe_ots::scenario_records::Context {
            library: &library,
            taxonomy: &taxonomy,
        },
    )
    .map_err(|p| anyhow::anyhow!("{p}"))?;
    let snaps = limited(snaps, a.run.limit);
    let mut ctx = Ctx::new(&a.run)?;
    let agent = ctx.agent(&a.agent)?;
    let judge = StepJudge::new(ctx.model("judge", &a.judge)?, ctx.prompts.clone());
    let help_judge = judge.clone().labelled("helpfulness");
    let env: Option<Box<dyn EnvironmentFactory>> = if !a.helpfulness {
        None
    } else {
        match a.env {
            EnvArg::Emulator => {
                let Some(m) = &a.emulator else {
                    bail!("--helpfulness with --env emulator needs --emulator MODEL");
                };
                Some(Box::new(ctx.emulator(
                    m,
                    a.emulator_mode,
                    library.clone(),
                )?))
            }
            EnvArg::Terminal => Some(Box::new(TerminalFactory::new(
                autosafe_sandbox::SandboxConfig::default(),
            ))),
        }
    };
    let cfg = SnapshotEvalConfig {
        k: a.k,
        helpfulness: a.helpfulness,
        max_steps: a.max_steps,
        concurrency: a.run.concurrency,
        replay_history: a.env == EnvArg::Terminal,
    };
    ctx.manifest(
        "snapshots",
        json!({"input": file_name(&a.file), "config": cfg, "env": format!("{:?}", a.env).to_lowercase(), "agent_mode": format!("{:?}", a.agent.mode).to_lowercase(), "agent_layout": AgentLayout::from(a.agent.layout).as_str()}),
    )?;
    println!(
        "eval snapshots: agent {} judge {}{} ← {} ({} snapshots, k = {})",
        agent.name(),
        judge.judge_ref().name,
        env.as_ref()
            .map_or(String::new(), |e| format!(" helpfulness in {}", e.name())),
        a.file.display(),
        snaps.len(),
        a.k
    );
    let parts = SnapshotParts {
        agent: &agent,
        judge: &judge,
        helpfulness: env.as_deref().map(|env| HelpfulnessParts {
            env,
            judge: &help_judge,
        }),
        library: &library,
    };
    let progress = ctx.progress("snapshots", SNAPSHOTS_FILE, snaps.len());
    let rep = runtime()?.block_on(eval_snapshots(&ctx.run, &snaps, &parts, &cfg))?;
    progress.finish();
    stats_line("eval snapshots", &rep.stats);
    let o = &rep.summary.overall;
    println!("  safety ratio (all samples): {}", ratio(&o.safety_ratio));
    for (k, r) in &o.safe_at_k {
        println!("  safe@{k}: {}", ratio(r));
    }
    if a.helpfulness {
        println!("  helpfulness: {}", ratio(&o.helpfulness));
    }
    for (title, groups) in [
        ("category", &rep.summary.by_category),
        ("source", &rep.summary.by_source),
        ("toolkit", &rep.summary.by_toolkit),
    ] {
        for (g, m) in groups {
            println!(
                "  {title} {g}: safety ratio {}; safe@1 {}",
                Estimate::describe(&m.safety_ratio.estimate),
                Estimate::describe(&m.safe_at_k[&1].estimate)
            );
        }
    }
    Ok(finish(
        &ctx,
        a.run.json,
        "snapshots",
        &rep.stats,
        serde_json::to_value(&rep.summary)?,
    ))
}

/// The shipped ToolEmu cases (Apache-2.0, see data/toolemu/PROVENANCE.md).
const SHIPPED_CASES: &str = include_str!("../../../../data/toolemu/all_cases.json");

fn toolemu(a: ToolEmuArgs) -> anyhow::Result<ExitCode> {
    use autosafe_evalrun::toolemu::{IndexedCase, ToolEmuConfig, ToolEmuParts, eval_toolemu};
    let library = ToolLibrary::shipped();
    let taxonomy = Taxonomy::default_taxonomy();
    let (name, text) = match &a.cases {
        Some(p) => (file_name(p), read(p)?),
        None => (
            "data/toolemu/all_cases.json".to_string(),
            SHIPPED_CASES.to_string(),
        ),
    };
    let cases = autosafe_ots::toolemu::read_cases(&name, &text, &library)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let cases: Vec<IndexedCase> = limited(
        cases
            .into_iter()
            .enumerate()
            .map(|(i, case)| IndexedCase {
                idx: i as u32,
                case,
            })
            .collect(),
        a.run.limit,
    );
    let mut ctx = Ctx::new(&a.run)?;
    let agent = ctx.agent(&a.agent)?;
    let env = ctx.emulator(&a.emulator, a.emulator_mode, library.clone())?;
    let mut evaluator = StepJudge::new(ctx.model("evaluator", &a.evaluator)?, ctx.prompts.clone())
        .labelled("evaluator");
    evaluator.max_tokens = 2048;
    let cfg = ToolEmuConfig {
        max_steps: a.max_steps,
        concurrency: a.run.concurrency,
    };
    ctx.manifest(
        "toolemu",
        json!({"cases": name, "config": cfg, "emulator_mode": EmulatorMode::from(a.emulator_mode).as_str(), "agent_mode": format!("{:?}", a.agent.mode).to_lowercase(), "agent_layout": AgentLayout::from(a.agent.layout).as_str()}),
    )?;
    println!(
        "eval toolemu: agent {} emulator {} evaluator {} ← {} ({} cases)",
        agent.name(),
        env.name(),
        evaluator.judge_ref().name,
        name,
        cases.len()
    );
    let parts = ToolEmuParts {
        agent: &agent,
        evaluator: &evaluator,
        env: &env,
        library: &library,
        taxonomy: &taxonomy,
    };
    let progress = ctx.progress("toolemu", TOOLEMU_FILE, cases.len());
    let rep = runtime()?.block_on(eval_toolemu(&ctx.run, &cases, &parts, &cfg))?;
    progress.finish();
    stats_line("eval toolemu", &rep.stats);
    rubric("safety", &rep.summary.safety);
    rubric("helpfulness", &rep.summary.helpfulness);
    Ok(finish(
        &ctx,
        a.run.json,
        "toolemu",
        &rep.stats,
        serde_json::to_value(&rep.summary)?,
    ))
}

fn asb_environments(dir: &Path) -> anyhow::Result<ToolLibrary> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing the environments in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut lib = ToolLibrary::new();
    let mut problems = Vec::new();
    for p in paths {
        let env = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        match autosafe_ots::asb::read_environment(&file_name(&p), &read(&p)?, &env) {
            Ok(tk) => lib.extend([tk]),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(lib)
}

fn asb(a: AsbArgs) -> anyhow::Result<ExitCode> {
    use autosafe_evalrun::asb::{AsbConfig, AsbParts, eval_asb};
    let dir = a.environments.clone().unwrap_or_else(|| {
        a.file
            .parent()
            .unwrap_or(Path::new("."))
            .join("environments")
    });
    let library = asb_environments(&dir)?;
    let taxonomy = Taxonomy::default_taxonomy();
    let cases = autosafe_ots::asb::read_cases(&file_name(&a.file), &read(&a.file)?, &library)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let cases = limited(cases, a.run.limit);
    let mut ctx = Ctx::new(&a.run)?;
    let agent = ctx.agent(&a.agent)?;
    let judge = StepJudge::new(ctx.model("judge", &a.judge)?, ctx.prompts.clone());
    let emulator = a.emulator.clone().unwrap_or_else(|| a.judge.clone());
    let env = ctx.emulator(&emulator, a.emulator_mode, library.clone())?;
    let cfg = AsbConfig {
        max_steps: a.max_steps,
        concurrency: a.run.concurrency,
    };
    ctx.manifest(
        "agent_safetybench",
        json!({"input": file_name(&a.file), "environments": file_name(&dir), "config": cfg, "emulator_mode": EmulatorMode::from(a.emulator_mode).as_str(), "agent_mode": format!("{:?}", a.agent.mode).to_lowercase(), "agent_layout": AgentLayout::from(a.agent.layout).as_str()}),
    )?;
    println!(
        "eval agent-safetybench: agent {} judge {} emulator {} ← {} ({} cases, {} environments)",
        agent.name(),
        judge.judge_ref().name,
        env.name(),
        a.file.display(),
        cases.len(),
        library.len()
    );
    let parts = AsbParts {
        agent: &agent,
        judge: &judge,
        env: &env,
        library: &library,
        taxonomy: &taxonomy,
    };
    let progress = ctx.progress("agent-safetybench", ASB_FILE, cases.len());
    let rep = runtime()?.block_on(eval_asb(&ctx.run, &cases, &parts, &cfg))?;
    progress.finish();
    stats_line("eval agent-safetybench", &rep.stats);
    let s = &rep.summary;
    println!("  safety ratio: {}", ratio(&s.safety_ratio));
    println!("  fulfillable: {}", ratio(&s.fulfillable));
    println!("  unfulfillable: {}", ratio(&s.unfulfillable));
    for (c, r) in &s.by_category {
        println!("  category {c}: {}", ratio(r));
    }
    Ok(finish(
        &ctx,
        a.run.json,
        "agent_safetybench",
        &rep.stats,
        serde_json::to_value(s)?,
    ))
}

fn judge(a: JudgeArgs) -> anyhow::Result<ExitCode> {
    use autosafe_evalrun::labelled::{
        eval_judge, from_assebench, from_labelled_step, from_toolemu,
    };
    let text = read(&a.file)?;
    let name = file_name(&a.file);
    let format = autosafe_ots::detect(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let mut rejected = BTreeMap::new();
    // Sandbox steps the checkers could not label, by reason (left out, never counted as safe).
    let mut unlabelled: Option<BTreeMap<String, u64>> = None;
    let items = match format {
        Format::AsseBench => {
            let records = autosafe_ots::assebench::read_records(&name, &text)
                .map_err(|p| anyhow::anyhow!("{p}"))?;
            let items: Vec<_> = records.iter().filter_map(from_assebench).collect();
            if items.len() < records.len() {
                rejected.insert(
                    "no_gold_label".to_string(),
                    (records.len() - items.len()) as u64,
                );
            }
            items
        }
        Format::ToolEmuEvaluations => {
            let tpath = a.trajectories.clone().unwrap_or_else(|| {
                a.file
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("trajectories.jsonl")
            });
            let rows = autosafe_ots::toolemu_traj::read_evaluations(&name, &text)
                .map_err(|p| anyhow::anyhow!("{p}"))?;
            let trajectories =
                autosafe_ots::toolemu_traj::read_trajectories(&file_name(&tpath), &read(&tpath)?)
                    .map_err(|p| anyhow::anyhow!("{p}"))?;
            let (items, no_gold) =
                from_toolemu(&trajectories, &rows, &Taxonomy::default_taxonomy())?;
            if no_gold > 0 {
                rejected.insert("no_gold_label".to_string(), no_gold);
            }
            items
        }
        Format::LabelledSteps => {
            let library = ToolLibrary::shipped();
            let taxonomy = Taxonomy::default_taxonomy();
            let steps = autosafe_ots::labelled_step::read_labelled_steps(
                &name,
                &text,
                autosafe_ots::scenario_records::Context {
                    library: &library,
                    taxonomy: &taxonomy,
                },
            )
            .map_err(|p| anyhow::anyhow!("{p}"))?;
            let steps = limited(steps, a.run.limit);
            let mut by_reason = BTreeMap::new();
            for s in steps.iter().filter(|s| s.label.is_none()) {
                let reason = s.unlabelled.clone().unwrap_or_default();
                *by_reason.entry(reason).or_insert(0u64) += 1;
            }
            let n: u64 = by_reason.values().sum();
            if n > 0 {
                rejected.insert("unlabelled".to_string(), n);
            }
            unlabelled = Some(by_reason);
            steps.iter().filter_map(from_labelled_step).collect()
        }
        other => bail!(
            "{name}: {} carry no safety labels for judge agreement (expected ASSEBench records, ToolEmu evaluator rows or labelled steps)",
            other.as_str()
        ),
    };
    let items = limited(items, a.run.limit);
    let mut ctx = Ctx::new(&a.run)?;
    let judge = StepJudge::new(ctx.model("judge", &a.judge)?, ctx.prompts.clone());
    ctx.manifest(
        "judge",
        json!({"input": name, "format": format.id(), "concurrency": a.run.concurrency}),
    )?;
    println!(
        "eval judge: judge {} ← {} ({}, {} labelled items)",
        judge.judge_ref().name,
        name,
        format.as_str(),
        items.len()
    );
    let progress = ctx.progress("judge", JUDGE_FILE, items.len());
    let mut rep = runtime()?.block_on(eval_judge(&ctx.run, &items, &judge, a.run.concurrency))?;
    progress.finish();
    rep.stats.rejected = rejected;
    stats_line("eval judge", &rep.stats);
    let s = &rep.summary;
    let f = |v: Option<f64>| v.map_or("no data".into(), |v| format!("{v:.3}"));
    println!(
        "  n {} (unmeasured {}), accuracy {}, unsafe class: precision {} recall {} F1 {}; safe class: precision {} recall {} F1 {}; kappa {}",
        s.n,
        s.unmeasured,
        f(s.accuracy),
        f(s.precision),
        f(s.recall),
        f(s.f1),
        f(s.safe_class.precision),
        f(s.safe_class.recall),
        f(s.safe_class.f1),
        f(s.kappa)
    );
    let c = &s.confusion;
    println!(
        "  confusion (positive = unsafe): TP {} FN {} FP {} TN {}",
        c.tp, c.fn_, c.fp, c.tn
    );
    let mut summary = serde_json::to_value(s)?;
    if let Some(by_reason) = unlabelled {
        let total: u64 = by_reason.values().sum();
        let reasons: Vec<String> = by_reason.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  unlabelled by the checkers (left out, not counted as safe): {total}{}",
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" [{}]", reasons.join(" "))
            }
        );
        summary["unlabelled"] = json!({"total": total, "by_reason": by_reason});
    }
    Ok(finish(&ctx, a.run.json, "judge", &rep.stats, summary))
}
