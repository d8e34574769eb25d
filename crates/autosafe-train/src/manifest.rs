//! `RUN/train/<name>/manifest.json`: what was trained, from what, with which trainer, and where
//! the results are. Written before the trainer starts (status `running`), again when it ends
//! (`finished` or `failed`), and by `--dry-run` (status `prepared`). The status and the failing
//! step are typed so that the resume decision reads them rather than parsing text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, TrainError};
use crate::spec::TrainSpec;

/// The exported data a training read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainData {
    /// The data file.
    pub file: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Records.
    pub records: u64,
    /// Reflected (safety) records.
    pub reflected: u64,
    /// Mixed-in original safe steps.
    pub original_safe_steps: u64,
    /// Records not exported, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Preference pairs in the data file (`--method dpo`), by who labelled the rejected side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<autosafe_pipeline::export::PairReport>,
}

/// Where the results are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutputs {
    /// The LoRA adapter (method lora) or the full weights (method full).
    pub output_dir: PathBuf,
    /// Base + adapter merged (with `--merge`).
    pub merged_dir: Option<PathBuf>,
    /// The merged model as GGUF (with `--gguf`), loadable as `local:PATH`.
    pub gguf: Option<PathBuf>,
}

/// Where a training stands, as `status` in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainStatus {
    /// Data and configs written, nothing started (`--dry-run`).
    Prepared,
    /// The trainer's environment checked and its steps under way (or killed midway).
    Running,
    /// Every step ended well.
    Finished,
    /// A step failed: [`TrainManifest::error`] says which.
    Failed,
}

/// A step of a training, in the order they run (the derived order is that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The trainer.
    Train,
    /// Base + adapter merged.
    Merge,
    /// The merged model written as GGUF.
    Gguf,
    /// The base written as GGUF at the same precision.
    GgufBase,
}

impl Step {
    /// Every step, in run order.
    pub const ALL: [Step; 4] = [Step::Train, Step::Merge, Step::Gguf, Step::GgufBase];

    /// Its name in the manifest (`commands`, `seconds`, events) and on the console.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Train => "train",
            Step::Merge => "merge",
            Step::Gguf => "gguf",
            Step::GgufBase => "gguf_base",
        }
    }
}

impl std::str::FromStr for Step {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Step, String> {
        Step::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown training step `{s}`"))
    }
}

/// The step that failed and its exit code (`None`: killed by a signal). Written as the text
/// `STEP: Some(CODE)` or `STEP: None`, as manifests always held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct StepFailure {
    /// The step.
    pub step: Step,
    /// Its exit code.
    pub code: Option<i32>,
}

impl From<StepFailure> for String {
    fn from(f: StepFailure) -> String {
        format!("{}: {:?}", f.step.as_str(), f.code)
    }
}

impl TryFrom<String> for StepFailure {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<StepFailure, String> {
        let bad =
            || format!("training error `{text}`: expected `STEP: Some(CODE)` or `STEP: None`");
        let (step, code) = text.split_once(": ").ok_or_else(bad)?;
        let code = match code {
            "None" => None,
            c => Some(
                c.strip_prefix("Some(")
                    .and_then(|c| c.strip_suffix(')'))
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(bad)?,
            ),
        };
        Ok(StepFailure {
            step: step.parse()?,
            code,
        })
    }
}

/// The training manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainManifest {
    /// Manifest format version.
    pub format_version: u32,
    /// The job as asked (backend, method, base, format, template, GPUs, hyperparameters, extras).
    pub spec: TrainSpec,
    /// The trainer config file.
    pub config_path: PathBuf,
    /// Its content (JSON for TRL; the YAML text for LLaMA-Factory).
    pub config: Value,
    /// Command lines as run (shell syntax).
    pub commands: BTreeMap<String, String>,
    /// The data.
    pub data: TrainData,
    /// Results.
    pub outputs: TrainOutputs,
    /// Python and package versions of the trainer's environment (empty for `--dry-run`).
    pub trainer_versions: BTreeMap<String, String>,
    /// Where the training stands.
    pub status: TrainStatus,
    /// The failing step and its exit status, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepFailure>,
    /// Version of the `autosafe` tool.
    pub tool_version: String,
    /// `git rev-parse HEAD` of the source tree, when available.
    pub git_revision: Option<String>,
    /// Seconds since the Unix epoch at start.
    pub started_unix: u64,
    /// Seconds of each step that ran (`train`, `merge`, `gguf`).
    pub seconds: BTreeMap<String, f64>,
    /// `autosafe:` events the TRL script printed (loss mask, trained steps and loss, paths).
    pub events: Vec<Value>,
}

impl TrainManifest {
    /// Writes it atomically, masked ([`TrainManifest::masked`]).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = self.masked_text(path)?;
        text.push('\n');
        autosafe_pipeline::rundir::write_bytes_atomic(path, text.as_bytes())
            .map_err(|e| TrainError::Pipeline(e.to_string()))
    }

    /// It as written: the values of secret-looking `--set` keys (`hub_token`, `*_key`,
    /// `*secret*`, `*password*`: [`autosafe_pipeline::rundir::is_secret_key`]) masked wherever
    /// they appear (the extras, the config's content, the command lines). The trainer's own
    /// config file keeps them: the trainer needs them. An earlier attempt read back is compared
    /// with this, so a training with secrets resumes like any other.
    pub fn masked(&self) -> Result<TrainManifest> {
        let text = self.masked_text(Path::new("manifest.json"))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Json(format!("masked manifest: {e}")))
    }

    /// The masked JSON text; `path` names the file in errors.
    fn masked_text(&self, path: &Path) -> Result<String> {
        use autosafe_pipeline::rundir::{MASK, is_secret_key};
        let mut shown = self.clone();
        let mut secrets = Vec::new();
        for (k, v) in &mut shown.spec.extra {
            if is_secret_key(k) {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                secrets.push(text);
                *v = Value::String(MASK.into());
            }
        }
        let mut text = serde_json::to_string_pretty(&shown)
            .map_err(|e| TrainError::Json(format!("{}: {e}", path.display())))?;
        // Values too short to mask safely everywhere are still masked in the extras above.
        for s in secrets.iter().filter(|s| s.len() >= 4) {
            text = text.replace(s.as_str(), MASK);
        }
        Ok(text)
    }

    /// Reads one.
    pub fn read(path: &Path) -> Result<TrainManifest> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| TrainError::Json(format!("{}: {e}", path.display())))
    }
}

/// SHA-256 of a file, in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| TrainError::io(path, e))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_written_as_the_same_lowercase_words() {
        for (status, text) in [
            (TrainStatus::Prepared, "\"prepared\""),
            (TrainStatus::Running, "\"running\""),
            (TrainStatus::Finished, "\"finished\""),
            (TrainStatus::Failed, "\"failed\""),
        ] {
            assert_eq!(serde_json::to_string(&status).unwrap(), text);
            assert_eq!(serde_json::from_str::<TrainStatus>(text).unwrap(), status);
        }
        assert!(serde_json::from_str::<TrainStatus>("\"done\"").is_err());
    }

    #[test]
    fn a_failure_is_written_as_step_and_debug_exit_code_and_read_back() {
        for (failure, text) in [
            (
                StepFailure {
                    step: Step::Train,
                    code: Some(1),
                },
                "\"train: Some(1)\"",
            ),
            (
                StepFailure {
                    step: Step::Merge,
                    code: None,
                },
                "\"merge: None\"",
            ),
            (
                StepFailure {
                    step: Step::GgufBase,
                    code: Some(-9),
                },
                "\"gguf_base: Some(-9)\"",
            ),
        ] {
            assert_eq!(serde_json::to_string(&failure).unwrap(), text);
            assert_eq!(serde_json::from_str::<StepFailure>(text).unwrap(), failure);
        }
        for bad in [
            "\"train\"",
            "\"fit: None\"",
            "\"train: 1\"",
            "\"train: Some(x)\"",
        ] {
            assert!(serde_json::from_str::<StepFailure>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn steps_order_as_they_run_and_name_as_before() {
        let names: Vec<&str> = Step::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["train", "merge", "gguf", "gguf_base"]);
        assert!(Step::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!("gguf_base".parse::<Step>(), Ok(Step::GgufBase));
    }
}
