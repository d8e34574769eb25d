//! Reading and writing JSON Lines with errors that name file, line and field.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::EvalError;

/// Records that check their own values after parsing.
pub trait Validate {
    /// `Err((field, message))` when a parsed value is outside its domain.
    fn validate(&self) -> Result<(), (String, String)>;
}

/// Parse JSON Lines text; `path` is only used in error messages. Blank lines are skipped.
pub(crate) fn parse_jsonl<T: DeserializeOwned + Validate>(
    path: &Path,
    text: &str,
) -> Result<Vec<T>, EvalError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(line);
        let record: T =
            serde_path_to_error::deserialize(&mut de).map_err(|e| EvalError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        de.end().map_err(|e| EvalError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            field: ".".into(),
            message: e.to_string(),
        })?;
        record
            .validate()
            .map_err(|(field, message)| EvalError::Invalid {
                path: path.to_path_buf(),
                line: i + 1,
                field,
                message,
            })?;
        out.push(record);
    }
    Ok(out)
}

/// Read a JSON Lines file of records.
pub fn read_jsonl<T: DeserializeOwned + Validate>(path: &Path) -> Result<Vec<T>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_jsonl(path, &text)
}

/// Write records as JSON Lines (one compact object per line), replacing the file.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<(), EvalError> {
    let io = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = Vec::new();
    for r in records {
        serde_json::to_writer(&mut buf, r).map_err(|e| io(std::io::Error::other(e)))?;
        buf.push(b'\n');
    }
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(&buf).map_err(io)?;
    Ok(())
}
