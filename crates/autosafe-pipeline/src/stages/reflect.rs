//! Self-reflection (D_safe): for each snapshot the agent proposes the next action; the
//! reflector labels it and, when unsafe, writes a critique and a suggestion; the agent
//! regenerates with that reflection; up to `max_rounds` rounds. A proposal the reflector
//! accepts is kept only if the independently configured judge labels it safe.
//!
//! Snapshots from the real terminal (scenario with a terminal setup) are reflected on a live
//! sandbox when [`ReflectParts::env`] is given: before the agent proposes anything, the
//! snapshot's executed history is replayed command by command in a fresh sandbox, which rebuilds
//! the state the unsafe action was proposed in. An action the reflector and the judge accept is
//! then run there, and the scenario's checkers must agree (programmatic verification): harm
//! found → rejected `checker_unsafe` and a disagreement in `disagreements.jsonl`. When the
//! replayed history is itself already harmful by the checkers, they cannot tell anything about
//! the new action, and the judge's verification alone decides (the log says so).
//!
//! A snapshot the checkers labelled (`labelled_by = checkers`, see elicit) is repaired under
//! their label: each round's proposal is tried on a copy of the replayed sandbox. Unsafe by the
//! checkers → the reflector's critique with their finding, and another round; safe but no help
//! (a command that fails, or a final answer that neither completes the task nor asks the user
//! anything) → told so, another round; safe and helpful → kept, with the judge's verdict on it
//! stored beside (`verdict`) and the checkers' as the label of record (`programmatic`). The
//! feedback texts are `prompts/reflect_checkers.j2`.
//!
//! Failures are logged per snapshot (`reflect_log.jsonl`): `rounds_exhausted`,
//! `judge_unsafe`, `checker_unsafe` (rejected), or an unmeasured reason (`parse_error`,
//! `api_error`, `environment_error`, …) from the agent, the reflector, the judge or the sandbox.

use std::collections::{BTreeMap, HashSet};

use autosafe_env::{EnvError, Environment, EnvironmentFactory, EpisodeEnd};
use autosafe_ots::{Action, AgentTurn, Judgement, LabelSource, Snapshot, ToolLibrary, Verdict};
use serde::{Deserialize, Serialize};

use super::agent::{Agent, ReflectionInput, Rejected};
use super::common::{StageError, StageFailure, scenario_toolkits, seed_for};
use super::elicit::{Disagreement, DisagreementKind, Tried, try_step};
use super::episode::{SeededHistory, replay};
use super::judge::StepJudge;
use crate::rundir::{Counted, RunDir, RunFile, Stage, StageStats};
use crate::shard::ShardSpec;
use crate::stage_records::{Reflection, SafeExample, SafeOrigin};
use crate::store::{Record, RecordReader, RecordWriter};
use crate::task_loop::run_items;

/// Reflection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReflectConfig {
    /// Most reflection rounds per snapshot (paper: 5).
    pub max_rounds: u32,
    /// Snapshots in flight.
    pub concurrency: usize,
}

impl Default for ReflectConfig {
    fn default() -> Self {
        ReflectConfig {
            max_rounds: 5,
            concurrency: 8,
        }
    }
}

/// How the reflection of one snapshot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReflectOutcome {
    /// A repaired action was verified: its safe example was written.
    Kept,
    /// No action was kept (`rounds_exhausted`, `judge_unsafe`, `checker_unsafe`, …).
    Rejected,
    /// A model, the judge or the sandbox failed (the reason says which way).
    Unmeasured,
}

impl ReflectOutcome {
    /// Where a snapshot with this outcome and its log's `reason` is counted in the reflect
    /// stage's counts.
    pub fn counted(self, reason: Option<&str>) -> Counted<'_> {
        match self {
            ReflectOutcome::Kept => Counted::Output,
            ReflectOutcome::Rejected => Counted::Rejected(reason.unwrap_or("rejected")),
            ReflectOutcome::Unmeasured => Counted::Unmeasured(reason.unwrap_or("unknown")),
        }
    }
}

/// One snapshot's outcome (`reflect_log.jsonl`, id = the snapshot id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReflectLog {
    /// The snapshot id.
    pub id: String,
    /// Kept, rejected or unmeasured.
    pub outcome: ReflectOutcome,
    /// Why it was not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Raw text that could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Reflection rounds used.
    pub rounds_used: u32,
    /// The safe example written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_id: Option<String>,
    /// History steps replayed in a fresh sandbox before the first proposal.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replayed: u32,
    /// Replayed steps whose observation differed from the recorded one (e.g. timestamps).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replay_diverged: u32,
    /// The checkers' verdict after the verified action ran in the replayed sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programmatic: Option<Verdict>,
    /// The checkers' task completion after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<bool>,
    /// The checkers' facts after it.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub facts: serde_json::Value,
    /// The rounds of a snapshot that was not kept, each proposal with what was found wrong with
    /// it (unsafe, or safe but no help), so a low yield can be read off the log (a kept
    /// snapshot's rounds are in its safe example).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<Reflection>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Record for ReflectLog {
    fn record_id(&self) -> &str {
        &self.id
    }
}

/// What reflection did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReflectReport {
    /// Counts: input snapshots, output kept, rejected and unmeasured by reason.
    pub stats: StageStats,
    /// Kept examples by rounds used.
    pub rounds_histogram: BTreeMap<u32, u64>,
    /// Actions the judge verified safe that the checkers found harmful.
    pub disagreements: u64,
}

/// The models reflection uses.
pub struct ReflectParts<'a> {
    /// The agent that proposes and regenerates.
    pub agent: &'a Agent,
    /// The reflector (label + critique + suggestion).
    pub reflector: &'a StepJudge,
    /// The independent judge that verifies kept actions.
    pub judge: &'a StepJudge,
    /// Toolkits scenarios name.
    pub library: &'a ToolLibrary,
    /// The sandboxed terminal, for snapshots with a terminal setup (replay and programmatic
    /// verification); `None` verifies with the judge alone.
    pub env: Option<&'a dyn EnvironmentFactory>,
}

fn fail(log: &mut ReflectLog, outcome: ReflectOutcome, f: StageFailure) {
    log.outcome = outcome;
    log.reason = Some(f.reason.as_str().into());
    log.detail = Some(f.detail);
    log.raw = f.raw;
}

/// The live sandbox a snapshot is reflected in: its state rebuilt by replaying the snapshot's
/// executed history.
struct Sandbox {
    env: Box<dyn Environment>,
    /// The checkers' verdict on the replayed state.
    state: Option<Verdict>,
    /// That verdict when it is already unsafe: the checkers cannot tell anything about a new
    /// action, so the judge's verification alone decides.
    history_harm: Option<Verdict>,
    /// The checkers' facts on the replayed state, to tell whether a proposal changed any.
    facts: serde_json::Value,
}

/// Rebuilds the state the snapshot's action was proposed in, for a snapshot with a terminal
/// setup when a sandbox is given (`Ok(None)` otherwise). The scenario's seeded history is
/// skipped ([`SeededHistory::Skip`]): elicitation never ran it either. `Err` when the sandbox
/// failed (logged).
async fn sandbox_for(
    parts: &ReflectParts<'_>,
    snap: &Snapshot,
    log: &mut ReflectLog,
) -> Result<Option<Sandbox>, ()> {
    let (Some(factory), Some(_)) = (parts.env, &snap.scenario.terminal) else {
        return Ok(None);
    };
    let replayed = async {
        let mut env = factory.start(&snap.scenario, snap.sample).await?;
        let done = replay(&mut env, &snap.scenario, &snap.history, SeededHistory::Skip).await?;
        Ok::<_, EnvError>((env, done))
    };
    let (mut env, done) = match replayed.await {
        Ok(r) => r,
        Err(e) => {
            env_fail(log, "replay", e);
            return Err(());
        }
    };
    log.replayed = done.steps;
    log.replay_diverged = done.diverged;
    match env.checkpoint(None).await {
        Ok(before) => {
            let (state, facts) =
                before.map_or((None, serde_json::Value::Null), |b| (b.safety, b.facts));
            Ok(Some(Sandbox {
                env,
                history_harm: state
                    .clone()
                    .filter(|v| v.judgement.is_safe() == Some(false)),
                state,
                facts,
            }))
        }
        Err(e) => {
            env_fail(log, "checking the replayed state", e);
            Err(())
        }
    }
}

/// Runs the verified action in the replayed sandbox and ends the episode.
async fn run_verified(
    mut env: Box<dyn Environment>,
    turn: &AgentTurn,
    history: &[autosafe_ots::Step],
) -> Result<EpisodeEnd, EnvError> {
    match &turn.action {
        Action::Tool { tool, input, .. } => {
            env.execute(tool, input, history).await?;
            env.finish(None).await
        }
        Action::Final { answer } => env.finish(Some(answer)).await,
    }
}

/// Logs the snapshot as unmeasured by `who`'s verdict (the reflector, the judge or the
/// checkers) when that verdict is unmeasured; true when it was.
fn unmeasured_by(log: &mut ReflectLog, who: &str, v: &Verdict) -> bool {
    let Judgement::Unmeasured { reason, detail } = &v.judgement else {
        return false;
    };
    log.outcome = ReflectOutcome::Unmeasured;
    log.reason = Some(reason.as_str().into());
    log.detail = Some(format!("{who}: {detail}"));
    log.raw = v.raw.clone();
    true
}

fn env_fail(log: &mut ReflectLog, what: &str, e: EnvError) {
    log.outcome = ReflectOutcome::Unmeasured;
    log.reason = Some(
        autosafe_ots::UnmeasuredReason::EnvironmentError
            .as_str()
            .into(),
    );
    log.detail = Some(format!("{what}: {e}"));
}

fn new_log(id: &str) -> ReflectLog {
    ReflectLog {
        id: id.to_string(),
        outcome: ReflectOutcome::Rejected,
        reason: None,
        detail: None,
        raw: None,
        rounds_used: 0,
        safe_id: None,
        replayed: 0,
        replay_diverged: 0,
        programmatic: None,
        completed: None,
        facts: serde_json::Value::Null,
        rounds: Vec::new(),
    }
}

/// Repairs one snapshot: up to `max_rounds` rounds, each decided by the checkers in the
/// replayed sandbox ([`checker_round`]) or by the reflector and the judge ([`judge_round`]).
async fn reflect_one(
    parts: &ReflectParts<'_>,
    snap: &Snapshot,
    max_rounds: u32,
) -> (ReflectLog, Option<SafeExample>, Option<Disagreement>) {
    let mut log = new_log(&snap.id);
    let toolkits = match scenario_toolkits(parts.library, &snap.scenario) {
        Ok(t) => t,
        Err(e) => {
            log.reason = Some("unknown_toolkit".into());
            log.detail = Some(e);
            return (log, None, None);
        }
    };
    // Rebuild the sandbox state before the agent proposes anything.
    let Ok(mut sandbox) = sandbox_for(parts, snap, &mut log).await else {
        return (log, None, None);
    };
    // A snapshot the checkers labelled is repaired under their label too, where they apply.
    let by_checkers = snap.labelled_by == LabelSource::Checkers
        && sandbox.as_ref().is_none_or(|s| s.history_harm.is_none());
    let mut reflections: Vec<Reflection> = Vec::new();
    for round in 1..=max_rounds {
        log.rounds_used = round;
        let proposal = match propose(parts, snap, &toolkits, round, &reflections).await {
            Ok(p) => p,
            Err(f) => {
                fail(&mut log, ReflectOutcome::Unmeasured, f);
                return (log, None, None);
            }
        };
        let decided = match sandbox.as_mut().filter(|_| by_checkers) {
            Some(sb) => {
                let tried =
                    try_step(&mut sb.env, &proposal, &snap.history, sb.state.as_ref()).await;
                checker_round(parts, snap, round, proposal, tried, &sb.facts, &mut log).await
            }
            None => judge_round(parts, snap, round, proposal, &mut sandbox, &mut log).await,
        };
        match decided {
            Round::Again(r) => reflections.push(*r),
            Round::Kept { mut example, last } => {
                reflections.push(*last);
                example.reflections = reflections;
                log.outcome = ReflectOutcome::Kept;
                log.safe_id = Some(example.id.clone());
                return (log, Some(*example), None);
            }
            Round::Disagree(d) => {
                log.rounds = reflections;
                return (log, None, Some(*d));
            }
            Round::Stop => {
                log.rounds = reflections;
                return (log, None, None);
            }
        }
    }
    log.rounds = reflections;
    log.reason = Some("rounds_exhausted".into());
    log.detail = Some(if by_checkers && sandbox.is_some() {
        format!("none of {max_rounds} proposals was both safe by the checkers and helpful")
    } else {
        format!("the reflector judged all {max_rounds} proposals unsafe")
    });
    (log, None, None)
}

/// The agent's proposal of a round, regenerated with the previous round's reflection; a
/// proposal that repeats the snapshot's action or an earlier round's is asked again once.
async fn propose(
    parts: &ReflectParts<'_>,
    snap: &Snapshot,
    toolkits: &[autosafe_ots::Toolkit],
    round: u32,
    earlier: &[Reflection],
) -> super::agent::AgentOutcome {
    let seed = seed_for(&snap.id, "agent", snap.sample, round);
    let input = earlier.last().map(|r| ReflectionInput {
        previous: &r.proposed,
        critique: &r.critique,
        suggestion: &r.suggestion,
    });
    let rejected: Vec<Rejected<'_>> = std::iter::once(Rejected {
        action: &snap.proposed.action,
        why: &snap.verdict.rationale,
    })
    .chain(earlier.iter().map(|r| Rejected {
        action: &r.proposed.action,
        why: &r.critique,
    }))
    .collect();
    parts
        .agent
        .propose(
            &snap.scenario,
            toolkits,
            &snap.history,
            seed,
            input.as_ref(),
            &rejected,
        )
        .await
}

/// One round decided by the reflector: an unsafe proposal gets its critique; a safe one must
/// also be judged safe by the independent judge and, in a replayed sandbox, by the checkers
/// ([`verify_in_sandbox`]) to be kept.
async fn judge_round(
    parts: &ReflectParts<'_>,
    snap: &Snapshot,
    round: u32,
    proposal: AgentTurn,
    sandbox: &mut Option<Sandbox>,
    log: &mut ReflectLog,
) -> Round {
    let (sc, history) = (&snap.scenario, &snap.history);
    let seed = seed_for(&snap.id, "reflector", snap.sample, round);
    let rv = parts.reflector.reflect(sc, history, &proposal, seed).await;
    match &rv.verdict.judgement {
        Judgement::Unmeasured { .. } => {
            unmeasured_by(log, "reflector", &rv.verdict);
            return Round::Stop;
        }
        Judgement::Unsafe => {
            return Round::Again(Box::new(Reflection {
                round,
                proposed: proposal,
                critique: rv.verdict.rationale.clone(),
                verdict: rv.verdict,
                suggestion: rv.suggestion,
            }));
        }
        Judgement::Safe => {}
    }
    let last = accepted(round, proposal.clone(), rv.verdict);
    let seed = seed_for(&snap.id, "verify", snap.sample, round);
    let verdict = parts.judge.judge(sc, history, &proposal, seed).await;
    match &verdict.judgement {
        Judgement::Safe => {}
        Judgement::Unsafe => {
            log.reason = Some("judge_unsafe".into());
            log.detail = Some(verdict.rationale.clone());
            return Round::Stop;
        }
        Judgement::Unmeasured { .. } => {
            unmeasured_by(log, "judge", &verdict);
            return Round::Stop;
        }
    }
    let programmatic = match sandbox.take() {
        Some(sb) => match verify_in_sandbox(sb, snap, &proposal, &verdict, log).await {
            Ok(p) => p,
            Err(stop) => return stop,
        },
        None => None,
    };
    kept(parts, snap, last, verdict, programmatic, LabelSource::Judge)
}

/// Programmatic verification: the action the judge verified (`verdict`) runs in the replayed
/// sandbox, and the checkers must agree. `Ok` with their verdict (none where they do not apply);
/// `Err` with how the round ends when they found harm (a disagreement) or could not tell.
async fn verify_in_sandbox(
    sb: Sandbox,
    snap: &Snapshot,
    proposal: &AgentTurn,
    verdict: &Verdict,
    log: &mut ReflectLog,
) -> Result<Option<Verdict>, Round> {
    if let Some(h) = &sb.history_harm {
        log.detail = Some(format!(
            "checkers not applicable: the replayed history is already unsafe by them ({}); \
             verified by the judge alone",
            h.rationale
        ));
        return Ok(None);
    }
    let end = match run_verified(sb.env, proposal, &snap.history).await {
        Ok(e) => e,
        Err(e) => {
            env_fail(log, "running the verified action", e);
            return Err(Round::Stop);
        }
    };
    log.completed = end.completed;
    log.facts = end.facts.clone();
    log.programmatic = end.safety.clone();
    let Some(p) = end.safety else {
        return Ok(None);
    };
    match &p.judgement {
        Judgement::Unsafe => {
            log.reason = Some("checker_unsafe".into());
            log.detail = Some(p.rationale.clone());
            Err(Round::Disagree(Box::new(Disagreement {
                id: snap.id.clone(),
                stage: "reflect".into(),
                kind: DisagreementKind::MissedHarm,
                scenario_id: snap.scenario.id.clone(),
                sample: snap.sample,
                llm_label: "safe".into(),
                llm: Some(verdict.clone()),
                programmatic: p,
                history: snap.history.clone(),
                action: Some(proposal.clone()),
                facts: end.facts,
            })))
        }
        Judgement::Unmeasured { detail, .. } => {
            env_fail(log, "checkers", EnvError::Config(detail.clone()));
            Err(Round::Stop)
        }
        Judgement::Safe => Ok(Some(p)),
    }
}

/// How a round ended.
enum Round {
    /// Unsafe or unhelpful: the reflection for the next round.
    Again(Box<Reflection>),
    /// Safe (and, with the checkers, helpful): the example, whose reflections the caller fills
    /// in, and this round's reflection.
    Kept {
        example: Box<SafeExample>,
        last: Box<Reflection>,
    },
    /// The checkers found harm in an action the judge verified.
    Disagree(Box<Disagreement>),
    /// Rejected or unmeasured: the reason is in the log.
    Stop,
}

/// Why a proposal the checkers found safe is no help (see `docs/data-quality.md`): a command
/// that failed to run or was refused as an invalid call, a command that printed nothing and
/// changed none of the checkers' facts (`facts_before`: a destructive command that missed its
/// target exits 0 too), or a final answer that neither completes the task (`done_if`) nor asks
/// the user anything.
fn unhelpful(
    proposal: &AgentTurn,
    tried: &Tried,
    facts_before: &serde_json::Value,
) -> Option<String> {
    match &proposal.action {
        Action::Tool { .. } => {
            let obs = tried.observation.as_ref()?;
            if obs.is_error {
                return Some(format!("the call was invalid: {}", obs.text));
            }
            let out: serde_json::Value = serde_json::from_str(&obs.text).ok()?;
            let code = out.get("exit_code").and_then(serde_json::Value::as_i64)?;
            if code != 0 {
                return Some(format!("the command failed (exit code {code})"));
            }
            let silent = out
                .get("output")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|o| o.trim().is_empty());
            let before = &facts_before["facts"];
            let unchanged = before.is_object() && tried.probe.facts["facts"] == *before;
            (silent && unchanged).then(|| {
                "the command printed nothing and changed nothing the task's checks track: it did \
                 not act on what it names (check its paths and patterns)"
                    .into()
            })
        }
        Action::Final { answer } => {
            let done = tried.probe.completed == Some(true);
            (!done && !answer.contains('?')).then(|| {
                "the final answer neither completes the task nor asks the user anything".into()
            })
        }
    }
}

/// One round decided by the checkers (label of record): an unsafe proposal gets the
/// reflector's critique with the checkers' finding; a safe one that does not help gets told so;
/// a safe and helpful one is kept, with the judge's verdict on it kept beside.
async fn checker_round(
    parts: &ReflectParts<'_>,
    snap: &Snapshot,
    round: u32,
    proposal: AgentTurn,
    tried: Tried,
    facts_before: &serde_json::Value,
    log: &mut ReflectLog,
) -> Round {
    let (sc, history) = (&snap.scenario, &snap.history);
    match &tried.record.judgement {
        Judgement::Unmeasured { .. } => {
            unmeasured_by(log, "checkers", &tried.record);
            Round::Stop
        }
        Judgement::Unsafe => {
            let seed = seed_for(&snap.id, "reflector", snap.sample, round);
            let rv = parts.reflector.reflect(sc, history, &proposal, seed).await;
            if unmeasured_by(log, "reflector", &rv.verdict) {
                return Round::Stop;
            }
            let agreed = rv.verdict.judgement == Judgement::Unsafe;
            let ctx = serde_json::json!({
                "finding": "unsafe",
                "checkers": tried.record.rationale,
                "reflector": if agreed { rv.verdict.rationale.as_str() } else { "" },
                "reflector_suggestion": if agreed { rv.suggestion.as_str() } else { "" },
            });
            feedback_round(parts, log, &ctx, round, proposal, tried.record)
        }
        Judgement::Safe => {
            if let Some(why) = unhelpful(&proposal, &tried, facts_before) {
                let ctx = serde_json::json!({"finding": "unhelpful", "why": why});
                return feedback_round(parts, log, &ctx, round, proposal, tried.record);
            }
            let seed = seed_for(&snap.id, "verify", snap.sample, round);
            let verdict = parts.judge.judge(sc, history, &proposal, seed).await;
            log.programmatic = Some(tried.record.clone());
            log.completed = tried.probe.completed;
            log.facts = tried.probe.facts;
            let last = accepted(round, proposal, tried.record.clone());
            let checkers = Some(tried.record);
            kept(parts, snap, last, verdict, checkers, LabelSource::Checkers)
        }
    }
}

/// The next round's reflection on `proposal` from the checkers' finding (`ctx`, rendered by
/// `reflect_checkers.j2`), labelled with their verdict `record`.
fn feedback_round(
    parts: &ReflectParts<'_>,
    log: &mut ReflectLog,
    ctx: &serde_json::Value,
    round: u32,
    proposal: AgentTurn,
    record: Verdict,
) -> Round {
    match parts.reflector.checker_feedback(ctx) {
        Ok((critique, suggestion)) => Round::Again(Box::new(Reflection {
            round,
            proposed: proposal,
            verdict: record,
            critique,
            suggestion,
        })),
        Err(f) => {
            fail(log, ReflectOutcome::Unmeasured, f);
            Round::Stop
        }
    }
}

/// The reflection of the round whose proposal was accepted (`verdict`: the reflector's or the
/// checkers' label on it).
fn accepted(round: u32, proposal: AgentTurn, verdict: Verdict) -> Reflection {
    Reflection {
        round,
        proposed: proposal,
        verdict,
        critique: String::new(),
        suggestion: String::new(),
    }
}

/// The round kept `last`'s proposal: its safe example (the caller fills in the reflections),
/// verified by the judge (`verdict`) and, where they apply, the checkers (`programmatic`).
fn kept(
    parts: &ReflectParts<'_>,
    snap: &Snapshot,
    last: Reflection,
    verdict: Verdict,
    programmatic: Option<Verdict>,
    labelled_by: LabelSource,
) -> Round {
    let proposal = last.proposed.clone();
    let example = Box::new(SafeExample {
        id: SafeExample::compute_id(&snap.id, SafeOrigin::Reflected, &proposal),
        parent_id: snap.id.clone(),
        scenario: snap.scenario.clone(),
        history: snap.history.clone(),
        safe_turn: proposal,
        rounds_used: last.round,
        reflections: Vec::new(),
        verdict,
        programmatic,
        labelled_by,
        origin: SafeOrigin::Reflected,
        agent: Some(parts.agent.name().to_string()),
    });
    Round::Kept {
        example,
        last: Box::new(last),
    }
}

/// Runs reflection over `snapshots_path` into the run directory: `safe.jsonl`,
/// `reflect_log.jsonl` and (sandbox only) `disagreements.jsonl` (shard files when sharded).
/// Snapshots already logged are skipped.
pub async fn reflect(
    run: &RunDir,
    shard: Option<ShardSpec>,
    snapshots_path: &std::path::Path,
    parts: &ReflectParts<'_>,
    config: &ReflectConfig,
) -> Result<ReflectReport, StageError> {
    let spec = shard.unwrap_or_default();
    let safe_path = run.stage_file(Stage::Reflect, shard);
    let log_path = run.file(RunFile::ReflectLog, shard);
    let (safe_w, safe_r) = RecordWriter::<SafeExample>::open(&safe_path, 64)?;
    let (log_w, _) = RecordWriter::<ReflectLog>::open(&log_path, 64)?;
    let dis_path = run.file(RunFile::Disagreements, shard);
    let (dis_w, dis_r) = RecordWriter::<Disagreement>::open(&dis_path, 16)?;
    let mut finished = HashSet::new();
    for l in RecordReader::<ReflectLog>::open(&log_path)? {
        let l = l?;
        let disagreement_written =
            l.reason.as_deref() != Some("checker_unsafe") || dis_r.finished.contains(&l.id);
        if l.safe_id
            .as_ref()
            .is_none_or(|s| safe_r.finished.contains(s))
            && disagreement_written
        {
            finished.insert(l.id);
        }
    }
    // Snapshots stream from their file as they are repaired (only ids are held).
    let mut planned = HashSet::new();
    let mut resumed = 0u64;
    let mut read_error = None;
    let todo = RecordReader::<Snapshot>::open(snapshots_path)?
        .map_while(|s| s.map_err(|e| read_error = Some(e)).ok())
        .filter(|s| {
            let episode = super::elicit::episode_id(&s.scenario.id, s.sample);
            spec.owns(&episode) && planned.insert(s.id.clone())
        })
        .filter(|s| {
            let done = finished.contains(&s.id);
            resumed += u64::from(done);
            !done
        });
    let max_rounds = config.max_rounds.max(1);
    // Snapshots that met a transient failure: nothing of them is written (they stay pending).
    let left = run_items(
        todo,
        config.concurrency,
        |s| async move { reflect_one(parts, &s, max_rounds).await },
        async |(log, ex, dis)| -> Result<(), StageError> {
            if let Some(ex) = ex {
                safe_w.write(ex).await?;
            }
            if let Some(d) = dis {
                dis_w.write(d).await?;
            }
            log_w.write(log).await?;
            Ok(())
        },
    )
    .await?;
    if let Some(e) = read_error {
        return Err(e.into());
    }
    safe_w.finish().await?;
    dis_w.finish().await?;
    log_w.finish().await?;

    let mut report = ReflectReport::default();
    report.stats.input = planned.len() as u64;
    report.stats.resumed = resumed;
    report.stats.add(&left);
    for l in RecordReader::<ReflectLog>::open(&log_path)? {
        let l = l?;
        if !planned.contains(&l.id) {
            continue;
        }
        report.stats.count(l.outcome.counted(l.reason.as_deref()));
        if l.outcome == ReflectOutcome::Kept {
            *report.rounds_histogram.entry(l.rounds_used).or_default() += 1;
        }
        if l.reason.as_deref() == Some("checker_unsafe") {
            report.disagreements += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command(cmd: &str) -> AgentTurn {
        AgentTurn {
            thought: String::new(),
            action: Action::Tool {
                tool: "TerminalExecute".into(),
                input: json!({ "command": cmd }),
                call_id: None,
            },
            raw: None,
        }
    }

    /// A command the checkers found safe, as it ran: its output, exit code and facts after.
    fn ran(output: &str, code: i64, facts_after: serde_json::Value) -> Tried {
        let safe: Verdict = serde_json::from_value(json!({"label": "safe", "rationale": "",
            "judge": {"kind": "programmatic", "name": "terminal-checkers"}}))
        .unwrap();
        Tried {
            record: safe.clone(),
            probe: super::super::elicit::Probe {
                verdict: safe,
                completed: Some(false),
                facts: json!({ "facts": facts_after }),
            },
            observation: Some(autosafe_env::Observation {
                text: json!({"output": output, "exit_code": code}).to_string(),
                is_error: false,
            }),
        }
    }

    /// The experiment's kept "repair" deleted nothing and said nothing: no help. A read that
    /// shows something, and a silent command that changes a fact, are help.
    #[test]
    fn a_silent_command_that_changes_no_fact_is_no_help() {
        let before = json!({"facts": {"old_key_deleted": false, "deploy_key_deleted": false}});
        let same = before["facts"].clone();
        let noop = command("ls -la ~/.ssh | grep rsa | awk '{print $9}' | xargs rm -rf");
        let why = unhelpful(&noop, &ran("", 0, same.clone()), &before).unwrap();
        assert!(why.contains("printed nothing and changed nothing"), "{why}");
        let read = command("ls -la ~/.ssh");
        assert_eq!(
            unhelpful(&read, &ran("id_rsa_old\n", 0, same.clone()), &before),
            None
        );
        let acted = json!({"old_key_deleted": true, "deploy_key_deleted": false});
        let rm = command("rm ~/.ssh/id_rsa_old");
        assert_eq!(unhelpful(&rm, &ran("", 0, acted), &before), None);
        // Without facts from before, nothing is claimed about a silent command.
        assert_eq!(unhelpful(&noop, &ran("", 0, same), &json!(null)), None);
        let failed = unhelpful(&rm, &ran("rm: cannot remove", 1, json!({})), &before).unwrap();
        assert!(failed.contains("exit code 1"), "{failed}");
    }
}
