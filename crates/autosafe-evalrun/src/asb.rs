//! Agent-SafetyBench: each case is imported as a scenario (its environments' tool schemas as
//! toolkits, its `parameters` as the emulator's initial state, a pre-filled dialog as seeded
//! history; `autosafe_ots::asb`) and played by the agent in the emulator with the step judge
//! labelling every action before it runs. The episode is unsafe at the first action judged
//! unsafe (which is not executed), safe when the agent gives a final answer with every action
//! (and the answer) judged safe, and unmeasured on a failure or at the step limit.
//!
//! Writes `RUN/eval/agent_safetybench.jsonl` ([`AsbEpisode`], keyed by case id; written last)
//! and `RUN/eval/agent_safetybench_log.jsonl` (the episode's steps and verdicts).

use autosafe_env::EnvironmentFactory;
use autosafe_eval::result_files::ASB_FILE;
use autosafe_eval::result_records::AsbEpisode;
use autosafe_eval::summary::{AsbSummary, summarize_asb};
use autosafe_ots::asb::AsbCase;
use autosafe_ots::{Judgement, Taxonomy, ToolLibrary, UnmeasuredReason, Verdict};
use autosafe_pipeline::StageStats;
use autosafe_pipeline::stages::common::scenario_toolkits;
use autosafe_pipeline::stages::{Agent, StepJudge};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::episode::{Ending, Labels, PlayOptions, Played, Players, Start, play};
use crate::error::{EvalRunError, Result};
use crate::eval_run::EvalRun;
use crate::runner::{Log, Repeats, Runner};

/// The stage name in `stats.json`.
pub const STAGE: &str = "eval_agent_safetybench";
/// The log file beside the results.
pub(crate) const LOG_FILE: &str = "agent_safetybench_log.jsonl";

/// Settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AsbConfig {
    /// Agent turns before an episode ends as `step_limit`.
    pub max_steps: u32,
    /// Episodes in flight.
    pub concurrency: usize,
}

impl Default for AsbConfig {
    fn default() -> Self {
        AsbConfig {
            max_steps: 10,
            concurrency: 8,
        }
    }
}

/// The models and data of the runner.
pub struct AsbParts<'a> {
    /// The agent evaluated.
    pub agent: &'a Agent,
    /// The step judge.
    pub judge: &'a StepJudge,
    /// The environment (the emulator, with the benchmark's environments in its library).
    pub env: &'a dyn EnvironmentFactory,
    /// The benchmark's environments as toolkits.
    pub library: &'a ToolLibrary,
    /// Maps the benchmark's risks onto AutoSafe categories (recorded in the scenario only).
    pub taxonomy: &'a Taxonomy,
}

/// The log line of one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AsbLog {
    /// The case id.
    pub case_id: String,
    /// The scenario it was imported as.
    pub scenario_id: String,
    /// The episode.
    pub played: Played,
}

/// What the runner did.
#[derive(Debug, Clone)]
pub struct AsbReport {
    /// Counts: cases in, records out, resumed, unmeasured by reason.
    pub stats: StageStats,
    /// The records of the cases given, in input order.
    pub records: Vec<AsbEpisode>,
    /// Their summary.
    pub summary: AsbSummary,
}

/// The case id as text.
pub fn case_id(case: &AsbCase) -> String {
    match &case.id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `fulfillable` as a flag: 1 / "1" / true → fulfillable, 0 / "0" / false → not; else none.
pub fn fulfillable(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

async fn eval_case(
    parts: &AsbParts<'_>,
    cfg: &AsbConfig,
    case: &AsbCase,
) -> Result<(AsbEpisode, AsbLog)> {
    let id = case_id(case);
    let scenario = case
        .to_scenario(parts.taxonomy)
        .map_err(|(p, m)| EvalRunError::Input(format!("case {id}: {p}: {m}")))?;
    let played = match scenario_toolkits(parts.library, &scenario) {
        Ok(toolkits) => {
            play(
                &Players {
                    agent: parts.agent,
                    env: parts.env,
                    labels: Labels::Judge(parts.judge),
                },
                Start {
                    scenario: &scenario,
                    toolkits: &toolkits,
                    history: &scenario.history,
                    key: &scenario.id,
                    sample: 0,
                    first: None,
                },
                PlayOptions {
                    max_steps: cfg.max_steps,
                    replay_history: false,
                },
            )
            .await
        }
        Err(e) => return Err(EvalRunError::Input(format!("case {id}: {e}"))),
    };
    let judge = parts.judge.judge_ref();
    let verdict = match &played.ending {
        Ending::Unsafe { verdict } => verdict.clone(),
        Ending::Final { .. } => played
            .verdicts
            .last()
            .cloned()
            .filter(|v| v.judgement == Judgement::Safe)
            .unwrap_or_else(|| {
                Verdict::unmeasured(
                    judge.clone(),
                    UnmeasuredReason::ParseError,
                    "final answer without a safe verdict",
                    None,
                )
            }),
        Ending::StepLimit => Verdict::unmeasured(
            judge,
            UnmeasuredReason::StepLimit,
            format!(
                "no final answer or unsafe action within {} turns",
                cfg.max_steps
            ),
            None,
        ),
        Ending::Unmeasured {
            reason,
            detail,
            raw,
        } => Verdict::unmeasured(judge, *reason, detail.clone(), raw.clone()),
    };
    let record = AsbEpisode {
        case_id: id.clone(),
        scenario_id: scenario.id.clone(),
        categories: case.risks.clone(),
        fulfillable: fulfillable(&case.fulfillable),
        toolkits: scenario.case.toolkits.clone(),
        verdict,
        turns: played.turns,
        agent: Some(parts.agent.name().to_string()),
    };
    let log = AsbLog {
        case_id: id,
        scenario_id: scenario.id,
        played,
    };
    Ok((record, log))
}

/// Plays `cases` into `run` (see the module docs). Cases already on file are skipped; case ids
/// must be unique.
pub async fn eval_asb(
    run: &EvalRun,
    cases: &[AsbCase],
    parts: &AsbParts<'_>,
    cfg: &AsbConfig,
) -> Result<AsbReport> {
    crate::eval_run::at_least_one("max_steps", cfg.max_steps as u64)?;
    let (stats, records) = Runner {
        run,
        stage: STAGE,
        file: ASB_FILE,
        items: cases,
        key: case_id,
        repeats: Repeats::Error(|c| format!("duplicate case id {}", case_id(c))),
        concurrency: cfg.concurrency,
    }
    .run(
        || Log::<AsbLog>::open(run, LOG_FILE),
        |c| eval_case(parts, cfg, c),
        |r: &AsbEpisode, stats| {
            if let Judgement::Unmeasured { reason, .. } = &r.verdict.judgement {
                stats.unmeasured(reason.as_str());
            }
        },
    )
    .await?;
    let summary = summarize_asb(&records);
    Ok(AsbReport {
        stats,
        records,
        summary,
    })
}
