//! Shared reading helpers: JSON array files and JSON Lines files, with located errors.

use serde_json::Value;

use crate::error::FormatError;
use crate::locate::{JsonPath, Origin};

/// One parsed element of a JSON array or one record of a JSON Lines file, with where it sits.
#[derive(Debug, Clone)]
pub struct Element<'a> {
    /// The value.
    pub value: Value,
    /// Where the value's text is, for error reports.
    pub origin: Origin<'a>,
    /// The path of the value within `origin.text` (`[i]` for arrays, empty for JSONL).
    pub path: JsonPath,
}

/// Parses `text` as a JSON array; each element comes with its origin and path `[i]`.
/// A syntax error (e.g. a truncated file) is reported at the line serde_json found it.
pub fn json_array<'a>(file: &'a str, text: &'a str) -> Result<Vec<Element<'a>>, FormatError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| syntax_error(file, 0, &e))?;
    let Value::Array(items) = doc else {
        return Err(FormatError::new(
            file,
            1,
            "$",
            format!("expected a JSON array, found {}", kind_of(&doc)),
        ));
    };
    let origin = Origin {
        file,
        text,
        line_offset: 0,
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, value)| Element {
            value,
            origin,
            path: JsonPath::root().index(i),
        })
        .collect())
}

/// Parses `text` as JSON Lines (blank lines skipped). Each record comes with its own origin;
/// syntax errors are reported per line and do not stop the other records.
pub fn json_lines<'a>(file: &'a str, text: &'a str) -> (Vec<Element<'a>>, Vec<FormatError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(value) => out.push(Element {
                value,
                origin: Origin {
                    file,
                    text: line,
                    line_offset: n,
                },
                path: JsonPath::root(),
            }),
            Err(e) => errors.push(syntax_error(file, n, &e)),
        }
    }
    (out, errors)
}

fn syntax_error(file: &str, line_offset: usize, e: &serde_json::Error) -> FormatError {
    let msg = e.to_string();
    // serde_json appends " at line L column C"; the line is reported in front instead.
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    let what = if e.is_eof() {
        format!("file is truncated or incomplete ({msg})")
    } else {
        format!("invalid JSON ({msg})")
    };
    FormatError::new(file, line_offset + e.line().max(1), "$", what)
}

/// A short name for a JSON value's type, for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reports an empty (whitespace-only) string at `path`.
pub fn require_text(el: &Element<'_>, path: &JsonPath, value: &str, errors: &mut Vec<FormatError>) {
    if value.trim().is_empty() {
        errors.push(el.origin.error(path, "must not be empty"));
    }
}

/// Reports an empty list at `path`, and every empty string in it.
pub fn require_texts(
    el: &Element<'_>,
    path: &JsonPath,
    values: &[String],
    errors: &mut Vec<FormatError>,
) {
    if values.is_empty() {
        errors.push(el.origin.error(path, "must not be empty"));
    }
    for (i, v) in values.iter().enumerate() {
        require_text(el, &path.index(i), v, errors);
    }
}
