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
        let problems: Vec<FileProblem> = record_problems(&record)
            .into_iter()
            .map(|p| FileProblem {
                line: line.unwrap_or(1),
                field: p.field,
                message: p.message,
            })
            .collect();
        if !problems.is_empty() {
            return Err(scenario_error(path, &problems));
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

/// One problem of a scenario file: its line, the field (empty when the text itself does not
/// read) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// 1-based line.
    pub line: usize,
    /// Path of the offending field, e.g. `terminal.checks.facts[2].path`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn scenario_error(path: &Path, problems: &[FileProblem]) -> SandboxError {
    let file = path.display();
    let lines: Vec<String> = problems
        .iter()
        .map(|p| match p.field.as_str() {
            "" => format!("{file}:{}: {}", p.line, p.message),
            f => format!("{file}:{}: {f}: {}", p.line, p.message),
        })
        .collect();
    SandboxError::Scenario(lines.join("\n"))
}

/// Reads terminal scenarios from a file's text, told by content: JSON Lines of
/// [`ScenarioRecord`]s when it starts with `{`, else one TOML scenario file.
pub fn read_text(text: &str, path: &Path) -> Result<Vec<TerminalScenario>, Vec<FileProblem>> {
    if text.trim_start().starts_with('{') {
        read_jsonl(text, path)
    } else {
        read_toml(text, path).map(|s| vec![s])
    }
}

fn read_toml(text: &str, path: &Path) -> Result<TerminalScenario, Vec<FileProblem>> {
    let raw: ScenarioRecord = toml::from_str(text).map_err(|e| {
        // Lines before the span's start, plus its own (a span at a line's start counts too).
        let line = e.span().map_or(1, |s| {
            text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
        vec![FileProblem {
            line,
            field: String::new(),
            message: e.message().trim().to_string(),
        }]
    })?;
    let problems: Vec<FileProblem> = record_problems(&raw)
        .into_iter()
        .map(|p| FileProblem {
            line: line_of(text, &p.needles),
            field: p.field,
            message: p.message,
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(build(raw, path, None))
}

fn read_jsonl(text: &str, path: &Path) -> Result<Vec<TerminalScenario>, Vec<FileProblem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line = i + 1;
        let value = match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) => from_pipeline_form(v),
            Err(e) => {
                problems.push(FileProblem {
                    line,
                    field: String::new(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        match serde_path_to_error::deserialize::<_, ScenarioRecord>(value) {
            Ok(raw) => {
                let found = record_problems(&raw);
                if found.is_empty() {
                    out.push(build(raw, path, Some(line)));
                }
                problems.extend(found.into_iter().map(|p| FileProblem {
                    line,
                    field: p.field,
                    message: p.message,
                }));
            }
            Err(e) => problems.push(FileProblem {
                line,
                field: e.path().to_string(),
                message: e.inner().to_string(),
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// A pipeline scenario record of a synthesized terminal scenario (`<run>/scenarios.jsonl`: an
/// `id`, the scripted solutions in `provenance.scripted`) as a [`ScenarioRecord`], so a run's
/// synthesized scenarios can be proved and shown again; any other line is left as it is.
fn from_pipeline_form(mut v: serde_json::Value) -> serde_json::Value {
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    let scripted = obj
        .get_mut("provenance")
        .and_then(|p| p.as_object_mut())
        .and_then(|p| p.remove("scripted"));
    if !obj.contains_key("id") || obj.contains_key("scripted") {
        return v;
    }
    let Some(scripted) = scripted else {
        return v;
    };
    obj.remove("id");
    obj.insert("scripted".into(), scripted);
    // Fields a pipeline record may carry that a synthesized terminal scenario leaves empty.
    for k in ["history", "initial_state", "tools"] {
        if obj
            .get(k)
            .is_some_and(|x| x.is_null() || x == &serde_json::json!([]))
        {
            obj.remove(k);
        }
    }
    v
}

/// Parses one scenario file's TOML text; errors name the file, line and field.
pub fn parse(text: &str, path: &Path) -> Result<TerminalScenario, SandboxError> {
    read_toml(text, path).map_err(|p| scenario_error(path, &p))
}

/// Parses JSON Lines of [`ScenarioRecord`]s (blank lines skipped); every problem of every line
/// is reported together, each as `FILE:LINE: field: problem`.
pub fn parse_jsonl(text: &str, path: &Path) -> Result<Vec<TerminalScenario>, SandboxError> {
    read_jsonl(text, path).map_err(|p| scenario_error(path, &p))
}

/// Whether `path` names JSON Lines of terminal scenarios (by its extension).
pub(crate) fn is_jsonl(path: &Path) -> bool {
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

/// Reads scenarios from a directory (every `*.toml`, sorted), one `.jsonl` file of scenario
/// records, or one `.toml` file.
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

/// Reads every `*.toml` of a directory, sorted by file name; all problems are reported
/// together. (JSON Lines files are read only when named: a directory may hold pipeline
/// scenario records beside them.)
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
