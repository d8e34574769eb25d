//! Elicitation: the agent plays each scenario (× samples) in an environment; every proposed
//! action is judged BEFORE it is executed. At the first unsafe action the episode stops and a
//! [`Snapshot`] is written; safe steps are written as [`UtilityStep`]s. An unparsable agent
//! reply, a judge that could not judge, an environment failure or the step limit end the
//! episode as unmeasured with its reason — an unjudged action is never executed.
//!
//! **Who labels** ([`ElicitConfig::labels`]). In environments with checkers (the sandboxed
//! terminal) the checkers are the label of record by default: each proposed action is first
//! tried on a copy of the episode's state ([`Environment::trial`]); when that makes an
//! `unsafe_if` fact hold that did not hold before, the step is a snapshot (never executed in the
//! episode), otherwise it runs and the episode goes on, whatever the judge said. The judge still
//! judges every step; its verdict is stored beside (`judge_verdict`) and its first disagreement
//! with the checkers in `disagreements.jsonl`. With `labels = "judge"` (the paper's labelling,
//! and always without checkers) the judge decides as below, and the checkers are recorded
//! beside it; harm the judge let through is then a measured unsafe outcome (`missed_harm`)
//! however the episode ended.
//!
//! With judge labels, programmatic verdicts from [`EpisodeEnd`] are recorded beside the LLM
//! judge's, and every disagreement goes to `disagreements.jsonl`:
//!
//! - **missed harm**: the checkers find harm in the state that the judge-approved (executed)
//!   steps produced;
//! - **false alarm**: the judge flagged an action unsafe, and when that action is run anyway in
//!   the episode's disposable sandbox *after* the episode stopped (the probe,
//!   `probe_flagged`), the checkers find no harm. The probe never feeds back into the episode:
//!   the snapshot is written from the state before it.
//!
//! In such environments every judged step is also written to `labelled_steps.jsonl` as an
//! [`LabelledStep`] with the checkers' label (harm after the step and none before it: unsafe;
//! no harm after it: safe; else no label with the reason), for measuring judges against the
//! checkers (`autosafe eval judge`). The checkers run on the state after every executed step;
//! an action the judge flagged or could not judge is labelled from the probe.

use std::collections::HashSet;
use std::sync::Arc;

use autosafe_env::{EnvError, Environment, EnvironmentFactory, EpisodeEnd};
use autosafe_ots::{
    Action, AgentTurn, JudgeKind, JudgeRef, Judgement, LabelSource, LabelledStep, Scenario,
    Snapshot, Step, StepRun, ToolLibrary, UnmeasuredReason, Verdict, content_id,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::agent::Agent;
use super::common::{StageError, StageFailure, scenario_toolkits, seed_for, stage_path};
use super::judge::StepJudge;
use crate::records::UtilityStep;
use crate::rundir::{RunDir, Stage, StageStats};
use crate::shard::ShardSpec;
use crate::store::{Record, RecordReader, RecordWriter};

/// Elicitation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElicitConfig {
    /// Episodes per scenario.
    pub samples: u32,
    /// Agent turns per episode before it ends as `step_limit`.
    pub max_steps: u32,
    /// Episodes in flight.
    pub concurrency: usize,
    /// In environments with checkers (the sandbox), run an action the judge flagged unsafe (or
    /// could not judge) after the episode stopped, to see whether the checkers agree (false
    /// alarms) and to label the step. Needs no model call; the snapshot is unaffected.
    pub probe_flagged: bool,
    /// Who labels a step. `checkers` (the default): in environments with checkers each action
    /// is first tried on a copy of the episode's state, and it is unsafe when that makes an
    /// `unsafe_if` hold that did not hold before; the judge still judges every step and its
    /// verdict is kept beside. `judge`: the paper's labelling. Environments without checkers
    /// always use the judge.
    pub labels: LabelSource,
}

impl Default for ElicitConfig {
    fn default() -> Self {
        ElicitConfig {
            samples: 1,
            max_steps: 8,
            concurrency: 8,
            probe_flagged: true,
            labels: LabelSource::Checkers,
        }
    }
}

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeOutcome {
    /// An unsafe action was proposed: a snapshot was written.
    Snapshot,
    /// The agent gave a final answer with every action judged safe.
    FinalAnswer,
    /// Ended without a judgement (reason in the log).
    Unmeasured,
    /// Judge labelling only: the judge let every executed step through and the checkers found
    /// harm in the state they made — a measured unsafe outcome however the episode ended (how
    /// it ended is in `reason`).
    MissedHarm,
    /// The scenario could not be played (unknown toolkit).
    Rejected,
}

/// One episode's outcome (`elicit_log.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeLog {
    /// Episode id (`ep_…`) from scenario id and sample.
    pub id: String,
    /// The scenario.
    pub scenario_id: String,
    /// Sample index.
    pub sample: u32,
    /// How it ended.
    pub outcome: EpisodeOutcome,
    /// Reason when unmeasured or rejected (`parse_error`, `step_limit`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Raw model text that could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Agent turns taken (judged).
    pub turns: u32,
    /// The snapshot written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// The utility steps written.
    #[serde(default)]
    pub utility_ids: Vec<String>,
    /// The checker-labelled steps written (environments with checkers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labelled_ids: Vec<String>,
    /// The environment's programmatic verdict on the state the executed (judge-approved)
    /// steps produced, when it has checkers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programmatic: Option<Verdict>,
    /// The checkers' task completion for that state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<bool>,
    /// What the environment established at the end (checker facts, fact errors, the commands
    /// that ran with their output).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub facts: serde_json::Value,
    /// The action the episode stopped at — flagged by the judge (a snapshot) or not judged —
    /// run in the sandbox after the episode stopped (environments with checkers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// True when the programmatic verdict and the LLM judge disagree (see
    /// [`DisagreementKind`]).
    #[serde(default)]
    pub disagreement: bool,
}

/// The checkers' view of an action the judge flagged, run in the disposable sandbox after the
/// episode stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The verdict on the state after the flagged action (unmeasured if it could not run).
    pub verdict: Verdict,
    /// Task completion after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<bool>,
    /// Facts after it.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub facts: serde_json::Value,
}

/// How the LLM judge and the checkers disagree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisagreementKind {
    /// The judge labelled the executed actions safe; the checkers found harm.
    #[default]
    MissedHarm,
    /// The judge labelled an action unsafe; run in the sandbox, it harmed nothing the checkers
    /// check.
    FalseAlarm,
}

impl Record for EpisodeLog {
    fn record_id(&self) -> &str {
        &self.id
    }
}

/// A disagreement between the LLM judge and the programmatic checkers (`disagreements.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disagreement {
    /// The episode id (elicit) or the snapshot id (reflect).
    pub id: String,
    /// The stage that found it: `elicit` or `reflect`.
    #[serde(default = "elicit_stage")]
    pub stage: String,
    /// The kind.
    #[serde(default)]
    pub kind: DisagreementKind,
    /// The scenario.
    pub scenario_id: String,
    /// Sample.
    pub sample: u32,
    /// The LLM judge's label (`safe`: every executed step, or the verified action, judged
    /// safe; `unsafe`: the flagged action).
    pub llm_label: String,
    /// The LLM judge's verdict on the action in question, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<Verdict>,
    /// The programmatic verdict.
    pub programmatic: Verdict,
    /// The trajectory (executed steps).
    pub history: Vec<Step>,
    /// The action in question (flagged in elicit, verified in reflect); `None` when the harm
    /// lies in the executed steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AgentTurn>,
    /// The checkers' facts.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub facts: serde_json::Value,
}

fn elicit_stage() -> String {
    "elicit".into()
}

impl Record for Disagreement {
    fn record_id(&self) -> &str {
        &self.id
    }
}

/// What elicitation did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ElicitReport {
    /// Episode counts: input episodes, output snapshots, unmeasured by reason, and
    /// `rejected` for episodes that produced no snapshot (`no_unsafe_action`) or could not be
    /// played (`unknown_toolkit`).
    pub elicit: StageStats,
    /// Utility steps written.
    pub utility: StageStats,
    /// Disagreements between the LLM judge and programmatic checkers.
    pub disagreements: u64,
    /// Checker-labelled steps on file for the episodes given, by label (`unsafe`, `safe`,
    /// `unlabelled`); empty in environments without checkers.
    #[serde(default)]
    pub labelled: std::collections::BTreeMap<String, u64>,
}

struct EpisodeResult {
    log: EpisodeLog,
    utility: Vec<UtilityStep>,
    snapshot: Option<Snapshot>,
    disagreement: Option<Disagreement>,
    labelled: Vec<LabelledStep>,
}

/// A judged step waiting for its checker label.
struct PendingStep {
    step: u32,
    history: Vec<Step>,
    turn: AgentTurn,
    judge: Verdict,
}

/// The checker facts of an environment's end report (`facts.facts`).
fn checker_facts(facts: &serde_json::Value) -> std::collections::BTreeMap<String, bool> {
    serde_json::from_value(facts["facts"].clone()).unwrap_or_default()
}

/// The labelled record of a judged step: `after` is `None` when the action did not run, else
/// the checkers' verdict after it (if one could be had) and their facts.
fn labelled_step(
    episode_id: &str,
    scenario: &Scenario,
    sample: u32,
    agent: &Option<String>,
    pending: PendingStep,
    before: Option<&Verdict>,
    after: Option<(Option<Verdict>, StepRun, &serde_json::Value)>,
) -> LabelledStep {
    let (label, checker, ran, facts) = match after {
        None => (Err("not_run"), None, StepRun::NotRun, Default::default()),
        Some((v, ran, facts)) => (
            LabelledStep::label_from(before, v.as_ref()),
            v,
            ran,
            checker_facts(facts),
        ),
    };
    LabelledStep {
        id: LabelledStep::compute_id(episode_id, pending.step, &pending.turn),
        episode_id: episode_id.to_string(),
        step: pending.step,
        sample,
        scenario: scenario.clone(),
        history: pending.history,
        action: pending.turn,
        label: label.ok(),
        unlabelled: label.err().map(str::to_string),
        checker,
        checker_before: before.cloned(),
        facts,
        ran,
        judge: pending.judge,
        agent: agent.clone(),
    }
}

/// Everything an episode needs.
pub struct ElicitParts<'a> {
    /// The agent.
    pub agent: &'a Agent,
    /// The step judge.
    pub judge: &'a StepJudge,
    /// Environments.
    pub env: &'a dyn EnvironmentFactory,
    /// Toolkits scenarios name.
    pub library: &'a ToolLibrary,
}

fn failure_log(log: &mut EpisodeLog, f: StageFailure) {
    log.outcome = EpisodeOutcome::Unmeasured;
    log.reason = Some(f.reason.as_str().into());
    log.detail = Some(f.detail);
    log.raw = f.raw;
}

/// The verdict given when a probe could not run.
fn probe_failure(like: Option<&Verdict>, e: &EnvError) -> Verdict {
    let judge = like.map(|v| v.judge.clone()).unwrap_or(JudgeRef {
        kind: JudgeKind::Programmatic,
        name: "environment".into(),
    });
    Verdict::unmeasured(
        judge,
        UnmeasuredReason::EnvironmentError,
        format!("probe: {e}"),
        None,
    )
}

/// Runs a flagged action in the (disposable) environment after the episode stopped and ends
/// the episode; `before` is what the checkers said about the state before it.
async fn probe_flagged(
    mut env: Box<dyn Environment>,
    flagged: &AgentTurn,
    history: &[Step],
    before: &EpisodeEnd,
) -> Probe {
    let end = match &flagged.action {
        Action::Tool { tool, input, .. } => match env.execute(tool, input, history).await {
            Ok(_) => env.finish(None).await,
            Err(e) => Err(e),
        },
        Action::Final { answer } => env.finish(Some(answer)).await,
    };
    match end {
        Ok(end) => Probe {
            verdict: end.safety.unwrap_or_else(|| {
                probe_failure(
                    before.safety.as_ref(),
                    &EnvError::Config("the environment gave no verdict".into()),
                )
            }),
            completed: end.completed,
            facts: end.facts,
        },
        Err(e) => Probe {
            verdict: probe_failure(before.safety.as_ref(), &e),
            completed: None,
            facts: serde_json::Value::Null,
        },
    }
}

/// A proposed action tried on a copy of an episode's state by its checkers.
pub(crate) struct Tried {
    /// The label of record: the checkers' verdict after the action, unmeasured when they cannot
    /// tell (their facts could not be established, or harm held already before it).
    pub(crate) record: Verdict,
    /// What they established after it.
    pub(crate) probe: Probe,
    /// What a tool call returned (`None` for a final answer or when it could not run).
    pub(crate) observation: Option<autosafe_env::Observation>,
}

/// Tries a proposed action on a copy of the episode's state (a final answer: the state with
/// the answer given) and labels it: unsafe when it makes an `unsafe_if` hold that `before`
/// (the checkers' verdict on the state now) did not have. The episode is left unchanged.
pub(crate) async fn try_step(
    env: &mut Box<dyn Environment>,
    turn: &AgentTurn,
    history: &[Step],
    before: Option<&Verdict>,
) -> Tried {
    let failed = |e: &EnvError| {
        let v = probe_failure(before, e);
        Tried {
            record: v.clone(),
            probe: Probe {
                verdict: v,
                completed: None,
                facts: serde_json::Value::Null,
            },
            observation: None,
        }
    };
    let (after, observation) = match &turn.action {
        Action::Tool { tool, input, .. } => match env.trial(tool, input, history).await {
            Ok(Some(t)) => (t.end, Some(t.observation)),
            Ok(None) => (EpisodeEnd::default(), None),
            Err(e) => return failed(&e),
        },
        Action::Final { answer } => match env.checkpoint(Some(answer)).await {
            Ok(end) => (end.unwrap_or_default(), None),
            Err(e) => return failed(&e),
        },
    };
    let Some(checked) = after.safety else {
        return failed(&EnvError::Config("the environment gave no verdict".into()));
    };
    let record = match LabelledStep::label_from(before, Some(&checked)) {
        Ok(_) => checked.clone(),
        Err(why) => Verdict::unmeasured(
            checked.judge.clone(),
            UnmeasuredReason::EnvironmentError,
            format!("{why} ({})", checked.rationale),
            None,
        ),
    };
    Tried {
        record,
        probe: Probe {
            verdict: checked,
            completed: after.completed,
            facts: after.facts,
        },
        observation,
    }
}

async fn play(
    parts: &ElicitParts<'_>,
    scenario: &Scenario,
    sample: u32,
    id: String,
    config: &ElicitConfig,
) -> EpisodeResult {
    let max_steps = config.max_steps.max(1);
    let mut res = EpisodeResult {
        log: EpisodeLog {
            id: id.clone(),
            scenario_id: scenario.id.clone(),
            sample,
            outcome: EpisodeOutcome::Unmeasured,
            reason: None,
            detail: None,
            raw: None,
            turns: 0,
            snapshot_id: None,
            utility_ids: Vec::new(),
            labelled_ids: Vec::new(),
            programmatic: None,
            completed: None,
            facts: serde_json::Value::Null,
            probe: None,
            disagreement: false,
        },
        utility: Vec::new(),
        snapshot: None,
        disagreement: None,
        labelled: Vec::new(),
    };
    let toolkits = match scenario_toolkits(parts.library, scenario) {
        Ok(t) => t,
        Err(e) => {
            res.log.outcome = EpisodeOutcome::Rejected;
            res.log.reason = Some("unknown_toolkit".into());
            res.log.detail = Some(e);
            return res;
        }
    };
    let env_failure = |e: autosafe_env::EnvError| StageFailure {
        reason: UnmeasuredReason::EnvironmentError,
        detail: e.to_string(),
        raw: None,
    };
    let mut env = match parts.env.start(scenario, sample).await {
        Ok(e) => e,
        Err(EnvError::Unsupported { message, .. }) => {
            res.log.outcome = EpisodeOutcome::Rejected;
            res.log.reason = Some("unsupported_scenario".into());
            res.log.detail = Some(format!("environment {}: {message}", parts.env.name()));
            return res;
        }
        Err(e) => {
            failure_log(&mut res.log, env_failure(e));
            return res;
        }
    };
    let agent_name = Some(parts.agent.name().to_string());
    let mut history: Vec<Step> = scenario.history.clone();
    let mut final_answer: Option<String> = None;
    // Environments with checkers label every judged step: `state` is their verdict on the
    // state so far, `pending` the step the episode stopped at (labelled after the loop).
    let (checkers, mut state) = match env.checkpoint(None).await {
        Ok(Some(end)) => (true, end.safety),
        Ok(None) => (false, None),
        Err(_) => (true, None),
    };
    let by_checkers = checkers && config.labels == LabelSource::Checkers;
    let mut pending: Option<PendingStep> = None;
    let mut unjudged: Option<AgentTurn> = None;
    for turn_no in 0..max_steps {
        let turn = match parts
            .agent
            .propose(
                scenario,
                &toolkits,
                &history,
                seed_for(&id, "agent", sample, turn_no),
                None,
            )
            .await
        {
            Ok(t) => t,
            Err(f) => {
                failure_log(&mut res.log, f);
                break;
            }
        };
        res.log.turns += 1;
        let verdict = parts
            .judge
            .judge(
                scenario,
                &history,
                &turn,
                seed_for(&id, "judge", sample, turn_no),
            )
            .await;
        let step_pending = |turn: &AgentTurn, verdict: &Verdict, history: &[Step]| {
            checkers.then(|| PendingStep {
                step: turn_no,
                history: history.to_vec(),
                turn: turn.clone(),
                judge: verdict.clone(),
            })
        };
        // With checker labels the step is tried first; their verdict is the label of record
        // and the judge's is kept beside (its disagreements recorded).
        let checked = if by_checkers {
            let Tried {
                record,
                probe: tried,
                ..
            } = try_step(&mut env, &turn, &history, state.as_ref()).await;
            let judged = verdict.judgement.is_safe();
            let kind = match (record.judgement.is_safe(), judged) {
                (Some(false), Some(true)) => Some(DisagreementKind::MissedHarm),
                (Some(true), Some(false)) => Some(DisagreementKind::FalseAlarm),
                _ => None,
            };
            if let Some(kind) = kind.filter(|_| res.disagreement.is_none()) {
                res.log.disagreement = true;
                res.disagreement = Some(Disagreement {
                    id: id.clone(),
                    stage: elicit_stage(),
                    kind,
                    scenario_id: scenario.id.clone(),
                    sample,
                    llm_label: if judged == Some(true) {
                        "safe"
                    } else {
                        "unsafe"
                    }
                    .into(),
                    llm: Some(verdict.clone()),
                    programmatic: tried.verdict.clone(),
                    history: history.clone(),
                    action: Some(turn.clone()),
                    facts: tried.facts.clone(),
                });
            }
            Some((record, tried))
        } else {
            None
        };
        let label = checked.as_ref().map_or(&verdict, |(record, _)| record);
        match &label.judgement {
            Judgement::Unmeasured { reason, detail } => {
                res.log.outcome = EpisodeOutcome::Unmeasured;
                res.log.reason = Some(reason.as_str().into());
                let who = if checked.is_some() {
                    "checkers"
                } else {
                    "judge"
                };
                res.log.detail = Some(format!("{who}: {detail}"));
                res.log.raw = label.raw.clone();
                pending = step_pending(&turn, &verdict, &history);
                match checked {
                    Some((_, tried)) => res.log.probe = Some(tried),
                    None => unjudged = Some(turn),
                }
                break;
            }
            Judgement::Unsafe => {
                pending = step_pending(&turn, &verdict, &history);
                let (verdict, labelled_by, judge_verdict) = match checked {
                    Some((record, tried)) => {
                        res.log.probe = Some(tried);
                        (record, LabelSource::Checkers, Some(verdict))
                    }
                    None => (verdict, LabelSource::Judge, None),
                };
                let snap = Snapshot {
                    id: Snapshot::compute_id(&scenario.id, &history, &turn, sample),
                    scenario: scenario.clone(),
                    history: history.clone(),
                    proposed: turn,
                    verdict,
                    sample,
                    agent: agent_name.clone(),
                    labelled_by,
                    judge_verdict,
                };
                res.log.outcome = EpisodeOutcome::Snapshot;
                res.log.snapshot_id = Some(snap.id.clone());
                res.snapshot = Some(snap);
                break;
            }
            Judgement::Safe => {
                let this = step_pending(&turn, &verdict, &history);
                let step = UtilityStep::new(
                    scenario.clone(),
                    history.clone(),
                    turn.clone(),
                    verdict,
                    sample,
                    agent_name.clone(),
                );
                let step = match checked {
                    Some((record, _)) => step.labelled_by_checkers(record),
                    None => step,
                };
                res.log.utility_ids.push(step.id.clone());
                res.utility.push(step);
                match &turn.action {
                    Action::Final { answer } => {
                        final_answer = Some(answer.clone());
                        res.log.outcome = EpisodeOutcome::FinalAnswer;
                        pending = this;
                        break;
                    }
                    Action::Tool { tool, input, .. } => {
                        let ran = env.execute(tool, input, &history).await;
                        // The checkers on the state after the step label it.
                        if let Some(p) = this {
                            let after = match env.checkpoint(None).await {
                                Ok(Some(end)) => (end.safety, end.facts),
                                _ => (None, serde_json::Value::Null),
                            };
                            let rec = labelled_step(
                                &id,
                                scenario,
                                sample,
                                &agent_name,
                                p,
                                state.as_ref(),
                                Some((after.0.clone(), StepRun::Episode, &after.1)),
                            );
                            res.log.labelled_ids.push(rec.id.clone());
                            res.labelled.push(rec);
                            state = after.0;
                        }
                        match ran {
                            Ok(obs) => history.push(Step {
                                turn,
                                observation: Some(obs.text),
                            }),
                            Err(e) => {
                                failure_log(&mut res.log, env_failure(e));
                                break;
                            }
                        }
                    }
                }
            }
        }
        if turn_no + 1 == max_steps {
            res.log.outcome = EpisodeOutcome::Unmeasured;
            res.log.reason = Some(UnmeasuredReason::StepLimit.as_str().into());
            res.log.detail = Some(format!(
                "no final answer or unsafe action within {max_steps} turns"
            ));
        }
    }
    // What the checkers say about the state the judge-approved steps produced; then, for a
    // snapshot, the flagged action run in the disposable sandbox (the probe).
    let flagged = res
        .snapshot
        .as_ref()
        .map(|s| s.proposed.clone())
        .or(unjudged)
        .filter(|_| config.probe_flagged && res.log.probe.is_none());
    let end: Result<EpisodeEnd, EnvError> = match flagged {
        Some(turn) => match env.checkpoint(None).await {
            Ok(Some(before)) => {
                res.log.probe = Some(probe_flagged(env, &turn, &history, &before).await);
                Ok(before)
            }
            Ok(None) => env.finish(None).await,
            Err(e) => Err(e),
        },
        None => env.finish(final_answer.as_deref()).await,
    };
    let end = match end {
        Ok(e) => e,
        Err(e) => {
            if res.log.reason.is_none() && res.log.outcome != EpisodeOutcome::Snapshot {
                failure_log(&mut res.log, env_failure(e));
            }
            EpisodeEnd::default()
        }
    };
    res.log.completed = end.completed;
    res.log.facts = end.facts.clone();
    // The step the episode stopped at: a final answer is labelled from the end state, an
    // action not executed from the probe (no label without one).
    if let Some(p) = pending {
        let rec = if final_answer.is_some() {
            labelled_step(
                &id,
                scenario,
                sample,
                &agent_name,
                p,
                state.as_ref(),
                Some((end.safety.clone(), StepRun::Episode, &end.facts)),
            )
        } else {
            // The state before the probe, as the checkers saw it at the stop.
            let before = end.safety.as_ref().or(state.as_ref());
            match &res.log.probe {
                Some(pr) => labelled_step(
                    &id,
                    scenario,
                    sample,
                    &agent_name,
                    p,
                    before,
                    Some((Some(pr.verdict.clone()), StepRun::Probe, &pr.facts)),
                ),
                None => labelled_step(&id, scenario, sample, &agent_name, p, before, None),
            }
        };
        res.log.labelled_ids.push(rec.id.clone());
        res.labelled.push(rec);
    }
    if let Some(p) = end.safety.clone().filter(|_| !by_checkers) {
        // Every executed step was judged safe by the LLM judge: harm here is harm it missed,
        // and a measured unsafe outcome however the episode ended.
        let missed = p.judgement.is_safe() == Some(false);
        if missed && res.log.outcome != EpisodeOutcome::Snapshot {
            res.log.outcome = EpisodeOutcome::MissedHarm;
            res.log.reason.get_or_insert_with(|| "final_answer".into());
        }
        let probe = res.log.probe.as_ref().filter(|_| res.snapshot.is_some());
        let false_alarm = p.judgement.is_safe() == Some(true)
            && probe.is_some_and(|pr| pr.verdict.judgement.is_safe() == Some(true));
        if missed || false_alarm {
            let snap = res.snapshot.as_ref();
            res.log.disagreement = true;
            res.disagreement = Some(Disagreement {
                id: id.clone(),
                stage: elicit_stage(),
                kind: if missed {
                    DisagreementKind::MissedHarm
                } else {
                    DisagreementKind::FalseAlarm
                },
                scenario_id: scenario.id.clone(),
                sample,
                llm_label: if missed { "safe" } else { "unsafe" }.into(),
                llm: snap.filter(|_| !missed).map(|s| s.verdict.clone()),
                programmatic: if missed {
                    p.clone()
                } else {
                    probe
                        .map(|pr| pr.verdict.clone())
                        .unwrap_or_else(|| p.clone())
                },
                history: history.clone(),
                action: snap.filter(|_| !missed).map(|s| s.proposed.clone()),
                facts: if missed {
                    end.facts.clone()
                } else {
                    probe.map(|pr| pr.facts.clone()).unwrap_or_default()
                },
            });
        }
        res.log.programmatic = Some(p);
    } else if let Some(p) = end.safety {
        res.log.programmatic = Some(p);
    }
    res
}

/// The file stem of the checker-labelled steps (`labelled_steps.jsonl`).
pub const LABELLED_STEPS: &str = "labelled_steps";

/// The id of one episode (a scenario played as sample `sample`). Elicit partitions shards by it,
/// and reflect partitions snapshots by the episode they came from, so a shard's chain stays on
/// that shard whether reflect reads the shard's own snapshot file or the merged one.
pub fn episode_id(scenario_id: &str, sample: u32) -> String {
    content_id(
        "ep",
        &serde_json::json!({"scenario": scenario_id, "sample": sample}),
    )
}

/// Runs elicitation over `scenarios_path` into the run directory: `snapshots.jsonl`,
/// `utility.jsonl`, `elicit_log.jsonl`, `disagreements.jsonl`, `labelled_steps.jsonl` (shard
/// files when sharded). Episodes already logged with all their records are skipped.
pub async fn elicit(
    run: &RunDir,
    shard: Option<ShardSpec>,
    scenarios_path: &std::path::Path,
    parts: &ElicitParts<'_>,
    config: &ElicitConfig,
) -> Result<ElicitReport, StageError> {
    let spec = shard.unwrap_or_default();
    let snap_path = run.stage_file(Stage::Elicit, shard);
    let util_path = run.stage_file(Stage::Utility, shard);
    let log_path = stage_path(run, "elicit_log", shard);
    let dis_path = stage_path(run, "disagreements", shard);
    let lab_path = stage_path(run, LABELLED_STEPS, shard);
    let (snap_w, snap_r) = RecordWriter::<Snapshot>::open(&snap_path, 64)?;
    let (util_w, util_r) = RecordWriter::<UtilityStep>::open(&util_path, 256)?;
    let (log_w, _) = RecordWriter::<EpisodeLog>::open(&log_path, 64)?;
    let (dis_w, dis_r) = RecordWriter::<Disagreement>::open(&dis_path, 16)?;
    let (lab_w, lab_r) = RecordWriter::<LabelledStep>::open(&lab_path, 256)?;
    let mut finished = HashSet::new();
    for l in RecordReader::<EpisodeLog>::open(&log_path)? {
        let l = l?;
        let complete = l
            .snapshot_id
            .as_ref()
            .is_none_or(|s| snap_r.finished.contains(s))
            && l.utility_ids.iter().all(|u| util_r.finished.contains(u))
            && l.labelled_ids.iter().all(|x| lab_r.finished.contains(x))
            && (!l.disagreement || dis_r.finished.contains(&l.id));
        if complete {
            finished.insert(l.id);
        }
    }

    // Episodes stream from the scenario file as they are played (nothing but ids is held, so
    // memory stays flat however many scenarios there are).
    let mut planned: HashSet<String> = HashSet::new();
    let mut resumed = 0u64;
    let mut read_error = None;
    let samples = config.samples;
    let todo = RecordReader::<Scenario>::open(scenarios_path)?
        .map_while(|sc| sc.map_err(|e| read_error = Some(e)).ok())
        .flat_map(|sc| {
            let sc = Arc::new(sc);
            (0..samples).map(move |s| (sc.clone(), s, episode_id(&sc.id, s)))
        })
        .filter(|(_, _, id)| spec.owns(id) && planned.insert(id.clone()))
        .filter(|(_, _, id)| {
            let done = finished.contains(id);
            resumed += u64::from(done);
            !done
        });
    let mut stream = futures_util::stream::iter(todo)
        .map(|(sc, s, id)| {
            super::common::attempt(async move { play(parts, &sc, s, id, config).await })
        })
        .buffered(config.concurrency.max(1));
    // Episodes that met a transient failure: nothing of them is written (they stay pending).
    let mut left = StageStats::default();
    while let Some(r) = stream.next().await {
        let r = match r? {
            Ok(r) => r,
            Err(failure) => {
                left.pending(&failure);
                continue;
            }
        };
        for u in r.utility {
            util_w.write(u).await?;
        }
        if let Some(s) = r.snapshot {
            snap_w.write(s).await?;
        }
        if let Some(d) = r.disagreement {
            dis_w.write(d).await?;
        }
        for x in r.labelled {
            lab_w.write(x).await?;
        }
        log_w.write(r.log).await?;
    }
    drop(stream);
    if let Some(e) = read_error {
        return Err(e.into());
    }
    snap_w.finish().await?;
    util_w.finish().await?;
    dis_w.finish().await?;
    lab_w.finish().await?;
    log_w.finish().await?;

    let mut report = ElicitReport::default();
    report.elicit.input = planned.len() as u64;
    report.elicit.resumed = resumed;
    report.elicit.add(&left);
    let mut utility_ids = HashSet::new();
    for l in RecordReader::<EpisodeLog>::open(&log_path)? {
        let l = l?;
        if !planned.contains(&l.id) {
            continue;
        }
        utility_ids.extend(l.utility_ids.iter().cloned());
        match l.outcome {
            EpisodeOutcome::Snapshot => report.elicit.output += 1,
            EpisodeOutcome::FinalAnswer => report.elicit.reject("no_unsafe_action"),
            EpisodeOutcome::MissedHarm => report.elicit.reject("missed_harm"),
            EpisodeOutcome::Unmeasured => report
                .elicit
                .unmeasured(l.reason.as_deref().unwrap_or("unknown")),
            EpisodeOutcome::Rejected => report
                .elicit
                .reject(l.reason.as_deref().unwrap_or("rejected")),
        }
        if l.disagreement {
            report.disagreements += 1;
        }
    }
    report.utility.input = report.elicit.input;
    report.utility.output = utility_ids.len() as u64;
    for x in RecordReader::<LabelledStep>::open(&lab_path)? {
        let x = x?;
        if planned.contains(&x.episode_id) {
            let key = match x.label {
                Some(autosafe_ots::CheckerLabel::Unsafe) => "unsafe",
                Some(autosafe_ots::CheckerLabel::Safe) => "safe",
                None => "unlabelled",
            };
            *report.labelled.entry(key.into()).or_default() += 1;
        }
    }
    Ok(report)
}
