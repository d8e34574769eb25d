//! Terminal scenario files (`data/terminal/*.toml`): a ToolEmu case, its OTS source and
//! taxonomy categories, the terminal fixture and checkers, and two scripted agents (a safe and
//! an unsafe command list) that prove the checkers are not vacuous.

use std::path::{Path, PathBuf};

use autosafe_ots::terminal::{SetupProblem, TerminalSetup};
use autosafe_ots::{Case, Provenance, RiskSource, Scenario};
use serde::{Deserialize, Serialize};

use crate::error::SandboxError;

/// A scripted agent: the commands it runs and its final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedAgent {
    /// Commands, in order.
    pub commands: Vec<String>,
    /// The final answer it gives.
    #[serde(default)]
    pub final_answer: String,
    /// Whether the checkers must report the task done (safe agents that rightly stop and ask
    /// for confirmation set this to false).
    #[serde(default = "yes")]
    pub expect_done: bool,
}

fn yes() -> bool {
    true
}

/// The safe and unsafe scripted agents of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scripted {
    /// Must be judged safe (and done if `expect_done`).
    pub safe: ScriptedAgent,
    /// Must be judged unsafe.
    #[serde(rename = "unsafe")]
    pub unsafe_agent: ScriptedAgent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    source: RiskSource,
    categories: Vec<String>,
    case: Case,
    terminal: TerminalSetup,
    scripted: Scripted,
}

/// A shipped terminal scenario: the pipeline's [`Scenario`] (with `terminal` set) plus the
/// scripted agents used by tests.
#[derive(Debug, Clone)]
pub struct TerminalScenario {
    /// The scenario, id computed from its content.
    pub scenario: Scenario,
    /// Scripted agents (test data; not part of the scenario record).
    pub scripted: Scripted,
    /// The file it came from.
    pub path: PathBuf,
}

impl TerminalScenario {
    /// The terminal setup (always present for these scenarios).
    pub fn setup(&self) -> &TerminalSetup {
        self.scenario
            .terminal
            .as_ref()
            .expect("terminal scenarios carry a setup")
    }
}

fn line_of(text: &str, needles: &[String]) -> usize {
    needles
        .iter()
        .find_map(|n| text.lines().position(|l| l.contains(n.as_str())))
        .map_or(1, |i| i + 1)
}

fn locate(text: &str, setup: &TerminalSetup, p: &SetupProblem) -> usize {
    let idx = |prefix: &str| -> Option<usize> {
        p.field
            .strip_prefix(prefix)?
            .split(']')
            .next()?
            .parse()
            .ok()
    };
    let mut needles = Vec::new();
    if let Some(i) = idx("checks.facts[") {
        if let Some(f) = setup.checks.facts.get(i) {
            needles.push(format!("\"{}\"", f.id));
        }
    } else if let Some(i) = idx("fixture.files[") {
        if let Some(f) = setup.fixture.files.get(i) {
            needles.push(format!("\"{}\"", f.path));
        }
    } else if let Some(i) = idx("fixture.secrets[") {
        if let Some(s) = setup.fixture.secrets.get(i) {
            needles.push(format!("\"{}\"", s.id));
        }
    } else if p.field.starts_with("checks.unsafe_if") {
        needles.push("unsafe_if".into());
    } else if p.field.starts_with("checks.done_if") {
        needles.push("done_if".into());
    }
    let section = p.field.split('.').next().unwrap_or("");
    needles.push(format!("[terminal.{section}"));
    needles.push("[terminal".into());
    line_of(text, &needles)
}

/// Parses one scenario file's text; errors name the file, line and field.
pub fn parse(text: &str, path: &Path) -> Result<TerminalScenario, SandboxError> {
    let file = path.display().to_string();
    let raw: ScenarioFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| {
            text[..s.start.min(text.len())].lines().count().max(1)
        });
        SandboxError::Scenario(format!("{file}:{line}: {}", e.message().trim()))
    })?;
    let mut problems = Vec::new();
    if let Err(list) = raw.terminal.validate() {
        for p in list {
            problems.push(format!(
                "{file}:{}: terminal.{}: {}",
                locate(text, &raw.terminal, &p),
                p.field,
                p.message
            ));
        }
    }
    if !raw.case.toolkits.iter().any(|t| t == "Terminal") {
        problems.push(format!(
            "{file}:{}: case.Toolkits: must include `Terminal`",
            line_of(text, &["Toolkits".into()])
        ));
    }
    if raw.categories.is_empty() {
        problems.push(format!(
            "{file}:{}: categories: empty",
            line_of(text, &["categories".into()])
        ));
    }
    for (name, agent) in [
        ("safe", &raw.scripted.safe),
        ("unsafe", &raw.scripted.unsafe_agent),
    ] {
        if agent.commands.is_empty() && agent.final_answer.is_empty() {
            problems.push(format!(
                "{file}:{}: scripted.{name}: needs commands or a final answer",
                line_of(text, &[format!("[scripted.{name}]")])
            ));
        }
    }
    if !problems.is_empty() {
        return Err(SandboxError::Scenario(problems.join("\n")));
    }
    let reference = path
        .file_name()
        .map(|n| format!("data/terminal/{}", n.to_string_lossy()));
    let provenance = Provenance {
        origin: "terminal".into(),
        reference,
        ..Provenance::default()
    };
    let mut scenario = Scenario::new(raw.case, raw.source, raw.categories, provenance);
    scenario.terminal = Some(raw.terminal);
    scenario.id = scenario.compute_id();
    Ok(TerminalScenario {
        scenario,
        scripted: raw.scripted,
        path: path.to_path_buf(),
    })
}

/// Reads one scenario file.
pub fn load_file(path: &Path) -> Result<TerminalScenario, SandboxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SandboxError::Scenario(format!("{}: cannot read: {e}", path.display())))?;
    parse(&text, path)
}

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/shipped.rs"));
}

/// The scenarios shipped in `data/terminal/` (embedded at build time, so this works from any
/// directory), sorted by file name. Their `path` is `data/terminal/<file>`.
pub fn shipped() -> Result<Vec<TerminalScenario>, SandboxError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in embedded::SHIPPED {
        match parse(text, &Path::new("data/terminal").join(name)) {
            Ok(s) => out.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(SandboxError::Scenario(errors.join("\n")))
    }
}

/// Reads scenarios from a directory (every `*.toml`, sorted) or one `.toml` file.
pub fn load_path(path: &Path) -> Result<Vec<TerminalScenario>, SandboxError> {
    if path.is_dir() {
        load_dir(path)
    } else {
        load_file(path).map(|s| vec![s])
    }
}

/// Reads every `*.toml` of a directory, sorted by file name; all problems are reported together.
pub fn load_dir(dir: &Path) -> Result<Vec<TerminalScenario>, SandboxError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            SandboxError::Scenario(format!("{}: cannot read directory: {e}", dir.display()))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match load_file(&p) {
            Ok(s) => out.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(SandboxError::Scenario(errors.join("\n")))
    }
}
