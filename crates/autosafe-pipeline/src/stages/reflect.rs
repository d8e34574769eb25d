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
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::agent::{Agent, ReflectionInput};
use super::common::{StageError, StageFailure, scenario_toolkits, seed_for, stage_path};
use super::elicit::{Disagreement, DisagreementKind, Tried, try_step};
use super::judge::StepJudge;
use crate::records::{Reflection, SafeExample, SafeOrigin};
use crate::rundir::{RunDir, Stage, StageStats};
use crate::shard::ShardSpec;
use crate::store::{Record, RecordReader, RecordWriter};

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

/// One snapshot's outcome (`reflect_log.jsonl`, id = the snapshot id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReflectLog {
    /// The snapshot id.
    pub id: String,
    /// `kept`, `rejected` or `unmeasured`.
    pub outcome: String,
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

fn fail(log: &mut ReflectLog, outcome: &str, f: StageFailure) {
    log.outcome = outcome.into();
    log.reason = Some(f.reason.as_str().into());
    log.detail = Some(f.detail);
    log.raw = f.raw;
}

/// A fresh episode with the snapshot's executed history replayed in it (seeded history of the
/// scenario is not replayed: elicitation never ran it either). Returns the live episode, the
/// steps replayed and how many observations differed from the recorded ones.
async fn replay(
    factory: &dyn EnvironmentFactory,
    snap: &Snapshot,
) -> Result<(Box<dyn Environment>, u32, u32), EnvError> {
    let mut env = factory.start(&snap.scenario, snap.sample).await?;
    let seeded = snap.scenario.history.len().min(snap.history.len());
    let (mut replayed, mut diverged) = (0, 0);
    for (i, step) in snap.history.iter().enumerate().skip(seeded) {
        if let Action::Tool { tool, input, .. } = &step.turn.action {
            let obs = env.execute(tool, input, &snap.history[..i]).await?;
            replayed += 1;
            if step.observation.as_deref() != Some(obs.text.as_str()) {
                diverged += 1;
            }
        }
    }
    Ok((env, replayed, diverged))
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
    log.outcome = "unmeasured".into();
    log.reason = Some(reason.as_str().into());
    log.detail = Some(format!("{who}: {detail}"));
    log.raw = v.raw.clone();
    true
}

fn env_fail(log: &mut ReflectLog, what: &str, e: EnvError) {
    log.outcome = "unmeasured".into();
    log.reason = Some(
        autosafe_ots::UnmeasuredReason::EnvironmentError
            .as_str()
            .into(),
    );
    log.detail = Some(format!("{what}: {e}"));
}

async fn reflect_one(
    parts: &ReflectParts<'_>,
    snap: &Snapshot,
    max_rounds: u32,
) -> (ReflectLog, Option<SafeExample>, Option<Disagreement>) {
    let mut log = ReflectLog {
        id: snap.id.clone(),
        outcome: "rejected".into(),
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
    };
    let toolkits = match scenario_toolkits(parts.library, &snap.scenario) {
        Ok(t) => t,
        Err(e) => {
            log.reason = Some("unknown_toolkit".into());
            log.detail = Some(e);
            return (log, None, None);
        }
    };
    // Rebuild the sandbox state before the agent proposes anything.
    let mut sandbox: Option<Box<dyn Environment>> = None;
    let mut history_harm: Option<Verdict> = None;
    let mut replayed_state: Option<Verdict> = None;
    if let (Some(factory), Some(_)) = (parts.env, &snap.scenario.terminal) {
        let (mut env, replayed, diverged) = match replay(factory, snap).await {
            Ok(r) => r,
            Err(e) => {
                env_fail(&mut log, "replay", e);
                return (log, None, None);
            }
        };
        log.replayed = replayed;
        log.replay_diverged = diverged;
        match env.checkpoint(None).await {
            Ok(Some(before)) => {
                history_harm = before
                    .safety
                    .clone()
                    .filter(|v| v.judgement.is_safe() == Some(false));
                replayed_state = before.safety;
            }
            Ok(None) => {}
            Err(e) => {
                env_fail(&mut log, "checking the replayed state", e);
                return (log, None, None);
            }
        }
        sandbox = Some(env);
    }
    let sc = &snap.scenario;
    // A snapshot the checkers labelled is repaired under their label too, where they apply.
    let by_checkers = snap.labelled_by == LabelSource::Checkers && history_harm.is_none();
    let mut reflections: Vec<Reflection> = Vec::new();
    for round in 1..=max_rounds {
        log.rounds_used = round;
        let seed = seed_for(&snap.id, "agent", snap.sample, round);
        let proposal = {
            let prev = reflections.last();
            let input = prev.map(|r| ReflectionInput {
                previous: &r.proposed,
                critique: &r.critique,
                suggestion: &r.suggestion,
            });
            parts
                .agent
                .propose(sc, &toolkits, &snap.history, seed, input.as_ref())
                .await
        };
        let proposal = match proposal {
            Ok(p) => p,
            Err(f) => {
                fail(&mut log, "unmeasured", f);
                return (log, None, None);
            }
        };
        if let Some(env) = sandbox.as_mut().filter(|_| by_checkers) {
            let tried = try_step(env, &proposal, &snap.history, replayed_state.as_ref()).await;
            match checker_round(parts, snap, round, proposal, tried, &mut log).await {
                Round::Again(r) => reflections.push(*r),
                Round::Kept(mut ex) => {
                    reflections.push(Reflection {
                        round,
                        proposed: ex.safe_turn.clone(),
                        verdict: ex.programmatic.clone().unwrap_or(ex.verdict.clone()),
                        critique: String::new(),
                        suggestion: String::new(),
                    });
                    ex.reflections = reflections;
                    log.outcome = "kept".into();
                    log.safe_id = Some(ex.id.clone());
                    return (log, Some(*ex), None);
                }
                Round::Stop => return (log, None, None),
            }
            continue;
        }
        let rv = parts
            .reflector
            .reflect(
                sc,
                &snap.history,
                &proposal,
                seed_for(&snap.id, "reflector", snap.sample, round),
            )
            .await;
        match &rv.verdict.judgement {
            Judgement::Unmeasured { .. } => {
                unmeasured_by(&mut log, "reflector", &rv.verdict);
                return (log, None, None);
            }
            Judgement::Unsafe => {
                reflections.push(Reflection {
                    round,
                    proposed: proposal,
                    critique: rv.verdict.rationale.clone(),
                    verdict: rv.verdict,
                    suggestion: rv.suggestion,
                });
            }
            Judgement::Safe => {
                reflections.push(Reflection {
                    round,
                    proposed: proposal.clone(),
                    verdict: rv.verdict,
                    critique: String::new(),
                    suggestion: String::new(),
                });
                let verdict = parts
                    .judge
                    .judge(
                        sc,
                        &snap.history,
                        &proposal,
                        seed_for(&snap.id, "verify", snap.sample, round),
                    )
                    .await;
                match &verdict.judgement {
                    Judgement::Safe => {
                        // Programmatic verification in the replayed sandbox.
                        let mut programmatic = None;
                        if let Some(env) = sandbox.take() {
                            if let Some(h) = &history_harm {
                                log.detail = Some(format!(
                                    "checkers not applicable: the replayed history is already \
                                     unsafe by them ({}); verified by the judge alone",
                                    h.rationale
                                ));
                            } else {
                                let end = match run_verified(env, &proposal, &snap.history).await {
                                    Ok(e) => e,
                                    Err(e) => {
                                        env_fail(&mut log, "running the verified action", e);
                                        return (log, None, None);
                                    }
                                };
                                log.completed = end.completed;
                                log.facts = end.facts.clone();
                                log.programmatic = end.safety.clone();
                                match end.safety {
                                    Some(p) if p.judgement == Judgement::Unsafe => {
                                        log.reason = Some("checker_unsafe".into());
                                        log.detail = Some(p.rationale.clone());
                                        let d = Disagreement {
                                            id: snap.id.clone(),
                                            stage: "reflect".into(),
                                            kind: DisagreementKind::MissedHarm,
                                            scenario_id: sc.id.clone(),
                                            sample: snap.sample,
                                            llm_label: "safe".into(),
                                            llm: Some(verdict.clone()),
                                            programmatic: p,
                                            history: snap.history.clone(),
                                            action: Some(proposal.clone()),
                                            facts: end.facts,
                                        };
                                        return (log, None, Some(d));
                                    }
                                    Some(p) => {
                                        if let Judgement::Unmeasured { detail, .. } = &p.judgement {
                                            log.outcome = "unmeasured".into();
                                            log.reason = Some(
                                                autosafe_ots::UnmeasuredReason::EnvironmentError
                                                    .as_str()
                                                    .into(),
                                            );
                                            log.detail = Some(format!("checkers: {detail}"));
                                            return (log, None, None);
                                        }
                                        programmatic = Some(p);
                                    }
                                    None => {}
                                }
                            }
                        }
                        let ex = SafeExample {
                            id: SafeExample::compute_id(&snap.id, SafeOrigin::Reflected, &proposal),
                            parent_id: snap.id.clone(),
                            scenario: sc.clone(),
                            history: snap.history.clone(),
                            safe_turn: proposal,
                            rounds_used: round,
                            reflections,
                            verdict,
                            programmatic,
                            labelled_by: LabelSource::Judge,
                            origin: SafeOrigin::Reflected,
                            agent: Some(parts.agent.name().to_string()),
                        };
                        log.outcome = "kept".into();
                        log.safe_id = Some(ex.id.clone());
                        return (log, Some(ex), None);
                    }
                    Judgement::Unsafe => {
                        log.reason = Some("judge_unsafe".into());
                        log.detail = Some(verdict.rationale.clone());
                        return (log, None, None);
                    }
                    Judgement::Unmeasured { .. } => {
                        unmeasured_by(&mut log, "judge", &verdict);
                        return (log, None, None);
                    }
                }
            }
        }
    }
    log.reason = Some("rounds_exhausted".into());
    log.detail = Some(if by_checkers && sandbox.is_some() {
        format!("none of {max_rounds} proposals was both safe by the checkers and helpful")
    } else {
        format!("the reflector judged all {max_rounds} proposals unsafe")
    });
    (log, None, None)
}

/// How a round of checker-labelled reflection ended.
enum Round {
    /// Unsafe or unhelpful: the reflection for the next round.
    Again(Box<Reflection>),
    /// Safe and helpful: the example (its reflections are filled in by the caller).
    Kept(Box<SafeExample>),
    /// Unmeasured: the reason is in the log.
    Stop,
}

/// Why a proposal the checkers found safe is no help (see `docs/data-quality.md`): a command
/// that failed to run or was refused as an invalid call, or a final answer that neither
/// completes the task (`done_if`) nor asks the user anything.
fn unhelpful(proposal: &AgentTurn, tried: &Tried) -> Option<String> {
    match &proposal.action {
        Action::Tool { .. } => {
            let obs = tried.observation.as_ref()?;
            if obs.is_error {
                return Some(format!("the call was invalid: {}", obs.text));
            }
            let out: serde_json::Value = serde_json::from_str(&obs.text).ok()?;
            let code = out.get("exit_code").and_then(serde_json::Value::as_i64)?;
            (code != 0).then(|| format!("the command failed (exit code {code})"))
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
    log: &mut ReflectLog,
) -> Round {
    let sc = &snap.scenario;
    let feedback =
        |ctx: serde_json::Value, log: &mut ReflectLog| match parts.reflector.checker_feedback(&ctx)
        {
            Ok(f) => Some(f),
            Err(f) => {
                fail(log, "unmeasured", f);
                None
            }
        };
    match &tried.record.judgement {
        Judgement::Unmeasured { .. } => {
            unmeasured_by(log, "checkers", &tried.record);
            Round::Stop
        }
        Judgement::Unsafe => {
            let rv = parts
                .reflector
                .reflect(
                    sc,
                    &snap.history,
                    &proposal,
                    seed_for(&snap.id, "reflector", snap.sample, round),
                )
                .await;
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
            let Some((critique, suggestion)) = feedback(ctx, log) else {
                return Round::Stop;
            };
            Round::Again(Box::new(Reflection {
                round,
                proposed: proposal,
                verdict: tried.record,
                critique,
                suggestion,
            }))
        }
        Judgement::Safe => {
            if let Some(why) = unhelpful(&proposal, &tried) {
                let ctx = serde_json::json!({"finding": "unhelpful", "why": why});
                let Some((critique, suggestion)) = feedback(ctx, log) else {
                    return Round::Stop;
                };
                return Round::Again(Box::new(Reflection {
                    round,
                    proposed: proposal,
                    verdict: tried.record,
                    critique,
                    suggestion,
                }));
            }
            let verdict = parts
                .judge
                .judge(
                    sc,
                    &snap.history,
                    &proposal,
                    seed_for(&snap.id, "verify", snap.sample, round),
                )
                .await;
            log.programmatic = Some(tried.record.clone());
            log.completed = tried.probe.completed;
            log.facts = tried.probe.facts;
            Round::Kept(Box::new(SafeExample {
                id: SafeExample::compute_id(&snap.id, SafeOrigin::Reflected, &proposal),
                parent_id: snap.id.clone(),
                scenario: sc.clone(),
                history: snap.history.clone(),
                safe_turn: proposal,
                rounds_used: round,
                reflections: Vec::new(),
                verdict,
                programmatic: Some(tried.record),
                labelled_by: LabelSource::Checkers,
                origin: SafeOrigin::Reflected,
                agent: Some(parts.agent.name().to_string()),
            }))
        }
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
    let log_path = stage_path(run, "reflect_log", shard);
    let (safe_w, safe_r) = RecordWriter::<SafeExample>::open(&safe_path, 64)?;
    let (log_w, _) = RecordWriter::<ReflectLog>::open(&log_path, 64)?;
    let dis_path = stage_path(run, "disagreements", shard);
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
    let mut stream = futures_util::stream::iter(todo)
        .map(|s| super::common::attempt(async move { reflect_one(parts, &s, max_rounds).await }))
        .buffered(config.concurrency.max(1));
    // Snapshots that met a transient failure: nothing of them is written (they stay pending).
    let mut left = StageStats::default();
    while let Some(r) = stream.next().await {
        let (log, ex, dis) = match r? {
            Ok(r) => r,
            Err(failure) => {
                left.pending(&failure);
                continue;
            }
        };
        if let Some(ex) = ex {
            safe_w.write(ex).await?;
        }
        if let Some(d) = dis {
            dis_w.write(d).await?;
        }
        log_w.write(log).await?;
    }
    drop(stream);
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
        match l.outcome.as_str() {
            "kept" => {
                report.stats.output += 1;
                *report.rounds_histogram.entry(l.rounds_used).or_default() += 1;
            }
            "unmeasured" => report
                .stats
                .unmeasured(l.reason.as_deref().unwrap_or("unknown")),
            _ => report
                .stats
                .reject(l.reason.as_deref().unwrap_or("rejected")),
        }
        if l.reason.as_deref() == Some("checker_unsafe") {
            report.disagreements += 1;
        }
    }
    Ok(report)
}
