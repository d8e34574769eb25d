//! Input files of any format AutoSafe reads: read within caps, their format told by content
//! (`autosafe_ots::detect`), and parsed by one dispatch on that format ([`parse`]), which
//! `validate`, `taxonomy` and `eval judge` share.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use autosafe_ots::asb::AsbCase;
use autosafe_ots::assebench::AsseRecord;
use autosafe_ots::scenario_records::{self, Context};
use autosafe_ots::toolemu_traj::{self, EvaluatorRow, ToolEmuTrajectory};
use autosafe_ots::{
    Case, Format, FormatError, LabelledStep, Problems, Scenario, Snapshot, Taxonomy, ToolLibrary,
    Toolkit, asb, assebench, detect, toolemu,
};

/// Caps on what is read, so a huge or endless input (`validate /dev/zero` once grew to 4.5 GB)
/// fails at once with the file named instead of filling memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file, in bytes.
    pub file_bytes: u64,
    /// Longest line, in bytes.
    pub line_bytes: u64,
}

impl Default for Limits {
    /// 512 MiB files, 16 MiB lines: far above any benchmark file or record.
    fn default() -> Self {
        Limits {
            file_bytes: 512 << 20,
            line_bytes: 16 << 20,
        }
    }
}

/// Reads `path` as UTF-8 text within `limits`: never more than a line over the cap is held.
fn read_capped(path: &Path, limits: Limits) -> anyhow::Result<String> {
    use std::io::{BufRead, Read};
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    for line in 1.. {
        let n = (&mut reader)
            .take(limits.line_bytes.saturating_add(1))
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        let content = n - usize::from(buf.last() == Some(&b'\n'));
        if content as u64 > limits.line_bytes {
            anyhow::bail!(
                "{}:{line}: line longer than {} bytes (the cap; --max-line-size raises it)",
                path.display(),
                limits.line_bytes
            );
        }
        if buf.len() as u64 > limits.file_bytes {
            anyhow::bail!(
                "{}: larger than {} bytes (the cap; --max-file-size raises it)",
                path.display(),
                limits.file_bytes
            );
        }
    }
    String::from_utf8(buf).with_context(|| format!("{}: not UTF-8 text", path.display()))
}

/// One input file, read and recognised.
pub struct Input {
    /// The path as given, for messages.
    pub name: String,
    /// The path.
    pub path: PathBuf,
    /// The content.
    pub text: String,
    /// The format told by the content, or why none was.
    pub format: Result<Format, String>,
}

impl Input {
    /// `text` read from `path`, its format detected.
    pub fn new(path: &Path, text: String) -> Input {
        Input {
            name: path.display().to_string(),
            path: path.to_path_buf(),
            format: detect(&text).map_err(|e| e.to_string()),
            text,
        }
    }
}

/// Reads a file (within `limits`) and detects its format.
pub fn load(path: &Path, limits: Limits) -> anyhow::Result<Input> {
    Ok(Input::new(path, read_capped(path, limits)?))
}

/// Loads the taxonomy from `path`, or the shipped one.
pub fn load_taxonomy(path: Option<&Path>) -> anyhow::Result<Result<Taxonomy, Problems>> {
    Ok(match path {
        None => Ok(Taxonomy::default_taxonomy()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Taxonomy::from_toml(&p.display().to_string(), &text)
        }
    })
}

/// The toolkits cases are checked against: ToolEmu toolkits and Agent-SafetyBench environments.
pub struct Libraries {
    /// ToolEmu toolkits: the given ones, else the shipped ones.
    pub toolemu: ToolLibrary,
    /// `given` or `shipped`.
    pub toolemu_source: String,
    /// Agent-SafetyBench environments given.
    pub environments: ToolLibrary,
}

impl Libraries {
    /// The shipped ToolEmu toolkits, no environments.
    pub fn shipped() -> Libraries {
        Libraries {
            toolemu: ToolLibrary::shipped(),
            toolemu_source: "shipped".to_string(),
            environments: ToolLibrary::new(),
        }
    }
}

/// An Agent-SafetyBench environment's name: its file's stem.
fn env_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string()
}

/// Builds the libraries from toolkit inputs; problems in them are pushed to `problems`.
pub fn libraries(inputs: &[&Input], problems: &mut Vec<FormatError>) -> Libraries {
    let mut toolemu_lib = ToolLibrary::new();
    let mut environments = ToolLibrary::new();
    for input in inputs {
        match input.format {
            Ok(Format::ToolEmuToolkits) => match toolemu::read_toolkits(&input.name, &input.text) {
                Ok(tks) => toolemu_lib.extend(tks),
                Err(p) => problems.extend(p.0),
            },
            Ok(Format::AsbEnvironment) => {
                match asb::read_environment(&input.name, &input.text, &env_name(&input.path)) {
                    Ok(tk) => environments.extend([tk]),
                    Err(p) => problems.extend(p.0),
                }
            }
            _ => {}
        }
    }
    if toolemu_lib.is_empty() {
        return Libraries {
            environments,
            ..Libraries::shipped()
        };
    }
    Libraries {
        toolemu: toolemu_lib,
        toolemu_source: "given".to_string(),
        environments,
    }
}

/// The Agent-SafetyBench environment schemas in `dir` (`*.json`, in name order), with the
/// problems of those that do not read.
pub(crate) fn read_environments(dir: &Path) -> anyhow::Result<(ToolLibrary, Vec<FormatError>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut lib = ToolLibrary::new();
    let mut problems = Vec::new();
    for p in paths {
        let input = load(&p, Limits::default())?;
        match asb::read_environment(&input.name, &input.text, &env_name(&p)) {
            Ok(tk) => lib.extend([tk]),
            Err(e) => problems.extend(e.0),
        }
    }
    Ok((lib, problems))
}

/// A file's content, parsed by its format.
pub enum Parsed {
    /// ToolEmu toolkits.
    Toolkits(Vec<Toolkit>),
    /// One Agent-SafetyBench environment schema.
    Environment(Box<Toolkit>),
    /// ToolEmu cases.
    ToolEmuCases(Vec<Case>),
    /// Agent-SafetyBench cases, with how many environments they were checked against.
    AsbCases(Vec<AsbCase>, usize),
    /// ASSEBench records.
    AsseBench(Vec<AsseRecord>),
    /// ToolEmu trajectories.
    Trajectories(Vec<ToolEmuTrajectory>),
    /// ToolEmu evaluator rows.
    Evaluations(Vec<EvaluatorRow>),
    /// AutoSafe scenarios.
    Scenarios(Vec<Scenario>),
    /// AutoSafe snapshots.
    Snapshots(Vec<Snapshot>),
    /// Sandbox-labelled steps.
    LabelledSteps(Vec<LabelledStep>),
    /// Terminal scenarios with their scripted solutions (a TOML file or JSON Lines).
    TerminalScenarios(Vec<autosafe_sandbox::TerminalScenario>),
}

/// Parses `input` as `format`, checked against `libs` and `taxonomy`; Agent-SafetyBench cases
/// use `environments` (the given ones, or those beside the file).
pub fn parse(
    format: Format,
    input: &Input,
    libs: &Libraries,
    environments: &ToolLibrary,
    taxonomy: &Taxonomy,
) -> Result<Parsed, Problems> {
    let (name, text) = (input.name.as_str(), input.text.as_str());
    Ok(match format {
        Format::ToolEmuToolkits => Parsed::Toolkits(toolemu::read_toolkits(name, text)?),
        Format::AsbEnvironment => Parsed::Environment(Box::new(asb::read_environment(
            name,
            text,
            &env_name(&input.path),
        )?)),
        Format::ToolEmuCases => {
            Parsed::ToolEmuCases(toolemu::read_cases(name, text, &libs.toolemu)?)
        }
        Format::AsbCases => Parsed::AsbCases(
            asb::read_cases(name, text, environments)?,
            environments.len(),
        ),
        Format::AsseBench => Parsed::AsseBench(assebench::read_records(name, text)?),
        Format::ToolEmuTrajectories => {
            Parsed::Trajectories(toolemu_traj::read_trajectories(name, text)?)
        }
        Format::ToolEmuEvaluations => {
            Parsed::Evaluations(toolemu_traj::read_evaluations(name, text)?)
        }
        Format::TerminalScenarios => Parsed::TerminalScenarios(
            autosafe_sandbox::scenarios::read_text(text, &input.path).map_err(|list| {
                Problems(
                    list.into_iter()
                        .map(|p| {
                            let field = if p.field.is_empty() { "$" } else { &p.field };
                            FormatError::new(name, p.line, field, p.message)
                        })
                        .collect(),
                )
            })?,
        ),
        Format::Scenarios | Format::Snapshots | Format::LabelledSteps => {
            let mut lib = libs.toolemu.clone();
            lib.extend(libs.environments.toolkits().cloned());
            let cx = Context {
                library: &lib,
                taxonomy,
            };
            match format {
                Format::Scenarios => {
                    Parsed::Scenarios(scenario_records::read_scenarios(name, text, cx)?)
                }
                Format::Snapshots => {
                    Parsed::Snapshots(scenario_records::read_snapshots(name, text, cx)?)
                }
                _ => Parsed::LabelledSteps(autosafe_ots::labelled_step::read_labelled_steps(
                    name, text, cx,
                )?),
            }
        }
    })
}
