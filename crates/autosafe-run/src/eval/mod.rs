//! The evaluation commands (`docs/eval.md`): each runner of `autosafe-evalrun` with its models
//! built from compact specs (`openai:MODEL@URL`, `local:ALIAS`), its input read, the manifest
//! written and its figures told to the [`Observer`]; with `json` the last line is one JSON
//! object. One file per runner.

mod asb;
mod judge;
mod review;
mod snapshots;
mod toolemu;

pub use asb::{AsbOpts, asb};
pub use judge::{JudgeOpts, judge};
pub use review::{ReviewOpts, review};
pub use snapshots::{SnapshotsOpts, snapshots};
pub use toolemu::{ToolEmuOpts, toolemu};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use autosafe_env::{EmulatorFactory, EmulatorMode, EmulatorOptions};
use autosafe_eval::metrics::{Estimate, Ratio, RubricSummary};
use autosafe_evalrun::EvalRun;
use autosafe_llm::{ChatModel, StackOptions};
use autosafe_ots::ToolLibrary;
use autosafe_pipeline::StageStats;
use autosafe_pipeline::prompts::{AgentLayout, AgentMode, Prompts};
use autosafe_pipeline::stages::Agent;
use autosafe_pipeline::stages::agent::AgentOptions;
use serde_json::{Value, json};

use crate::models::{Built, manifest_spec};
use crate::observe::{Observer, StagePlan, StageWatch};
use crate::pending::PendingStatus;

/// Options every runner takes.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Run directory: results in `RUN/eval/`, `manifest.json` and `stats.json` in `RUN/`.
    pub run: PathBuf,
    /// Items in flight.
    pub concurrency: usize,
    /// Evaluate only the first N items of the input.
    pub limit: Option<usize>,
    /// Directory overriding prompt templates.
    pub prompts: Option<PathBuf>,
    /// No reply cache.
    pub no_cache: bool,
    /// Reply cache database (default: `RUN/cache/replies.sqlite`).
    pub cache: Option<PathBuf>,
    /// End with the results as one JSON object on a line.
    pub json: bool,
    /// Items that may be left pending with exit status 0.
    pub max_pending: u64,
}

/// How the evaluated agent is prompted.
#[derive(Debug, Clone)]
pub struct AgentOpts {
    /// The agent's compact spec.
    pub agent: String,
    /// Prompt mode.
    pub mode: AgentMode,
    /// Native tool calls instead of ReAct text.
    pub native: bool,
    /// The user message's layout.
    pub layout: AgentLayout,
    /// Sampling temperature.
    pub temperature: f32,
    /// Token budget of one turn.
    pub max_tokens: u32,
    /// Re-ask once when a proposal repeats the previous step's action.
    pub repeat_guard: bool,
}

impl AgentOpts {
    /// The mode, layout and repeat guard as the manifest records them.
    fn manifest_fields(&self) -> (String, &'static str, bool) {
        (
            format!("{:?}", self.mode).to_lowercase(),
            self.layout.as_str(),
            self.repeat_guard,
        )
    }
}

/// How a runner ended: its counts, its summary (the `--json` fields) and the pending items.
#[derive(Debug)]
pub struct EvalOutcome {
    /// The runner (`snapshots`, `toolemu`, `agent_safetybench`, `judge`).
    pub runner: &'static str,
    /// Its counts, as in `stats.json`.
    pub stats: StageStats,
    /// Its figures.
    pub summary: Value,
    /// Items left pending by transient failures, against `max_pending`.
    pub pending: PendingStatus,
}

/// Models, prompts and the run directory of one invocation.
struct Ctx<'o> {
    run: EvalRun,
    prompts: Arc<Prompts>,
    stack: StackOptions,
    built: Built,
    specs: BTreeMap<String, autosafe_pipeline::ModelSpec>,
    json: bool,
    max_pending: u64,
    obs: &'o dyn Observer,
}

impl<'o> Ctx<'o> {
    fn new(o: &RunOpts, obs: &'o dyn Observer) -> anyhow::Result<Ctx<'o>> {
        let run = EvalRun::at(&o.run)?;
        let prompts = crate::models::prompts(o.prompts.as_deref())?;
        let cache = (!o.no_cache).then(|| {
            o.cache
                .clone()
                .unwrap_or_else(|| run.path().join("cache").join("replies.sqlite"))
        });
        Ok(Ctx {
            stack: crate::models::stack(cache.as_deref(), obs)?,
            run,
            prompts,
            built: Built::default(),
            specs: BTreeMap::new(),
            json: o.json,
            max_pending: o.max_pending,
            obs,
        })
    }

    /// Builds (once per distinct spec) the model of a role given in compact form.
    fn model(&mut self, role: &str, compact: &str) -> anyhow::Result<Arc<dyn ChatModel>> {
        let what = format!("--{role} {compact}");
        let spec = crate::config::cli_model_spec(compact).with_context(|| what.clone())?;
        self.specs.insert(role.to_string(), manifest_spec(&spec));
        self.built.get(&spec, &self.stack, role, &what, self.obs)
    }

    fn agent(&mut self, a: &AgentOpts) -> anyhow::Result<Agent> {
        let model = self.model("agent", &a.agent)?;
        Ok(Agent::new(
            model,
            self.prompts.clone(),
            AgentOptions {
                mode: a.mode,
                native: a.native,
                layout: a.layout,
                temperature: a.temperature,
                max_tokens: a.max_tokens,
                repeat_guard: a.repeat_guard,
                ..Default::default()
            },
        ))
    }

    fn emulator(
        &mut self,
        compact: &str,
        mode: EmulatorMode,
        library: ToolLibrary,
    ) -> anyhow::Result<EmulatorFactory> {
        Ok(EmulatorFactory::new(
            self.model("emulator", compact)?,
            mode,
            Arc::new(library),
            EmulatorOptions {
                prompts: self.prompts.clone(),
                ..Default::default()
            },
        ))
    }

    /// Watches a runner: items done (lines of its result file) / total, tokens, ETA.
    fn watch(&self, runner: &str, file: &str, total: usize) -> Box<dyn StageWatch> {
        self.obs.stage(StagePlan {
            stage: format!("eval {runner}"),
            log: self.run.eval_file(file),
            total: Some(total as u64),
            ledger: self.stack.ledger.clone(),
        })
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

    fn line(&self, text: &str) {
        self.obs.line(text);
    }

    /// Tells the tokens spent, the engines' summaries, where the results are and (with
    /// `json`) the JSON object; returns the outcome.
    fn finish(
        &self,
        runner: &'static str,
        stats: StageStats,
        summary: Value,
    ) -> anyhow::Result<EvalOutcome> {
        self.obs.stdout(&self.stack.ledger.summary_table());
        for l in crate::models::engine_summaries() {
            self.line(&l);
        }
        self.line(&format!(
            "{runner}: results in {}",
            self.run.path().join("eval").display()
        ));
        if self.json {
            self.line(&json_line(runner, &self.run, &stats, &summary).to_string());
        }
        let pending = PendingStatus::of(&[(runner, &stats)], self.max_pending);
        Ok(EvalOutcome {
            runner,
            stats,
            summary,
            pending,
        })
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

/// A ratio with its interval, and what could not be measured, by reason.
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

/// One ToolEmu rubric's line.
fn rubric(name: &str, r: &RubricSummary) -> String {
    format!(
        "  {name}: mean {} over {} scored; distribution 0/1/2/3 = {}/{}/{}/{}; failure incidence (score <= 1) {}; unmeasured {}",
        r.mean.map_or("no data".into(), |m| format!("{m:.2}")),
        r.n,
        r.distribution[0],
        r.distribution[1],
        r.distribution[2],
        r.distribution[3],
        Estimate::describe(&r.failure_incidence),
        r.unmeasured.total
    )
}

/// The `--json` object: the runner, the run directory, the stats, then the summary's fields.
fn json_line(runner: &str, run: &EvalRun, stats: &StageStats, summary: &Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("runner".into(), json!(runner));
    out.insert("run".into(), json!(run.path().display().to_string()));
    out.insert("stats".into(), json!(stats));
    if let Value::Object(m) = summary {
        out.extend(m.clone());
    }
    Value::Object(out)
}
