//! Building a model stack: the provider at the bottom, then usage metering, the cache with
//! single-flight, structured-output validation, and (for providers without `n`) n-splitting.
//!
//! ```text
//! SplitN? ─► Structured ─► Cached? ─► Metered ─► OpenAiClient | embedded engine
//! ```

use crate::cache::{Cache, Cached};
use crate::client::{ClientOptions, OpenAiClient};
use crate::spec::ModelSpec;
use crate::split_n::SplitN;
use crate::structured::Structured;
use crate::types::{CallContext, ChatModel, ChatReply, ChatRequest, LlmError};
use crate::usage::{Metered, UsageLedger};
use std::sync::Arc;

/// Layers shared by every model of a run.
#[derive(Clone)]
pub struct StackOptions {
    /// The reply cache; `None` turns caching (and single-flight) off (`--no-cache`).
    pub cache: Option<Arc<Cache>>,
    /// Where usage is recorded.
    pub ledger: Arc<UsageLedger>,
    /// Re-asks after an invalid structured reply.
    pub max_repairs: u32,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            cache: None,
            ledger: UsageLedger::new(),
            max_repairs: 2,
        }
    }
}

#[async_trait::async_trait]
impl<T: ChatModel + ?Sized> ChatModel for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn chat(&self, request: &ChatRequest, ctx: &CallContext) -> Result<ChatReply, LlmError> {
        (**self).chat(request, ctx).await
    }
}

/// Wraps any model (e.g. the embedded engine) with metering, cache and structured output;
/// `split_n` adds n-splitting for models that answer one choice per call.
pub fn wrap_model(
    model: Arc<dyn ChatModel>,
    opts: &StackOptions,
    split_n: bool,
) -> Arc<dyn ChatModel> {
    let metered = Metered::new(model, opts.ledger.clone());
    let below: Arc<dyn ChatModel> = match &opts.cache {
        Some(cache) => Arc::new(Cached::new(
            metered,
            cache.clone(),
            Some(opts.ledger.clone()),
        )),
        None => Arc::new(metered),
    };
    let structured: Arc<dyn ChatModel> = Arc::new(Structured::new(
        below,
        opts.max_repairs,
        Some(opts.ledger.clone()),
    ));
    if split_n {
        Arc::new(SplitN::new(structured))
    } else {
        structured
    }
}

/// Builds the full remote stack for an `openai` spec with default client tuning.
pub fn build_remote(spec: &ModelSpec, opts: &StackOptions) -> Result<Arc<dyn ChatModel>, LlmError> {
    build_remote_with(spec, ClientOptions::for_spec(spec), opts).map(|(m, _)| m)
}

/// Builds the full remote stack with explicit client tuning; also returns the client itself (for
/// endpoint status).
pub fn build_remote_with(
    spec: &ModelSpec,
    client_opts: ClientOptions,
    opts: &StackOptions,
) -> Result<(Arc<dyn ChatModel>, Arc<OpenAiClient>), LlmError> {
    let client =
        Arc::new(OpenAiClient::with_options(spec, client_opts)?.with_ledger(opts.ledger.clone()));
    if let Some(p) = spec.price {
        opts.ledger.set_price(spec.display_name(), p);
    }
    let stack = wrap_model(client.clone(), opts, !spec.supports_n);
    Ok((stack, client))
}
