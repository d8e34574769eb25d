//! Evaluation results inside a run directory: `RUN/eval/snapshots.jsonl`,
//! `RUN/eval/toolemu.jsonl`, `RUN/eval/judge.jsonl` (each optional, at least one present).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::EvalError;
use crate::jsonl::read_jsonl;
use crate::records::{JudgePair, SnapshotEval, ToolEmuEpisode};
use crate::summary::EvalSummary;

/// Sub-directory of a run directory holding evaluation results.
pub const EVAL_DIR: &str = "eval";
/// Per-snapshot evaluation items ([`SnapshotEval`]).
pub const SNAPSHOTS_FILE: &str = "snapshots.jsonl";
/// ToolEmu full-episode results ([`ToolEmuEpisode`]).
pub const TOOLEMU_FILE: &str = "toolemu.jsonl";
/// Judge-agreement pairs ([`JudgePair`]).
pub const JUDGE_FILE: &str = "judge.jsonl";

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
}

impl RunResults {
    /// Load a run from `RUN` (reading `RUN/eval/*.jsonl`, or `RUN/*.jsonl` when `RUN` has no
    /// `eval/`). Errors on unreadable or malformed files, duplicate snapshot ids, and a run with
    /// none of the files.
    pub fn load(run: &Path) -> Result<RunResults, EvalError> {
        let eval = run.join(EVAL_DIR);
        let dir = if eval.is_dir() {
            eval
        } else {
            run.to_path_buf()
        };
        let files = [SNAPSHOTS_FILE, TOOLEMU_FILE, JUDGE_FILE];
        if !files.iter().any(|f| dir.join(f).is_file()) {
            return Err(EvalError::EmptyRun {
                path: run.to_path_buf(),
                expected: files
                    .iter()
                    .map(|f| format!("{EVAL_DIR}/{f}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let opt = |f: &str| -> Option<PathBuf> { Some(dir.join(f)).filter(|p| p.is_file()) };
        let snapshots: Vec<SnapshotEval> = opt(SNAPSHOTS_FILE)
            .map(|p| read_jsonl(&p))
            .transpose()?
            .unwrap_or_default();
        if let Some(p) = opt(SNAPSHOTS_FILE) {
            check_unique(&p, &snapshots)?;
        }
        let name = std::fs::canonicalize(run)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| run.display().to_string());
        Ok(RunResults {
            name,
            snapshots,
            toolemu: opt(TOOLEMU_FILE)
                .map(|p| read_jsonl(&p))
                .transpose()?
                .unwrap_or_default(),
            judge: opt(JUDGE_FILE)
                .map(|p| read_jsonl(&p))
                .transpose()?
                .unwrap_or_default(),
            dir,
        })
    }

    /// The summary of this run.
    pub fn summary(&self) -> EvalSummary {
        EvalSummary::new(&self.name, &self.snapshots, &self.toolemu, &self.judge)
    }
}

fn check_unique(path: &Path, items: &[SnapshotEval]) -> Result<(), EvalError> {
    let mut seen = HashSet::new();
    // Blank lines are skipped when parsing; count only non-blank lines to report the right one.
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
        if !seen.insert(s.snapshot_id.as_str()) {
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
