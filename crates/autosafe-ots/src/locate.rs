//! Finding the line of a field inside JSON text, so errors can say `FILE:LINE: field`.
//!
//! `serde_json` reports positions only for syntax errors. For everything found later (a wrong
//! type, an unknown tool) we know the path of the field; [`line_of`] scans the text along that
//! path without building a tree and returns the line where the value starts (or where its
//! deepest existing ancestor starts, e.g. the object a missing field belongs to).

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::FormatError;

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// An object member.
    Key(String),
    /// An array element (0-based).
    Index(usize),
}

/// A path into a JSON document, displayed as `[57].Toolkits[0]` (`$` when empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JsonPath(pub Vec<Seg>);

impl JsonPath {
    /// The empty path (the whole document).
    pub fn root() -> Self {
        JsonPath(Vec::new())
    }

    /// This path with one more object key.
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    /// This path followed by `rest`.
    pub fn join(&self, rest: &JsonPath) -> Self {
        JsonPath(self.0.iter().chain(rest.0.iter()).cloned().collect())
    }

    /// This path with one more array index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("$");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
            }
        }
        Ok(())
    }
}

/// 1-based line number of byte `offset` in `text`.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Byte offset where the value at `path` starts, or where its deepest existing ancestor starts.
pub(crate) fn offset_of(text: &str, path: &JsonPath) -> usize {
    let mut sc = Scanner {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    sc.ws();
    let mut best = sc.i;
    for seg in &path.0 {
        if sc.descend(seg).is_none() {
            break;
        }
        sc.ws();
        best = sc.i;
    }
    best
}

/// 1-based line of the value at `path` in `text` (see [`offset_of`]).
pub fn line_of(text: &str, path: &JsonPath) -> usize {
    line_at(text, offset_of(text, path))
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\n' | b'\r' | b'\t') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// Skips a string starting at `self.i` (the opening quote); returns its decoded text.
    fn string(&mut self) -> Option<String> {
        let start = self.i;
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return serde_json::from_str(self.text.get(start..self.i)?).ok();
                }
                _ => self.i += 1,
            }
        }
        None
    }

    fn value(&mut self) -> Option<()> {
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => {
                self.i += 1;
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.eat(b':')?;
                    self.value()?;
                    if self.eat(b',').is_none() {
                        return self.eat(b'}');
                    }
                }
            }
            b'[' => {
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.value()?;
                    if self.eat(b',').is_none() {
                        return self.eat(b']');
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                let start = self.i;
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t'
                    )
                {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }

    /// Moves from the start of a container to the start of its member `seg`.
    fn descend(&mut self, seg: &Seg) -> Option<()> {
        self.ws();
        match seg {
            Seg::Key(want) => {
                self.eat(b'{')?;
                if self.eat(b'}').is_some() {
                    return None;
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    self.ws();
                    if &key == want {
                        return Some(());
                    }
                    self.value()?;
                    self.eat(b',')?;
                }
            }
            Seg::Index(want) => {
                self.eat(b'[')?;
                if self.eat(b']').is_some() {
                    return None;
                }
                let mut n = 0;
                loop {
                    self.ws();
                    if n == *want {
                        return Some(());
                    }
                    self.value()?;
                    self.eat(b',')?;
                    n += 1;
                }
            }
        }
    }
}

/// Where a value sits, for error reports: the file, the text the value was parsed from, the
/// path of the value within that text, and the line the text starts on.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// File name for messages.
    pub file: &'a str,
    /// The JSON text that contains the value (a whole document, or one JSONL line).
    pub text: &'a str,
    /// Line number of the first line of `text` within the file, minus one.
    pub line_offset: usize,
}

impl Origin<'_> {
    /// A problem at `path` (located in the text).
    pub fn error(&self, path: &JsonPath, message: impl Into<String>) -> FormatError {
        let line = line_of(self.text, path) + self.line_offset;
        FormatError::new(self.file, line, path.to_string(), message)
    }

    /// Deserializes the value found at `base` into `T`, reporting the exact failing field.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        value: &Value,
        base: &JsonPath,
    ) -> Result<T, FormatError> {
        serde_path_to_error::deserialize(value).map_err(|err| {
            let mut path = base.clone();
            for seg in err.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => path.0.push(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => path.0.push(Seg::Key(key.clone())),
                    _ => {}
                }
            }
            let mut message = err.inner().to_string();
            if let Some(field) = missing_field(&message) {
                path.0.push(Seg::Key(field));
                message = "missing required field".to_string();
            }
            self.error(&path, message)
        })
    }
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.strip_suffix('`')?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "[\n  {\"a\": 1,\n   \"b\": [\"x\",\n     \"y\\\"]\"]},\n  {\"a\": {\"c\": null}}\n]\n";

    fn p(segs: &[Seg]) -> JsonPath {
        JsonPath(segs.to_vec())
    }

    #[test]
    fn finds_lines_along_paths() {
        use Seg::*;
        assert_eq!(line_of(DOC, &p(&[])), 1);
        assert_eq!(line_of(DOC, &p(&[Index(0)])), 2);
        assert_eq!(line_of(DOC, &p(&[Index(0), Key("b".into())])), 3);
        assert_eq!(line_of(DOC, &p(&[Index(0), Key("b".into()), Index(1)])), 4);
        assert_eq!(
            line_of(DOC, &p(&[Index(1), Key("a".into()), Key("c".into())])),
            5
        );
        // A missing member falls back to its parent object.
        assert_eq!(line_of(DOC, &p(&[Index(1), Key("zz".into())])), 5);
        assert_eq!(line_of(DOC, &p(&[Index(7)])), 1);
    }

    #[test]
    fn paths_display_like_accessors() {
        let path = JsonPath::root().index(57).key("Toolkits").index(0);
        assert_eq!(path.to_string(), "[57].Toolkits[0]");
        assert_eq!(
            JsonPath::root().key("User Instruction").to_string(),
            "User Instruction"
        );
        assert_eq!(JsonPath::root().to_string(), "$");
    }
}
