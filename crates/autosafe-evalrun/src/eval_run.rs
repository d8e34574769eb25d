//! The run directory of an evaluation: the pipeline's layout (`manifest.json`, `stats.json`)
//! with the results under `RUN/eval/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autosafe_eval::result_files::EVAL_DIR;
use autosafe_pipeline::prompts::Prompts;
use autosafe_pipeline::rundir::redact_secrets;
use autosafe_pipeline::{Manifest, ModelSpec, RunDir, StageStats};
use serde_json::Value;

use crate::error::{EvalRunError, Result};

/// A run directory being evaluated into.
#[derive(Debug, Clone)]
pub struct EvalRun {
    run: RunDir,
}

impl EvalRun {
    /// Creates (or reopens) the run directory `root` and its `eval/` sub-directory.
    pub fn at(root: impl Into<PathBuf>) -> Result<EvalRun> {
        let run = RunDir::at(root)?;
        let eval = run.path().join(EVAL_DIR);
        std::fs::create_dir_all(&eval)
            .map_err(|e| autosafe_pipeline::PipelineError::io(&eval, e))?;
        Ok(EvalRun { run })
    }

    /// The run directory.
    pub fn path(&self) -> &Path {
        self.run.path()
    }

    /// The pipeline's view of it.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// `RUN/eval/<file>`.
    pub fn eval_file(&self, file: &str) -> PathBuf {
        self.run.path().join(EVAL_DIR).join(file)
    }

    /// Stores one runner's counts in `stats.json` under `stage` (e.g. `eval_snapshots`),
    /// keeping the other stages' counts.
    pub fn record_stats(&self, stage: &str, stats: &StageStats) -> Result<()> {
        let mut all = self.run.read_stats()?;
        all.stages.insert(stage.to_string(), stats.clone());
        self.run.write_stats(&all)?;
        Ok(())
    }

    /// Writes (or updates) `manifest.json`: the runner's settings under `config.eval.<runner>`,
    /// the prompt hashes, and the models by role (no keys). `source_dir` is where the git
    /// revision is read.
    pub fn write_manifest(
        &self,
        runner: &str,
        settings: Value,
        prompts: &Prompts,
        models: BTreeMap<String, ModelSpec>,
        source_dir: &Path,
    ) -> Result<()> {
        let name = self
            .run
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut m = if self.run.manifest_path().exists() {
            self.run.read_manifest()?
        } else {
            Manifest::new(
                &name,
                env!("CARGO_PKG_VERSION"),
                serde_json::json!({}),
                source_dir,
            )
        };
        if !m.config.is_object() {
            m.config = serde_json::json!({});
        }
        let config = m.config.as_object_mut().expect("an object");
        let eval = config
            .entry("eval")
            .or_insert_with(|| serde_json::json!({}));
        if !eval.is_object() {
            *eval = serde_json::json!({});
        }
        eval.as_object_mut()
            .expect("an object")
            .insert(runner.to_string(), redact_secrets(settings));
        m.prompt_hashes.extend(prompts.hashes());
        m.models.extend(models);
        self.run.write_manifest(&m)?;
        Ok(())
    }
}

/// Checks that `value` is at least 1.
pub(crate) fn at_least_one(name: &str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(EvalRunError::Config(format!("{name} must be at least 1")));
    }
    Ok(())
}
