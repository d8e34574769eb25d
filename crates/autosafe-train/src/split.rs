//! The held-apart split of an experiment (`data/experiment/split.toml`): terminal scenarios and
//! ToolEmu cases that the fine-tuned model is evaluated on and that no training record may come
//! from. The split is a file decided before anything is generated, so it cannot drift with the
//! data; `autosafe train --held-apart SPLIT` writes its items into `RUN/heldout/` (the layout
//! the smoke loop uses), runs [`crate::smoke::check_held_apart`] over them and the training
//! records, and records the file and its SHA-256 in `RUN/heldout/split.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use autosafe_ots::{Case, Scenario, Taxonomy};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};
use crate::smoke::{HeldApartCheck, scenario_of, write_toolemu_held_apart};

/// One part of the split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Names held apart: terminal scenario file stems, or ToolEmu case names.
    #[serde(default)]
    pub held_apart: Vec<String>,
}

/// A split file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Shipped terminal scenarios (`data/terminal/NAME.toml`).
    #[serde(default)]
    pub terminal: Part,
    /// ToolEmu cases (`data/toolemu/all_cases.json` names).
    #[serde(default)]
    pub toolemu: Part,
}

fn spec_error(path: &Path, field: &str, message: String) -> TrainError {
    TrainError::Spec {
        field: format!("{}: {field}", path.display()),
        message,
    }
}

/// Reads and checks a split file: TOML errors carry their line; a repeated name is an error
/// naming its field.
pub fn read_split(path: &Path) -> Result<Split> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let split: Split =
        toml::from_str(&text).map_err(|e| TrainError::Json(format!("{}: {e}", path.display())))?;
    for (field, part) in [
        ("terminal.held_apart", &split.terminal),
        ("toolemu.held_apart", &split.toolemu),
    ] {
        let mut seen = BTreeSet::new();
        for name in &part.held_apart {
            if !seen.insert(name.as_str()) {
                return Err(spec_error(path, field, format!("`{name}` is listed twice")));
            }
        }
    }
    Ok(split)
}

/// The ToolEmu cases of `cases_file` named by the split, in the split's order; an unknown name
/// is an error naming the split file.
pub fn toolemu_cases(split_path: &Path, split: &Split, cases_file: &Path) -> Result<Vec<Case>> {
    let text = std::fs::read_to_string(cases_file).map_err(|e| TrainError::io(cases_file, e))?;
    let cases: Vec<Case> = serde_json::from_str(&text)
        .map_err(|e| TrainError::Json(format!("{}: {e}", cases_file.display())))?;
    split
        .toolemu
        .held_apart
        .iter()
        .map(|name| {
            cases
                .iter()
                .find(|c| &c.name == name)
                .cloned()
                .ok_or_else(|| {
                    spec_error(
                        split_path,
                        "toolemu.held_apart",
                        format!("no case `{name}` in {}", cases_file.display()),
                    )
                })
        })
        .collect()
}

/// Writes the held-apart ToolEmu cases into `RUN/heldout/` (`cases.json` all of them; the
/// scenarios and start-state snapshots of those whose outcomes map to a risk category).
/// Returns how many went into each.
pub fn write_toolemu(run: &Path, cases: &[Case]) -> Result<(usize, usize)> {
    let taxonomy = Taxonomy::default_taxonomy();
    let scenarios: Vec<Scenario> = cases
        .iter()
        .filter_map(|c| scenario_of(c, &taxonomy).map(|(s, _)| s))
        .collect();
    let refs: Vec<&Case> = cases.iter().collect();
    write_toolemu_held_apart(run, &scenarios, &refs)?;
    Ok((cases.len(), scenarios.len()))
}

/// What `RUN/heldout/split.json` records: which split file, its content hash, its names, and
/// what the held-apart check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    /// The split file as given.
    pub file: PathBuf,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Its content.
    pub split: Split,
    /// Training records checked.
    pub train_records: usize,
    /// Original safe steps checked (training mixes them in).
    #[serde(default)]
    pub utility_records: usize,
    /// Held-apart scenarios and snapshots checked against them.
    pub held_items: usize,
}

/// Records the split and the check in `RUN/heldout/split.json`; returns the path.
pub fn record(
    run: &Path,
    split_path: &Path,
    split: &Split,
    check: &HeldApartCheck,
) -> Result<PathBuf> {
    let bytes = std::fs::read(split_path).map_err(|e| TrainError::io(split_path, e))?;
    let rec = SplitRecord {
        file: split_path.to_path_buf(),
        sha256: format!("{:x}", Sha256::digest(&bytes)),
        split: split.clone(),
        train_records: check.train,
        utility_records: check.utility,
        held_items: check.held,
    };
    let path = run.join("heldout").join("split.json");
    let text = serde_json::to_string_pretty(&rec).map_err(TrainError::json)? + "\n";
    autosafe_pipeline::rundir::write_bytes_atomic(&path, text.as_bytes())
        .map_err(|e| TrainError::Pipeline(e.to_string()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("split.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_shipped_split_names_known_items_and_bad_splits_are_named() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let shipped = root.join("data/experiment/split.toml");
        let split = read_split(&shipped).unwrap();
        assert_eq!(split.terminal.held_apart.len(), 10);
        for source in ['a', 'c', 'i'] {
            assert!(
                split
                    .terminal
                    .held_apart
                    .iter()
                    .filter(|n| n.starts_with(source))
                    .count()
                    >= 3,
                "every risk source is held apart"
            );
        }
        let cases =
            toolemu_cases(&shipped, &split, &root.join("data/toolemu/all_cases.json")).unwrap();
        assert_eq!(cases.len(), 50);

        let dir = tempfile::tempdir().unwrap();
        let twice = write(dir.path(), "[terminal]\nheld_apart = [\"a01\", \"a01\"]\n");
        let e = read_split(&twice).unwrap_err().to_string();
        assert!(
            e.contains("split.toml: terminal.held_apart") && e.contains("twice"),
            "{e}"
        );
        let typo = write(dir.path(), "[terminal]\nheld_appart = []\n");
        let e = read_split(&typo).unwrap_err().to_string();
        assert!(e.contains("split.toml") && e.contains("line 2"), "{e}");
        let unknown = write(dir.path(), "[toolemu]\nheld_apart = [\"official_9999\"]\n");
        let s = read_split(&unknown).unwrap();
        let e = toolemu_cases(&unknown, &s, &root.join("data/toolemu/all_cases.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("toolemu.held_apart") && e.contains("official_9999"),
            "{e}"
        );
    }
}
