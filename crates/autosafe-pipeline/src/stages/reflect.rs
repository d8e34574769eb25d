//! Self-reflection (D_safe): for each snapshot the agent proposes the next action; the
//! reflector labels it and, when unsafe, writes a critique and a suggestion; the agent
//! regenerates with that reflection; up to `max_rounds` rounds. A proposal the reflector
//! accepts is kept only if the independently configured judge labels it safe.
//!
//! Failures are logged per snapshot (`reflect_log.jsonl`): `rounds_exhausted`,
//! `judge_unsafe` (rejected), or an unmeasured reason (`parse_error`, `api_error`, …) from the
//! agent, the reflector or the judge.

use std::collections::{BTreeMap, HashSet};

use autosafe_ots::{Judgement, Snapshot, ToolLibrary};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::agent::{Agent, ReflectionInput};
use super::common::{StageError, StageFailure, scenario_toolkits, seed_for, stage_path};
use super::judge::StepJudge;
use crate::records::{Reflection, SafeExample, SafeOrigin};
use crate::rundir::{RunDir, Stage, StageStats};
use crate::shard::ShardSpec;
use crate::store::{Record, RecordReader, RecordWriter};

/// Reflection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
}

fn fail(log: &mut ReflectLog, outcome: &str, f: StageFailure) {
    log.outcome = outcome.into();
    log.reason = Some(f.reason.as_str().into());
    log.detail = Some(f.detail);
    log.raw = f.raw;
}

async fn reflect_one(
    parts: &ReflectParts<'_>,
    snap: &Snapshot,
    max_rounds: u32,
) -> (ReflectLog, Option<SafeExample>) {
    let mut log = ReflectLog {
        id: snap.id.clone(),
        outcome: "rejected".into(),
        reason: None,
        detail: None,
        raw: None,
        rounds_used: 0,
        safe_id: None,
    };
    let toolkits = match scenario_toolkits(parts.library, &snap.scenario) {
        Ok(t) => t,
        Err(e) => {
            log.reason = Some("unknown_toolkit".into());
            log.detail = Some(e);
            return (log, None);
        }
    };
    let sc = &snap.scenario;
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
                return (log, None);
            }
        };
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
            Judgement::Unmeasured { reason, detail } => {
                log.outcome = "unmeasured".into();
                log.reason = Some(reason.as_str().into());
                log.detail = Some(format!("reflector: {detail}"));
                log.raw = rv.verdict.raw.clone();
                return (log, None);
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
                        let ex = SafeExample {
                            id: SafeExample::compute_id(&snap.id, SafeOrigin::Reflected, &proposal),
                            parent_id: snap.id.clone(),
                            scenario: sc.clone(),
                            history: snap.history.clone(),
                            safe_turn: proposal,
                            rounds_used: round,
                            reflections,
                            verdict,
                            origin: SafeOrigin::Reflected,
                            agent: Some(parts.agent.name().to_string()),
                        };
                        log.outcome = "kept".into();
                        log.safe_id = Some(ex.id.clone());
                        return (log, Some(ex));
                    }
                    Judgement::Unsafe => {
                        log.reason = Some("judge_unsafe".into());
                        log.detail = Some(verdict.rationale.clone());
                        return (log, None);
                    }
                    Judgement::Unmeasured { reason, detail } => {
                        log.outcome = "unmeasured".into();
                        log.reason = Some(reason.as_str().into());
                        log.detail = Some(format!("judge: {detail}"));
                        log.raw = verdict.raw.clone();
                        return (log, None);
                    }
                }
            }
        }
    }
    log.reason = Some("rounds_exhausted".into());
    log.detail = Some(format!(
        "the reflector judged all {max_rounds} proposals unsafe"
    ));
    (log, None)
}

/// Runs reflection over `snapshots_path` into the run directory: `safe.jsonl` and
/// `reflect_log.jsonl` (shard files when sharded). Snapshots already logged are skipped.
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
    let mut finished = HashSet::new();
    for l in RecordReader::<ReflectLog>::open(&log_path)? {
        let l = l?;
        if l.safe_id
            .as_ref()
            .is_none_or(|s| safe_r.finished.contains(s))
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
        .map(|s| async move { reflect_one(parts, &s, max_rounds).await })
        .buffered(config.concurrency.max(1));
    while let Some((log, ex)) = stream.next().await {
        if let Some(ex) = ex {
            safe_w.write(ex).await?;
        }
        log_w.write(log).await?;
    }
    drop(stream);
    if let Some(e) = read_error {
        return Err(e.into());
    }
    safe_w.finish().await?;
    log_w.finish().await?;

    let mut report = ReflectReport::default();
    report.stats.input = planned.len() as u64;
    report.stats.resumed = resumed;
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
    }
    Ok(report)
}
