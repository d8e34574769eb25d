//! The run directory `runs/<name>/`: its layout, `manifest.json` and `stats.json`.
//!
//! ```text
//! runs/<name>/
//!   manifest.json        config, tool version, git revision, prompt hashes, model specs (no keys)
//!   stats.json           per stage: in, out, rejected by reason, unmeasured by reason
//!   scenarios.jsonl      synthesize output (D_r)
//!   snapshots.jsonl      elicit output (first unsafe action per episode)
//!   utility.jsonl        elicit output (safe steps, utility data)
//!   safe.jsonl           reflect output (D_safe)
//!   export/<format>/     training files per export format, plus the dataset card
//! ```
//!
//! A sharded stage writes `<stem>.shard-<I>-of-<N>.jsonl` instead; `merge` joins them.
//! JSON files are written atomically (temp file in the same directory, fsync, rename).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{PipelineError, Result};
use crate::shard::ShardSpec;

/// The stages that write record files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Scenario synthesis (D_r).
    Synthesize,
    /// Unsafe-action elicitation (snapshots).
    Elicit,
    /// Safe steps seen during elicitation (utility data).
    Utility,
    /// Self-reflection (D_safe).
    Reflect,
    /// Training-data export.
    Export,
}

impl Stage {
    /// The stage name used in `stats.json` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Synthesize => "synthesize",
            Stage::Elicit => "elicit",
            Stage::Utility => "utility",
            Stage::Reflect => "reflect",
            Stage::Export => "export",
        }
    }

    /// The stage's record file (`scenarios.jsonl` for synthesis); `None` for export.
    pub fn record_file(self) -> Option<RunFile> {
        match self {
            Stage::Synthesize => Some(RunFile::Scenarios),
            Stage::Elicit => Some(RunFile::Snapshots),
            Stage::Utility => Some(RunFile::Utility),
            Stage::Reflect => Some(RunFile::Safe),
            Stage::Export => None,
        }
    }
}

/// A JSON Lines file the stages write into a run directory: one per shard when sharded, joined
/// by `merge`. Every such file is named here, so no stage, command or merge spells a file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunFile {
    /// Synthesized scenarios (D_r).
    Scenarios,
    /// One line per generation attempt.
    SynthesizeLog,
    /// The first unsafe action of each episode.
    Snapshots,
    /// Safe steps seen during elicitation.
    Utility,
    /// One line per episode.
    ElicitLog,
    /// Where the LLM judge and the checkers disagreed.
    Disagreements,
    /// Judged steps with the checkers' label.
    LabelledSteps,
    /// Repaired, verified actions (D_safe).
    Safe,
    /// One line per snapshot reflected on.
    ReflectLog,
}

impl RunFile {
    /// Every file, in the order of the stages that write them.
    pub const ALL: [RunFile; 9] = [
        RunFile::Scenarios,
        RunFile::SynthesizeLog,
        RunFile::Snapshots,
        RunFile::Utility,
        RunFile::ElicitLog,
        RunFile::Disagreements,
        RunFile::LabelledSteps,
        RunFile::Safe,
        RunFile::ReflectLog,
    ];

    /// The name without `.jsonl`.
    pub fn stem(self) -> &'static str {
        match self {
            RunFile::Scenarios => "scenarios",
            RunFile::SynthesizeLog => "synthesize_log",
            RunFile::Snapshots => "snapshots",
            RunFile::Utility => "utility",
            RunFile::ElicitLog => "elicit_log",
            RunFile::Disagreements => "disagreements",
            RunFile::LabelledSteps => "labelled_steps",
            RunFile::Safe => "safe",
            RunFile::ReflectLog => "reflect_log",
        }
    }

    /// The name of the unsharded file.
    pub fn file_name(self) -> String {
        format!("{}.jsonl", self.stem())
    }
}

/// A run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates (or reopens) `base/<name>/` with its `export/` subdirectory. `name` must be a
    /// plain directory name.
    pub fn create(base: &Path, name: &str) -> Result<Self> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(PipelineError::io(
                base.join(name),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "run name must be a plain directory name",
                ),
            ));
        }
        Self::at(base.join(name))
    }

    /// Creates (or reopens) a run directory at exactly `root`.
    pub fn at(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let export = root.join("export");
        std::fs::create_dir_all(&export).map_err(|e| PipelineError::io(&export, e))?;
        Ok(RunDir { root })
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `manifest.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    /// `stats.json`.
    pub fn stats_path(&self) -> PathBuf {
        self.root.join("stats.json")
    }

    /// The record file of a stage (`scenarios.jsonl`, …), or its shard file when `shard` is a
    /// real partition (count > 1). Export has no record file: its directory is [`RunDir::export_dir`].
    pub fn stage_file(&self, stage: Stage, shard: Option<ShardSpec>) -> PathBuf {
        let stem = stage.record_file().map_or("export", RunFile::stem);
        self.shard_path(stem, shard)
    }

    /// `file` in the run directory, or its shard file when `shard` is a real partition.
    pub fn file(&self, file: RunFile, shard: Option<ShardSpec>) -> PathBuf {
        self.shard_path(file.stem(), shard)
    }

    fn shard_path(&self, stem: &str, shard: Option<ShardSpec>) -> PathBuf {
        match shard.filter(|s| s.count > 1) {
            Some(s) => self.root.join(format!("{stem}.{}.jsonl", s.file_tag())),
            None => self.root.join(format!("{stem}.jsonl")),
        }
    }

    /// All shard files of a stage present in the directory, sorted by shard index.
    pub fn shard_files(&self, stage: Stage) -> Result<Vec<PathBuf>> {
        match stage.record_file() {
            Some(f) => self.shard_files_of(f),
            None => Ok(Vec::new()),
        }
    }

    /// All shard files of `file` present in the directory, sorted by shard index.
    pub fn shard_files_of(&self, file: RunFile) -> Result<Vec<PathBuf>> {
        let prefix = format!("{}.shard-", file.stem());
        let mut found = Vec::new();
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| PipelineError::io(&self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| PipelineError::io(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".jsonl"))
                && let Some(spec) = ShardSpec::from_file_tag(&format!("shard-{rest}"))
            {
                found.push((spec.index, entry.path()));
            }
        }
        found.sort();
        Ok(found.into_iter().map(|(_, p)| p).collect())
    }

    /// `export/<format>/`, created on demand.
    pub fn export_dir(&self, format: &str) -> Result<PathBuf> {
        let dir = self.root.join("export").join(format);
        std::fs::create_dir_all(&dir).map_err(|e| PipelineError::io(&dir, e))?;
        Ok(dir)
    }

    /// Writes `manifest.json` atomically.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        write_json_atomic(&self.manifest_path(), manifest)
    }

    /// Reads `manifest.json`.
    pub fn read_manifest(&self) -> Result<Manifest> {
        read_json(&self.manifest_path())
    }

    /// Writes `stats.json` atomically.
    pub fn write_stats(&self, stats: &Stats) -> Result<()> {
        write_json_atomic(&self.stats_path(), stats)
    }

    /// Reads `stats.json`, or empty stats when it does not exist yet.
    pub fn read_stats(&self) -> Result<Stats> {
        let path = self.stats_path();
        if !path.exists() {
            return Ok(Stats::default());
        }
        read_json(&path)
    }
}

/// A model as recorded in the manifest: never an API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Provider kind: `embedded`, `openai-compatible`, …
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Endpoint(s), without credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Sampling and other options, with secrets removed.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub options: Value,
}

impl ModelSpec {
    /// A spec with secrets removed from `options` and user-info stripped from endpoint URLs.
    pub fn redacted(provider: &str, model: &str, endpoints: &[String], options: Value) -> Self {
        ModelSpec {
            provider: provider.to_string(),
            model: model.to_string(),
            endpoints: endpoints.iter().map(|e| strip_userinfo(e)).collect(),
            options: redact_secrets(options),
        }
    }
}

pub use autosafe_llm::redact::MASK;

/// True for object keys that hold credentials (`api_key`, `token`, `password`, `authorization`, …).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    k == "key"
        || k.ends_with("api_key")
        || k.ends_with("apikey")
        || k.contains("secret")
        || k.contains("password")
        || k.contains("token") && !k.contains("max_tokens") && !k.ends_with("tokens")
        || k == "authorization"
        || k.ends_with("_key") && !k.ends_with("cache_key")
}

/// Removes every object entry whose key holds a credential, at any depth. Environment-variable
/// *names* (keys ending in `_env`, e.g. `api_key_env`) are kept: they are not secrets.
pub fn redact_secrets(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| k.ends_with("_env") || !is_secret_key(k))
                .map(|(k, v)| (k, redact_secrets(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_secrets).collect()),
        Value::String(s) if s.contains("://") => Value::String(strip_userinfo(&s)),
        other => other,
    }
}

/// Removes `user:password@` from a URL.
fn strip_userinfo(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// `manifest.json`: what produced this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format_version: u32,
    /// Run name.
    pub name: String,
    /// Version of the `autosafe` tool that wrote it.
    pub tool_version: String,
    /// `git rev-parse HEAD` of the source tree, when available.
    pub git_revision: Option<String>,
    /// Seconds since the Unix epoch when the run was created.
    pub created_unix: u64,
    /// The run configuration as JSON, secrets removed.
    pub config: Value,
    /// SHA-256 of every prompt template used, by template name.
    pub prompt_hashes: BTreeMap<String, String>,
    /// Models by role (`agent`, `judge`, `reflector`, `emulator`, `generator`), without keys.
    pub models: BTreeMap<String, ModelSpec>,
    /// The shard this process worked on, if sharded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardSpec>,
}

impl Manifest {
    /// A manifest for a new run: config redacted, git revision read from `source_dir`.
    pub fn new(name: &str, tool_version: &str, config: Value, source_dir: &Path) -> Self {
        Manifest {
            format_version: 1,
            name: name.to_string(),
            tool_version: tool_version.to_string(),
            git_revision: git_revision(source_dir),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            config: redact_secrets(config),
            prompt_hashes: BTreeMap::new(),
            models: BTreeMap::new(),
            shard: None,
        }
    }
}

/// `git rev-parse HEAD` in `dir`, or `None` when git or the repository is not there.
pub fn git_revision(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("rev-parse")
        .arg("HEAD")
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (rev.len() >= 7 && rev.chars().all(|c| c.is_ascii_hexdigit())).then_some(rev)
}

/// Where one finished item is counted in its stage's counts (from its outcome in the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted<'a> {
    /// Its record was written.
    Output,
    /// Rejected, for this reason.
    Rejected(&'a str),
    /// Unmeasured, for this reason.
    Unmeasured(&'a str),
}

/// Counts of one stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStats {
    /// Records the stage read.
    pub input: u64,
    /// Records it wrote.
    pub output: u64,
    /// Records skipped because a previous (interrupted) run had finished them.
    #[serde(default)]
    pub resumed: u64,
    /// Records rejected, by reason (unknown tool, duplicate, …).
    #[serde(default)]
    pub rejected: BTreeMap<String, u64>,
    /// Records that could not be measured, by reason (api_error, parse_error, …).
    #[serde(default)]
    pub unmeasured: BTreeMap<String, u64>,
    /// Items left pending by a transient failure (the model server unreachable or failing, the
    /// reply cache unreadable), by reason: nothing was written for them, the next run tries
    /// them again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<String, u64>,
    /// The first such failure, as its error said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_detail: Option<String>,
}

impl StageStats {
    /// Counts one finished item where its outcome says.
    pub fn count(&mut self, item: Counted<'_>) {
        match item {
            Counted::Output => self.output += 1,
            Counted::Rejected(reason) => self.reject(reason),
            Counted::Unmeasured(reason) => self.unmeasured(reason),
        }
    }

    /// Takes one counted item back out (its records were dropped after the stage ran, as the
    /// cross-shard filter does); a reason whose count reaches zero is removed.
    pub(crate) fn uncount(&mut self, item: Counted<'_>) {
        let take = |map: &mut BTreeMap<String, u64>, reason: &str| {
            if let Some(n) = map.get_mut(reason) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(reason);
                }
            }
        };
        match item {
            Counted::Output => self.output = self.output.saturating_sub(1),
            Counted::Rejected(reason) => take(&mut self.rejected, reason),
            Counted::Unmeasured(reason) => take(&mut self.unmeasured, reason),
        }
    }

    /// Counts one rejection.
    pub fn reject(&mut self, reason: &str) {
        *self.rejected.entry(reason.to_string()).or_default() += 1;
    }

    /// Counts one unmeasured item.
    pub fn unmeasured(&mut self, reason: &str) {
        *self.unmeasured.entry(reason.to_string()).or_default() += 1;
    }

    /// Counts one item left pending by a transient failure (see
    /// [`autosafe_llm::transient`]); the first one's detail is kept.
    pub fn pending(&mut self, failure: &autosafe_llm::Transient) {
        *self.pending.entry(failure.reason.to_string()).or_default() += 1;
        self.pending_detail
            .get_or_insert_with(|| failure.detail.clone());
    }

    /// Total pending.
    pub fn pending_total(&self) -> u64 {
        self.pending.values().sum()
    }

    /// Adds another count (e.g. another shard's) to this one.
    pub fn add(&mut self, other: &StageStats) {
        self.input += other.input;
        self.output += other.output;
        self.resumed += other.resumed;
        for (k, v) in &other.rejected {
            *self.rejected.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.unmeasured {
            *self.unmeasured.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.pending {
            *self.pending.entry(k.clone()).or_default() += v;
        }
        if self.pending_detail.is_none() {
            self.pending_detail.clone_from(&other.pending_detail);
        }
    }

    /// One line for the terminal: `NAME: in … out … resumed … rejected N [reason=n …] unmeasured N
    /// [reason=n …]`, then `pending N [reason=n …]` when items were left pending.
    pub fn summary_line(&self, name: &str) -> String {
        let fmt = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut line = format!(
            "{name}: in {} out {} resumed {} rejected {} [{}] unmeasured {} [{}]",
            self.input,
            self.output,
            self.resumed,
            self.rejected_total(),
            fmt(&self.rejected),
            self.unmeasured_total(),
            fmt(&self.unmeasured)
        );
        if !self.pending.is_empty() {
            line.push_str(&format!(
                " pending {} [{}]",
                self.pending_total(),
                fmt(&self.pending)
            ));
        }
        line
    }

    /// Total rejected.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Total unmeasured.
    pub(crate) fn unmeasured_total(&self) -> u64 {
        self.unmeasured.values().sum()
    }
}

/// `stats.json`: every stage's counts, by stage name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Counts by stage name.
    pub stages: BTreeMap<String, StageStats>,
}

impl Stats {
    /// The counts of `stage`, created empty on first use.
    pub fn stage(&mut self, stage: Stage) -> &mut StageStats {
        self.stages.entry(stage.as_str().to_string()).or_default()
    }

    /// Adds all counts of `other` (another shard) into this.
    pub fn add(&mut self, other: &Stats) {
        for (name, s) in &other.stages {
            self.stages.entry(name.clone()).or_default().add(s);
        }
    }
}

/// Writes `value` as pretty JSON to `path` atomically: a temp file in the same directory is
/// written and synced, then renamed over `path`, so readers see the old or the new file, never
/// a half-written one.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| PipelineError::BadRecord {
        path: path.into(),
        line: 0,
        field: "record".into(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_bytes_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (temp file + fsync + rename), every configured secret value
/// masked ([`autosafe_llm::redact::redact_values`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let redacted = std::str::from_utf8(bytes)
        .ok()
        .map(autosafe_llm::redact::redact_values);
    let bytes = match &redacted {
        Some(std::borrow::Cow::Owned(text)) => text.as_bytes(),
        _ => bytes,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(PipelineError::io(path, e));
    }
    Ok(())
}

/// Reads a JSON file; errors name the file, line and field.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| PipelineError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| PipelineError::json(path, e.line() as u64, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uncount_takes_back_what_count_added() {
        let mut s = StageStats::default();
        let items = [
            Counted::Output,
            Counted::Rejected("near_duplicate"),
            Counted::Unmeasured("parse_error"),
            Counted::Rejected("near_duplicate"),
        ];
        for c in items {
            s.count(c);
        }
        assert_eq!((s.output, s.rejected["near_duplicate"]), (1, 2));
        for c in items {
            s.uncount(c);
        }
        assert_eq!(s, StageStats::default(), "zero counts are removed");
        s.uncount(Counted::Output);
        s.uncount(Counted::Rejected("x"));
        assert_eq!(s, StageStats::default(), "nothing below zero");
    }

    #[test]
    fn layout_and_shard_files() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path(), "demo").unwrap();
        assert!(run.path().join("export").is_dir());
        assert_eq!(
            run.stage_file(Stage::Synthesize, None),
            run.path().join("scenarios.jsonl")
        );
        assert_eq!(
            run.stage_file(Stage::Reflect, Some(ShardSpec::new(0, 1).unwrap())),
            run.path().join("safe.jsonl")
        );
        let s = ShardSpec::new(2, 4).unwrap();
        assert_eq!(
            run.stage_file(Stage::Elicit, Some(s)),
            run.path().join("snapshots.shard-2-of-4.jsonl")
        );
        for i in [3, 0, 2, 1] {
            std::fs::write(
                run.stage_file(Stage::Elicit, Some(ShardSpec::new(i, 4).unwrap())),
                "",
            )
            .unwrap();
        }
        std::fs::write(run.path().join("snapshots.shard-x-of-4.jsonl"), "").unwrap();
        let files = run.shard_files(Stage::Elicit).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "snapshots.shard-0-of-4.jsonl",
                "snapshots.shard-1-of-4.jsonl",
                "snapshots.shard-2-of-4.jsonl",
                "snapshots.shard-3-of-4.jsonl"
            ]
        );
        assert!(RunDir::create(dir.path(), "../escape").is_err());
    }

    #[test]
    fn manifest_round_trips_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path(), "m").unwrap();
        let config = json!({
            "models": {"agent": {"base_url": "http://user:pw@127.0.0.1:8000/v1", "api_key": "sk-live", "api_key_env": "OPENAI_API_KEY", "max_tokens": 256}},
            "Authorization": "Bearer x",
            "nested": [{"token": "t", "keep": 1}]
        });
        let mut m = Manifest::new("m", "0.1.0", config, Path::new(env!("CARGO_MANIFEST_DIR")));
        m.prompt_hashes
            .insert("judge_step.j2".into(), "ab".repeat(32));
        m.models.insert(
            "agent".into(),
            ModelSpec::redacted(
                "openai-compatible",
                "qwen",
                &["https://k:s@h.example/v1".into()],
                json!({"temperature": 0.7, "api_key": "sk"}),
            ),
        );
        run.write_manifest(&m).unwrap();
        let text = std::fs::read_to_string(run.manifest_path()).unwrap();
        for secret in ["sk-live", "Bearer", "\"t\"", "pw@", "k:s@", "\"sk\""] {
            assert!(!text.contains(secret), "manifest leaks {secret}: {text}");
        }
        assert!(text.contains("OPENAI_API_KEY"));
        assert!(text.contains("max_tokens"));
        let back = run.read_manifest().unwrap();
        assert_eq!(back, m);
        assert_eq!(back.models["agent"].endpoints, ["https://h.example/v1"]);
        // This crate lives in a git checkout in development; outside one it is None, never an error.
        if let Some(rev) = &back.git_revision {
            assert!(rev.chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(git_revision(&dir.path().join("nonexistent")), None);
    }

    #[test]
    fn stats_accumulate_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path(), "s").unwrap();
        assert_eq!(run.read_stats().unwrap(), Stats::default());
        let mut a = Stats::default();
        let st = a.stage(Stage::Synthesize);
        st.input = 10;
        st.output = 7;
        st.reject("unknown_tool");
        st.reject("near_duplicate");
        st.reject("near_duplicate");
        a.stage(Stage::Elicit).unmeasured("parse_error");
        let mut b = a.clone();
        b.add(&a);
        assert_eq!(b.stages["synthesize"].input, 20);
        assert_eq!(b.stages["synthesize"].rejected["near_duplicate"], 4);
        assert_eq!(b.stages["synthesize"].rejected_total(), 6);
        assert_eq!(b.stages["elicit"].unmeasured_total(), 2);
        run.write_stats(&b).unwrap();
        assert_eq!(run.read_stats().unwrap(), b);
        // No temp files left behind.
        let leftovers: Vec<_> = std::fs::read_dir(run.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn bad_json_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stats.json");
        std::fs::write(
            &p,
            "{\n  \"stages\": {\n    \"x\": {\"input\": \"many\"}\n  }\n}\n",
        )
        .unwrap();
        let err = read_json::<Stats>(&p).unwrap_err().to_string();
        assert!(err.contains("stats.json:3:"), "{err}");
    }
}
