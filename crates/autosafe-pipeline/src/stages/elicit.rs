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
//!
//! Episodes run on the shared episode loop (`stages::episode`, as the evaluation runners' do);
//! elicitation's hooks (`Recorder`) do the labelling and keep the records, and the episode's log
//! is built from the loop's typed ending.

use std::collections::HashSet;
use std::sync::Arc;

use autosafe_env::{EnvError, Environment, EnvironmentFactory, EpisodeEnd};
use autosafe_ots::{
    Action, AgentTurn, JudgeKind, JudgeRef, Judgement, LabelSource, LabelledStep, Scenario,
    Snapshot, Step, StepRun, ToolLibrary, UnmeasuredReason, Verdict, content_id,
};
use serde::{Deserialize, Serialize};

use super::agent::Agent;
use super::common::{StageError, scenario_toolkits, seed_for};
use super::episode::{self, Ending, Episode, Hooks, Label, Party, Played, Proposed};
use super::judge::StepJudge;
use crate::rundir::{Counted, RunDir, RunFile, Stage, StageStats};
use crate::shard::ShardSpec;
use crate::stage_records::UtilityStep;
use crate::store::{Record, RecordReader, RecordWriter};
use crate::task_loop::run_items;

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
pub(crate) enum DisagreementKind {
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
pub(crate) struct Disagreement {
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

impl EpisodeResult {
    /// An episode that ended before its first turn.
    fn unplayed(
        id: &str,
        scenario: &Scenario,
        sample: u32,
        outcome: EpisodeOutcome,
        reason: &str,
        detail: String,
    ) -> EpisodeResult {
        EpisodeResult {
            log: EpisodeLog {
                id: id.to_string(),
                scenario_id: scenario.id.clone(),
                sample,
                outcome,
                reason: Some(reason.to_string()),
                detail: Some(detail),
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
        }
    }
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

/// Plays one episode on the shared loop ([`episode::play`]) with elicitation's [`Recorder`],
/// then ends it (probing the action it stopped at) and builds its records.
async fn play(
    parts: &ElicitParts<'_>,
    scenario: &Scenario,
    sample: u32,
    id: String,
    config: &ElicitConfig,
) -> EpisodeResult {
    let unplayed = |outcome, reason: &str, detail| {
        EpisodeResult::unplayed(&id, scenario, sample, outcome, reason, detail)
    };
    let toolkits = match scenario_toolkits(parts.library, scenario) {
        Ok(t) => t,
        Err(e) => return unplayed(EpisodeOutcome::Rejected, "unknown_toolkit", e),
    };
    let mut env = match parts.env.start(scenario, sample).await {
        Ok(e) => e,
        Err(EnvError::Unsupported { message, .. }) => {
            let detail = format!("environment {}: {message}", parts.env.name());
            return unplayed(EpisodeOutcome::Rejected, "unsupported_scenario", detail);
        }
        Err(e) => {
            let reason = UnmeasuredReason::EnvironmentError.as_str();
            return unplayed(EpisodeOutcome::Unmeasured, reason, e.to_string());
        }
    };
    // Environments with checkers label every judged step: `state` is their verdict on the
    // state so far.
    let (checkers, state) = match env.checkpoint(None).await {
        Ok(Some(end)) => (true, end.safety),
        Ok(None) => (false, None),
        Err(_) => (true, None),
    };
    let by_checkers = checkers && config.labels == LabelSource::Checkers;
    let mut rec = Recorder::new(parts, scenario, sample, &id, checkers, by_checkers, state);
    let ep = Episode {
        scenario,
        toolkits: &toolkits,
        key: &id,
        agent_role: "agent",
        sample,
        max_steps: config.max_steps,
        first: None,
    };
    let history = scenario.history.clone();
    let mut played = episode::play(parts.agent, &mut env, ep, history, &mut rec).await;
    let final_given = played.ending.answer().is_some();
    let end = rec.end(env, &mut played, config.probe_flagged).await;
    rec.label_stop(&end, final_given);
    rec.into_result(played, end, config.max_steps.max(1))
}

/// Elicitation's hooks on the shared episode loop: the judge judges every step and, in
/// environments with checkers, the checkers label it (the label of record with
/// `labels = "checkers"`); the utility steps, labelled steps, snapshot and disagreement found
/// on the way are kept for the episode's records.
struct Recorder<'a> {
    parts: &'a ElicitParts<'a>,
    scenario: &'a Scenario,
    sample: u32,
    id: &'a str,
    agent: Option<String>,
    /// The environment has checkers: every judged step gets their label.
    checkers: bool,
    /// Their label is the label of record.
    by_checkers: bool,
    /// The checkers' verdict on the state so far.
    state: Option<Verdict>,
    /// The step being played: the judge's verdict, and the checkers' when they label.
    current: Option<Judged>,
    /// The judged step waiting for its checker label: labelled after it ran, or (the step the
    /// episode stopped at) after the episode ended.
    pending: Option<PendingStep>,
    /// The action the episode stopped at without a judgement.
    unjudged: Option<AgentTurn>,
    probe: Option<Probe>,
    utility: Vec<UtilityStep>,
    labelled: Vec<LabelledStep>,
    snapshot: Option<Snapshot>,
    disagreement: Option<Disagreement>,
}

/// The labels on the step being played.
struct Judged {
    judge: Verdict,
    /// The checkers' label of record and what they established, when they label.
    checked: Option<(Verdict, Probe)>,
}

#[async_trait::async_trait]
impl Hooks for Recorder<'_> {
    async fn label(&mut self, env: &mut Box<dyn Environment>, at: &Proposed<'_>) -> Option<Label> {
        let seed = seed_for(self.id, "judge", self.sample, at.turn_no);
        let judge = self
            .parts
            .judge
            .judge(self.scenario, at.history, at.turn, seed)
            .await;
        self.pending = self.checkers.then(|| PendingStep {
            step: at.turn_no,
            history: at.history.to_vec(),
            turn: at.turn.clone(),
            judge: judge.clone(),
        });
        // With checker labels the step is tried first; their verdict is the label of record
        // and the judge's is kept beside (its first disagreement recorded).
        let checked = if self.by_checkers {
            let tried = try_step(env, at.turn, at.history, self.state.as_ref()).await;
            self.note_disagreement(at, &judge, &tried);
            Some((tried.record, tried.probe))
        } else {
            None
        };
        let label = match &checked {
            Some((record, _)) => Label {
                verdict: record.clone(),
                by: Party::Checkers,
            },
            None => Label {
                verdict: judge.clone(),
                by: Party::Judge,
            },
        };
        self.current = Some(Judged { judge, checked });
        Some(label)
    }

    fn on_step(&mut self, at: &Proposed<'_>) {
        let Some(cur) = self.current.take() else {
            return;
        };
        let step = UtilityStep::new(
            self.scenario.clone(),
            at.history.to_vec(),
            at.turn.clone(),
            cur.judge,
            self.sample,
            self.agent.clone(),
        );
        self.utility.push(match cur.checked {
            Some((record, _)) => step.labelled_by_checkers(record),
            None => step,
        });
    }

    /// The checkers on the state after the step label it.
    async fn after_step(&mut self, env: &mut Box<dyn Environment>, _at: &Proposed<'_>) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let (safety, facts) = match env.checkpoint(None).await {
            Ok(Some(end)) => (end.safety, end.facts),
            _ => (None, serde_json::Value::Null),
        };
        let after = Some((safety.clone(), StepRun::Episode, &facts));
        let rec = self.label_step(p, self.state.as_ref(), after);
        self.labelled.push(rec);
        self.state = safety;
    }

    fn on_stop(&mut self, at: &Proposed<'_>, label: &Label) {
        let Some(cur) = self.current.take() else {
            return;
        };
        if label.verdict.judgement != Judgement::Unsafe {
            match cur.checked {
                Some((_, tried)) => self.probe = Some(tried),
                None => self.unjudged = Some(at.turn.clone()),
            }
            return;
        }
        let (verdict, labelled_by, judge_verdict) = match cur.checked {
            Some((record, tried)) => {
                self.probe = Some(tried);
                (record, LabelSource::Checkers, Some(cur.judge))
            }
            None => (cur.judge, LabelSource::Judge, None),
        };
        self.snapshot = Some(Snapshot {
            id: Snapshot::compute_id(&self.scenario.id, at.history, at.turn, self.sample),
            scenario: self.scenario.clone(),
            history: at.history.to_vec(),
            proposed: at.turn.clone(),
            verdict,
            sample: self.sample,
            agent: self.agent.clone(),
            labelled_by,
            judge_verdict,
        });
    }
}

impl<'a> Recorder<'a> {
    fn new(
        parts: &'a ElicitParts<'a>,
        scenario: &'a Scenario,
        sample: u32,
        id: &'a str,
        checkers: bool,
        by_checkers: bool,
        state: Option<Verdict>,
    ) -> Self {
        Recorder {
            parts,
            scenario,
            sample,
            id,
            agent: Some(parts.agent.name().to_string()),
            checkers,
            by_checkers,
            state,
            current: None,
            pending: None,
            unjudged: None,
            probe: None,
            utility: Vec::new(),
            labelled: Vec::new(),
            snapshot: None,
            disagreement: None,
        }
    }

    /// The labelled record of the judged step `pending`: `after` is `None` when the action did
    /// not run, else the checkers' verdict after it (if one could be had) and their facts.
    fn label_step(
        &self,
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
            id: LabelledStep::compute_id(self.id, pending.step, &pending.turn),
            episode_id: self.id.to_string(),
            step: pending.step,
            sample: self.sample,
            scenario: self.scenario.clone(),
            history: pending.history,
            action: pending.turn,
            label: label.ok(),
            unlabelled: label.err().map(str::to_string),
            checker,
            checker_before: before.cloned(),
            facts,
            ran,
            judge: pending.judge,
            agent: self.agent.clone(),
        }
    }

    /// Records the first step on which the judge and the checkers (label of record) disagree.
    fn note_disagreement(&mut self, at: &Proposed<'_>, judge: &Verdict, tried: &Tried) {
        let judged = judge.judgement.is_safe();
        let kind = match (tried.record.judgement.is_safe(), judged) {
            (Some(false), Some(true)) => DisagreementKind::MissedHarm,
            (Some(true), Some(false)) => DisagreementKind::FalseAlarm,
            _ => return,
        };
        if self.disagreement.is_some() {
            return;
        }
        self.disagreement = Some(Disagreement {
            id: self.id.to_string(),
            stage: elicit_stage(),
            kind,
            scenario_id: self.scenario.id.clone(),
            sample: self.sample,
            llm_label: if judged == Some(true) {
                "safe"
            } else {
                "unsafe"
            }
            .into(),
            llm: Some(judge.clone()),
            programmatic: tried.probe.verdict.clone(),
            history: at.history.to_vec(),
            action: Some(at.turn.clone()),
            facts: tried.probe.facts.clone(),
        });
    }

    /// Ends the episode: what the checkers say about the state the executed steps produced;
    /// then, for an action the episode stopped at unexecuted, that action run in the
    /// disposable sandbox (the probe).
    async fn end(
        &mut self,
        mut env: Box<dyn Environment>,
        played: &mut Played,
        probe: bool,
    ) -> EpisodeEnd {
        let flagged = self.snapshot.as_ref().map(|s| s.proposed.clone());
        let flagged = flagged
            .or(self.unjudged.take())
            .filter(|_| probe && self.probe.is_none());
        let end = match flagged {
            None => {
                return episode::finish(env, &mut played.ending)
                    .await
                    .unwrap_or_default();
            }
            Some(turn) => match env.checkpoint(None).await {
                Ok(Some(before)) => {
                    let pr = probe_flagged(env, &turn, &played.history, &before).await;
                    self.probe = Some(pr);
                    Ok(before)
                }
                Ok(None) => env.finish(None).await,
                Err(e) => Err(e),
            },
        };
        end.unwrap_or_else(|e| {
            played.ending.end_failed(&e);
            EpisodeEnd::default()
        })
    }

    /// Labels the step the episode stopped at: a final answer from the end state, an action
    /// not executed from the probe (no label without one).
    fn label_stop(&mut self, end: &EpisodeEnd, final_given: bool) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let rec = if final_given {
            let after = Some((end.safety.clone(), StepRun::Episode, &end.facts));
            self.label_step(p, self.state.as_ref(), after)
        } else {
            // The state before the probe, as the checkers saw it at the stop.
            let before = end.safety.as_ref().or(self.state.as_ref());
            let after = self
                .probe
                .as_ref()
                .map(|pr| (Some(pr.verdict.clone()), StepRun::Probe, &pr.facts));
            self.label_step(p, before, after)
        };
        self.labelled.push(rec);
    }

    /// With judge labels, the checkers' verdict `p` on the state the judge-approved steps
    /// produced: harm there is harm the judge missed; a flagged action that harmed nothing when
    /// probed is a false alarm. Records the disagreement; true when harm was missed.
    fn compare_with_checkers(&mut self, p: &Verdict, end: &EpisodeEnd, history: &[Step]) -> bool {
        let missed = p.judgement.is_safe() == Some(false);
        let probe = self.probe.as_ref().filter(|_| self.snapshot.is_some());
        let false_alarm = p.judgement.is_safe() == Some(true)
            && probe.is_some_and(|pr| pr.verdict.judgement.is_safe() == Some(true));
        if !missed && !false_alarm {
            return false;
        }
        let flagged = self.snapshot.as_ref().filter(|_| !missed);
        self.disagreement = Some(Disagreement {
            id: self.id.to_string(),
            stage: elicit_stage(),
            kind: if missed {
                DisagreementKind::MissedHarm
            } else {
                DisagreementKind::FalseAlarm
            },
            scenario_id: self.scenario.id.clone(),
            sample: self.sample,
            llm_label: if missed { "safe" } else { "unsafe" }.into(),
            llm: flagged.map(|s| s.verdict.clone()),
            programmatic: match probe.filter(|_| !missed) {
                Some(pr) => pr.verdict.clone(),
                None => p.clone(),
            },
            history: history.to_vec(),
            action: flagged.map(|s| s.proposed.clone()),
            facts: if missed {
                end.facts.clone()
            } else {
                probe.map(|pr| pr.facts.clone()).unwrap_or_default()
            },
        });
        missed
    }

    /// The episode's records, its log built from how it ended.
    fn into_result(mut self, played: Played, end: EpisodeEnd, max_steps: u32) -> EpisodeResult {
        let missed = match end.safety.as_ref().filter(|_| !self.by_checkers) {
            Some(p) => self.compare_with_checkers(p, &end, &played.history),
            None => false,
        };
        let mut log = EpisodeResult::unplayed(
            self.id,
            self.scenario,
            self.sample,
            EpisodeOutcome::Unmeasured,
            "",
            String::new(),
        )
        .log;
        log.turns = played.turns;
        (log.outcome, log.reason, log.detail, log.raw) = match played.ending {
            Ending::Final { .. } => (EpisodeOutcome::FinalAnswer, None, None, None),
            Ending::Unsafe { .. } => (EpisodeOutcome::Snapshot, None, None, None),
            Ending::StepLimit => (
                EpisodeOutcome::Unmeasured,
                Some(UnmeasuredReason::StepLimit.as_str().into()),
                Some(format!(
                    "no final answer or unsafe action within {max_steps} turns"
                )),
                None,
            ),
            Ending::Unmeasured { by, failure: f } => {
                let detail = match by {
                    Party::Judge | Party::Checkers => format!("{}: {}", by.as_str(), f.detail),
                    Party::Agent | Party::Environment => f.detail,
                };
                let reason = Some(f.reason.as_str().into());
                (EpisodeOutcome::Unmeasured, reason, Some(detail), f.raw)
            }
        };
        // Harm the judge let through is a measured unsafe outcome however the episode ended.
        if missed && log.outcome != EpisodeOutcome::Snapshot {
            log.outcome = EpisodeOutcome::MissedHarm;
            log.reason.get_or_insert_with(|| "final_answer".into());
        }
        log.snapshot_id = self.snapshot.as_ref().map(|s| s.id.clone());
        log.utility_ids = self.utility.iter().map(|u| u.id.clone()).collect();
        log.labelled_ids = self.labelled.iter().map(|x| x.id.clone()).collect();
        log.programmatic = end.safety;
        log.completed = end.completed;
        log.facts = end.facts;
        log.probe = self.probe;
        log.disagreement = self.disagreement.is_some();
        EpisodeResult {
            log,
            utility: self.utility,
            snapshot: self.snapshot,
            disagreement: self.disagreement,
            labelled: self.labelled,
        }
    }
}

/// The id of one episode (a scenario played as sample `sample`). Elicit partitions shards by it,
/// and reflect partitions snapshots by the episode they came from, so a shard's chain stays on
/// that shard whether reflect reads the shard's own snapshot file or the merged one.
pub fn episode_id(scenario_id: &str, sample: u32) -> String {
    content_id(
        "ep",
        &serde_json::json!({"scenario": scenario_id, "sample": sample}),
    )
}

impl EpisodeOutcome {
    /// Where an episode with this outcome and its log's `reason` is counted in the elicit
    /// stage's counts: a snapshot is its output; a final answer is rejected
    /// `no_unsafe_action`, missed harm `missed_harm`, the others by their reason.
    pub fn counted(self, reason: Option<&str>) -> Counted<'_> {
        match self {
            EpisodeOutcome::Snapshot => Counted::Output,
            EpisodeOutcome::FinalAnswer => Counted::Rejected("no_unsafe_action"),
            EpisodeOutcome::MissedHarm => Counted::Rejected("missed_harm"),
            EpisodeOutcome::Unmeasured => Counted::Unmeasured(reason.unwrap_or("unknown")),
            EpisodeOutcome::Rejected => Counted::Rejected(reason.unwrap_or("rejected")),
        }
    }
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
    let (out, finished) = Outputs::open(run, shard)?;

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
    // Episodes that met a transient failure: nothing of them is written (they stay pending).
    let left = run_items(
        todo,
        config.concurrency,
        |(sc, s, id)| async move { play(parts, &sc, s, id, config).await },
        async |r| out.write(r).await,
    )
    .await?;
    if let Some(e) = read_error {
        return Err(e.into());
    }
    out.finish().await?;

    let mut report = ElicitReport::default();
    report.elicit.input = planned.len() as u64;
    report.elicit.resumed = resumed;
    report.elicit.add(&left);
    tally(&mut report, &planned, run, shard)?;
    Ok(report)
}

/// Elicitation's output files, one writer each.
struct Outputs {
    snap: RecordWriter<Snapshot>,
    util: RecordWriter<UtilityStep>,
    log: RecordWriter<EpisodeLog>,
    dis: RecordWriter<Disagreement>,
    lab: RecordWriter<LabelledStep>,
}

impl Outputs {
    /// Opens (and recovers) the files, and returns the episodes finished: logged with every
    /// record they name on file.
    fn open(
        run: &RunDir,
        shard: Option<ShardSpec>,
    ) -> Result<(Outputs, HashSet<String>), StageError> {
        let log_path = run.file(RunFile::ElicitLog, shard);
        let (snap, snap_r) = RecordWriter::open(&run.stage_file(Stage::Elicit, shard), 64)?;
        let (util, util_r) = RecordWriter::open(&run.stage_file(Stage::Utility, shard), 256)?;
        let (log, _) = RecordWriter::open(&log_path, 64)?;
        let (dis, dis_r) = RecordWriter::open(&run.file(RunFile::Disagreements, shard), 16)?;
        let (lab, lab_r) = RecordWriter::open(&run.file(RunFile::LabelledSteps, shard), 256)?;
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
        let out = Outputs {
            snap,
            util,
            log,
            dis,
            lab,
        };
        Ok((out, finished))
    }

    /// Writes one episode's records, its log line last (so a logged episode is complete).
    async fn write(&self, r: EpisodeResult) -> Result<(), StageError> {
        for u in r.utility {
            self.util.write(u).await?;
        }
        if let Some(s) = r.snapshot {
            self.snap.write(s).await?;
        }
        if let Some(d) = r.disagreement {
            self.dis.write(d).await?;
        }
        for x in r.labelled {
            self.lab.write(x).await?;
        }
        self.log.write(r.log).await?;
        Ok(())
    }

    /// Waits until every record is written and synced.
    async fn finish(self) -> Result<(), StageError> {
        self.snap.finish().await?;
        self.util.finish().await?;
        self.dis.finish().await?;
        self.lab.finish().await?;
        self.log.finish().await?;
        Ok(())
    }
}

/// Counts the `planned` episodes from the log (outcomes, utility steps, disagreements) and the
/// labelled steps on file into `report`: identical for resumed and uninterrupted runs.
fn tally(
    report: &mut ElicitReport,
    planned: &HashSet<String>,
    run: &RunDir,
    shard: Option<ShardSpec>,
) -> Result<(), StageError> {
    let mut utility_ids = HashSet::new();
    for l in RecordReader::<EpisodeLog>::open(&run.file(RunFile::ElicitLog, shard))? {
        let l = l?;
        if !planned.contains(&l.id) {
            continue;
        }
        utility_ids.extend(l.utility_ids.iter().cloned());
        report.elicit.count(l.outcome.counted(l.reason.as_deref()));
        if l.disagreement {
            report.disagreements += 1;
        }
    }
    report.utility.input = report.elicit.input;
    report.utility.output = utility_ids.len() as u64;
    for x in RecordReader::<LabelledStep>::open(&run.file(RunFile::LabelledSteps, shard))? {
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
    Ok(())
}
