//! `--env emulator|terminal`: one place that turns the choice into an environment factory and,
//! for the terminal, the scenarios it can play. The pipeline CLI (elicit, reflect, run) and
//! evaluation use it, so the choice means the same everywhere.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use autosafe_env::select::{EnvChoice, EnvOptions, select};
//! # async fn f(model: Arc<dyn autosafe_llm::ChatModel>) -> Result<(), autosafe_env::EnvError> {
//! let sel = select(EnvChoice::Terminal, &EnvOptions::default(), || Ok(model))?;
//! let scenarios = sel.scenarios.unwrap(); // the shipped data/terminal/*.toml
//! let env = sel.factory.start(&scenarios[0], 0).await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use autosafe_llm::ChatModel;
use autosafe_ots::scenario_records::{Context, read_scenarios};
use autosafe_ots::{Scenario, Taxonomy, ToolLibrary};
use autosafe_sandbox::SandboxConfig;
use serde::{Deserialize, Serialize};

use crate::emulator::{EmulatorFactory, EmulatorMode, EmulatorOptions};
use crate::terminal::TerminalFactory;
use crate::traits::{EnvError, EnvironmentFactory};

/// Which environment plays the agent's tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvChoice {
    /// The LLM tool emulator (any ToolEmu toolkit; a judge decides safety).
    #[default]
    Emulator,
    /// The real terminal: commands run in a bubblewrap sandbox, checkers give verdicts.
    Terminal,
}

impl EnvChoice {
    /// `emulator` or `terminal`.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvChoice::Emulator => "emulator",
            EnvChoice::Terminal => "terminal",
        }
    }
}

impl fmt::Display for EnvChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EnvChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "emulator" => Ok(EnvChoice::Emulator),
            "terminal" => Ok(EnvChoice::Terminal),
            other => Err(format!(
                "unknown environment `{other}` (expected `emulator` or `terminal`)"
            )),
        }
    }
}

/// Settings of both environments; each uses its own.
#[derive(Debug, Clone)]
pub struct EnvOptions {
    /// Emulator mode (emulator only).
    pub emulator_mode: EmulatorMode,
    /// Emulator options (emulator only).
    pub emulator: EmulatorOptions,
    /// Toolkits the emulator plays (emulator only).
    pub library: Arc<ToolLibrary>,
    /// Sandbox limits (terminal only).
    pub sandbox: SandboxConfig,
    /// Where terminal scenarios come from, each a directory of scenario TOML files, one
    /// `.toml` file or a JSON Lines file of scenario records that carry a terminal setup; empty =
    /// the shipped `data/terminal/*.toml` (embedded) (terminal only).
    pub scenarios: Vec<PathBuf>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            emulator_mode: EmulatorMode::Adversarial,
            emulator: EmulatorOptions::default(),
            library: Arc::new(ToolLibrary::shipped()),
            sandbox: SandboxConfig::default(),
            scenarios: Vec::new(),
        }
    }
}

/// What a choice built.
pub struct EnvSelection {
    /// The choice.
    pub choice: EnvChoice,
    /// Starts episodes.
    pub factory: Arc<dyn EnvironmentFactory>,
    /// The scenarios the environment brings: the terminal's (shipped or from
    /// [`EnvOptions::scenarios`]); `None` for the emulator, which plays the caller's scenarios
    /// (synthesized, ToolEmu, …).
    pub scenarios: Option<Vec<Scenario>>,
}

/// Builds the environment for `choice`. The emulator's model comes from `emulator_model`, called
/// only when the emulator is chosen (loading a model can be expensive). For the terminal the
/// sandbox is checked first: when it cannot run here the error is
/// [`autosafe_sandbox::check`]'s reason and hint (`EnvError::Sandbox`); nothing ever falls back
/// to the host.
pub fn select(
    choice: EnvChoice,
    options: &EnvOptions,
    emulator_model: impl FnOnce() -> Result<Arc<dyn ChatModel>, EnvError>,
) -> Result<EnvSelection, EnvError> {
    match choice {
        EnvChoice::Emulator => Ok(EnvSelection {
            choice,
            factory: Arc::new(EmulatorFactory::new(
                emulator_model()?,
                options.emulator_mode,
                options.library.clone(),
                options.emulator.clone(),
            )),
            scenarios: None,
        }),
        EnvChoice::Terminal => {
            let scenarios = terminal_scenarios(&options.scenarios)?;
            let factory = TerminalFactory::checked(options.sandbox.clone())?;
            Ok(EnvSelection {
                choice,
                factory: Arc::new(factory),
                scenarios: Some(scenarios),
            })
        }
    }
}

/// Terminal scenarios as pipeline [`Scenario`] records (with `terminal` set): the shipped
/// `data/terminal/*.toml` when `from` is empty; else those of every path in order (see
/// [`terminal_scenarios_at`]), each id once (the first occurrence is kept).
pub fn terminal_scenarios(from: &[PathBuf]) -> Result<Vec<Scenario>, EnvError> {
    if from.is_empty() {
        return Ok(autosafe_sandbox::shipped()
            .map_err(|e| EnvError::Config(e.to_string()))?
            .into_iter()
            .map(|s| s.scenario)
            .collect());
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in from {
        for s in terminal_scenarios_at(p)? {
            if seen.insert(s.id.clone()) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// The terminal scenarios of one path: a directory of scenario TOML files, one `.toml` file, a
/// JSON Lines file of terminal scenario records (the TOML's fields, as written by synthesis), or
/// a JSON Lines file of pipeline scenario records. Errors name the file, line and field; a
/// record without a terminal setup is an error.
pub(crate) fn terminal_scenarios_at(path: &Path) -> Result<Vec<Scenario>, EnvError> {
    let bad = |e: &dyn fmt::Display| EnvError::Config(e.to_string());
    let is_toml = path.extension().is_some_and(|x| x == "toml");
    if path.is_dir() || is_toml {
        return Ok(autosafe_sandbox::load_path(path)
            .map_err(|e| bad(&e))?
            .into_iter()
            .map(|s| s.scenario)
            .collect());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| EnvError::Config(format!("{}: cannot read: {e}", path.display())))?;
    if autosafe_ots::detect(&text) == Ok(autosafe_ots::Format::TerminalScenarios) {
        return Ok(autosafe_sandbox::scenarios::parse_jsonl(&text, path)
            .map_err(|e| bad(&e))?
            .into_iter()
            .map(|s| s.scenario)
            .collect());
    }
    let library = ToolLibrary::shipped();
    let taxonomy = Taxonomy::default_taxonomy();
    let file = path.display().to_string();
    let cx = Context {
        library: &library,
        taxonomy: &taxonomy,
    };
    let scenarios = read_scenarios(&file, &text, cx).map_err(|e| bad(&e))?;
    let missing: Vec<String> = scenarios
        .iter()
        .filter(|s| s.terminal.is_none())
        .map(|s| {
            let line = text
                .lines()
                .position(|l| l.contains(&s.id))
                .map_or(0, |i| i + 1);
            format!(
                "{file}:{line}: terminal: scenario {} has no terminal setup (the terminal \
                 environment needs a fixture and checkers)",
                s.id
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(EnvError::Config(missing.join("\n")));
    }
    Ok(scenarios)
}
