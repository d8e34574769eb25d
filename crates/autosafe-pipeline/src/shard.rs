//! Sharding: deterministic partition of records by id, and merging shard files.
//!
//! A record belongs to shard `stable_hash(id) % count`, where `stable_hash` is the first eight
//! bytes of SHA-256 of the id: the same on every machine, process and Rust version (unlike
//! `std`'s randomised hasher). Shards are 0-based: `--shard 0/4` … `--shard 3/4`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{PipelineError, Result};
use crate::rundir::write_bytes_atomic;
use crate::store::IdOnly;

/// One shard of a partition: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardSpec {
    /// 0-based shard index.
    pub index: u32,
    /// Number of shards (at least 1).
    pub count: u32,
}

/// The whole input as one shard.
impl Default for ShardSpec {
    fn default() -> Self {
        ShardSpec { index: 0, count: 1 }
    }
}

impl ShardSpec {
    /// A checked spec: `count >= 1` and `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Self> {
        if count == 0 {
            return Err(PipelineError::Shard(
                "shard count must be at least 1".into(),
            ));
        }
        if index >= count {
            return Err(PipelineError::Shard(format!(
                "shard index {index} out of range 0..{count} (indices are 0-based)"
            )));
        }
        Ok(ShardSpec { index, count })
    }

    /// True when the record with this id belongs to this shard.
    pub fn owns(&self, id: &str) -> bool {
        self.count <= 1 || stable_hash(id) % u64::from(self.count) == u64::from(self.index)
    }

    /// `shard-<I>-of-<N>`, used in file names.
    pub fn file_tag(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }

    /// Parses a [`ShardSpec::file_tag`].
    pub(crate) fn from_file_tag(tag: &str) -> Option<Self> {
        let rest = tag.strip_prefix("shard-")?;
        let (i, n) = rest.split_once("-of-")?;
        ShardSpec::new(i.parse().ok()?, n.parse().ok()?).ok()
    }

    /// Reads the shard from the process environment; see [`ShardSpec::from_vars`].
    pub fn from_env(count_hint: Option<u32>) -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok(), count_hint)
    }

    /// The scheduler variable naming this process's array task, if one is set: a whole
    /// `autosafe run` inside an array would have every task write the same files.
    pub fn array_task_var() -> Option<&'static str> {
        ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]
            .into_iter()
            .find(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
    }

    /// Reads the shard from scheduler variables, looked up through `var`:
    /// Slurm job arrays (`SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`, and
    /// `SLURM_ARRAY_TASK_MIN` when the array does not start at 0), or a Kubernetes Indexed Job
    /// (`JOB_COMPLETION_INDEX`, with the count from `count_hint` or `AUTOSAFE_SHARD_COUNT`,
    /// since Kubernetes does not export it). `Ok(None)` when none is set.
    pub(crate) fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        count_hint: Option<u32>,
    ) -> Result<Option<Self>> {
        let num = |name: &str| -> Result<Option<u32>> {
            match var(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v.trim().parse::<u32>().map(Some).map_err(|_| {
                    PipelineError::Shard(format!("{name}={v:?} is not a non-negative integer"))
                }),
            }
        };
        let hint = match count_hint {
            Some(c) => Some(c),
            None => num("AUTOSAFE_SHARD_COUNT")?,
        };
        if let Some(task) = num("SLURM_ARRAY_TASK_ID")? {
            let count = match num("SLURM_ARRAY_TASK_COUNT")?.or(hint) {
                Some(c) => c,
                None => {
                    return Err(PipelineError::Shard(
                        "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not".into(),
                    ));
                }
            };
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = task.checked_sub(min).ok_or_else(|| {
                PipelineError::Shard(format!(
                    "SLURM_ARRAY_TASK_ID {task} is below SLURM_ARRAY_TASK_MIN {min}"
                ))
            })?;
            return ShardSpec::new(index, count).map(Some);
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = hint.ok_or_else(|| {
                PipelineError::Shard(
                    "JOB_COMPLETION_INDEX is set but no shard count was given (pass --shard-count or set AUTOSAFE_SHARD_COUNT to the Job's completions)".into(),
                )
            })?;
            return ShardSpec::new(index, count).map(Some);
        }
        Ok(None)
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for ShardSpec {
    type Err = PipelineError;

    /// Parses `I/N` (0-based `I`).
    fn from_str(s: &str) -> Result<Self> {
        let (i, n) = s.trim().split_once('/').ok_or_else(|| {
            PipelineError::Shard(format!("`{s}` is not of the form I/N (e.g. 0/4)"))
        })?;
        let parse = |x: &str, what: &str| {
            x.trim().parse::<u32>().map_err(|_| {
                PipelineError::Shard(format!("`{s}`: {what} `{x}` is not a non-negative integer"))
            })
        };
        ShardSpec::new(parse(i, "index")?, parse(n, "count")?)
    }
}

/// A stable 64-bit hash of a record id: the first eight bytes of its SHA-256, big-endian.
pub fn stable_hash(id: &str) -> u64 {
    let d = Sha256::digest(id.as_bytes());
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// What [`merge_jsonl`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Records in the merged file.
    pub records: u64,
    /// Lines dropped because an identical record with the same id came earlier.
    pub duplicates: u64,
    /// Lines dropped whose id came earlier with *different* content (the first is kept).
    pub conflicts: Vec<String>,
}

/// Joins JSONL files into `output`: one line per id (the first seen, in input order), sorted by
/// id so the result does not depend on the number of shards or on scheduling. Lines are copied
/// byte for byte. Input files must be complete (recover interrupted stores first); a line that
/// is not a record with an `id`, or an incomplete last line, is an error naming file and line.
pub fn merge_jsonl(inputs: &[PathBuf], output: &Path) -> Result<MergeReport> {
    let mut by_id: HashMap<String, Vec<u8>> = HashMap::new();
    let mut report = MergeReport::default();
    for path in inputs {
        let file = std::fs::File::open(path).map_err(|e| PipelineError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let mut line_no = 0u64;
        loop {
            let mut line = Vec::new();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| PipelineError::io(path, e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if line.last() != Some(&b'\n') {
                return Err(PipelineError::BadRecord {
                    path: path.clone(),
                    line: line_no,
                    field: "record".into(),
                    message: "incomplete last line (recover the shard's store before merging)"
                        .into(),
                });
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let id = serde_json::from_slice::<IdOnly>(&line[..n - 1])
                .map_err(|e| PipelineError::json(path, line_no, &e))?
                .id;
            match by_id.get(&id) {
                Some(existing) if *existing == line => report.duplicates += 1,
                Some(_) => report.conflicts.push(id),
                None => {
                    by_id.insert(id, line);
                }
            }
        }
    }
    let mut entries: Vec<(String, Vec<u8>)> = by_id.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.1.len()).sum());
    for (_, line) in &entries {
        out.extend_from_slice(line);
    }
    report.records = entries.len() as u64;
    write_bytes_atomic(output, &out)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_i_over_n() {
        assert_eq!(
            "2/4".parse::<ShardSpec>().unwrap(),
            ShardSpec { index: 2, count: 4 }
        );
        assert_eq!(" 0/1 ".parse::<ShardSpec>().unwrap(), ShardSpec::default());
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2", "1/2/3"] {
            let err = bad.parse::<ShardSpec>().unwrap_err().to_string();
            assert!(err.starts_with("shard: "), "{bad}: {err}");
        }
        assert_eq!(ShardSpec::new(1, 3).unwrap().to_string(), "1/3");
        assert_eq!(
            ShardSpec::from_file_tag("shard-1-of-3"),
            Some(ShardSpec { index: 1, count: 3 })
        );
        assert_eq!(ShardSpec::from_file_tag("shard-3-of-3"), None);
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_scheduler_environment() {
        assert_eq!(ShardSpec::from_vars(vars(&[]), None).unwrap(), None);
        let s = ShardSpec::from_vars(
            vars(&[
                ("SLURM_ARRAY_TASK_ID", "3"),
                ("SLURM_ARRAY_TASK_COUNT", "8"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(s, Some(ShardSpec { index: 3, count: 8 }));
        // Arrays declared as --array=1-8 start at 1.
        let s = ShardSpec::from_vars(
            vars(&[
                ("SLURM_ARRAY_TASK_ID", "8"),
                ("SLURM_ARRAY_TASK_COUNT", "8"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(s, Some(ShardSpec { index: 7, count: 8 }));
        let s = ShardSpec::from_vars(vars(&[("JOB_COMPLETION_INDEX", "2")]), Some(5)).unwrap();
        assert_eq!(s, Some(ShardSpec { index: 2, count: 5 }));
        let s = ShardSpec::from_vars(
            vars(&[("JOB_COMPLETION_INDEX", "2"), ("AUTOSAFE_SHARD_COUNT", "4")]),
            None,
        )
        .unwrap();
        assert_eq!(s, Some(ShardSpec { index: 2, count: 4 }));
        let err = ShardSpec::from_vars(vars(&[("JOB_COMPLETION_INDEX", "2")]), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no shard count"), "{err}");
        let err = ShardSpec::from_vars(
            vars(&[
                ("SLURM_ARRAY_TASK_ID", "a"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("SLURM_ARRAY_TASK_ID"), "{err}");
        assert!(ShardSpec::from_vars(vars(&[("JOB_COMPLETION_INDEX", "5")]), Some(5)).is_err());
    }

    #[test]
    fn partition_is_stable_complete_and_disjoint() {
        // Pinned value: the hash must never change between versions or machines.
        assert_eq!(
            stable_hash("sc_0000000000000000"),
            stable_hash("sc_0000000000000000")
        );
        assert_eq!(format!("{:016x}", stable_hash("abc")), "ba7816bf8f01cfea");
        let ids: Vec<String> = (0..4000).map(|i| format!("sc_{i:016x}")).collect();
        let n = 7;
        let mut sizes = vec![0usize; n];
        for id in &ids {
            let owners: Vec<u32> = (0..n as u32)
                .filter(|&i| ShardSpec::new(i, n as u32).unwrap().owns(id))
                .collect();
            assert_eq!(owners.len(), 1, "{id} owned by {owners:?}");
            sizes[owners[0] as usize] += 1;
        }
        // Roughly balanced: each shard within 25% of the mean.
        let mean = ids.len() / n;
        assert!(
            sizes.iter().all(|&s| s > mean * 3 / 4 && s < mean * 5 / 4),
            "{sizes:?}"
        );
        assert!(ids.iter().all(|id| ShardSpec::default().owns(id)));
    }
}
