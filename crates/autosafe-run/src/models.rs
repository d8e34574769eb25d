//! Building a role's model from its spec, shared by the pipeline and evaluation commands: the
//! client stack the models share, the prompt set, each distinct spec built once, and how the
//! manifest names a model.

use anyhow::Context;
use autosafe_llm::{Cache, ChatModel, ModelSpec, ProviderKind, StackOptions, UsageLedger};
use autosafe_pipeline::prompts::Prompts;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::observe::Observer;

/// What each embedded engine did (prompt tokens reused, KV cache size) and the process's peak
/// resident memory, as lines for after a run.
pub(crate) fn engine_summaries() -> Vec<String> {
    let mut lines: Vec<String> = autosafe_engine::Engine::loaded()
        .iter()
        .map(|e| e.summary())
        .collect();
    if let Some(kb) = peak_rss_kb() {
        lines.push(format!("peak memory (RSS): {:.0} MB", kb as f64 / 1024.0));
    }
    lines
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), where Linux tells it.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The client stack every model of a run shares: the reply cache at `cache` (none: no cache;
/// a damaged one was moved aside and rebuilt, which `obs` is told), a fresh usage ledger and
/// bounded repairs.
pub fn stack(cache: Option<&Path>, obs: &dyn Observer) -> anyhow::Result<StackOptions> {
    let cache = match cache {
        Some(path) => {
            let cache = Cache::open(path)?;
            if let Some(why) = cache.rebuilt() {
                obs.stderr(&format!("cache: {why}\n"));
            }
            Some(cache)
        }
        None => None,
    };
    Ok(StackOptions {
        cache,
        ledger: UsageLedger::new(),
        max_repairs: 2,
    })
}

/// The prompt set of a run: the shipped templates, each overridden from `dir` when given.
pub fn prompts(dir: Option<&Path>) -> anyhow::Result<Arc<Prompts>> {
    Ok(Arc::new(match dir {
        Some(d) => Prompts::from_dir(d)?,
        None => Prompts::embedded(),
    }))
}

/// How the manifest names a model: provider kind, display name and endpoints, never a key.
pub(crate) fn manifest_spec(spec: &ModelSpec) -> autosafe_pipeline::ModelSpec {
    let provider = match spec.provider {
        ProviderKind::Openai => "openai-compatible",
        ProviderKind::Local => "embedded",
    };
    autosafe_pipeline::ModelSpec::redacted(
        provider,
        spec.display_name(),
        &spec.base_urls,
        serde_json::json!({"api_key_env": spec.api_key_env}),
    )
}

/// Models built so far, one per distinct spec, so roles naming the same model share it (and
/// an embedded engine is loaded once).
#[derive(Default)]
pub(crate) struct Built(BTreeMap<String, Arc<dyn ChatModel>>);

impl Built {
    /// The model for `spec` behind the shared client stack (cache, retries, ledger): a remote
    /// OpenAI-compatible endpoint, or the embedded engine (loaded once per process; its CPU
    /// threads from `AUTOSAFE_ENGINE_THREADS`, default all cores), built the first time it is
    /// asked for. `what` names the setting in errors.
    pub fn get(
        &mut self,
        spec: &ModelSpec,
        stack: &StackOptions,
        role: &str,
        what: &str,
        obs: &dyn Observer,
    ) -> anyhow::Result<Arc<dyn ChatModel>> {
        let key = serde_json::to_string(spec)?;
        if let Some(m) = self.0.get(&key) {
            return Ok(m.clone());
        }
        let model = match spec.provider {
            ProviderKind::Openai => {
                autosafe_llm::build_remote(spec, stack).with_context(|| what.to_string())?
            }
            ProviderKind::Local => {
                let name = format!("local:{}", spec.model.trim_start_matches("local:"));
                obs.stderr(&format!("loading the embedded model {name} for {role} …\n"));
                let options = autosafe_engine::EngineOptions::from_env()?;
                let engine = autosafe_engine::Engine::shared(&name, options)
                    .with_context(|| format!("{what}: {name}"))?;
                autosafe_llm::wrap_model(engine, stack, true)
            }
        };
        self.0.insert(key, model.clone());
        Ok(model)
    }
}
