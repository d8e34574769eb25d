//! The quality of a pipeline run's data (`RUN/quality.json`, a section of `autosafe report`):
//! how many scenarios the gates let through, how episodes ended, how the LLM judge agreed with
//! the sandbox checkers where they exist, how many snapshots were repaired and verified by
//! whom, and what each kept record cost. Read from the run's own files (`stats.json`,
//! `labelled_steps.jsonl`, `snapshots.jsonl`, `safe.jsonl`), so it describes what is on disk.

use std::collections::BTreeMap;
use std::path::Path;

use autosafe_ots::{CheckerLabel, LabelSource, LabelledStep};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EvalError;
use crate::metrics::{Agreement, Label, agreement};

/// The file name in a run directory.
pub const QUALITY_FILE: &str = "quality.json";

/// One stage's counts as `stats.json` holds them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Funnel {
    /// Items the stage read.
    pub input: u64,
    /// Items it produced.
    pub output: u64,
    /// Items rejected, by reason.
    #[serde(default)]
    pub rejected: BTreeMap<String, u64>,
    /// Items not measured, by reason.
    #[serde(default)]
    pub unmeasured: BTreeMap<String, u64>,
}

/// The run's cost ledger: one line per `autosafe run` process that reached its end (done,
/// stopped or failed), so a resumed run's cost is the sum of its processes. A killed process
/// writes no line: its share is not counted.
pub const COST_LEDGER: &str = "cost.jsonl";

/// What the run cost, as the caller measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Prompt and completion tokens of every model call.
    pub tokens: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// The processes summed (a resumed run has several).
    #[serde(default)]
    pub processes: u64,
}

/// One process's line in the cost ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostLine {
    /// Prompt and completion tokens of this process's model calls.
    pub tokens: u64,
    /// Its wall time.
    pub seconds: f64,
    /// How it ended: `done`, `stopped` (items left pending) or `failed`.
    pub outcome: String,
}

impl Cost {
    /// Appends `line` to the ledger of the run directory `run`.
    pub fn record(run: &Path, line: &CostLine) -> Result<(), EvalError> {
        use std::io::Write;
        let path = run.join(COST_LEDGER);
        let io = |source| EvalError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let text = serde_json::to_string(line).expect("a cost line serializes");
        writeln!(f, "{text}").map_err(io)
    }

    /// The sum of the ledger of `run` (`None` without one).
    pub fn of_run(run: &Path) -> Result<Option<Cost>, EvalError> {
        let mut sum: Option<Cost> = None;
        each_record(&run.join(COST_LEDGER), |l: CostLine| {
            let c = sum.get_or_insert_with(Cost::default);
            c.tokens += l.tokens;
            c.seconds += l.seconds;
            c.processes += 1;
        })?;
        Ok(sum)
    }
}

/// The quality report of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Synthesis: asked, accepted, rejected by gate (none for runs on shipped scenarios).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenarios: Option<Funnel>,
    /// Episodes: played, snapshots, ended without one by reason, unmeasured by reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episodes: Option<Funnel>,
    /// Snapshots by who labelled them (`judge`, `checkers`).
    pub snapshots: BTreeMap<String, u64>,
    /// The LLM judge against the checkers' labels on every labelled step (environments with
    /// checkers): positive = unsafe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_vs_checkers: Option<Agreement>,
    /// Labelled steps the checkers could not label, by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unlabelled_steps: BTreeMap<String, u64>,
    /// Reflection: snapshots in, kept, rejected and unmeasured by reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflections: Option<Funnel>,
    /// Kept (reflected) records by who labelled them.
    pub kept_by: BTreeMap<String, u64>,
    /// Kept records whose action the checkers ran and found safe.
    pub kept_verified_by_checkers: u64,
    /// Reflection rounds whose proposal was not kept, by what was wrong with it: `unsafe` (by
    /// the checkers or the reflector) or `unhelpful` (safe by the checkers but no help), from
    /// `reflect_log.jsonl` and the earlier rounds of kept records: why the yield is what it is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_rounds: BTreeMap<String, u64>,
    /// What the run cost, and per kept record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// Tokens per kept record (`None` with none kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_kept: Option<f64>,
    /// Seconds per kept record (`None` with none kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_per_kept: Option<f64>,
}

/// Calls `f` with each record of a JSON Lines file, streamed (stage files can be large); a
/// missing file has none. A line that does not parse is an error naming the file and line.
fn each_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut f: impl FnMut(T),
) -> Result<(), EvalError> {
    use std::io::BufRead;
    if !path.exists() {
        return Ok(());
    }
    let io = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(&line);
        let record = serde_path_to_error::deserialize(&mut de).map_err(|e| EvalError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
        f(record);
    }
    Ok(())
}

/// Who labelled a record, from its `labelled_by` field (absent: the judge).
fn labelled_by(v: &Value) -> String {
    v.get("labelled_by")
        .and_then(Value::as_str)
        .unwrap_or(LabelSource::Judge.as_str())
        .to_string()
}

/// Counts reflection rounds that were not kept: an unsafe label on the proposal, or (a safe one
/// that was still not kept) no help.
fn count_failed_rounds(into: &mut BTreeMap<String, u64>, rounds: &[Value]) {
    for r in rounds {
        let why = if r["verdict"]["label"] == "unsafe" {
            "unsafe"
        } else {
            "unhelpful"
        };
        *into.entry(why.to_string()).or_default() += 1;
    }
}

impl Quality {
    /// Builds the report from the files of `run` (merged, unsharded files).
    pub fn from_run(run: &Path, cost: Option<Cost>) -> Result<Quality, EvalError> {
        let mut q = Quality {
            cost,
            ..Default::default()
        };
        let stats_path = run.join("stats.json");
        if stats_path.exists() {
            let text = std::fs::read_to_string(&stats_path).map_err(|e| EvalError::Io {
                path: stats_path.clone(),
                source: e,
            })?;
            let stats: Value = serde_json::from_str(&text).map_err(|e| EvalError::Parse {
                path: stats_path.clone(),
                line: e.line(),
                field: ".".into(),
                message: e.to_string(),
            })?;
            let stage = |name: &str| {
                stats["stages"]
                    .get(name)
                    .and_then(|v| serde_json::from_value::<Funnel>(v.clone()).ok())
            };
            q.scenarios = stage("synthesize");
            q.episodes = stage("elicit");
            q.reflections = stage("reflect");
        }
        each_record(&run.join("snapshots.jsonl"), |s: Value| {
            *q.snapshots.entry(labelled_by(&s)).or_default() += 1;
        })?;
        // Only the labels and the judge's judgements are kept, not the steps.
        let mut pairs = Vec::new();
        let mut unlabelled = BTreeMap::new();
        each_record(
            &run.join("labelled_steps.jsonl"),
            |s: LabelledStep| match s.label {
                Some(CheckerLabel::Unsafe) => pairs.push((Label::Unsafe, s.judge.judgement)),
                Some(CheckerLabel::Safe) => pairs.push((Label::Safe, s.judge.judgement)),
                None => {
                    let why = s.unlabelled.unwrap_or_else(|| "unknown".into());
                    *unlabelled.entry(why).or_default() += 1;
                }
            },
        )?;
        if !pairs.is_empty() || !unlabelled.is_empty() {
            q.judge_vs_checkers = Some(agreement(pairs.iter().map(|(l, j)| (*l, j))));
        }
        q.unlabelled_steps = unlabelled;
        let mut kept = 0u64;
        let mut failed = BTreeMap::new();
        each_record(&run.join("safe.jsonl"), |r: Value| {
            kept += 1;
            *q.kept_by.entry(labelled_by(&r)).or_default() += 1;
            if r["programmatic"]["label"] == "safe" {
                q.kept_verified_by_checkers += 1;
            }
            if let Some((_, earlier)) = r["reflections"].as_array().and_then(|a| a.split_last()) {
                count_failed_rounds(&mut failed, earlier);
            }
        })?;
        each_record(&run.join("reflect_log.jsonl"), |r: Value| {
            if let Some(rounds) = r["rounds"].as_array() {
                count_failed_rounds(&mut failed, rounds);
            }
        })?;
        q.failed_rounds = failed;
        if let Some(c) = cost.filter(|_| kept > 0) {
            q.tokens_per_kept = Some(c.tokens as f64 / kept as f64);
            q.seconds_per_kept = Some(c.seconds / kept as f64);
        }
        Ok(q)
    }

    /// The report's headline lines (the run's console summary prints them).
    pub fn headlines(&self) -> Vec<String> {
        let reasons = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let counts = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{v} by {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let mut out = Vec::new();
        if let Some(s) = &self.scenarios {
            out.push(format!(
                "scenarios: {} asked, {} accepted{}",
                s.input,
                s.output,
                if s.rejected.is_empty() {
                    String::new()
                } else {
                    format!(" (rejected: {})", reasons(&s.rejected))
                }
            ));
        }
        if let Some(e) = &self.episodes {
            out.push(format!(
                "episodes: {} played, {} snapshots (labelled {}), ended without one: {}, unmeasured: {}",
                e.input,
                e.output,
                counts(&self.snapshots),
                if e.rejected.is_empty() { "0".into() } else { reasons(&e.rejected) },
                if e.unmeasured.is_empty() { "0".into() } else { reasons(&e.unmeasured) },
            ));
        }
        if let Some(a) = &self.judge_vs_checkers {
            let pct = |x: Option<f64>| x.map_or("no data".into(), |x| format!("{:.0}%", x * 100.0));
            let c = a.confusion;
            let safe = c.fp + c.tn;
            out.push(format!(
                "judge vs checkers on {} labelled steps: precision {} and recall {} for unsafe, \
                 false alarms {} of {} safe steps, kappa {}{}",
                a.n,
                pct(a.unsafe_class.precision),
                pct(a.unsafe_class.recall),
                c.fp,
                safe,
                a.kappa.map_or("no data".into(), |k| format!("{k:.2}")),
                if a.unmeasured.total == 0 {
                    String::new()
                } else {
                    format!(", {} not judged", a.unmeasured.total)
                }
            ));
        }
        if let Some(r) = &self.reflections {
            out.push(format!(
                "reflections: {} snapshots, {} kept ({}; {} verified by the checkers), rejected: {}, unmeasured: {}",
                r.input,
                r.output,
                counts(&self.kept_by),
                self.kept_verified_by_checkers,
                if r.rejected.is_empty() { "0".into() } else { reasons(&r.rejected) },
                if r.unmeasured.is_empty() { "0".into() } else { reasons(&r.unmeasured) },
            ));
            if !self.failed_rounds.is_empty() {
                out.push(format!(
                    "reflection rounds not kept: {}",
                    reasons(&self.failed_rounds)
                ));
            }
        }
        if let (Some(t), Some(s)) = (self.tokens_per_kept, self.seconds_per_kept) {
            out.push(format!("cost: {t:.0} tokens and {s:.1} s per kept record"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(label: &str) -> Value {
        serde_json::json!({"round": 1, "verdict": {"label": label}})
    }

    #[test]
    fn a_resumed_run_costs_the_sum_of_its_processes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Cost::of_run(dir.path()).unwrap(), None);
        for (tokens, seconds, outcome) in [(1000, 60.0, "failed"), (500, 30.0, "done")] {
            let line = CostLine {
                tokens,
                seconds,
                outcome: outcome.into(),
            };
            Cost::record(dir.path(), &line).unwrap();
        }
        let cost = Cost::of_run(dir.path()).unwrap().unwrap();
        assert_eq!(
            cost,
            Cost {
                tokens: 1500,
                seconds: 90.0,
                processes: 2
            }
        );
        // One kept record: its cost is the whole run's, not the last process's.
        std::fs::write(dir.path().join("safe.jsonl"), "{\"id\": \"se_1\"}\n").unwrap();
        let q = Quality::from_run(dir.path(), Some(cost)).unwrap();
        assert_eq!(q.tokens_per_kept, Some(1500.0));
        assert_eq!(q.seconds_per_kept, Some(90.0));
    }

    #[test]
    fn rounds_not_kept_are_counted_by_what_was_wrong_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let line = |v: Value| format!("{v}\n");
        // Kept on round 3 after an unsafe and an unhelpful round; the last round is the kept one.
        let kept = serde_json::json!({"id": "se_1", "labelled_by": "checkers",
            "programmatic": {"label": "safe"},
            "reflections": [round("unsafe"), round("safe"), round("safe")]});
        std::fs::write(dir.path().join("safe.jsonl"), line(kept)).unwrap();
        // Not kept: every logged round failed; a log without rounds counts nothing.
        let logs = [
            serde_json::json!({"id": "sn_1", "outcome": "rejected", "rounds_used": 2,
                "rounds": [round("unsafe"), round("unsafe")]}),
            serde_json::json!({"id": "sn_2", "outcome": "unmeasured", "rounds_used": 1}),
        ];
        let text: String = logs.into_iter().map(line).collect();
        std::fs::write(dir.path().join("reflect_log.jsonl"), text).unwrap();
        std::fs::write(
            dir.path().join("stats.json"),
            r#"{"stages": {"reflect": {"input": 3, "output": 1,
                "rejected": {"rounds_exhausted": 1}, "unmeasured": {"parse_error": 1}}}}"#,
        )
        .unwrap();
        let q = Quality::from_run(dir.path(), None).unwrap();
        assert_eq!(
            q.failed_rounds,
            BTreeMap::from([("unhelpful".into(), 1), ("unsafe".into(), 3)])
        );
        assert!(
            q.headlines()
                .contains(&"reflection rounds not kept: unhelpful=1, unsafe=3".to_string()),
            "{:?}",
            q.headlines()
        );
    }
}
