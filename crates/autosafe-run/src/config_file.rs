//! Reading a TOML config so that a mistake costs nothing: every error names the file, the line
//! and the dotted key (`FILE:LINE: synthesize.toolkit: …`), and an unknown key or value close to
//! a known one gets a "did you mean" (a typo like `toolkit` once silently planned 76 cells
//! instead of 2 against a paid API).

use std::path::Path;

use serde::de::DeserializeOwned;

/// Parses `text` (read from `path`) into `T`; the config structs deny unknown fields.
pub(crate) fn from_toml<T: DeserializeOwned>(path: &Path, text: &str) -> anyhow::Result<T> {
    let file = path.display();
    let de = toml::Deserializer::parse(text)
        .map_err(|e| anyhow::anyhow!("{file}:{}: {}", line_of(text, e.span()), e.message()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.inner();
        let line = line_of(text, inner.span());
        let message = inner.message();
        let key = if key == "." { "(top level)" } else { &key };
        anyhow::anyhow!("{file}:{line}: {key}: {message}{}", suggestion(message))
    })
}

/// A number out of range: its dotted key, its value, and what it must be.
#[derive(Debug)]
pub(crate) struct OutOfRange {
    key: &'static str,
    value: String,
    want: &'static str,
}

impl OutOfRange {
    /// The error of a value given by a flag (no file to point at).
    pub(crate) fn of_flag(self) -> anyhow::Error {
        anyhow::anyhow!("{} = {}: must be {}", self.key, self.value, self.want)
    }

    /// The error, located in the file the config was read from.
    pub(crate) fn at(self, path: &Path, text: &str) -> anyhow::Error {
        let (section, key) = self.key.rsplit_once('.').unwrap_or(("", self.key));
        anyhow::anyhow!(
            "{}: {} = {}: must be {}",
            locate(path, text, section, key),
            self.key,
            self.value,
            self.want
        )
    }
}

/// `Err` naming `key` unless `ok`.
pub(crate) fn in_range(
    key: &'static str,
    ok: bool,
    value: impl std::fmt::Display,
    want: &'static str,
) -> Result<(), OutOfRange> {
    if ok {
        return Ok(());
    }
    Err(OutOfRange {
        key,
        value: value.to_string(),
        want,
    })
}

/// A sampling temperature: finite, 0 to 2 (what OpenAI-compatible servers accept).
pub(crate) fn temperature(key: &'static str, t: f32) -> Result<(), OutOfRange> {
    in_range(
        key,
        (0.0..=2.0).contains(&t),
        t,
        "a finite number from 0 to 2",
    )
}

/// `--temperature`: parsed, then held to the same range as in a config file.
pub fn temperature_arg(s: &str) -> Result<f32, String> {
    let t: f32 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    temperature("temperature", t).map_err(|e| format!("{} must be {}", e.value, e.want))?;
    Ok(t)
}

/// A count or token budget: zero would ask for nothing (or hang a stage with no workers).
pub(crate) fn at_least_1(key: &'static str, n: u64) -> Result<(), OutOfRange> {
    in_range(key, n >= 1, n, "at least 1")
}

/// `FILE:LINE` of `key` under `[section]` (or of the header `[section.key]`), `FILE` when not
/// found (a value set in an inline table).
pub(crate) fn locate(path: &Path, text: &str, section: &str, key: &str) -> String {
    let mut header = String::new();
    let dotted = if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    };
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[') {
            header = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .into();
            if header == dotted {
                return format!("{}:{}", path.display(), i + 1);
            }
            continue;
        }
        let name = l.split('=').next().unwrap_or("").trim();
        if (header == section && name == key) || (header.is_empty() && name == dotted) {
            return format!("{}:{}", path.display(), i + 1);
        }
    }
    path.display().to_string()
}

/// The 1-based line of a byte span's start (the first line when the error has no span).
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    let at = span.map_or(0, |s| s.start.min(text.len()));
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// "; did you mean `toolkits`?" for serde's "unknown field `toolkit`, expected one of `toolkits`,
/// …" (and unknown variants) when a known name is close, else nothing.
fn suggestion(message: &str) -> String {
    if !(message.starts_with("unknown field") || message.starts_with("unknown variant")) {
        return String::new();
    }
    let mut names = message.split('`').skip(1).step_by(2);
    let Some(wrong) = names.next() else {
        return String::new();
    };
    names
        .map(|known| (strsim::jaro_winkler(wrong, known), known))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, known)| format!("; did you mean `{known}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        toolkits: Vec<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        synthesize: Section,
    }

    #[test]
    fn an_unknown_key_names_file_line_key_and_the_close_known_key() {
        let text = "\n[synthesize]\ntoolkit = [\"Todoist\"]\n";
        let err = from_toml::<Doc>(Path::new("c.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:3: synthesize"), "{err}");
        assert!(err.contains("unknown field `toolkit`"), "{err}");
        assert!(err.ends_with("did you mean `toolkits`?"), "{err}");
    }

    #[test]
    fn no_suggestion_when_nothing_is_close() {
        assert_eq!(
            suggestion("unknown field `zzz`, expected `toolkits` or `pairs`"),
            ""
        );
        assert_eq!(suggestion("invalid type: string \"x\", expected u32"), "");
    }
}
