//! Result files of the runners: the pipeline's crash-safe JSONL store, with each record's key
//! written as its `id` beside the record's own fields.
//!
//! `autosafe-eval` reads these files with its own record types, which ignore the extra `id`;
//! the pipeline's [`recover`](autosafe_pipeline::recover) uses it to resume (a torn last line
//! is dropped, finished ids are skipped).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use autosafe_eval::jsonl::{Validate, read_jsonl};
use autosafe_eval::result_records::{AsbEpisode, JudgePair, SnapshotEval, ToolEmuEpisode};
use autosafe_pipeline::store::{IdOnly, RecordReader};
use autosafe_pipeline::{Record, RecordWriter};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A record with its key as `id`, flattened: `{"id": …, <the record's fields>}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyed<T> {
    /// The record's key.
    pub id: String,
    /// The record.
    #[serde(flatten)]
    pub record: T,
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Record for Keyed<T> {
    fn record_id(&self) -> &str {
        &self.id
    }
}

/// A result record with a stable key (its `id` in the file).
pub(crate) trait ResultRecord:
    Serialize + DeserializeOwned + Validate + Clone + Send + Sync + 'static
{
    /// The key: the snapshot id, the case id, or `dataset:item id`.
    fn key(&self) -> String;

    /// The record with its key.
    fn keyed(self) -> Keyed<Self> {
        Keyed {
            id: self.key(),
            record: self,
        }
    }
}

impl ResultRecord for SnapshotEval {
    fn key(&self) -> String {
        self.snapshot_id.clone()
    }
}

impl ResultRecord for ToolEmuEpisode {
    fn key(&self) -> String {
        self.case_id.clone()
    }
}

impl ResultRecord for AsbEpisode {
    fn key(&self) -> String {
        self.case_id.clone()
    }
}

impl ResultRecord for JudgePair {
    fn key(&self) -> String {
        pair_key(&self.dataset, &self.item_id)
    }
}

/// The key of a judge pair.
pub(crate) fn pair_key(dataset: &str, item_id: &str) -> String {
    format!("{dataset}:{item_id}")
}

/// Opens a store for appending (recovering a torn last line) and returns the writer with the
/// ids already in it.
pub fn open<T: Serialize + DeserializeOwned + Send + 'static>(
    path: &Path,
) -> Result<(RecordWriter<Keyed<T>>, HashSet<String>)> {
    let (w, resume) = RecordWriter::<Keyed<T>>::open(path, 64)?;
    Ok((w, resume.finished))
}

/// The ids of a store in file order (for positions such as ToolEmu's `eval_id`); empty when the
/// file does not exist. Run after [`open`], which recovers a torn tail.
pub(crate) fn ids_in_order(path: &Path) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    RecordReader::<IdOnly>::open(path)?
        .map(|r| r.map(|r| r.id).map_err(Into::into))
        .collect()
}

/// Reads a result file back with `autosafe-eval`'s reader (errors name file, line and field)
/// and keeps the records whose key is in `keys`, by key.
pub(crate) fn read_results<T: ResultRecord>(
    path: &Path,
    keys: &HashSet<String>,
) -> Result<HashMap<String, T>> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    Ok(read_jsonl::<T>(path)?
        .into_iter()
        .map(|r| (r.key(), r))
        .filter(|(k, _)| keys.contains(k))
        .collect())
}
