//! Errors of the sandbox crate.

use autosafe_ots::terminal::SetupProblem;

/// Why a sandbox could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// This machine cannot run the sandbox; `hint` says what to install or change.
    #[error("the sandbox cannot run on this machine: {reason}; {hint}")]
    Unavailable {
        /// What failed.
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// Starting or talking to bubblewrap failed.
    #[error("sandbox process error: {0}")]
    Io(#[from] std::io::Error),
    /// The sandbox answered something that does not follow the wrapper protocol.
    #[error("sandbox protocol error: {0}")]
    Protocol(String),
    /// The terminal setup is invalid.
    #[error("invalid terminal setup: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    InvalidSetup(Vec<SetupProblem>),
    /// A checker's regular expression does not compile.
    #[error("fact `{fact}`: bad regular expression: {error}")]
    BadPattern {
        /// The fact whose checker holds the pattern.
        fact: String,
        /// The regex error.
        error: String,
    },
    /// Building the fixture inside the sandbox failed.
    #[error("fixture setup failed (exit {exit_code}): {output}")]
    Setup {
        /// Exit code of the setup script.
        exit_code: i32,
        /// Its output (truncated).
        output: String,
    },
    /// A scenario file is malformed; the message names file, line and field.
    #[error("{0}")]
    Scenario(String),
}
