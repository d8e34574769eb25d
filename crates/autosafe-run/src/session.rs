//! A session over one run directory: the config, the models built for its roles (once per
//! distinct spec), the reply cache and usage ledger they share, the manifest and stats files,
//! and the items each stage left pending.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use autosafe_llm::{ChatModel, StackOptions};
use autosafe_pipeline::prompts::Prompts;
use autosafe_pipeline::{Manifest, RunDir, ShardSpec, Stage, StageStats, Stats};

use crate::config::{Role, RunConfig};
use crate::models::{Built, manifest_spec};
use crate::observe::Observer;
use crate::pending::PendingStatus;

/// A run directory being worked on.
pub(crate) struct Session {
    /// Stages' counts of items left pending by transient failures (only stages with some).
    left: Vec<(&'static str, StageStats)>,
    /// The config, with the command line's flags applied.
    pub config: RunConfig,
    /// The run directory.
    pub run: RunDir,
    /// The shard this process works on.
    pub shard: Option<ShardSpec>,
    /// The prompt set of every role.
    pub prompts: Arc<Prompts>,
    /// Cache, ledger and repairs shared by every model.
    pub stack: StackOptions,
    built: Built,
}

impl Session {
    /// Opens `run_dir` (or creates `<out>/<name>` from the config) for `config`.
    pub fn open(
        config: RunConfig,
        run_dir: Option<PathBuf>,
        shard: Option<ShardSpec>,
        obs: &dyn Observer,
    ) -> anyhow::Result<Session> {
        let run = match run_dir {
            Some(d) => RunDir::at(d)?,
            None => RunDir::create(&config.out, &config.name)?,
        };
        let prompts = crate::models::prompts(config.prompts_dir.as_deref())?;
        let cache = config.cache.then(|| {
            config
                .cache_path
                .clone()
                .unwrap_or_else(|| run.path().join("cache").join("replies.sqlite"))
        });
        let stack = crate::models::stack(cache.as_deref(), obs)?;
        Ok(Session {
            left: Vec::new(),
            config,
            run,
            shard,
            prompts,
            stack,
            built: Built::default(),
        })
    }

    /// Builds (once per distinct spec) the model of a role.
    pub fn model(&mut self, role: Role, obs: &dyn Observer) -> anyhow::Result<Arc<dyn ChatModel>> {
        let entry = self.config.entry(role)?;
        let spec = entry.spec().with_context(|| format!("models.{role}"))?;
        let what = format!("models.{role}");
        self.built
            .get(&spec, &self.stack, role.as_str(), &what, obs)
    }

    /// Writes `manifest.json`: the config (secrets redacted), prompt hashes, the shard and the
    /// model of every role the run uses. An existing manifest keeps its creation fields.
    pub fn write_manifest(&self) -> anyhow::Result<()> {
        let mut m = if self.run.manifest_path().exists() {
            self.run.read_manifest()?
        } else {
            Manifest::new(
                &self
                    .run
                    .path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                env!("CARGO_PKG_VERSION"),
                serde_json::to_value(&self.config)?,
                Path::new(env!("CARGO_MANIFEST_DIR")),
            )
        };
        m.config = autosafe_pipeline::rundir::redact_secrets(serde_json::to_value(&self.config)?);
        m.prompt_hashes = self.prompts.hashes();
        m.shard = self.shard;
        for role in self.config.roles_used() {
            // A role the config leaves unnamed is reported when a stage uses it.
            let Some(entry) = self.config.models.entry(role) else {
                continue;
            };
            m.models
                .insert(role.as_str().into(), manifest_spec(&entry.spec()?));
        }
        self.run.write_manifest(&m)?;
        Ok(())
    }

    /// `stats.json`, or the shard's `stats.shard-I-of-N.json`.
    fn stats_path(&self) -> PathBuf {
        match self.shard.filter(|s| s.count > 1) {
            Some(s) => self.run.path().join(format!("stats.{}.json", s.file_tag())),
            None => self.run.stats_path(),
        }
    }

    /// Replaces `stage`'s counts in the stats file.
    pub fn record_stats(&self, stage: Stage, stats: &StageStats) -> anyhow::Result<()> {
        let path = self.stats_path();
        let mut all: Stats = if path.exists() {
            autosafe_pipeline::rundir::read_json(&path)?
        } else {
            Stats::default()
        };
        *all.stage(stage) = stats.clone();
        autosafe_pipeline::rundir::write_json_atomic(&path, &all)?;
        Ok(())
    }

    /// Keeps a stage's count of items left pending, if it has any.
    pub(crate) fn note_pending(&mut self, stage: &'static str, stats: &StageStats) {
        if stats.pending_total() > 0 {
            self.left.push((stage, stats.clone()));
        }
    }

    /// More items pending than `max_pending` allows.
    pub(crate) fn over_threshold(&self) -> bool {
        let n: u64 = self.left.iter().map(|(_, s)| s.pending_total()).sum();
        n > self.config.max_pending
    }

    /// How the session ended as to pending items.
    pub fn pending(&self) -> PendingStatus {
        let refs: Vec<(&str, &StageStats)> = self.left.iter().map(|(n, s)| (*n, s)).collect();
        PendingStatus::of(&refs, self.config.max_pending)
    }
}
