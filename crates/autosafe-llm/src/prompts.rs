//! The prompt set every role renders: templates (`prompts/*.j2`, minijinja) and output JSON
//! schemas (`prompts/schemas/`), the emulator's included, so a `--prompts` override reaches
//! every model the run asks.
//!
//! The files are embedded in the binary with `include_str!`, so it works from any directory;
//! [`Prompts::from_dir`] overrides any of them from a directory laid out like `prompts/`.
//! Every template and schema has a SHA-256 ([`Prompts::hash`]) that goes into cache keys and
//! run manifests; a template's hash covers the partials it imports (`_*.j2`).
//!
//! A template that does not render is the run's fault, not the item's: besides returning the
//! error, [`Prompts::render`] notes it for the item being watched ([`crate::watch`]), so the
//! stage stops instead of recording a model failure as finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::Environment;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why the prompt set could not be loaded or a template rendered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PromptError {
    /// Reading an override directory or file failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// A template or schema failed to load or render.
    #[error("prompt `{name}`: {message}")]
    Template {
        /// Template name (file name under `prompts/`).
        name: String,
        /// What went wrong.
        message: String,
    },
}

impl PromptError {
    fn io(path: &Path, e: std::io::Error) -> Self {
        PromptError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    fn template(name: &str, message: impl Into<String>) -> Self {
        PromptError::Template {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

/// A minijinja environment with the block trimming every AutoSafe template is written for
/// (`trim_blocks`, `lstrip_blocks`); callers add their own functions and undefined behaviour.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the default delimiters with trimming are valid"),
    );
    env
}

/// Embedded files: (name relative to `prompts/`, contents).
const EMBEDDED: &[(&str, &str)] = &[
    (
        "_safety_reminder.j2",
        include_str!("../../../prompts/_safety_reminder.j2"),
    ),
    ("_tools.j2", include_str!("../../../prompts/_tools.j2")),
    (
        "agent_system.j2",
        include_str!("../../../prompts/agent_system.j2"),
    ),
    (
        "agent_user.j2",
        include_str!("../../../prompts/agent_user.j2"),
    ),
    (
        "agent_reflect.j2",
        include_str!("../../../prompts/agent_reflect.j2"),
    ),
    (
        "agent_repeat.j2",
        include_str!("../../../prompts/agent_repeat.j2"),
    ),
    ("emulator.j2", include_str!("../../../prompts/emulator.j2")),
    (
        "judge_step.j2",
        include_str!("../../../prompts/judge_step.j2"),
    ),
    (
        "judge_second_look.j2",
        include_str!("../../../prompts/judge_second_look.j2"),
    ),
    (
        "reflector.j2",
        include_str!("../../../prompts/reflector.j2"),
    ),
    (
        "reflect_checkers.j2",
        include_str!("../../../prompts/reflect_checkers.j2"),
    ),
    (
        "scenario_generator.j2",
        include_str!("../../../prompts/scenario_generator.j2"),
    ),
    (
        "terminal_generator.j2",
        include_str!("../../../prompts/terminal_generator.j2"),
    ),
    (
        "terminal_generator_repair.j2",
        include_str!("../../../prompts/terminal_generator_repair.j2"),
    ),
    (
        "training_input.j2",
        include_str!("../../../prompts/training_input.j2"),
    ),
    (
        "schemas/generator.json",
        include_str!("../../../prompts/schemas/generator.json"),
    ),
    (
        "schemas/terminal_generator.json",
        include_str!("../../../prompts/schemas/terminal_generator.json"),
    ),
    (
        "schemas/judge.json",
        include_str!("../../../prompts/schemas/judge.json"),
    ),
    (
        "case_review.j2",
        include_str!("../../../prompts/case_review.j2"),
    ),
    (
        "schemas/case_review.json",
        include_str!("../../../prompts/schemas/case_review.json"),
    ),
    (
        "schemas/reflector.json",
        include_str!("../../../prompts/schemas/reflector.json"),
    ),
    (
        "schemas/emulator.json",
        include_str!("../../../prompts/schemas/emulator.json"),
    ),
];

/// Embedded files of the evaluation runners (`autosafe-evalrun`): the helpfulness judge and
/// ToolEmu's two rubric evaluators. Kept apart from [`EMBEDDED`] only for clarity; both lists
/// make up the prompt set.
const EVAL_EMBEDDED: &[(&str, &str)] = &[
    (
        "_toolemu_case.j2",
        include_str!("../../../prompts/_toolemu_case.j2"),
    ),
    (
        "judge_helpfulness.j2",
        include_str!("../../../prompts/judge_helpfulness.j2"),
    ),
    (
        "toolemu_safety.j2",
        include_str!("../../../prompts/toolemu_safety.j2"),
    ),
    (
        "toolemu_helpfulness.j2",
        include_str!("../../../prompts/toolemu_helpfulness.j2"),
    ),
    (
        "schemas/helpfulness.json",
        include_str!("../../../prompts/schemas/helpfulness.json"),
    ),
    (
        "schemas/toolemu_safety.json",
        include_str!("../../../prompts/schemas/toolemu_safety.json"),
    ),
    (
        "schemas/toolemu_helpfulness.json",
        include_str!("../../../prompts/schemas/toolemu_helpfulness.json"),
    ),
];

/// Template names, as constants so callers do not misspell them.
pub mod names {
    /// Agent system prompt (modes plain / safety / elicit; ReAct or native tools).
    pub const AGENT_SYSTEM: &str = "agent_system.j2";
    /// Agent turn prompt: instruction and scratchpad.
    pub const AGENT_USER: &str = "agent_user.j2";
    /// Agent regeneration prompt with the reflector's suggestion.
    pub const AGENT_REFLECT: &str = "agent_reflect.j2";
    /// The note that re-asks an agent whose proposal repeats its previous action.
    pub const AGENT_REPEAT: &str = "agent_repeat.j2";
    /// Tool emulator (standard or adversarial).
    pub const EMULATOR: &str = "emulator.j2";
    /// Binary step judge.
    pub const JUDGE_STEP: &str = "judge_step.j2";
    /// The step judge's second look at a step it called unsafe (`[judge] second_look`).
    pub const JUDGE_SECOND_LOOK: &str = "judge_second_look.j2";
    /// Reflector.
    pub const REFLECTOR: &str = "reflector.j2";
    /// The reflection given to the agent when the checkers decided a round.
    pub const REFLECT_CHECKERS: &str = "reflect_checkers.j2";
    /// Scenario generator.
    pub const SCENARIO_GENERATOR: &str = "scenario_generator.j2";
    /// Terminal scenario generator (fixture, checkers and scripted agents).
    pub const TERMINAL_GENERATOR: &str = "terminal_generator.j2";
    /// The note that asks the terminal generator again with why its scenario was rejected.
    pub const TERMINAL_GENERATOR_REPAIR: &str = "terminal_generator_repair.j2";
    /// Alpaca training input.
    pub const TRAINING_INPUT: &str = "training_input.j2";
    /// The safety reminder of safety training records (a partial, also rendered on its own).
    pub const SAFETY_REMINDER: &str = "_safety_reminder.j2";
    /// Generator output schema.
    pub const SCHEMA_GENERATOR: &str = "schemas/generator.json";
    /// Terminal scenario generator output schema (the JSON form of `data/terminal/*.toml`).
    pub const SCHEMA_TERMINAL_GENERATOR: &str = "schemas/terminal_generator.json";
    /// Judge output schema.
    pub const SCHEMA_JUDGE: &str = "schemas/judge.json";
    /// The plausibility review of a synthesized case (`[synthesize] review`, `eval review`).
    pub const CASE_REVIEW: &str = "case_review.j2";
    /// Its output schema.
    pub const SCHEMA_CASE_REVIEW: &str = "schemas/case_review.json";
    /// Reflector output schema.
    pub const SCHEMA_REFLECTOR: &str = "schemas/reflector.json";
    /// Emulator output schema.
    pub const SCHEMA_EMULATOR: &str = "schemas/emulator.json";
    /// Helpfulness judge of a snapshot's continuation (evaluation).
    pub const JUDGE_HELPFULNESS: &str = "judge_helpfulness.j2";
    /// ToolEmu safety (tool-call risk) rubric evaluator (evaluation).
    pub const TOOLEMU_SAFETY: &str = "toolemu_safety.j2";
    /// ToolEmu helpfulness rubric evaluator (evaluation).
    pub const TOOLEMU_HELPFULNESS: &str = "toolemu_helpfulness.j2";
    /// Helpfulness judge output schema.
    pub const SCHEMA_HELPFULNESS: &str = "schemas/helpfulness.json";
    /// ToolEmu safety evaluator output schema.
    pub const SCHEMA_TOOLEMU_SAFETY: &str = "schemas/toolemu_safety.json";
    /// ToolEmu helpfulness evaluator output schema.
    pub const SCHEMA_TOOLEMU_HELPFULNESS: &str = "schemas/toolemu_helpfulness.json";
}

/// The prompt set: template and schema sources by name, ready to render.
#[derive(Debug)]
pub struct Prompts {
    sources: BTreeMap<String, String>,
    overridden: Vec<String>,
    env: Environment<'static>,
}

/// Two sets are equal when they hold the same files (the environment is built from them).
impl PartialEq for Prompts {
    fn eq(&self, other: &Self) -> bool {
        self.sources == other.sources && self.overridden == other.overridden
    }
}

/// The embedded files, by name.
fn embedded_sources() -> BTreeMap<String, String> {
    EMBEDDED
        .iter()
        .chain(EVAL_EMBEDDED)
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

impl Prompts {
    /// The prompts embedded in the binary.
    pub fn embedded() -> Self {
        Self::build(embedded_sources(), Vec::new()).expect("embedded prompts are valid")
    }

    /// Names of the embedded files (templates, partials and schemas).
    pub fn embedded_names() -> impl Iterator<Item = &'static str> {
        EMBEDDED.iter().chain(EVAL_EMBEDDED).map(|(n, _)| *n)
    }

    /// The embedded prompts, with every file found in `dir` (same names: `judge_step.j2`,
    /// `schemas/judge.json`, …) replacing its embedded version. Unknown names are an error, so
    /// a typo does not silently leave the default in place.
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        let mut sources = embedded_sources();
        let mut overridden = Vec::new();
        for sub in ["", "schemas"] {
            let d = dir.join(sub);
            if !d.is_dir() {
                continue;
            }
            let entries = std::fs::read_dir(&d).map_err(|e| PromptError::io(&d, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| PromptError::io(&d, e))?;
                let path = entry.path();
                let file = entry.file_name().to_string_lossy().into_owned();
                if !path.is_file() || !(file.ends_with(".j2") || file.ends_with(".json")) {
                    continue;
                }
                let name = if sub.is_empty() {
                    file
                } else {
                    format!("{sub}/{file}")
                };
                if !sources.contains_key(&name) {
                    return Err(PromptError::template(
                        &path.display().to_string(),
                        format!(
                            "unknown prompt file; known: {}",
                            sources.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                let text = std::fs::read_to_string(&path).map_err(|e| PromptError::io(&path, e))?;
                sources.insert(name.clone(), text);
                overridden.push(name);
            }
        }
        overridden.sort();
        Self::build(sources, overridden)
    }

    fn build(
        sources: BTreeMap<String, String>,
        overridden: Vec<String>,
    ) -> Result<Self, PromptError> {
        let mut env = environment();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_function(
            "raise_error",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        for (name, src) in &sources {
            if name.ends_with(".j2") {
                env.add_template_owned(name.clone(), src.clone())
                    .map_err(|e| PromptError::template(name, format!("{e:#}")))?;
            } else {
                serde_json::from_str::<Value>(src).map_err(|e| {
                    PromptError::template(name, format!("invalid JSON at line {}: {e}", e.line()))
                })?;
            }
        }
        Ok(Prompts {
            sources,
            overridden,
            env,
        })
    }

    /// Names of the files that came from an override directory.
    pub fn overridden(&self) -> &[String] {
        &self.overridden
    }

    /// The source text of a template or schema.
    pub fn source(&self, name: &str) -> Result<&str, PromptError> {
        self.sources
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| unknown(name))
    }

    /// Renders template `name` with `ctx`. Undefined variables are errors; an error is also
    /// noted for the watched item (see the module documentation).
    pub fn render<C: Serialize>(&self, name: &str, ctx: &C) -> Result<String, PromptError> {
        let rendered = match self.env.get_template(name) {
            Ok(tmpl) => tmpl
                .render(minijinja::Value::from(minijinja::value::Serde(ctx)))
                .map(|out| out.trim().to_string())
                .map_err(|e| PromptError::template(name, format!("{e:#}"))),
            Err(_) => Err(unknown(name)),
        };
        rendered.inspect_err(crate::transient::note_prompt)
    }

    /// An output schema (`schemas/judge.json`, …) as JSON; an error is noted like
    /// [`Prompts::render`]'s.
    pub fn schema(&self, name: &str) -> Result<Value, PromptError> {
        self.source(name)
            .and_then(|src| {
                serde_json::from_str(src).map_err(|e| PromptError::template(name, e.to_string()))
            })
            .inspect_err(crate::transient::note_prompt)
    }
    /// SHA-256 (hex) of a template or schema. For a template, the hash covers the partials
    /// (`_*.j2`) it imports, so changing a shared macro changes every dependent hash.
    pub fn hash(&self, name: &str) -> Result<String, PromptError> {
        let src = self.source(name)?;
        let mut h = Sha256::new();
        h.update(src.as_bytes());
        for (partial, psrc) in self
            .sources
            .iter()
            .filter(|(n, _)| n.starts_with('_') && n.ends_with(".j2"))
        {
            if partial != name && src.contains(&format!("\"{partial}\"")) {
                h.update(b"\0");
                h.update(partial.as_bytes());
                h.update(b"\0");
                h.update(psrc.as_bytes());
            }
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Hashes of every template and schema, by name (for the manifest).
    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.sources
            .keys()
            .map(|n| (n.clone(), self.hash(n).expect("known name")))
            .collect()
    }
}

fn unknown(name: &str) -> PromptError {
    PromptError::template(name, "no such template or schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_schema_errors_name_the_file_and_are_noted_for_the_watched_item() {
        let p = Prompts::embedded();
        let err = p.render("nope.j2", &serde_json::json!({})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "prompt `nope.j2`: no such template or schema"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let watched = rt.block_on(crate::watch(async {
            p.render(names::JUDGE_STEP, &serde_json::json!({}))
                .map(|_| ())
        }));
        let err = watched.expect_err("a render error stops the item");
        assert!(
            err.to_string().starts_with("prompt `judge_step.j2`: "),
            "{err}"
        );
        let watched = rt.block_on(crate::watch(async {
            p.schema("schemas/nope.json").is_ok()
        }));
        assert!(watched.is_err());
        let watched = rt.block_on(crate::watch(async {
            p.schema(names::SCHEMA_JUDGE).is_ok()
        }));
        assert_eq!(watched.unwrap(), (true, None));
    }
}
