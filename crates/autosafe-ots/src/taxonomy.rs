//! The risk-outcome taxonomy (a data file) and the mapper from free-text outcomes to categories.
//!
//! The default taxonomy is the repository's `data/taxonomy.toml`, embedded at build time so the
//! binary works anywhere; [`Taxonomy::from_toml`] loads any other file of the same shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Problems};

/// The taxonomy shipped with AutoSafe (`data/taxonomy.toml`).
pub(crate) const DEFAULT_TAXONOMY_TOML: &str = include_str!("../../../data/taxonomy.toml");

/// Default severity of a risk category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Limited, reversible harm.
    Mild,
    /// Substantial or irreversible harm.
    Severe,
}

impl Severity {
    /// `mild` or `severe`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Mild => "mild",
            Severity::Severe => "severe",
        }
    }
}

/// One risk-outcome category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// Stable snake_case id, e.g. `privacy_leak`.
    pub id: String,
    /// Short human name.
    pub name: String,
    /// What the outcome is, for prompts and reports.
    pub description: String,
    /// Default severity.
    pub severity: Severity,
    /// Phrases that name this category in imported data.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// How an outcome string was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchVia {
    /// The `"<Risk>:"` prefix equals an alias (or the id or name).
    Prefix,
    /// The whole string equals an alias.
    Whole,
    /// An alias occurs as whole words inside the prefix (or inside a short outcome).
    Phrase,
}

/// An outcome string mapped onto a category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappedOutcome {
    /// The original text.
    pub text: String,
    /// The category id.
    pub category: String,
    /// How it matched.
    pub via: MatchVia,
}

/// The result of mapping many outcome strings: nothing is dropped.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MappingReport {
    /// Strings that mapped.
    pub mapped: Vec<MappedOutcome>,
    /// Strings no alias matched, unchanged.
    pub unmapped: Vec<String>,
}

impl MappingReport {
    /// Number of strings seen.
    pub fn total(&self) -> usize {
        self.mapped.len() + self.unmapped.len()
    }

    /// Share of strings mapped (1.0 when there were none).
    pub fn share_mapped(&self) -> f64 {
        if self.total() == 0 {
            1.0
        } else {
            self.mapped.len() as f64 / self.total() as f64
        }
    }

    /// Distinct category ids, in first-seen order.
    pub fn categories(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.mapped {
            if !out.contains(&m.category) {
                out.push(m.category.clone());
            }
        }
        out
    }
}

/// A loaded, checked taxonomy.
#[derive(Debug, Clone, PartialEq)]
pub struct Taxonomy {
    categories: Vec<Category>,
    /// Normalised alias (also id and name) -> index into `categories`.
    index: BTreeMap<String, usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaxonomyFile {
    category: Vec<toml::Spanned<Category>>,
}

/// Lower-cases and replaces each run of non-alphanumeric characters by one space.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    out
}

impl Taxonomy {
    /// The embedded default taxonomy.
    pub fn default_taxonomy() -> Taxonomy {
        Taxonomy::from_toml("data/taxonomy.toml", DEFAULT_TAXONOMY_TOML)
            .expect("the shipped taxonomy is valid")
    }

    /// Parses and checks a taxonomy file: ids snake_case and unique, fields non-empty, each
    /// alias in one category only. `file` is used in error messages.
    pub fn from_toml(file: &str, text: &str) -> Result<Taxonomy, Problems> {
        let line = |offset: usize| crate::locate::line_at(text, offset);
        let parsed: TaxonomyFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| line(s.start)).unwrap_or(1);
            FormatError::new(file, at, "category", e.message().trim().to_string())
        })?;
        let mut problems = Vec::new();
        let mut index = BTreeMap::new();
        let mut categories = Vec::new();
        for (i, spanned) in parsed.category.into_iter().enumerate() {
            let at = line(spanned.span().start);
            let cat = spanned.into_inner();
            let field = |f: &str| format!("category[{i}].{f}");
            let snake = !cat.id.is_empty()
                && cat
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && cat.id.starts_with(|c: char| c.is_ascii_lowercase());
            if !snake {
                problems.push(FormatError::new(
                    file,
                    at,
                    field("id"),
                    format!("`{}` is not a snake_case id", cat.id),
                ));
            }
            for (name, value) in [("name", &cat.name), ("description", &cat.description)] {
                if value.trim().is_empty() {
                    problems.push(FormatError::new(file, at, field(name), "must not be empty"));
                }
            }
            let keys = [cat.id.clone(), cat.name.clone()]
                .into_iter()
                .chain(cat.aliases.iter().cloned());
            for (k, key) in keys.enumerate() {
                let norm = normalize(&key);
                if norm.is_empty() {
                    problems.push(FormatError::new(
                        file,
                        at,
                        field(&format!("aliases[{}]", k.saturating_sub(2))),
                        "must not be empty",
                    ));
                    continue;
                }
                match index.get(&norm) {
                    Some(&other) if other != i => problems.push(FormatError::new(
                        file,
                        at,
                        field(
                            if k == 0 {
                                "id".to_string()
                            } else if k == 1 {
                                "name".to_string()
                            } else {
                                format!("aliases[{}]", k - 2)
                            }
                            .as_str(),
                        ),
                        format!(
                            "`{key}` already names category `{}`",
                            categories_id(&categories, other)
                        ),
                    )),
                    _ => {
                        index.insert(norm, i);
                    }
                }
            }
            categories.push(cat);
        }
        if categories.is_empty() {
            problems.push(FormatError::new(
                file,
                1,
                "category",
                "the taxonomy has no categories",
            ));
        }
        Problems(problems).into_result(Taxonomy { categories, index })
    }

    /// All categories, in file order.
    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// A category by id.
    pub fn get(&self, id: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    /// Maps one free-text outcome onto a category: the `"<Risk>:"` prefix first, then the whole
    /// string, then the longest alias found as whole words in the prefix (or in a short outcome).
    pub fn map_one(&self, text: &str) -> Option<(&Category, MatchVia)> {
        let prefix = text.split_once(':').map(|(p, _)| normalize(p));
        if let Some(p) = &prefix
            && let Some(&i) = self.index.get(p)
        {
            return Some((&self.categories[i], MatchVia::Prefix));
        }
        let whole = normalize(text);
        if let Some(&i) = self.index.get(&whole) {
            return Some((&self.categories[i], MatchVia::Whole));
        }
        let head = match prefix {
            Some(p) => p,
            None if whole.split(' ').count() <= 8 => whole,
            None => return None,
        };
        let padded = format!(" {head} ");
        self.index
            .iter()
            .filter(|(alias, _)| padded.contains(&format!(" {alias} ")))
            .max_by_key(|(alias, _)| alias.len())
            .map(|(_, &i)| (&self.categories[i], MatchVia::Phrase))
    }

    /// Maps many outcomes; unmapped ones are listed, never dropped.
    pub fn map_all<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> MappingReport {
        let mut report = MappingReport::default();
        for text in texts {
            match self.map_one(text) {
                Some((cat, via)) => report.mapped.push(MappedOutcome {
                    text: text.to_string(),
                    category: cat.id.clone(),
                    via,
                }),
                None => report.unmapped.push(text.to_string()),
            }
        }
        report
    }
}

fn categories_id(categories: &[Category], i: usize) -> &str {
    categories.get(i).map(|c| c.id.as_str()).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_taxonomy_loads_and_maps() {
        let t = Taxonomy::default_taxonomy();
        assert!(t.categories().len() >= 10);
        let (c, via) = t
            .map_one("Data loss: Accidentally deleting important tasks.")
            .unwrap();
        assert_eq!((c.id.as_str(), via), ("data_loss", MatchVia::Prefix));
        let (c, via) = t.map_one("Leak sensitive data / information").unwrap();
        assert_eq!((c.id.as_str(), via), ("privacy_leak", MatchVia::Whole));
        let (c, via) = t
            .map_one("Severe privacy breach: the agent posts the SSN")
            .unwrap();
        assert_eq!((c.id.as_str(), via), ("privacy_leak", MatchVia::Phrase));
        assert!(
            t.map_one("Something else entirely: with a long explanation")
                .is_none()
        );
        let r = t.map_all(["Data loss: x", "Weird: y"]);
        assert_eq!(r.unmapped, vec!["Weird: y".to_string()]);
        assert_eq!(r.share_mapped(), 0.5);
    }

    #[test]
    fn bad_taxonomy_names_file_line_and_field() {
        let text = "[[category]]\nid = \"a\"\nname = \"A\"\ndescription = \"d\"\nseverity = \"mild\"\naliases = [\"x\"]\n\n\
                    [[category]]\nid = \"Bad-Id\"\nname = \"B\"\ndescription = \"\"\nseverity = \"severe\"\naliases = [\"X\"]\n";
        let err = Taxonomy::from_toml("t.toml", text).unwrap_err().to_string();
        assert!(
            err.contains("t.toml:8: category[1].id: `Bad-Id` is not a snake_case id"),
            "{err}"
        );
        assert!(
            err.contains("t.toml:8: category[1].description: must not be empty"),
            "{err}"
        );
        assert!(
            err.contains("t.toml:8: category[1].aliases[0]: `X` already names category `a`"),
            "{err}"
        );
        let err = Taxonomy::from_toml("t.toml", "[[category]]\nid = \"a\"\nseverity = \"huge\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:"), "{err}");
    }

    #[test]
    fn normalize_folds_case_and_punctuation() {
        assert_eq!(
            normalize("  Leak sensitive data / information. "),
            "leak sensitive data information"
        );
    }
}
