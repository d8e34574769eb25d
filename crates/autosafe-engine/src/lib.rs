//! AutoSafe's embedded engine: GGUF models run in-process by llama.cpp (through `llama-cpp-2`)
//! behind the [`autosafe_llm::ChatModel`] trait.
//!
//! - [`Engine`] loads a model once ([`Engine::shared`]), renders the GGUF's own chat template
//!   ([`template`]), and hands generation to a dedicated thread that batches all concurrent
//!   requests into shared forward passes ([`engine`]).
//! - Replies can be constrained to a JSON schema ([`constraint`], llguidance token masks);
//!   tool calls are parsed back into structured calls ([`toolcall`]).
//! - [`server`] serves any `ChatModel` as an OpenAI-compatible HTTP API ([`stream`]: its
//!   Server-Sent Events, token by token from an [`Engine`]); [`bench`] measures
//!   throughput.
//! - Models are named `local:smollm2` (the packaged default under `$AUTOSAFE_HOME/models`) or
//!   `local:/path/to/any.gguf` ([`paths`]).

pub mod bench;
pub mod constraint;
pub mod engine;
pub mod error;
mod kv_move;
pub mod model;
pub mod openai;
pub mod paths;
pub mod server;
pub mod stream;
pub mod template;
pub mod toolcall;

pub use error::{EngineError, FETCH_COMMAND};
pub use model::{Engine, EngineOptions};

use llama_cpp_2::llama_backend::LlamaBackend;

/// The process-wide llama.cpp backend (initialised once; llama.cpp logs go to `tracing`).
pub(crate) fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: std::sync::OnceLock<Result<LlamaBackend, String>> = std::sync::OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Llama(format!("cannot initialise llama.cpp: {e}")))
}
