//! Where models live: `local:` specs, aliases and the model directory.

use crate::error::EngineError;
use std::path::{Path, PathBuf};

/// A built-in model alias: `local:<alias>` resolves to `<model dir>/<file>`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Alias {
    /// The alias name, as written after `local:`.
    pub name: &'static str,
    /// File name inside the model directory.
    pub file: &'static str,
    /// What it is.
    pub description: &'static str,
}

/// The aliases this build knows; `./scripts/fetch-model.sh` fetches each one (size and SHA-256
/// checked) and `scripts/setup.sh` runs it.
pub(crate) const ALIASES: &[Alias] = &[
    Alias {
        name: "qwen2.5-coder-1.5b",
        file: "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (the default of `autosafe run`)",
    },
    Alias {
        name: "qwen2.5-coder-0.5b",
        file: "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (a small student for training)",
    },
    Alias {
        name: "smollm2",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        description: "SmolLM2-135M-Instruct, Q4_1 (plumbing and fast tests only)",
    },
];

/// `$AUTOSAFE_HOME`, else `${XDG_CACHE_HOME:-~/.cache}/autosafe` (as `scripts/env.sh`).
pub fn autosafe_home() -> PathBuf {
    if let Some(home) = std::env::var_os("AUTOSAFE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("autosafe")
}

/// The directory holding aliased models: `$AUTOSAFE_HOME/models`.
pub(crate) fn model_dir() -> PathBuf {
    autosafe_home().join("models")
}

/// Resolves a model spec (`local:smollm2`, `local:/path/to/x.gguf`, or a bare alias/path)
/// to a file path. Does not check that the file exists.
pub fn resolve_spec(spec: &str) -> Result<PathBuf, EngineError> {
    let rest = spec.strip_prefix("local:").unwrap_or(spec);
    if rest.is_empty() {
        return Err(EngineError::BadSpec {
            spec: spec.into(),
            reason: "empty model name".into(),
        });
    }
    if let Some(alias) = ALIASES.iter().find(|a| a.name == rest) {
        return Ok(model_dir().join(alias.file));
    }
    if rest.ends_with(".gguf") || rest.contains('/') {
        return Ok(PathBuf::from(rest));
    }
    let known: Vec<&str> = ALIASES.iter().map(|a| a.name).collect();
    Err(EngineError::BadSpec {
        spec: spec.into(),
        reason: format!(
            "unknown alias (known: {}; or give a path to a .gguf file)",
            known.join(", ")
        ),
    })
}

/// Checks that `path` exists and starts with the GGUF magic, so a missing or wrong file gets a
/// clear error before llama.cpp sees it.
pub(crate) fn check_model_file(path: &Path) -> Result<(), EngineError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::ModelMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(EngineError::ModelCorrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        return Err(EngineError::ModelCorrupt {
            path: path.to_path_buf(),
            reason: "no GGUF header".into(),
        });
    }
    Ok(())
}

/// One row of `autosafe model list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelEntry {
    /// The spec to pass as `--model`.
    pub spec: String,
    /// Resolved path.
    pub path: PathBuf,
    /// Whether the file is there.
    pub present: bool,
    /// Size in bytes when present.
    pub size: Option<u64>,
    /// Description.
    pub description: String,
}

/// Lists the aliases and any other `.gguf` files in the model directory.
pub fn list_models() -> Vec<ModelEntry> {
    let dir = model_dir();
    let mut out: Vec<ModelEntry> = ALIASES
        .iter()
        .map(|a| {
            let path = dir.join(a.file);
            let size = std::fs::metadata(&path).ok().map(|m| m.len());
            ModelEntry {
                spec: format!("local:{}", a.name),
                present: size.is_some(),
                path,
                size,
                description: a.description.into(),
            }
        })
        .collect();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut extra: Vec<ModelEntry> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .filter(|p| !out.iter().any(|m| &m.path == p))
            .map(|path| ModelEntry {
                spec: format!("local:{}", path.display()),
                size: std::fs::metadata(&path).ok().map(|m| m.len()),
                present: true,
                path,
                description: "GGUF file in the model directory".into(),
            })
            .collect();
        extra.sort_by(|a, b| a.path.cmp(&b.path));
        out.extend(extra);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_resolve() {
        assert!(
            resolve_spec("local:smollm2")
                .unwrap()
                .ends_with("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(
            resolve_spec("local:/x/y.gguf").unwrap(),
            PathBuf::from("/x/y.gguf")
        );
        let err = resolve_spec("local:nonesuch").unwrap_err().to_string();
        assert!(
            err.contains("unknown alias") && err.contains("smollm2"),
            "{err}"
        );
        assert!(resolve_spec("local:").is_err());
    }

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let dir =
            std::env::temp_dir().join(format!("autosafe-engine-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("absent.gguf");
        let err = check_model_file(&missing).unwrap_err().to_string();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("fetch-model.sh"),
            "{err}"
        );
        let bad = dir.join("bad.gguf");
        std::fs::write(&bad, b"not a model").unwrap();
        let err = check_model_file(&bad).unwrap_err().to_string();
        assert!(
            err.contains(&bad.display().to_string()) && err.contains("corrupt"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
