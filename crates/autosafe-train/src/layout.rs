//! Where a training's files go: `RUN/train/<name>/`.
//!
//! ```text
//! RUN/train/<name>/
//!   data/<format>/         the exported data (+ dataset_info.json), data/records.jsonl, dataset card
//!   llamafactory.yaml      LLaMA-Factory training config      (backend llamafactory)
//!   llamafactory_merge.yaml  LLaMA-Factory `export` config    (with --merge)
//!   trl_config.json        config of train_trl.py             (backend trl)
//!   train_trl.py, train_trl.schema.json   the script and the schema it checks its config against
//!   output/                adapter (LoRA) or weights (full), checkpoints
//!   merged/                base + adapter merged (with --merge)
//!   train.log              everything the trainer printed
//!   manifest.json          base, configs, command, paths, trainer versions, status
//! ```

use std::path::{Path, PathBuf};

use autosafe_pipeline::export::ExportFormat;

/// Paths of one training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainLayout {
    dir: PathBuf,
}

impl TrainLayout {
    /// The layout of training `name` in `run`.
    pub fn new(run: &Path, name: &str) -> Self {
        TrainLayout {
            dir: run.join("train").join(name),
        }
    }

    /// `RUN/train/<name>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Export output directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory of one data layout (LLaMA-Factory `dataset_dir`).
    pub fn dataset_dir(&self, format: ExportFormat) -> PathBuf {
        self.data_dir().join(format.as_str())
    }

    /// The data file of one layout.
    pub fn data_file(&self, format: ExportFormat) -> PathBuf {
        self.dataset_dir(format).join(format.data_file())
    }

    /// LLaMA-Factory training config.
    pub(crate) fn llamafactory_config(&self) -> PathBuf {
        self.dir.join("llamafactory.yaml")
    }

    /// LLaMA-Factory merge (`export`) config.
    pub fn llamafactory_merge_config(&self) -> PathBuf {
        self.dir.join("llamafactory_merge.yaml")
    }

    /// TRL script config.
    pub fn trl_config(&self) -> PathBuf {
        self.dir.join("trl_config.json")
    }

    /// The copy of `python/train_trl.py` that runs.
    pub fn trl_script(&self) -> PathBuf {
        self.dir.join("train_trl.py")
    }

    /// The copy of `python/train_trl.schema.json` next to the script.
    pub fn trl_schema(&self) -> PathBuf {
        self.dir.join("train_trl.schema.json")
    }

    /// Adapter (LoRA) or full weights, and checkpoints.
    pub fn output_dir(&self) -> PathBuf {
        self.dir.join("output")
    }

    /// The merged model.
    pub fn merged_dir(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// The trainer's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("train.log")
    }

    /// The training manifest.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }
}
