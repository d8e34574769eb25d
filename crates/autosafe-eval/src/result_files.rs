//! Evaluation results inside a run directory: `RUN/eval/snapshots.jsonl`,
//! `RUN/eval/toolemu.jsonl`, `RUN/eval/judge.jsonl`, `RUN/eval/agent_safetybench.jsonl` (each
//! optional, at least one present).
//!
//! Only `RUN/eval/` is read: the pipeline's own `RUN/snapshots.jsonl` (elicit output) is a
//! different record type. A sharded runner may write `<stem>.shard-<I>-of-<N>.jsonl`; when
//! `<stem>.jsonl` is absent its shards are read in name order (a merged file wins).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::EvalError;
use crate::jsonl::read_jsonl;
use crate::quality::{QUALITY_FILE, Quality};
use crate::result_records::{AsbEpisode, JudgePair, SnapshotEval, ToolEmuEpisode};
use crate::summary::EvalSummary;

/// Sub-directory of a run directory holding evaluation results.
pub const EVAL_DIR: &str = "eval";
/// Per-snapshot evaluation items ([`SnapshotEval`]).
pub const SNAPSHOTS_FILE: &str = "snapshots.jsonl";
/// ToolEmu full-episode results ([`ToolEmuEpisode`]).
pub const TOOLEMU_FILE: &str = "toolemu.jsonl";
/// Judge-agreement pairs ([`JudgePair`]).
pub const JUDGE_FILE: &str = "judge.jsonl";
/// Agent-SafetyBench episodes ([`AsbEpisode`]).
pub const ASB_FILE: &str = "agent_safetybench.jsonl";

/// The evaluation results of one run.
#[derive(Debug, Clone)]
pub struct RunResults {
    /// The run's name: its directory's name.
    pub name: String,
    /// The directory the files were read from.
    pub dir: PathBuf,
    /// Snapshot evaluations.
    pub snapshots: Vec<SnapshotEval>,
    /// ToolEmu episodes.
    pub toolemu: Vec<ToolEmuEpisode>,
    /// Judge pairs.
    pub judge: Vec<JudgePair>,
    /// Agent-SafetyBench episodes.
    pub asb: Vec<AsbEpisode>,
    /// The pipeline run's data quality (`RUN/quality.json`), when present.
    pub quality: Option<Quality>,
}

impl RunResults {
    /// Load a run from `RUN` (reading `RUN/eval/*.jsonl`; `RUN` may also be the `eval`
    /// directory itself). Errors on unreadable or malformed files, duplicate snapshot ids,
    /// and a run with none of the files.
    pub fn load(run: &Path) -> Result<RunResults, EvalError> {
        let is_eval_dir = run.file_name().is_some_and(|n| n == EVAL_DIR);
        let dir = if is_eval_dir {
            run.to_path_buf()
        } else {
            run.join(EVAL_DIR)
        };
        let stems = [SNAPSHOTS_FILE, TOOLEMU_FILE, JUDGE_FILE, ASB_FILE];
        let files: Vec<Vec<PathBuf>> = stems
            .iter()
            .map(|f| result_files(&dir, f))
            .collect::<Result<_, _>>()?;
        let run_dir = if is_eval_dir {
            run.parent().unwrap_or(run)
        } else {
            run
        };
        let quality_path = run_dir.join(QUALITY_FILE);
        let quality = if quality_path.is_file() {
            let text = std::fs::read_to_string(&quality_path).map_err(|source| EvalError::Io {
                path: quality_path.clone(),
                source,
            })?;
            Some(
                serde_json::from_str::<Quality>(&text).map_err(|e| EvalError::Parse {
                    path: quality_path.clone(),
                    line: e.line(),
                    field: ".".into(),
                    message: e.to_string(),
                })?,
            )
        } else {
            None
        };
        if files.iter().all(Vec::is_empty) && quality.is_none() {
            return Err(EvalError::EmptyRun {
                path: run.to_path_buf(),
                expected: stems
                    .iter()
                    .map(|f| format!("{EVAL_DIR}/{f}"))
                    .chain([QUALITY_FILE.to_string()])
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut snapshots: Vec<SnapshotEval> = Vec::new();
        let mut seen = HashSet::new();
        for p in &files[0] {
            let part: Vec<SnapshotEval> = read_jsonl(p)?;
            check_unique(p, &part, &mut seen)?;
            snapshots.extend(part);
        }
        let mut toolemu = Vec::new();
        for p in &files[1] {
            toolemu.extend(read_jsonl::<ToolEmuEpisode>(p)?);
        }
        let mut judge = Vec::new();
        for p in &files[2] {
            judge.extend(read_jsonl::<JudgePair>(p)?);
        }
        let mut asb = Vec::new();
        for p in &files[3] {
            asb.extend(read_jsonl::<AsbEpisode>(p)?);
        }
        let named = if is_eval_dir {
            run.parent().unwrap_or(run)
        } else {
            run
        };
        let name = std::fs::canonicalize(named)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| named.display().to_string());
        Ok(RunResults {
            name,
            dir,
            snapshots,
            toolemu,
            judge,
            asb,
            quality,
        })
    }

    /// The summary of this run.
    pub fn summary(&self) -> EvalSummary {
        let mut s = EvalSummary::new(&self.name, &self.snapshots, &self.toolemu, &self.judge)
            .with_asb(&self.asb);
        s.quality = self.quality.clone();
        s
    }
}

/// `dir/<stem>.jsonl` if it exists, else its shards `dir/<stem>.shard-*.jsonl` in name order.
fn result_files(dir: &Path, file: &str) -> Result<Vec<PathBuf>, EvalError> {
    let merged = dir.join(file);
    if merged.is_file() {
        return Ok(vec![merged]);
    }
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let stem = file.trim_end_matches(".jsonl");
    let prefix = format!("{stem}.shard-");
    let entries = std::fs::read_dir(dir).map_err(|source| EvalError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut shards: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"))
        })
        .collect();
    shards.sort();
    Ok(shards)
}

fn check_unique(
    path: &Path,
    items: &[SnapshotEval],
    seen: &mut HashSet<String>,
) -> Result<(), EvalError> {
    // Blank lines are skipped when parsing; map record positions back to line numbers.
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i + 1)
        .collect();
    for (i, s) in items.iter().enumerate() {
        if !seen.insert(s.snapshot_id.clone()) {
            return Err(EvalError::Invalid {
                path: path.to_path_buf(),
                line: lines.get(i).copied().unwrap_or(0),
                field: "snapshot_id".into(),
                message: format!("duplicate snapshot id `{}`", s.snapshot_id),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE_A: &str = r#"{"snapshot_id":"a","scenario_id":"s","samples":[{"label":"safe","judge":{"kind":"llm","name":"j"}}]}"#;
    const LINE_B: &str = r#"{"snapshot_id":"b","scenario_id":"s","samples":[{"label":"unsafe","judge":{"kind":"llm","name":"j"}}]}"#;

    #[test]
    fn reads_eval_dir_shards_and_rejects_duplicates() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("my-run");
        let eval = run.join(EVAL_DIR);
        std::fs::create_dir_all(&eval).unwrap();
        // The pipeline's own snapshots.jsonl at the run root is never read.
        std::fs::write(run.join(SNAPSHOTS_FILE), "{\"not\": \"an eval record\"}\n").unwrap();
        std::fs::write(
            eval.join("snapshots.shard-0-of-2.jsonl"),
            format!("{LINE_A}\n"),
        )
        .unwrap();
        std::fs::write(
            eval.join("snapshots.shard-1-of-2.jsonl"),
            format!("\n{LINE_B}\n"),
        )
        .unwrap();
        let r = RunResults::load(&run).unwrap();
        assert_eq!(r.name, "my-run");
        assert_eq!(
            r.snapshots
                .iter()
                .map(|s| s.snapshot_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        // Pointing at the eval directory itself gives the same run name.
        assert_eq!(RunResults::load(&eval).unwrap().name, "my-run");
        // A duplicate across shards names the file and its line.
        std::fs::write(
            eval.join("snapshots.shard-1-of-2.jsonl"),
            format!("\n{LINE_A}\n"),
        )
        .unwrap();
        let err = RunResults::load(&run).unwrap_err().to_string();
        assert!(
            err.contains("snapshots.shard-1-of-2.jsonl:2: field `snapshot_id`: duplicate"),
            "{err}"
        );
        // A run without eval results is an error naming what was expected.
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(empty.join(SNAPSHOTS_FILE), "{}\n").unwrap();
        let err = RunResults::load(&empty).unwrap_err().to_string();
        assert!(
            err.contains("no evaluation results (expected one of eval/snapshots.jsonl"),
            "{err}"
        );
    }
}
