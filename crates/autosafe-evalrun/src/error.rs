//! Errors that stop a runner. Per-item model failures are not errors: they are recorded as
//! unmeasured with their reason.

use autosafe_eval::EvalError;
use autosafe_pipeline::PipelineError;
use autosafe_pipeline::stages::StageError;

/// Why a runner could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalRunError {
    /// Run directory, store or prompt error.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Reading result records.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// Bad input data (`FILE:LINE: field: message` lines).
    #[error("{0}")]
    Input(String),
    /// Wrong settings.
    #[error("configuration: {0}")]
    Config(String),
}

impl From<StageError> for EvalRunError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Pipeline(p) => EvalRunError::Pipeline(p),
            StageError::Config(c) => EvalRunError::Config(c),
        }
    }
}

/// Result of a runner.
pub type Result<T> = std::result::Result<T, EvalRunError>;
