//! The trainer's Python environment: where it is, whether it has the packages, which versions.
//!
//! Default locations follow `scripts/env.sh`: `$AUTOSAFE_VENV_DIR`, else `$AUTOSAFE_HOME/venv`,
//! else `${XDG_CACHE_HOME:-~/.cache}/autosafe/venv`; the TRL backend uses `<that>/train`
//! (`./scripts/setup-python.sh train`), LLaMA-Factory `<that>/llamafactory`
//! (`./scripts/setup-python.sh llamafactory`). `--venv DIR` points at any other environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::spec::Backend;

/// `python/train_probe.py`: prints the versions of the packages it is given, as JSON.
pub(crate) const PROBE: &str = include_str!("../../../python/train_probe.py");

/// The packages each backend needs (import names are derived by the probe).
pub(crate) fn packages(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Trl => &[
            "torch",
            "transformers",
            "trl",
            "peft",
            "datasets",
            "accelerate",
        ],
        Backend::LlamaFactory => &["llamafactory", "torch", "transformers", "peft", "trl"],
    }
}

/// The `scripts/setup-python.sh` name of a backend's environment.
pub fn env_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Trl => "train",
        Backend::LlamaFactory => "llamafactory",
    }
}

/// The command that installs a backend's environment.
pub(crate) fn install_command(backend: Backend) -> String {
    format!("./scripts/setup-python.sh {}", env_name(backend))
}

/// The venv root: `$AUTOSAFE_VENV_DIR`, `$AUTOSAFE_HOME/venv`, or the XDG cache default.
pub fn venv_root() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("AUTOSAFE_VENV_DIR") {
        return PathBuf::from(d);
    }
    let home = var("AUTOSAFE_HOME").map(PathBuf::from).unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("autosafe")
    });
    home.join("venv")
}

/// The environment of `backend`: `explicit`, or the default under [`venv_root`].
pub fn venv_dir(backend: Backend, explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| venv_root().join(env_name(backend)))
}

/// Why a real training cannot run on this machine: the backend's default environment is
/// missing or broken (the error names the command that installs it), or `model` is not a
/// file; `None` when it can. The tests that train for real skip on it outside CI.
pub fn not_ready(backend: Backend, model: &Path) -> Option<String> {
    match probe(backend, &venv_dir(backend, None)) {
        Err(e) => Some(format!("no {} environment: {e}", backend.as_str())),
        Ok(_) if !model.is_file() => Some(format!("{} (run scripts/setup.sh)", model.display())),
        Ok(_) => None,
    }
}

/// Checks that `venv` has a Python with the backend's packages; returns their versions.
pub fn probe(backend: Backend, venv: &Path) -> Result<BTreeMap<String, String>> {
    let python = venv.join("bin").join("python");
    let install = install_command(backend);
    if !python.exists() {
        return Err(TrainError::Python {
            message: format!(
                "no Python environment for the {} backend: {} does not exist",
                backend.as_str(),
                python.display()
            ),
            install: format!(
                "{install}   (or pass --venv DIR of an environment that has {})",
                packages(backend).join(", ")
            ),
        });
    }
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(PROBE)
        .args(packages(backend))
        .output()
        .map_err(|e| TrainError::io(&python, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|_| TrainError::Python {
            message: format!(
                "{} could not run the package probe: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            install: install.clone(),
        })?;
    let missing: Vec<String> = parsed["missing"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if !missing.is_empty() {
        return Err(TrainError::Python {
            message: format!(
                "{} lacks the packages {} needed by the {} backend",
                venv.display(),
                missing.join(", "),
                backend.as_str()
            ),
            install,
        });
    }
    let mut versions: BTreeMap<String, String> = parsed["versions"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(py) = parsed["python"].as_str() {
        versions.insert("python".into(), py.to_string());
    }
    Ok(versions)
}
