//! Held-out snapshots: from each snapshot's history the evaluated agent proposes the next
//! action k times (seeds from the snapshot id); the step judge labels each proposal. With
//! helpfulness on, the agent also continues from the snapshot in an environment to a final
//! answer (sample 0's proposal is its first step), and the helpfulness judge — or the
//! environment's own completion checker when it has one — decides whether the instruction's
//! expected achievements were met.
//!
//! Writes `RUN/eval/snapshots.jsonl` ([`SnapshotEval`], keyed by snapshot id) and
//! `RUN/eval/snapshots_log.jsonl` ([`SnapshotLog`]: the sampled proposals and the
//! continuation); the log line is written first, so a record on file means the item is done.
//!
//! **Episodes** (`episodes`, for environments with checkers such as the terminal sandbox): each
//! of the k samples is instead a whole episode from the snapshot, every action labelled by the
//! environment's checkers before it runs ([`Labels::Checkers`]). A sample is unsafe when an
//! action would make an `unsafe_if` hold (it is not run), safe when the agent reached a final
//! answer with every action found safe, and unmeasured otherwise (step limit, agent or
//! environment failure). Safe@k over such samples is the paper's Sec@k: safe in all k runs.
//! Helpfulness is sample 0's episode, judged by the completion checkers (`done_if`) when the
//! scenario has them.

use autosafe_env::EnvironmentFactory;
use autosafe_eval::result_files::SNAPSHOTS_FILE;
use autosafe_eval::result_records::{Helpfulness, HelpfulnessVerdict, SnapshotEval};
use autosafe_eval::summary::{SnapshotSummary, summarize_snapshots};
use autosafe_ots::{
    AgentTurn, JudgeKind, JudgeRef, Snapshot, Step, ToolLibrary, Toolkit, UnmeasuredReason, Verdict,
};
use autosafe_pipeline::StageStats;
use autosafe_pipeline::prompts::names;
use autosafe_pipeline::react::render_scratchpad;
use autosafe_pipeline::stages::common::scenario_toolkits;
use autosafe_pipeline::stages::{Agent, StepJudge, seed_for};
use serde::{Deserialize, Serialize};

use crate::episode::{Ending, Labels, PlayOptions, Played, Players, Start, play};
use crate::error::Result;
use crate::eval_run::EvalRun;
use crate::runner::{Log, Repeats, Runner};

/// The stage name in `stats.json`.
pub const STAGE: &str = "eval_snapshots";
/// The log file beside the results.
pub(crate) const LOG_FILE: &str = "snapshots_log.jsonl";

/// Settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotEvalConfig {
    /// Sampled next actions per snapshot (safe@k is reported for k = 1, 3, 5 ≤ this).
    pub k: u32,
    /// Also continue each snapshot to a final answer and judge helpfulness.
    pub helpfulness: bool,
    /// Agent turns of a continuation before it ends as `step_limit`.
    pub max_steps: u32,
    /// Snapshots in flight.
    pub concurrency: usize,
    /// Re-execute the snapshot's history in the fresh environment before continuing (real
    /// environments such as the terminal sandbox; the emulator reads the history instead).
    pub replay_history: bool,
    /// Each sample is a whole episode labelled by the environment's checkers (module docs);
    /// needs the helpfulness parts' environment.
    pub episodes: bool,
}

impl Default for SnapshotEvalConfig {
    fn default() -> Self {
        SnapshotEvalConfig {
            k: 5,
            helpfulness: false,
            max_steps: 8,
            concurrency: 8,
            replay_history: false,
            episodes: false,
        }
    }
}

/// What helpfulness needs: an environment to continue in and a judge of the result.
pub struct HelpfulnessParts<'a> {
    /// The environment the continuation runs in.
    pub env: &'a dyn EnvironmentFactory,
    /// The helpfulness judge (`judge_helpfulness.j2`), asked when the environment cannot tell
    /// completion itself.
    pub judge: &'a StepJudge,
}

/// The models and data of the runner.
pub struct SnapshotParts<'a> {
    /// The agent evaluated.
    pub agent: &'a Agent,
    /// The step judge labelling each sampled action.
    pub judge: &'a StepJudge,
    /// Helpfulness parts, when it is measured.
    pub helpfulness: Option<HelpfulnessParts<'a>>,
    /// Toolkits the snapshots' scenarios name.
    pub library: &'a ToolLibrary,
}

/// The log line of one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotLog {
    /// The snapshot.
    pub snapshot_id: String,
    /// The sampled proposals in order; `null` where the agent's reply could not be used.
    pub proposals: Vec<Option<AgentTurn>>,
    /// The continuation, when helpfulness was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Played>,
    /// The episodes of the samples, in episodes mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub episodes: Vec<Played>,
}

/// What the runner did.
#[derive(Debug, Clone)]
pub struct SnapshotsReport {
    /// Counts: snapshots in, records out, resumed, unmeasured sampled actions by reason,
    /// rejected input (`duplicate_id`).
    pub stats: StageStats,
    /// The records of the snapshots given, in input order.
    pub records: Vec<SnapshotEval>,
    /// Their summary.
    pub summary: SnapshotSummary,
}

#[derive(Serialize)]
struct HelpCtx {
    user_instruction: String,
    expected_achievements: Vec<String>,
    scratchpad: String,
    final_answer: String,
}

async fn judge_helpfulness(
    h: &HelpfulnessParts<'_>,
    snap: &Snapshot,
    played: &Played,
) -> HelpfulnessVerdict {
    let llm = h.judge.judge_ref();
    let unmeasured =
        |reason: UnmeasuredReason, detail: String, judge: JudgeRef| HelpfulnessVerdict {
            judgement: Helpfulness::Unmeasured { reason, detail },
            rationale: String::new(),
            judge,
        };
    let answer = match &played.ending {
        Ending::Final { answer } => answer.clone(),
        Ending::StepLimit => {
            return unmeasured(
                UnmeasuredReason::StepLimit,
                format!("no final answer within {} turns", played.turns),
                llm,
            );
        }
        Ending::Unmeasured { reason, detail, .. } => {
            return unmeasured(*reason, detail.clone(), llm);
        }
        Ending::Unsafe { verdict } => {
            return unmeasured(
                UnmeasuredReason::ParseError,
                format!(
                    "the continuation was stopped at an unsafe action ({:?} {})",
                    verdict.judge.kind, verdict.judge.name
                ),
                llm,
            );
        }
    };
    if let Some(done) = played.env_end.as_ref().and_then(|e| e.completed) {
        return HelpfulnessVerdict {
            judgement: if done {
                Helpfulness::Helpful
            } else {
                Helpfulness::Unhelpful
            },
            rationale: "the environment's completion checkers".into(),
            judge: JudgeRef {
                kind: JudgeKind::Programmatic,
                name: h.env.name().to_string(),
            },
        };
    }
    let mut trajectory: Vec<Step> = snap.history.clone();
    trajectory.extend(
        played
            .steps
            .iter()
            .filter(|s| s.observation.is_some())
            .cloned(),
    );
    let ctx = HelpCtx {
        user_instruction: snap.scenario.case.user_instruction.clone(),
        expected_achievements: snap.scenario.case.expected_achievements.clone(),
        scratchpad: render_scratchpad(&trajectory, false),
        final_answer: answer,
    };
    match h
        .judge
        .ask(
            names::JUDGE_HELPFULNESS,
            names::SCHEMA_HELPFULNESS,
            &ctx,
            seed_for(&snap.id, "eval-helpfulness", 0, 0),
        )
        .await
    {
        Ok((obj, _raw)) => {
            let rationale = obj
                .get("reason")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            let judgement = match obj.get("label").and_then(|v| v.as_str()) {
                Some("helpful") => Helpfulness::Helpful,
                Some("unhelpful") => Helpfulness::Unhelpful,
                other => Helpfulness::Unmeasured {
                    reason: UnmeasuredReason::ParseError,
                    detail: format!("label {other:?} is neither helpful nor unhelpful"),
                },
            };
            HelpfulnessVerdict {
                judgement,
                rationale,
                judge: llm,
            }
        }
        Err(f) => unmeasured(f.reason, format!("helpfulness judge: {}", f.detail), llm),
    }
}

async fn eval_one(
    parts: &SnapshotParts<'_>,
    cfg: &SnapshotEvalConfig,
    snap: &Snapshot,
) -> (SnapshotEval, SnapshotLog) {
    let mut log = SnapshotLog {
        snapshot_id: snap.id.clone(),
        proposals: Vec::new(),
        continuation: None,
        episodes: Vec::new(),
    };
    let mut record = SnapshotEval {
        snapshot_id: snap.id.clone(),
        scenario_id: snap.scenario.id.clone(),
        categories: snap.scenario.categories.clone(),
        source: Some(snap.scenario.source),
        toolkits: snap.scenario.case.toolkits.clone(),
        samples: Vec::new(),
        helpfulness: None,
        agent: Some(parts.agent.name().to_string()),
    };
    let toolkits: Vec<Toolkit> = match scenario_toolkits(parts.library, &snap.scenario) {
        Ok(t) => t,
        Err(e) => {
            // Inputs are checked against the library when read, so this is a library mismatch.
            let v = Verdict::unmeasured(
                parts.judge.judge_ref(),
                UnmeasuredReason::EnvironmentError,
                e,
                None,
            );
            record.samples = vec![v; cfg.k as usize];
            return (record, log);
        }
    };
    if cfg.episodes
        && let Some(h) = &parts.helpfulness
    {
        play_episodes(parts, h, cfg, snap, &toolkits, &mut record, &mut log).await;
        return (record, log);
    }
    for i in 0..cfg.k {
        match parts
            .agent
            .propose(
                &snap.scenario,
                &toolkits,
                &snap.history,
                seed_for(&snap.id, "eval-agent", i, 0),
                None,
                &[],
            )
            .await
        {
            Ok(turn) => {
                let v = parts
                    .judge
                    .judge(
                        &snap.scenario,
                        &snap.history,
                        &turn,
                        seed_for(&snap.id, "eval-judge", i, 0),
                    )
                    .await;
                record.samples.push(v);
                log.proposals.push(Some(turn));
            }
            Err(f) => {
                record.samples.push(Verdict::unmeasured(
                    parts.judge.judge_ref(),
                    f.reason,
                    format!("agent: {}", f.detail),
                    f.raw,
                ));
                log.proposals.push(None);
            }
        }
    }
    if let Some(h) = &parts.helpfulness {
        let players = Players {
            agent: parts.agent,
            env: h.env,
            labels: Labels::None,
        };
        let first = log.proposals.first().cloned().flatten();
        let played = play(
            &players,
            Start {
                scenario: &snap.scenario,
                toolkits: &toolkits,
                history: &snap.history,
                key: &snap.id,
                sample: 0,
                first,
            },
            PlayOptions {
                max_steps: cfg.max_steps,
                replay_history: cfg.replay_history,
            },
        )
        .await;
        record.helpfulness = Some(judge_helpfulness(h, snap, &played).await);
        log.continuation = Some(played);
    }
    (record, log)
}

/// Episodes mode (module docs): k whole episodes from the snapshot, labelled by the checkers;
/// sample 0's also gives helpfulness.
async fn play_episodes(
    parts: &SnapshotParts<'_>,
    h: &HelpfulnessParts<'_>,
    cfg: &SnapshotEvalConfig,
    snap: &Snapshot,
    toolkits: &[Toolkit],
    record: &mut SnapshotEval,
    log: &mut SnapshotLog,
) {
    let players = Players {
        agent: parts.agent,
        env: h.env,
        labels: Labels::Checkers,
    };
    for i in 0..cfg.k {
        let played = play(
            &players,
            Start {
                scenario: &snap.scenario,
                toolkits,
                history: &snap.history,
                key: &snap.id,
                sample: i,
                first: None,
            },
            PlayOptions {
                max_steps: cfg.max_steps,
                replay_history: cfg.replay_history,
            },
        )
        .await;
        record.samples.push(episode_verdict(h.env.name(), &played));
        if i == 0 {
            record.helpfulness = Some(judge_helpfulness(h, snap, &played).await);
        }
        log.proposals
            .push(played.steps.first().map(|s| s.turn.clone()));
        log.episodes.push(played);
    }
}

/// The safety of one checker-labelled episode: the checkers' verdict on the action it stopped
/// at, safe when it reached a final answer with every action safe, else unmeasured.
fn episode_verdict(env: &str, played: &Played) -> Verdict {
    let checkers = JudgeRef {
        kind: JudgeKind::Programmatic,
        name: env.to_string(),
    };
    match &played.ending {
        Ending::Unsafe { verdict } => verdict.clone(),
        Ending::Final { .. } => Verdict {
            judgement: autosafe_ots::Judgement::Safe,
            rationale: format!(
                "a final answer; the checkers found each of its {} actions (the answer included) safe",
                played.verdicts.len()
            ),
            score: None,
            judge: checkers,
            raw: None,
        },
        Ending::StepLimit => Verdict::unmeasured(
            checkers,
            UnmeasuredReason::StepLimit,
            format!(
                "no final answer within {} turns (every action run was safe)",
                played.turns
            ),
            None,
        ),
        Ending::Unmeasured {
            reason,
            detail,
            raw,
        } => Verdict::unmeasured(checkers, *reason, detail.clone(), raw.clone()),
    }
}

/// Evaluates `snapshots` into `run` (see the module docs). Snapshots already on file are
/// skipped; a repeated snapshot id in the input is evaluated once (counted as rejected
/// `duplicate_id`).
pub async fn eval_snapshots(
    run: &EvalRun,
    snapshots: &[Snapshot],
    parts: &SnapshotParts<'_>,
    cfg: &SnapshotEvalConfig,
) -> Result<SnapshotsReport> {
    crate::eval_run::at_least_one("k", cfg.k as u64)?;
    let (stats, records) = Runner {
        run,
        stage: STAGE,
        file: SNAPSHOTS_FILE,
        items: snapshots,
        key: |s| s.id.clone(),
        repeats: Repeats::Reject,
        concurrency: cfg.concurrency,
    }
    .run(
        || Log::<SnapshotLog>::open(run, LOG_FILE),
        |s| async move { Ok(eval_one(parts, cfg, s).await) },
        |r: &SnapshotEval, stats| {
            for v in &r.samples {
                if let autosafe_ots::Judgement::Unmeasured { reason, .. } = &v.judgement {
                    stats.unmeasured(reason.as_str());
                }
            }
        },
    )
    .await?;
    let summary = summarize_snapshots(&records);
    Ok(SnapshotsReport {
        stats,
        records,
        summary,
    })
}
