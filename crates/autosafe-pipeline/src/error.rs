//! Errors of the pipeline groundwork. Every variant names the file (and line, where there is one).

use std::path::PathBuf;

/// Errors from run directories, record stores, sharding, prompts and export.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSONL file (or a JSON file) does not hold the expected record.
    #[error("{}:{line}: {field}: {message}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// 1-based line number (for JSON files, the line serde reported).
        line: u64,
        /// The field at fault, or `record` when the whole line is.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A shard spec or shard environment is invalid.
    #[error("shard: {0}")]
    Shard(String),
    /// A prompt template failed to load or render.
    #[error("prompt `{name}`: {message}")]
    Prompt {
        /// Template name (file name under `prompts/`).
        name: String,
        /// What went wrong.
        message: String,
    },
    /// Export could not build a record.
    #[error("export of record `{id}`: {message}")]
    Export {
        /// The record id.
        id: String,
        /// What went wrong.
        message: String,
    },
    /// The background writer of a record store stopped.
    #[error("record writer for {} stopped: {message}", path.display())]
    WriterClosed {
        /// The file it was writing.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl From<autosafe_llm::PromptError> for PipelineError {
    fn from(e: autosafe_llm::PromptError) -> Self {
        match e {
            autosafe_llm::PromptError::Io { path, message } => PipelineError::Io {
                source: std::io::Error::other(message),
                path,
            },
            autosafe_llm::PromptError::Template { name, message } => {
                PipelineError::Prompt { name, message }
            }
        }
    }
}

impl PipelineError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PipelineError::Io {
            path: path.into(),
            source,
        }
    }

    /// A JSON error in `path` at `line`, with the field serde named when it can be told.
    pub fn json(path: impl Into<PathBuf>, line: u64, err: &serde_json::Error) -> Self {
        let message = err.to_string();
        let field = field_of(&message).unwrap_or_else(|| "record".to_string());
        PipelineError::BadRecord {
            path: path.into(),
            line,
            field,
            message,
        }
    }
}

/// Extracts the field name from serde messages such as ``missing field `id` `` or
/// ``unknown field `x` ``.
fn field_of(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Result alias of this crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_file_line_and_field() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct R {
            id: String,
        }
        let err = serde_json::from_str::<R>("{}").unwrap_err();
        let e = PipelineError::json("runs/x/safe.jsonl", 7, &err);
        let text = e.to_string();
        assert!(
            text.starts_with("runs/x/safe.jsonl:7: id: missing field"),
            "{text}"
        );
    }
}
