//! `RUN/train/<name>/manifest.json`: what was trained, from what, with which trainer, and where
//! the results are. Written before the trainer starts (status `running`), again when it ends
//! (`finished` or `failed`), and by `--dry-run` (status `prepared`).

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
    /// `prepared`, `running`, `finished` or `failed`.
    pub status: String,
    /// The failing step and its exit status, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// Writes it atomically, the values of secret-looking `--set` keys (`hub_token`, `*_key`,
    /// `*secret*`, `*password*`: [`autosafe_pipeline::rundir::is_secret_key`]) masked wherever
    /// they appear (the extras, the config's content, the command lines). The trainer's own
    /// config file keeps them: the trainer needs them.
    pub fn write(&self, path: &Path) -> Result<()> {
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
        text.push('\n');
        autosafe_pipeline::rundir::write_bytes_atomic(path, text.as_bytes())
            .map_err(|e| TrainError::Pipeline(e.to_string()))
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
