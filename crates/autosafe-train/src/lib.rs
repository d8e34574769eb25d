//! Fine-tuning through existing trainers (SPEC §2 step 5): AutoSafe drives LLaMA-Factory or TRL,
//! it does not train models itself.
//!
//! `autosafe train --data RUN --base MODEL --backend llamafactory|trl` goes through these steps:
//!
//! 1. [`prepare`] exports the run's D_safe (+ utility steps) with the pipeline exporter, in the
//!    layout the trainer reads. It then writes the trainer's config: LLaMA-Factory YAML next to
//!    the `dataset_info.json` entry ([`llamafactory`]), or the JSON config of
//!    `python/train_trl.py` ([`trl`]). It also builds the command line, through the trainer's own
//!    launcher when there are several GPUs ([`command`]).
//! 2. [`python::probe`] checks the trainer's Python environment. If it is missing, the error
//!    names the command that installs it.
//! 3. [`launch::run`] starts the trainer as a child process, streams its lines and keeps a log.
//! 4. [`manifest::TrainManifest`] records the base model, configs, command, output paths and
//!    trainer versions in `RUN/train/<name>/manifest.json`.
//!
//! Nothing in this crate needs Python to build or test: the configs are plain text and JSON.

pub mod command;
pub mod error;
pub mod launch;
pub mod layout;
pub mod llamafactory;
pub mod manifest;
pub mod python;
pub mod smoke;
pub mod spec;
pub mod split;
pub mod trl;

pub use command::Launch;
pub use error::{Result, TrainError};
pub use layout::TrainLayout;
pub use manifest::{Step, StepFailure, TrainManifest, TrainStatus};
pub use spec::{Backend, DataFormat, Hyper, Method, TrainSpec};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autosafe_ots::ToolLibrary;
use autosafe_pipeline::export::{ExportConfig, ExportInputs, ExportReport, ToolkitLibrary};
use autosafe_pipeline::prompts::Prompts;

/// What [`prepare`] wrote and will run.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Where everything of this training goes.
    pub layout: TrainLayout,
    /// The export of the run's data (records, files).
    pub export: ExportReport,
    /// The trainer config file written (YAML or JSON).
    pub config_path: PathBuf,
    /// Its text.
    pub config_text: String,
    /// The training command.
    pub train: Launch,
    /// The merge command, when the backend merges in a separate step (LLaMA-Factory `export`).
    pub merge: Option<Launch>,
    /// Extra files written (dataset_info.json, merge config, the TRL script copy).
    pub files: Vec<PathBuf>,
}

/// Exports the run's data for `spec`'s backend, writes the trainer config and builds the
/// command lines. Runs nothing.
pub fn prepare(spec: &TrainSpec, prompts: &Prompts) -> Result<Prepared> {
    spec.validate()?;
    let layout = TrainLayout::new(&spec.run, &spec.name);
    std::fs::create_dir_all(layout.dir()).map_err(|e| TrainError::io(layout.dir(), e))?;
    let export = export_data(spec, &layout, prompts)?;
    if let Some(p) = export.pairs.as_ref().filter(|p| p.pairs == 0) {
        return Err(TrainError::NoData {
            run: spec.run.clone(),
            detail: format!(
                "the export made no preference pair ({} confirmed unsafe snapshots without a kept \
                 safe action, {} judge-labelled where checkers exist)",
                p.snapshots_without_safe_action, p.unconfirmed_label
            ),
        });
    }
    if export.records == 0 {
        return Err(TrainError::NoData {
            run: spec.run.clone(),
            detail: format!(
                "the export kept no record (rejected: {:?})",
                export.rejected
            ),
        });
    }
    let venv = python::venv_dir(spec.backend, spec.venv.as_deref());
    let mut files = Vec::new();
    let (config_path, config_text, train, merge) = match spec.backend {
        Backend::LlamaFactory => {
            let yaml = llamafactory::train_yaml(spec, &layout)?;
            let path = layout.llamafactory_config();
            write(&path, &yaml)?;
            let merge = if spec.method.adapter() && spec.merge {
                let m = llamafactory::merge_yaml(spec, &layout)?;
                let mp = layout.llamafactory_merge_config();
                write(&mp, &m)?;
                files.push(mp.clone());
                Some(command::llamafactory_export(&venv, &mp))
            } else {
                None
            };
            files.push(
                layout
                    .dataset_dir(spec.export_format())
                    .join("dataset_info.json"),
            );
            let cmd = command::llamafactory_train(&venv, &path, spec.gpus);
            (path, yaml, cmd, merge)
        }
        Backend::Trl => {
            let cfg = trl::config(spec, &layout)?;
            let text = serde_json::to_string_pretty(&cfg).map_err(TrainError::json)? + "\n";
            let path = layout.trl_config();
            write(&path, &text)?;
            let script = layout.trl_script();
            write(&script, trl::SCRIPT)?;
            write(&layout.trl_schema(), trl::SCHEMA)?;
            files.push(script.clone());
            files.push(layout.trl_schema());
            let cmd = command::trl_train(&venv, &script, &path, spec.gpus);
            (path, text, cmd, None)
        }
    };
    Ok(Prepared {
        layout,
        export,
        config_path,
        config_text,
        train,
        merge,
        files,
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    autosafe_pipeline::rundir::write_bytes_atomic(path, text.as_bytes())
        .map_err(|e| TrainError::Pipeline(e.to_string()))
}

/// Exports `RUN/safe.jsonl` (+ `utility.jsonl`) into `RUN/train/<name>/data/<format>/`.
fn export_data(spec: &TrainSpec, layout: &TrainLayout, prompts: &Prompts) -> Result<ExportReport> {
    let safe = spec.run.join("safe.jsonl");
    if !safe.exists() {
        return Err(TrainError::NoData {
            run: spec.run.clone(),
            detail: "no safe.jsonl (run `autosafe reflect` first, or `autosafe merge` the shards)"
                .into(),
        });
    }
    let utility = spec.run.join("utility.jsonl");
    let snapshots = spec.run.join("snapshots.jsonl");
    let cfg = ExportConfig {
        formats: vec![spec.export_format()],
        utility_share: spec.utility_share,
        dataset_name: spec.dataset_name.clone(),
        ..Default::default()
    };
    let lib = ToolkitLibrary::new(ToolLibrary::shipped().toolkits().cloned());
    let (report, _card) = autosafe_pipeline::export::export(
        ExportInputs {
            safe: &safe,
            utility: utility.exists().then_some(utility.as_path()),
            snapshots: snapshots.exists().then_some(snapshots.as_path()),
        },
        &layout.data_dir(),
        &lib,
        prompts,
        &cfg,
        &BTreeMap::new(),
    )
    .map_err(|e| TrainError::Pipeline(e.to_string()))?;
    Ok(report)
}
