//! Building a role's model from its spec, shared by the pipeline and evaluation commands.

use anyhow::Context;
use autosafe_llm::{ChatModel, ModelSpec, ProviderKind, StackOptions};
use std::sync::Arc;

/// The model for `spec` behind the shared client stack (cache, retries, ledger): a remote
/// OpenAI-compatible endpoint, or the embedded engine (loaded once per process; its CPU threads
/// from `AUTOSAFE_ENGINE_THREADS`, default all cores). `what` names the setting in errors.
pub fn build(
    spec: &ModelSpec,
    stack: &StackOptions,
    role: &str,
    what: &str,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    Ok(match spec.provider {
        ProviderKind::Openai => {
            autosafe_llm::build_remote(spec, stack).with_context(|| what.to_string())?
        }
        ProviderKind::Local => {
            let name = format!("local:{}", spec.model.trim_start_matches("local:"));
            eprintln!("loading the embedded model {name} for {role} …");
            let options = autosafe_engine::EngineOptions::from_env()?;
            let engine = autosafe_engine::Engine::shared(&name, options)
                .with_context(|| format!("{what}: {name}"))?;
            autosafe_llm::wrap_model(engine, stack, true)
        }
    })
}

/// Prints what each embedded engine did (prompt tokens reused, KV cache size) and the process's
/// peak resident memory, after a run.
pub fn print_engine_summaries() {
    for engine in autosafe_engine::Engine::loaded() {
        println!("{}", engine.summary());
    }
    if let Some(kb) = peak_rss_kb() {
        println!("peak memory (RSS): {:.0} MB", kb as f64 / 1024.0);
    }
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), where Linux tells it.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
