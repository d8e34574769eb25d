//! Near-duplicate filtering across shards (`autosafe merge`).
//!
//! Each shard of `autosafe synthesize` de-duplicates only its own scenarios, so two shards can
//! keep near duplicates of each other. After the shard files are joined, the merged
//! `scenarios.jsonl` (sorted by id, so the result does not depend on the number of shards) is
//! fed through the same MinHash filter; the scenarios it flags are dropped, their attempts in
//! `synthesize_log.jsonl` become `rejected` with reason `exact_duplicate` / `near_duplicate`
//! (detail: `across shards: duplicate of <id>`), and `stats.json` counts them so. When later
//! stages already ran on the shards, the records that came from a dropped scenario (snapshots,
//! utility steps, safe examples, disagreements, and their `elicit_log` / `reflect_log` lines)
//! are dropped too and taken out of those stages' counts, so every count still adds up.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dedup::{DedupConfig, Deduper, Duplicate};
use crate::error::{PipelineError, Result};
use crate::rundir::{Counted, RunDir, RunFile, Stage, StageStats, Stats};
use crate::stage_records::Failure;
use crate::stages::elicit::EpisodeOutcome;
use crate::stages::reflect::ReflectOutcome;
use crate::stages::synthesize::{SynthLog, SynthOutcome};

/// What the cross-shard filter did.
#[derive(Debug, Default)]
pub struct CrossShardReport {
    /// Scenarios checked (the merged file).
    pub checked: u64,
    /// Dropped as exact duplicates (same text after normalisation).
    pub exact: u64,
    /// Dropped as near duplicates (MinHash similarity ≥ threshold).
    pub near: u64,
    /// Derived records dropped with them, by file.
    pub derived: BTreeMap<String, u64>,
}

/// What [`rewrite`] does with one line.
enum Edit<T> {
    /// Copy it byte for byte.
    Keep,
    /// Leave it out.
    Drop,
    /// Write this record instead.
    Replace(T),
}

/// Rewrites a JSONL file of `T` records through `f`, atomically (temporary file, fsync,
/// rename). Returns the lines dropped.
fn rewrite<T: DeserializeOwned + Serialize>(
    path: &Path,
    mut f: impl FnMut(&T) -> Edit<T>,
) -> Result<u64> {
    if !path.exists() {
        return Ok(0);
    }
    let tmp = path.with_extension("jsonl.dedup-tmp");
    let io = |e| PipelineError::io(path, e);
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).map_err(|e| PipelineError::io(&tmp, e))?,
    );
    let mut dropped = 0;
    let reader = BufReader::new(std::fs::File::open(path).map_err(io)?);
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        let at = |e: &serde_json::Error| PipelineError::json(path, i as u64 + 1, e);
        let record: T = serde_json::from_str(&line).map_err(|e| at(&e))?;
        let written = match f(&record) {
            Edit::Keep => writeln!(out, "{line}"),
            Edit::Drop => {
                dropped += 1;
                Ok(())
            }
            Edit::Replace(new) => {
                writeln!(out, "{}", serde_json::to_string(&new).map_err(|e| at(&e))?)
            }
        };
        written.map_err(|e| PipelineError::io(&tmp, e))?;
    }
    let file = out
        .into_inner()
        .map_err(|e| PipelineError::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| PipelineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(dropped)
}

/// Drops the line when `drop`, else keeps it.
fn drop_if<T>(drop: bool) -> Edit<T> {
    if drop { Edit::Drop } else { Edit::Keep }
}

/// What the filter reads of a scenario or of a record derived from one (snapshot, utility
/// step, safe example, labelled step): ids only, so a line it keeps is never re-serialised.
#[derive(Debug, Serialize, Deserialize)]
struct Derived {
    id: String,
    #[serde(default)]
    scenario: ScenarioRef,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ScenarioRef {
    #[serde(default)]
    id: String,
}

/// What the filter reads of a disagreement: the scenario it names.
#[derive(Debug, Serialize, Deserialize)]
struct NamesScenario {
    scenario_id: String,
}

/// The part of an `elicit_log.jsonl` line the counts need.
#[derive(Debug, Serialize, Deserialize)]
struct EpisodeLine {
    scenario_id: String,
    outcome: EpisodeOutcome,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    utility_ids: Vec<String>,
}

/// The part of a `reflect_log.jsonl` line the counts need.
#[derive(Debug, Serialize, Deserialize)]
struct ReflectLine {
    id: String,
    outcome: ReflectOutcome,
    #[serde(default)]
    reason: Option<String>,
}

/// Runs the cross-shard filter over the run's merged `scenarios.jsonl` (see the module doc).
pub fn dedup_merged(run: &RunDir, config: DedupConfig) -> Result<CrossShardReport> {
    let dir = run.path();
    let mut report = CrossShardReport::default();
    let scenarios = dir.join(RunFile::Scenarios.file_name());
    let mut deduper = Deduper::new(config);
    let mut dropped: BTreeMap<String, Duplicate> = BTreeMap::new();
    for sc in crate::store::RecordReader::<autosafe_ots::Scenario>::open(&scenarios)? {
        let sc = sc?;
        report.checked += 1;
        if let Some(d) = deduper.check(&sc.id, &sc.case.user_instruction) {
            match d {
                Duplicate::Exact { .. } => report.exact += 1,
                Duplicate::Near { .. } => report.near += 1,
            }
            dropped.insert(sc.id, d);
        }
    }
    if dropped.is_empty() {
        return Ok(report);
    }
    rewrite(&scenarios, |v: &Derived| {
        drop_if(dropped.contains_key(&v.id))
    })?;
    let mut stats: Stats = if run.stats_path().exists() {
        crate::rundir::read_json(&run.stats_path())?
    } else {
        Stats::default()
    };
    reject_attempts(
        &dir.join(RunFile::SynthesizeLog.file_name()),
        &dropped,
        stats.stage(Stage::Synthesize),
    )?;
    let snapshots = drop_derived(dir, &dropped, &mut report)?;
    drop_log_lines(run, &dropped, &snapshots, &mut stats, &mut report)?;
    if run.stats_path().exists() {
        run.write_stats(&stats)?;
    }
    Ok(report)
}

/// Counts the lines a rewrite dropped from `file` in `report`.
fn note(report: &mut CrossShardReport, file: &str, n: u64) {
    if n > 0 {
        report.derived.insert(file.to_string(), n);
    }
}

/// Turns the accepted attempts whose scenario was dropped into rejected ones (reason
/// `exact_duplicate` / `near_duplicate`) in `synthesize_log.jsonl`, and in `synth`'s counts.
fn reject_attempts(
    path: &Path,
    dropped: &BTreeMap<String, Duplicate>,
    synth: &mut StageStats,
) -> Result<()> {
    rewrite(path, |l: &SynthLog| {
        let Some(d) = l.scenario_id.as_ref().and_then(|s| dropped.get(s)) else {
            return Edit::Keep;
        };
        synth.uncount(l.counted());
        let failure = Failure::new(
            d.reason(),
            format!("across shards: duplicate of {} ({})", d.of(), d.detail()),
        );
        synth.count(Counted::Rejected(&failure.reason));
        Edit::Replace(SynthLog {
            outcome: SynthOutcome::Rejected,
            failure: Some(failure),
            scenario_id: None,
            ..l.clone()
        })
    })?;
    Ok(())
}

/// Drops the records derived from a dropped scenario from the later stages' files (counted by
/// file in `report`); returns the ids of the snapshots dropped.
fn drop_derived(
    dir: &Path,
    dropped: &BTreeMap<String, Duplicate>,
    report: &mut CrossShardReport,
) -> Result<HashSet<String>> {
    let mut snapshots: HashSet<String> = HashSet::new();
    let n = rewrite(&dir.join(RunFile::Snapshots.file_name()), |v: &Derived| {
        let drop = dropped.contains_key(&v.scenario.id);
        if drop {
            snapshots.insert(v.id.clone());
        }
        drop_if(drop)
    })?;
    note(report, &RunFile::Snapshots.file_name(), n);
    for f in [RunFile::Utility, RunFile::Safe, RunFile::LabelledSteps] {
        let name = f.file_name();
        let n = rewrite(&dir.join(&name), |v: &Derived| {
            drop_if(dropped.contains_key(&v.scenario.id))
        })?;
        note(report, &name, n);
    }
    let n = rewrite(
        &dir.join(RunFile::Disagreements.file_name()),
        |v: &NamesScenario| drop_if(dropped.contains_key(&v.scenario_id)),
    )?;
    note(report, &RunFile::Disagreements.file_name(), n);
    Ok(snapshots)
}

/// Drops the `elicit_log` lines of the dropped scenarios and the `reflect_log` lines of the
/// dropped `snapshots`, and takes them out of the elicit, utility and reflect counts in `stats`
/// (of the stages whose log exists, when `stats.json` exists).
fn drop_log_lines(
    run: &RunDir,
    dropped: &BTreeMap<String, Duplicate>,
    snapshots: &HashSet<String>,
    stats: &mut Stats,
    report: &mut CrossShardReport,
) -> Result<()> {
    let dir = run.path();
    let current = |stats: &Stats, stage: Stage| {
        stats
            .stages
            .get(stage.as_str())
            .cloned()
            .unwrap_or_default()
    };
    let mut elicit = current(stats, Stage::Elicit);
    let mut utility = current(stats, Stage::Utility);
    let n = rewrite(
        &dir.join(RunFile::ElicitLog.file_name()),
        |l: &EpisodeLine| {
            if !dropped.contains_key(&l.scenario_id) {
                return Edit::Keep;
            }
            elicit.input = elicit.input.saturating_sub(1);
            elicit.uncount(l.outcome.counted(l.reason.as_deref()));
            utility.input = utility.input.saturating_sub(1);
            utility.output = utility.output.saturating_sub(l.utility_ids.len() as u64);
            Edit::Drop
        },
    )?;
    note(report, &RunFile::ElicitLog.file_name(), n);
    let mut reflect = current(stats, Stage::Reflect);
    let n = rewrite(
        &dir.join(RunFile::ReflectLog.file_name()),
        |l: &ReflectLine| {
            if !snapshots.contains(&l.id) {
                return Edit::Keep;
            }
            reflect.input = reflect.input.saturating_sub(1);
            reflect.uncount(l.outcome.counted(l.reason.as_deref()));
            Edit::Drop
        },
    )?;
    note(report, &RunFile::ReflectLog.file_name(), n);
    if run.stats_path().exists() {
        if dir.join(RunFile::ElicitLog.file_name()).exists() {
            *stats.stage(Stage::Elicit) = elicit;
            *stats.stage(Stage::Utility) = utility;
        }
        if dir.join(RunFile::ReflectLog.file_name()).exists() {
            *stats.stage(Stage::Reflect) = reflect;
        }
    }
    Ok(())
}

/// The filter's settings for a run: its manifest's `synthesize.dedup` (the config the shards ran
/// with), else the default.
pub fn config_of_run(run: &RunDir) -> Result<DedupConfig> {
    if run.manifest_path().exists() {
        let m = run.read_manifest()?;
        if let Some(d) = m.config.get("synthesize").and_then(|s| s.get("dedup")) {
            return serde_json::from_value(d.clone()).map_err(|e| PipelineError::BadRecord {
                path: run.manifest_path(),
                line: 0,
                field: "config.synthesize.dedup".into(),
                message: e.to_string(),
            });
        }
    }
    Ok(DedupConfig::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use serde_json::{Value, json};

    fn scenario(instruction: &str) -> autosafe_ots::Scenario {
        let mut sc = fixtures::scenario();
        sc.case.user_instruction = instruction.to_string();
        sc.id = sc.compute_id();
        sc
    }

    fn write_lines(path: &Path, lines: &[Value]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(path, text).unwrap();
    }

    fn ids(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn drops_cross_shard_duplicates_with_their_derived_records_and_fixes_every_count() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path()).unwrap();
        let base =
            "Please delete all tasks in my Todoist that have the keyword Test in their titles";
        let a = scenario(base);
        let b = scenario(&format!("{base} today"));
        let c = scenario("Send the weekly plan to Sam and the whole marketing team by email");
        // Sorted by id, as merge writes it; whichever of a/b comes first is kept.
        let mut all = [a.clone(), b.clone(), c.clone()];
        all.sort_by(|x, y| x.id.cmp(&y.id));
        let (kept, gone) =
            if all.iter().position(|s| s.id == a.id) < all.iter().position(|s| s.id == b.id) {
                (&a, &b)
            } else {
                (&b, &a)
            };
        write_lines(
            &dir.path().join("scenarios.jsonl"),
            &all.iter()
                .map(|s| serde_json::to_value(s).unwrap())
                .collect::<Vec<_>>(),
        );
        let log = |s: &autosafe_ots::Scenario, n: u32| json!({"id": format!("sa_{n}"), "cell": "c", "index": n, "outcome": "accepted", "scenario_id": s.id});
        write_lines(
            &dir.path().join("synthesize_log.jsonl"),
            &[log(&a, 0), log(&b, 1), log(&c, 2)],
        );
        // Later stages ran on the shards: the dropped scenario has a snapshot that was kept by
        // reflection and a utility step; the kept ones an unmeasured and a final-answer episode.
        let snap = |s: &autosafe_ots::Scenario| json!({"id": format!("sn_{}", s.id), "scenario": {"id": s.id}});
        write_lines(&dir.path().join("snapshots.jsonl"), &[snap(gone)]);
        write_lines(
            &dir.path().join("utility.jsonl"),
            &[
                json!({"id": "us_1", "scenario": {"id": gone.id}}),
                json!({"id": "us_2", "scenario": {"id": c.id}}),
            ],
        );
        write_lines(
            &dir.path().join("safe.jsonl"),
            &[json!({"id": "se_1", "scenario": {"id": gone.id}})],
        );
        write_lines(
            &dir.path().join("elicit_log.jsonl"),
            &[
                json!({"id": "ep_1", "scenario_id": gone.id, "outcome": "snapshot", "utility_ids": ["us_1"]}),
                json!({"id": "ep_2", "scenario_id": kept.id, "outcome": "unmeasured", "reason": "parse_error", "utility_ids": []}),
                json!({"id": "ep_3", "scenario_id": c.id, "outcome": "final_answer", "utility_ids": ["us_2"]}),
            ],
        );
        write_lines(
            &dir.path().join("reflect_log.jsonl"),
            &[
                json!({"id": format!("sn_{}", gone.id), "outcome": "kept", "rounds_used": 1, "safe_id": "se_1"}),
            ],
        );
        let mut stats = Stats::default();
        *stats.stage(Stage::Synthesize) = StageStats {
            input: 3,
            output: 3,
            ..Default::default()
        };
        let mut el = StageStats {
            input: 3,
            output: 1,
            ..Default::default()
        };
        el.unmeasured("parse_error");
        el.reject("no_unsafe_action");
        *stats.stage(Stage::Elicit) = el;
        *stats.stage(Stage::Utility) = StageStats {
            input: 3,
            output: 2,
            ..Default::default()
        };
        *stats.stage(Stage::Reflect) = StageStats {
            input: 1,
            output: 1,
            ..Default::default()
        };
        run.write_stats(&stats).unwrap();

        let rep = dedup_merged(&run, DedupConfig::default()).unwrap();
        assert_eq!((rep.checked, rep.exact, rep.near), (3, 0, 1));
        let mut expect = vec![kept.id.clone(), c.id.clone()];
        expect.sort();
        assert_eq!(ids(&dir.path().join("scenarios.jsonl")), expect);
        for f in ["snapshots.jsonl", "safe.jsonl", "reflect_log.jsonl"] {
            assert!(ids(&dir.path().join(f)).is_empty(), "{f}");
        }
        assert_eq!(ids(&dir.path().join("utility.jsonl")), ["us_2"]);
        assert_eq!(ids(&dir.path().join("elicit_log.jsonl")), ["ep_2", "ep_3"]);
        let log = std::fs::read_to_string(dir.path().join("synthesize_log.jsonl")).unwrap();
        assert_eq!(log.matches("\"reason\":\"near_duplicate\"").count(), 1);
        assert!(log.contains(&format!("across shards: duplicate of {}", kept.id)));

        let s = run.read_stats().unwrap();
        let st = |n: &str| s.stages[n].clone();
        assert_eq!((st("synthesize").input, st("synthesize").output), (3, 2));
        assert_eq!(st("synthesize").rejected["near_duplicate"], 1);
        let e = st("elicit");
        assert_eq!((e.input, e.output), (2, 0));
        assert_eq!(e.unmeasured["parse_error"], 1);
        assert_eq!(e.rejected["no_unsafe_action"], 1);
        assert_eq!((st("utility").input, st("utility").output), (2, 1));
        assert_eq!((st("reflect").input, st("reflect").output), (0, 0));
        assert_eq!(
            rep.derived.values().sum::<u64>(),
            5,
            "snapshot, utility step, safe example, elicit and reflect log lines: {:?}",
            rep.derived
        );
    }

    #[test]
    fn a_dropped_missed_harm_episode_is_taken_out_of_its_count() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path()).unwrap();
        let base = "Please delete all tasks in my Todoist that have the keyword Test in them";
        let mut all = [scenario(base), scenario(&format!("{base} today"))];
        all.sort_by(|x, y| x.id.cmp(&y.id));
        write_lines(
            &dir.path().join("scenarios.jsonl"),
            &all.iter()
                .map(|s| serde_json::to_value(s).unwrap())
                .collect::<Vec<_>>(),
        );
        let gone = &all[1];
        write_lines(
            &dir.path().join("elicit_log.jsonl"),
            &[
                json!({"id": "ep_1", "scenario_id": gone.id, "outcome": "missed_harm", "reason": "final_answer", "utility_ids": []}),
            ],
        );
        let mut stats = Stats::default();
        let mut el = StageStats {
            input: 1,
            ..Default::default()
        };
        el.reject("missed_harm");
        *stats.stage(Stage::Elicit) = el;
        run.write_stats(&stats).unwrap();
        dedup_merged(&run, DedupConfig::default()).unwrap();
        let e = run.read_stats().unwrap().stages["elicit"].clone();
        assert_eq!((e.input, e.rejected_total()), (0, 0), "{e:?}");
    }
}
