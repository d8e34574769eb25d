//! Errors of the training front end.

use std::path::{Path, PathBuf};

/// What can go wrong before or while a trainer runs.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A setting that no trainer can run.
    #[error("train: {field}: {message}")]
    Spec {
        /// The option.
        field: String,
        /// Why.
        message: String,
    },
    /// The run has nothing to train on.
    #[error("{}: {detail}", run.display())]
    NoData {
        /// The run directory.
        run: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// The trainer's Python environment is missing or lacks packages.
    #[error("{message}\n  install it with: {install}")]
    Python {
        /// What is missing.
        message: String,
        /// The command that installs it.
        install: String,
    },
    /// The trainer exited with an error.
    #[error("{what} failed ({status}); the last lines:\n{tail}\n  full log: {}", log.display())]
    Trainer {
        /// Which step (train, merge).
        what: String,
        /// Exit status as text.
        status: String,
        /// Its last output lines.
        tail: String,
        /// The log file.
        log: PathBuf,
    },
    /// The export or another pipeline step failed.
    #[error("{0}")]
    Pipeline(String),
    /// JSON (de)serialisation.
    #[error("json: {0}")]
    Json(String),
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A JSON error.
    pub fn json(e: serde_json::Error) -> Self {
        TrainError::Json(e.to_string())
    }
}

/// Result with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;
