//! Building a role's model from its spec, shared by the pipeline and evaluation commands.

use anyhow::Context;
use autosafe_llm::{ChatModel, ModelSpec, ProviderKind, StackOptions};
use std::sync::Arc;

use crate::observe::Observer;

/// The model for `spec` behind the shared client stack (cache, retries, ledger): a remote
/// OpenAI-compatible endpoint, or the embedded engine (loaded once per process; its CPU threads
/// from `AUTOSAFE_ENGINE_THREADS`, default all cores). `what` names the setting in errors.
pub fn build(
    spec: &ModelSpec,
    stack: &StackOptions,
    role: &str,
    what: &str,
    obs: &dyn Observer,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    Ok(match spec.provider {
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
    })
}

/// What each embedded engine did (prompt tokens reused, KV cache size) and the process's peak
/// resident memory, as lines for after a run.
pub fn engine_summaries() -> Vec<String> {
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
