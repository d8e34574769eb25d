//! Reports over one or more runs: `report.html` (self-contained, inline SVG plots, no
//! script, no network), `report.md` and `report.json`.

mod html;
mod markdown;
pub mod plots;
mod template;
mod view;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compare::{Comparison, compare};
use crate::error::EvalError;
use crate::result_files::RunResults;
use crate::summary::EvalSummary;

/// Everything a report shows; `report.json` is this, serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// One summary per run, in the order given.
    pub runs: Vec<EvalSummary>,
    /// Paired comparison (McNemar on shared snapshots) of the first run (before) with the
    /// second (after), when exactly two runs with snapshot results are given.
    pub comparison: Option<Comparison>,
}

/// Paths of the files a report was written to.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    /// The HTML report.
    pub html: PathBuf,
    /// The Markdown report.
    pub markdown: PathBuf,
    /// The JSON report.
    pub json: PathBuf,
}

impl Report {
    /// Build a report from loaded runs.
    pub fn build(runs: &[RunResults]) -> Report {
        let comparison = match runs {
            [a, b] if !a.snapshots.is_empty() && !b.snapshots.is_empty() => {
                Some(compare(&a.name, &a.snapshots, &b.name, &b.snapshots))
            }
            _ => None,
        };
        Report {
            runs: runs.iter().map(RunResults::summary).collect(),
            comparison,
        }
    }

    /// The report as pretty JSON.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// The report as Markdown.
    pub(crate) fn to_markdown(&self) -> Result<String, EvalError> {
        markdown::render(self)
    }

    /// The report as one self-contained HTML page with inline SVG plots.
    pub(crate) fn to_html(&self) -> Result<String, EvalError> {
        html::render(self)
    }

    /// Write `html_path` and, beside it with the same stem, `.md` and `.json`.
    pub fn write(&self, html_path: &Path) -> Result<ReportFiles, EvalError> {
        let files = ReportFiles {
            html: html_path.to_path_buf(),
            markdown: html_path.with_extension("md"),
            json: html_path.with_extension("json"),
        };
        let put = |p: &Path, s: String| {
            std::fs::write(p, s).map_err(|source| EvalError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        put(&files.html, self.to_html()?)?;
        put(&files.markdown, self.to_markdown()?)?;
        put(&files.json, self.to_json() + "\n")?;
        Ok(files)
    }
}
