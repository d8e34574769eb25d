//! Errors for bad input: every problem names its file, line and field.

use std::fmt;

/// One problem in an input file. Displays exactly as `FILE:LINE: field: message`.
///
/// `field` is a path into the record, e.g. `[57].Toolkits[0]` or `User Instruction`; `$` names
/// the whole document (syntax errors, truncated files).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct FormatError {
    /// File name as given by the caller.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// Path of the offending field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FormatError {
    /// Builds a problem.
    pub fn new(
        file: &str,
        line: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FormatError {
            file: file.to_string(),
            line,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// All problems found in one or more files; displays one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problems(pub Vec<FormatError>);

impl Problems {
    /// True when no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when there is no problem, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl From<FormatError> for Problems {
    fn from(e: FormatError) -> Self {
        Problems(vec![e])
    }
}
