//! Errors of this crate. Bad input names the file, the line and the field.

use std::path::PathBuf;

/// Everything that can go wrong reading results or writing reports.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON Lines record did not parse.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Path of the offending field inside the record (`samples[2].label`), `.` for the record.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// A record parsed but holds a value outside its domain (e.g. a rubric score of 7).
    #[error("{path}:{line}: field `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending field.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// A run directory holds no result file this crate knows.
    #[error("{path}: no evaluation results (expected one of {expected})")]
    EmptyRun {
        /// The run directory.
        path: PathBuf,
        /// The file names looked for.
        expected: String,
    },
    /// A plot could not be drawn.
    #[error("plot `{plot}`: {message}")]
    Plot {
        /// Which plot.
        plot: String,
        /// The drawing error.
        message: String,
    },
    /// A report template failed to render.
    #[error("template `{template}`: {message}")]
    Template {
        /// Which template.
        template: String,
        /// The rendering error.
        message: String,
    },
}
