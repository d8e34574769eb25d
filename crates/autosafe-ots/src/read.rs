//! Shared reading helpers: JSON array files and JSON Lines files, with located errors.

use std::collections::{HashMap, HashSet};

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
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
pub(crate) fn json_array<'a>(
    file: &'a str,
    text: &'a str,
) -> Result<Vec<Element<'a>>, FormatError> {
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
    if let Some(path) = duplicate_key(text) {
        return Err(duplicate_key_error(&origin, &path));
    }
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
pub(crate) fn json_lines<'a>(file: &'a str, text: &'a str) -> (Vec<Element<'a>>, Vec<FormatError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = Origin {
            file,
            text: line,
            line_offset: n,
        };
        match serde_json::from_str::<Value>(line) {
            Ok(value) => match duplicate_key(line) {
                Some(path) => errors.push(duplicate_key_error(&origin, &path)),
                None => out.push(Element {
                    value,
                    origin,
                    path: JsonPath::root(),
                }),
            },
            Err(e) => errors.push(syntax_error(file, n, &e)),
        }
    }
    (out, errors)
}

/// Reports every repeated `id` among records: the second and later ones name the first's line
/// (a repeated record would otherwise be counted, and played or exported, twice).
#[derive(Debug, Default)]
pub(crate) struct DuplicateIds {
    first_line: HashMap<String, usize>,
}

impl DuplicateIds {
    /// Notes the id at `path` of `el`; an error when it was seen before.
    pub fn check(
        &mut self,
        el: &Element<'_>,
        path: &JsonPath,
        id: &str,
        errors: &mut Vec<FormatError>,
    ) {
        match self.first_line.get(id) {
            Some(first) => errors.push(
                el.origin
                    .error(path, format!("duplicate id `{id}` (first at line {first})")),
            ),
            None => {
                let line = el.origin.error(path, "").line;
                self.first_line.insert(id.to_string(), line);
            }
        }
    }
}

fn duplicate_key_error(origin: &Origin<'_>, path: &JsonPath) -> FormatError {
    origin.error(
        path,
        "duplicate key (a JSON reader keeps only one of them, silently)",
    )
}

/// The path of the first key repeated within one JSON object of `text` (valid JSON), if any:
/// serde_json keeps the last value of a repeated key without a word.
fn duplicate_key(text: &str) -> Option<JsonPath> {
    let mut de = serde_json::Deserializer::from_str(text);
    Keys(JsonPath::root()).deserialize(&mut de).ok().flatten()
}

/// Walks a JSON value looking for a repeated key; yields its path.
struct Keys(JsonPath);

impl<'de> DeserializeSeed<'de> for Keys {
    type Value = Option<JsonPath>;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Keys {
    type Value = Option<JsonPath>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        while let Some(dup) = seq.next_element_seed(Keys(self.0.index(i)))? {
            found = found.or(dup);
            i += 1;
        }
        Ok(found)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let path = self.0.key(&key);
            if found.is_none() && !seen.insert(key) {
                found = Some(path.clone());
            }
            found = found.or(map.next_value_seed(Keys(path))?);
        }
        Ok(found)
    }
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
pub(crate) fn require_text(
    el: &Element<'_>,
    path: &JsonPath,
    value: &str,
    errors: &mut Vec<FormatError>,
) {
    if value.trim().is_empty() {
        errors.push(el.origin.error(path, "must not be empty"));
    }
}

/// Reports an empty list at `path`, and every empty string in it.
pub(crate) fn require_texts(
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
