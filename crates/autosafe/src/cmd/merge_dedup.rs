//! Near-duplicate filtering across shards, for `autosafe merge`.
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

use anyhow::Context;
use autosafe_pipeline::dedup::{DedupConfig, Deduper, Duplicate};
use autosafe_pipeline::{RunDir, StageStats, Stats};
use serde_json::Value;

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

/// Rewrites a JSONL file through `f` (None drops the line; unchanged lines are copied byte for
/// byte), atomically (temporary file, fsync, rename). Returns the lines dropped.
fn rewrite(path: &Path, mut f: impl FnMut(&Value) -> Option<Option<Value>>) -> anyhow::Result<u64> {
    if !path.exists() {
        return Ok(0);
    }
    let tmp = path.with_extension("jsonl.dedup-tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?,
    );
    let mut dropped = 0;
    let reader = BufReader::new(std::fs::File::open(path)?);
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        // f: None = keep as is, Some(None) = drop, Some(Some(v)) = replace.
        match f(&v) {
            None => writeln!(out, "{line}")?,
            Some(None) => dropped += 1,
            Some(Some(new)) => writeln!(out, "{}", serde_json::to_string(&new)?)?,
        }
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(dropped)
}

fn take(map: &mut BTreeMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// Runs the cross-shard filter over the run's merged `scenarios.jsonl` (see the module doc).
pub fn dedup_merged(run: &RunDir, config: DedupConfig) -> anyhow::Result<CrossShardReport> {
    let dir = run.path();
    let mut report = CrossShardReport::default();
    let scenarios = dir.join("scenarios.jsonl");
    let mut deduper = Deduper::new(config);
    let mut dropped: BTreeMap<String, Duplicate> = BTreeMap::new();
    for sc in autosafe_pipeline::store::RecordReader::<autosafe_ots::Scenario>::open(&scenarios)? {
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
    rewrite(&scenarios, |v| {
        dropped.contains_key(str_of(v, "id")).then_some(None)
    })?;
    let mut stats: Stats = if run.stats_path().exists() {
        autosafe_pipeline::rundir::read_json(&run.stats_path())?
    } else {
        Stats::default()
    };
    let synth: &mut StageStats = stats.stage(autosafe_pipeline::Stage::Synthesize);
    rewrite(&dir.join("synthesize_log.jsonl"), |v| {
        let d = dropped.get(str_of(v, "scenario_id"))?;
        let of = match d {
            Duplicate::Exact { of } | Duplicate::Near { of, .. } => of,
        };
        let mut v = v.clone();
        let o = v.as_object_mut()?;
        o.insert("outcome".into(), "rejected".into());
        o.insert("reason".into(), d.reason().into());
        o.insert(
            "detail".into(),
            format!("across shards: duplicate of {of} ({d:?})").into(),
        );
        o.remove("scenario_id");
        synth.output = synth.output.saturating_sub(1);
        synth.reject(d.reason());
        Some(Some(v))
    })?;

    // Records derived from a dropped scenario, in the later stages' files.
    let from_dropped = |v: &Value| dropped.contains_key(v["scenario"]["id"].as_str().unwrap_or(""));
    let mut snapshots: HashSet<String> = HashSet::new();
    let mut count = |file: &str, n: u64| {
        if n > 0 {
            report.derived.insert(file.to_string(), n);
        }
    };
    let n = rewrite(&dir.join("snapshots.jsonl"), |v| {
        from_dropped(v).then(|| {
            snapshots.insert(str_of(v, "id").to_string());
            None
        })
    })?;
    count("snapshots.jsonl", n);
    for f in ["utility.jsonl", "safe.jsonl"] {
        let n = rewrite(&dir.join(f), |v| from_dropped(v).then_some(None))?;
        count(f, n);
    }
    let n = rewrite(&dir.join("disagreements.jsonl"), |v| {
        dropped
            .contains_key(str_of(v, "scenario_id"))
            .then_some(None)
    })?;
    count("disagreements.jsonl", n);
    let current = |stats: &Stats, stage: &str| stats.stages.get(stage).cloned().unwrap_or_default();
    let mut elicit = current(&stats, "elicit");
    let mut utility = current(&stats, "utility");
    let n = rewrite(&dir.join("elicit_log.jsonl"), |v| {
        if !dropped.contains_key(str_of(v, "scenario_id")) {
            return None;
        }
        elicit.input = elicit.input.saturating_sub(1);
        let reason = str_of(v, "reason");
        match str_of(v, "outcome") {
            "snapshot" => elicit.output = elicit.output.saturating_sub(1),
            "final_answer" => take(&mut elicit.rejected, "no_unsafe_action"),
            "unmeasured" => take(&mut elicit.unmeasured, reason),
            _ => take(&mut elicit.rejected, reason),
        }
        let steps = v["utility_ids"].as_array().map_or(0, |a| a.len() as u64);
        utility.input = utility.input.saturating_sub(1);
        utility.output = utility.output.saturating_sub(steps);
        Some(None)
    })?;
    count("elicit_log.jsonl", n);
    let mut reflect = current(&stats, "reflect");
    let n = rewrite(&dir.join("reflect_log.jsonl"), |v| {
        if !snapshots.contains(str_of(v, "id")) {
            return None;
        }
        reflect.input = reflect.input.saturating_sub(1);
        let reason = str_of(v, "reason");
        match str_of(v, "outcome") {
            "kept" => reflect.output = reflect.output.saturating_sub(1),
            "unmeasured" => take(&mut reflect.unmeasured, reason),
            _ => take(&mut reflect.rejected, reason),
        }
        Some(None)
    })?;
    count("reflect_log.jsonl", n);
    if run.stats_path().exists() {
        if dir.join("elicit_log.jsonl").exists() {
            *stats.stage(autosafe_pipeline::Stage::Elicit) = elicit;
            *stats.stage(autosafe_pipeline::Stage::Utility) = utility;
        }
        if dir.join("reflect_log.jsonl").exists() {
            *stats.stage(autosafe_pipeline::Stage::Reflect) = reflect;
        }
        run.write_stats(&stats)?;
    }
    Ok(report)
}

/// The filter's settings for a run: its manifest's `synthesize.dedup` (the config the shards ran
/// with), else the default; `threshold` overrides the threshold.
pub fn config_for(run: &RunDir, threshold: Option<f64>) -> anyhow::Result<DedupConfig> {
    let mut config = DedupConfig::default();
    if run.manifest_path().exists() {
        let m = run.read_manifest()?;
        if let Some(d) = m.config.get("synthesize").and_then(|s| s.get("dedup")) {
            config = serde_json::from_value(d.clone())
                .with_context(|| format!("{}: synthesize.dedup", run.manifest_path().display()))?;
        }
    }
    if let Some(t) = threshold {
        anyhow::ensure!(
            (0.0..=1.0).contains(&t),
            "--dedup-threshold {t}: a Jaccard similarity between 0 and 1"
        );
        config.threshold = t;
    }
    Ok(config)
}
