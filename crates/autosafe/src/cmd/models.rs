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
            let threads = std::env::var("AUTOSAFE_ENGINE_THREADS")
                .ok()
                .and_then(|t| t.parse().ok());
            let engine = autosafe_engine::Engine::shared(
                &name,
                autosafe_engine::EngineOptions {
                    threads,
                    ..Default::default()
                },
            )
            .with_context(|| format!("{what}: {name}"))?;
            autosafe_llm::wrap_model(engine, stack, true)
        }
    })
}
