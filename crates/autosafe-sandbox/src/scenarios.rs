//! Terminal scenario files (`data/terminal/*.toml`): a ToolEmu case, its OTS source and
//! taxonomy categories, the terminal fixture and checkers, and two scripted agents (a safe and
//! an unsafe command list) that prove the checkers are not vacuous (`crate::prove`). The same
//! record in JSON, one per line of a `.jsonl` file, is how synthesized terminal scenarios are
//! written.

use std::path::{Path, PathBuf};

use autosafe_ots::terminal::{SetupProblem, TerminalSetup};
use autosafe_ots::{Case, Provenance, RiskSource, Scenario};
use serde::{Deserialize, Serialize};

use crate::checks::Compiled;
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

/// A terminal scenario as written: the tables of a `data/terminal/*.toml` file, and, in JSON,
/// one line of a `.jsonl` file of terminal scenarios (the same fields, serde's JSON form), the
/// format synthesized terminal scenarios are written in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioRecord {
    /// The OTS risk source.
    pub source: RiskSource,
    /// Taxonomy category ids at stake.
    pub categories: Vec<String>,
    /// The ToolEmu case.
    pub case: Case,
    /// Fixture and checkers.
    pub terminal: TerminalSetup,
    /// The scripted safe and unsafe solutions.
    pub scripted: Scripted,
    /// Where it came from (e.g. the generator of a synthesized scenario); when absent, origin
    /// `terminal` and the file as reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// A terminal scenario: the pipeline's [`Scenario`] (with `terminal` set) plus the scripted
/// solutions that prove its checkers (`crate::prove`).
#[derive(Debug, Clone)]
pub struct TerminalScenario {
    /// The scenario, id computed from its content.
    pub scenario: Scenario,
    /// Scripted agents (test data; not part of the scenario record).
    pub scripted: Scripted,
    /// The file it came from.
    pub path: PathBuf,
    /// Its line, for a scenario read from JSON Lines.
    pub line: Option<usize>,
}

impl TerminalScenario {
    /// The terminal setup (always present for these scenarios).
    pub fn setup(&self) -> &TerminalSetup {
        self.scenario
            .terminal
            .as_ref()
            .expect("terminal scenarios carry a setup")
    }

    /// `FILE` or `FILE:LINE`, for messages.
    pub fn location(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    /// The scenario as written (its provenance included), e.g. to write it as a JSON line.
    pub fn record(&self) -> ScenarioRecord {
        ScenarioRecord {
            source: self.scenario.source,
            categories: self.scenario.categories.clone(),
            case: self.scenario.case.clone(),
            terminal: self.setup().clone(),
            scripted: self.scripted.clone(),
            provenance: Some(self.scenario.provenance.clone()),
        }
    }

    /// Checks a record and builds the scenario; `path` (and `line`, for JSON Lines) say where
    /// it came from. Errors name `FILE[:LINE]: field: problem`, one per line.
    pub fn from_record(
        record: ScenarioRecord,
        path: &Path,
        line: Option<usize>,
    ) -> Result<TerminalScenario, SandboxError> {
        let at = match line {
            Some(l) => format!("{}:{l}", path.display()),
            None => path.display().to_string(),
        };
        let problems: Vec<String> = record_problems(&record)
            .into_iter()
            .map(|p| format!("{at}: {}: {}", p.field, p.message))
            .collect();
        if !problems.is_empty() {
            return Err(SandboxError::Scenario(problems.join("\n")));
        }
        Ok(build(record, path, line))
    }
}

fn line_of(text: &str, needles: &[String]) -> usize {
    needles
        .iter()
        .find_map(|n| text.lines().position(|l| l.contains(n.as_str())))
        .map_or(1, |i| i + 1)
}

/// Strings whose first line in the TOML text is where a setup problem is.
fn needles(setup: &TerminalSetup, field: &str) -> Vec<String> {
    let idx = |prefix: &str| -> Option<usize> {
        field.strip_prefix(prefix)?.split(']').next()?.parse().ok()
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
    } else if field.starts_with("checks.unsafe_if") {
        needles.push("unsafe_if".into());
    } else if field.starts_with("checks.done_if") {
        needles.push("done_if".into());
    }
    let section = field.split('.').next().unwrap_or("");
    needles.push(format!("[terminal.{section}"));
    needles.push("[terminal".into());
    needles
}

/// One problem of a record: the field and what is wrong, and where to look for it in TOML.
struct RecordProblem {
    field: String,
    message: String,
    needles: Vec<String>,
}

/// Everything wrong with a record that can be told without running it: the setup's problems,
/// checkers' regular expressions that do not compile, the case's toolkits, empty categories,
/// empty scripts.
fn record_problems(raw: &ScenarioRecord) -> Vec<RecordProblem> {
    let mut problems = Vec::new();
    let mut setup_problems = raw.terminal.validate().err().unwrap_or_default();
    if let Err(SandboxError::BadPattern { fact, error }) = Compiled::new(&raw.terminal.checks) {
        let i = raw.terminal.checks.facts.iter().position(|f| f.id == fact);
        setup_problems.push(SetupProblem {
            field: format!("checks.facts[{}].pattern", i.unwrap_or(0)),
            message: format!("bad regular expression: {error}"),
        });
    }
    for p in setup_problems {
        problems.push(RecordProblem {
            needles: needles(&raw.terminal, &p.field),
            field: format!("terminal.{}", p.field),
            message: p.message,
        });
    }
    let mut add = |field: &str, message: &str, needle: &str| {
        problems.push(RecordProblem {
            field: field.to_string(),
            message: message.to_string(),
            needles: vec![needle.to_string()],
        })
    };
    if !raw.case.toolkits.iter().any(|t| t == "Terminal") {
        add("case.Toolkits", "must include `Terminal`", "Toolkits");
    }
    if raw.categories.is_empty() {
        add("categories", "empty", "categories");
    }
    for (name, agent) in [
        ("safe", &raw.scripted.safe),
        ("unsafe", &raw.scripted.unsafe_agent),
    ] {
        if agent.commands.is_empty() && agent.final_answer.is_empty() {
            add(
                &format!("scripted.{name}"),
                "needs commands or a final answer",
                &format!("[scripted.{name}]"),
            );
        }
    }
    problems
}

fn build(raw: ScenarioRecord, path: &Path, line: Option<usize>) -> TerminalScenario {
    let provenance = raw.provenance.unwrap_or_else(|| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        Provenance {
            origin: "terminal".into(),
            reference: match line {
                Some(l) => name.map(|n| format!("{n}:{l}")),
                None => name.map(|n| format!("data/terminal/{n}")),
            },
            ..Provenance::default()
        }
    });
    let mut scenario = Scenario::new(raw.case, raw.source, raw.categories, provenance);
    scenario.terminal = Some(raw.terminal);
    scenario.id = scenario.compute_id();
    TerminalScenario {
        scenario,
        scripted: raw.scripted,
        path: path.to_path_buf(),
        line,
    }
}

/// Parses one scenario file's text; errors name the file, line and field.
pub fn parse(text: &str, path: &Path) -> Result<TerminalScenario, SandboxError> {
    let file = path.display().to_string();
    let raw: ScenarioRecord = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| {
            text[..s.start.min(text.len())].lines().count().max(1)
        });
        SandboxError::Scenario(format!("{file}:{line}: {}", e.message().trim()))
    })?;
    let problems: Vec<String> = record_problems(&raw)
        .into_iter()
        .map(|p| {
            let line = line_of(text, &p.needles);
            format!("{file}:{line}: {}: {}", p.field, p.message)
        })
        .collect();
    if !problems.is_empty() {
        return Err(SandboxError::Scenario(problems.join("\n")));
    }
    Ok(build(raw, path, None))
}

/// Parses JSON Lines of [`ScenarioRecord`]s (blank lines skipped); every problem of every line
/// is reported together, each as `FILE:LINE: field: problem`.
pub fn parse_jsonl(text: &str, path: &Path) -> Result<Vec<TerminalScenario>, SandboxError> {
    let file = path.display().to_string();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line = i + 1;
        let de = &mut serde_json::Deserializer::from_str(l);
        match serde_path_to_error::deserialize::<_, ScenarioRecord>(de) {
            Ok(raw) => match TerminalScenario::from_record(raw, path, Some(line)) {
                Ok(s) => out.push(s),
                Err(e) => errors.push(e.to_string()),
            },
            Err(e) => errors.push(format!("{file}:{line}: {}: {}", e.path(), e.inner())),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(SandboxError::Scenario(errors.join("\n")))
    }
}

/// Whether `path` names JSON Lines of terminal scenarios (by its extension).
pub fn is_jsonl(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "jsonl")
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

/// Reads scenarios from a directory (every `*.toml` and `*.jsonl`, sorted), one `.jsonl` file of
/// scenario records, or one `.toml` file.
pub fn load_path(path: &Path) -> Result<Vec<TerminalScenario>, SandboxError> {
    if path.is_dir() {
        load_dir(path)
    } else if is_jsonl(path) {
        load_jsonl(path)
    } else {
        load_file(path).map(|s| vec![s])
    }
}

/// Reads a `.jsonl` file of scenario records.
pub fn load_jsonl(path: &Path) -> Result<Vec<TerminalScenario>, SandboxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SandboxError::Scenario(format!("{}: cannot read: {e}", path.display())))?;
    parse_jsonl(&text, path)
}

/// Reads every `*.toml` and `*.jsonl` of a directory, sorted by file name; all problems are
/// reported together.
pub fn load_dir(dir: &Path) -> Result<Vec<TerminalScenario>, SandboxError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            SandboxError::Scenario(format!("{}: cannot read directory: {e}", dir.display()))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml" || x == "jsonl"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match load_path(&p) {
            Ok(s) => out.extend(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(SandboxError::Scenario(errors.join("\n")))
    }
}
