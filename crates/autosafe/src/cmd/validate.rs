//! `autosafe validate`: detect each file's format, parse and check it, print counts and
//! taxonomy coverage. Exit 0 when every file is valid, 1 with every problem listed as
//! `FILE:LINE: field: message`, 2 on usage or I/O errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use autosafe_ots::scenario_records::{self, Context};
use autosafe_ots::toolemu_traj::{self, EvalKind};
use autosafe_ots::{
    CheckerLabel, Format, FormatError, Judgement, MappingReport, Problems, Taxonomy, ToolLibrary,
    asb, assebench, detect, toolemu,
};
use serde_json::{Value, json};

/// Arguments of `autosafe validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Toolkit file cases are checked against (ToolEmu toolkits or Agent-SafetyBench environment
    /// schemas); repeatable. Default: toolkit files among FILE, else the shipped ToolEmu toolkits.
    #[arg(long = "toolkits", value_name = "FILE")]
    pub toolkits: Vec<PathBuf>,
    /// Taxonomy file (default: the shipped data/taxonomy.toml).
    #[arg(long, value_name = "FILE")]
    pub taxonomy: Option<PathBuf>,
    /// Also print the report as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Largest file read, in bytes (a larger one is an error naming it).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().file_bytes)]
    pub max_file_size: u64,
    /// Longest line read, in bytes (a longer one is an error naming file and line).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().line_bytes)]
    pub max_line_size: u64,
    /// Files to check; the format of each is detected from its content.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Caps on what is read, so a huge or endless input (`validate /dev/zero` once grew to 4.5 GB)
/// fails at once with the file named instead of filling memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
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
pub(crate) struct Input {
    pub name: String,
    pub path: PathBuf,
    pub text: String,
    pub format: Result<Format, String>,
}

/// Reads a file (within `limits`) and detects its format.
pub(crate) fn load(path: &Path, limits: Limits) -> anyhow::Result<Input> {
    let text = read_capped(path, limits)?;
    let format = detect(&text).map_err(|e| e.to_string());
    Ok(Input {
        name: path.display().to_string(),
        path: path.to_path_buf(),
        text,
        format,
    })
}

/// Loads the taxonomy from `path`, or the shipped one.
pub(crate) fn load_taxonomy(path: Option<&Path>) -> anyhow::Result<Result<Taxonomy, Problems>> {
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
pub(crate) struct Libraries {
    pub toolemu: ToolLibrary,
    pub toolemu_source: String,
    pub environments: ToolLibrary,
}

fn env_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string()
}

/// Builds the libraries from toolkit inputs; problems in them are pushed to `problems`.
pub(crate) fn libraries(inputs: &[&Input], problems: &mut Vec<FormatError>) -> Libraries {
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
    let (toolemu, toolemu_source) = if toolemu_lib.is_empty() {
        (ToolLibrary::shipped(), "shipped".to_string())
    } else {
        (toolemu_lib, "given".to_string())
    };
    Libraries {
        toolemu,
        toolemu_source,
        environments,
    }
}

/// Loads `environments/*.json` next to an Agent-SafetyBench case file (the benchmark's layout).
pub(crate) fn sibling_environments(
    case_file: &Path,
    problems: &mut Vec<FormatError>,
) -> anyhow::Result<ToolLibrary> {
    let dir = case_file
        .parent()
        .unwrap_or(Path::new("."))
        .join("environments");
    let mut lib = ToolLibrary::new();
    if !dir.is_dir() {
        return Ok(lib);
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let input = load(&p, Limits::default())?;
        match asb::read_environment(&input.name, &input.text, &env_name(&p)) {
            Ok(tk) => lib.extend([tk]),
            Err(e) => problems.extend(e.0),
        }
    }
    Ok(lib)
}

/// What one file held.
#[derive(Default)]
pub(crate) struct FileReport {
    pub counts: Vec<(String, usize)>,
    pub outcomes: Vec<String>,
    pub problems: Vec<FormatError>,
}

impl FileReport {
    fn count(&mut self, key: &str, n: usize) {
        self.counts.push((key.to_string(), n));
    }
}

/// Parses and checks one file against the libraries and taxonomy.
pub(crate) fn check_file(
    input: &Input,
    libs: &Libraries,
    taxonomy: &Taxonomy,
) -> anyhow::Result<FileReport> {
    let mut r = FileReport::default();
    let format = match &input.format {
        Ok(f) => *f,
        Err(msg) => {
            // A file too broken to recognise: report the JSON error's line when there is one.
            let array = autosafe_ots::detect::is_json_array(&input.text);
            let line = match serde_json::from_str::<Value>(&input.text) {
                Err(e) if array => e.line().max(1),
                _ => input
                    .text
                    .lines()
                    .position(|l| !l.trim().is_empty())
                    .map_or(1, |n| n + 1),
            };
            r.problems
                .push(FormatError::new(&input.name, line, "$", msg.clone()));
            return Ok(r);
        }
    };
    let (name, text) = (input.name.as_str(), input.text.as_str());
    match format {
        Format::ToolEmuToolkits => match toolemu::read_toolkits(name, text) {
            Ok(tks) => {
                r.count("toolkits", tks.len());
                r.count("tools", tks.iter().map(|t| t.tools.len()).sum());
            }
            Err(p) => r.problems = p.0,
        },
        Format::AsbEnvironment => match asb::read_environment(name, text, &env_name(&input.path)) {
            Ok(tk) => {
                r.count("environments", 1);
                r.count("tools", tk.tools.len());
            }
            Err(p) => r.problems = p.0,
        },
        Format::ToolEmuCases => match toolemu::read_cases(name, text, &libs.toolemu) {
            Ok(cases) => {
                r.count("cases", cases.len());
                r.outcomes = cases
                    .iter()
                    .flat_map(|c| c.risky_outcomes.iter().cloned())
                    .collect();
            }
            Err(p) => r.problems = p.0,
        },
        Format::AsbCases => {
            let mut extra = Vec::new();
            let siblings;
            let envs = if libs.environments.is_empty() {
                siblings = sibling_environments(&input.path, &mut extra)?;
                &siblings
            } else {
                &libs.environments
            };
            r.problems.extend(extra);
            match asb::read_cases(name, text, envs) {
                Ok(cases) => {
                    r.count("cases", cases.len());
                    r.count(
                        "with dialog",
                        cases
                            .iter()
                            .filter(|c| c.dialog.as_ref().is_some_and(|d| !d.is_empty()))
                            .count(),
                    );
                    r.count("environments used", envs.len());
                    r.outcomes = cases.iter().flat_map(|c| c.risks.iter().cloned()).collect();
                }
                Err(p) => r.problems.extend(p.0),
            }
        }
        Format::AsseBench => match assebench::read_records(name, text) {
            Ok(recs) => {
                let unsafe_n = recs
                    .iter()
                    .filter(|x| x.verdict().judgement == Judgement::Unsafe)
                    .count();
                r.count("records", recs.len());
                r.count("unsafe", unsafe_n);
                r.count("safe", recs.len() - unsafe_n);
            }
            Err(p) => r.problems = p.0,
        },
        Format::ToolEmuTrajectories => match toolemu_traj::read_trajectories(name, text) {
            Ok(ts) => {
                r.count("trajectories", ts.len());
                r.count(
                    "steps",
                    ts.iter().map(|t| t.steps().map_or(0, |s| s.len())).sum(),
                );
                r.outcomes = ts
                    .iter()
                    .flat_map(|t| t.case.risky_outcomes.iter().cloned())
                    .collect();
            }
            Err(p) => r.problems = p.0,
        },
        Format::ToolEmuEvaluations => match toolemu_traj::read_evaluations(name, text) {
            Ok(rows) => {
                let safety: Vec<_> = rows
                    .iter()
                    .filter(|x| x.kind() == Some(EvalKind::Safety))
                    .collect();
                r.count("evaluator rows", rows.len());
                r.count("safety", safety.len());
                r.count("helpfulness", rows.len() - safety.len());
                if !safety.is_empty() {
                    let verdicts: Vec<_> = safety
                        .iter()
                        .map(|x| x.safety_verdict("toolemu-evaluator").judgement)
                        .collect();
                    r.count(
                        "unsafe",
                        verdicts.iter().filter(|j| **j == Judgement::Unsafe).count(),
                    );
                    r.count(
                        "unmeasured",
                        verdicts.iter().filter(|j| j.is_safe().is_none()).count(),
                    );
                }
            }
            Err(p) => r.problems = p.0,
        },
        Format::Scenarios | Format::Snapshots => {
            let mut lib = libs.toolemu.clone();
            lib.extend(libs.environments.toolkits().cloned());
            let cx = Context {
                library: &lib,
                taxonomy,
            };
            if format == Format::Scenarios {
                match scenario_records::read_scenarios(name, text, cx) {
                    Ok(s) => {
                        r.count("scenarios", s.len());
                        r.outcomes = s
                            .iter()
                            .flat_map(|x| x.case.risky_outcomes.iter().cloned())
                            .collect();
                    }
                    Err(p) => r.problems = p.0,
                }
            } else {
                match scenario_records::read_snapshots(name, text, cx) {
                    Ok(s) => r.count("snapshots", s.len()),
                    Err(p) => r.problems = p.0,
                }
            }
        }
        Format::LabelledSteps => {
            let mut lib = libs.toolemu.clone();
            lib.extend(libs.environments.toolkits().cloned());
            let cx = Context {
                library: &lib,
                taxonomy,
            };
            match autosafe_ots::labelled_step::read_labelled_steps(name, text, cx) {
                Ok(steps) => {
                    let n = |l: Option<CheckerLabel>| steps.iter().filter(|s| s.label == l).count();
                    r.count("labelled steps", steps.len());
                    r.count("unsafe", n(Some(CheckerLabel::Unsafe)));
                    r.count("safe", n(Some(CheckerLabel::Safe)));
                    r.count("unlabelled", n(None));
                }
                Err(p) => r.problems = p.0,
            }
        }
    }
    Ok(r)
}

fn counts_text(counts: &[(String, usize)]) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn add_counts(total: &mut Vec<(String, usize)>, counts: &[(String, usize)]) {
    for (k, n) in counts {
        match total.iter_mut().find(|(tk, _)| tk == k) {
            Some((_, t)) => *t += n,
            None => total.push((k.clone(), *n)),
        }
    }
}

fn counts_json(counts: &[(String, usize)]) -> Value {
    Value::Object(
        counts
            .iter()
            .map(|(k, n)| (k.replace(' ', "_"), json!(n)))
            .collect(),
    )
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let taxonomy = match load_taxonomy(args.taxonomy.as_deref())? {
        Ok(t) => t,
        Err(problems) => {
            println!("{problems}");
            println!("invalid: {} problems in the taxonomy", problems.0.len());
            return Ok(ExitCode::from(1));
        }
    };
    let limits = Limits {
        file_bytes: args.max_file_size,
        line_bytes: args.max_line_size,
    };
    let toolkit_inputs: Vec<Input> = args
        .toolkits
        .iter()
        .map(|p| load(p, limits))
        .collect::<anyhow::Result<_>>()?;
    let inputs: Vec<Input> = args
        .files
        .iter()
        .map(|p| load(p, limits))
        .collect::<anyhow::Result<_>>()?;
    let mut lib_problems = Vec::new();
    for t in &toolkit_inputs {
        if !matches!(
            t.format,
            Ok(Format::ToolEmuToolkits | Format::AsbEnvironment)
        ) {
            lib_problems.push(FormatError::new(
                &t.name,
                1,
                "$",
                "--toolkits expects ToolEmu toolkits or an Agent-SafetyBench environment schema",
            ));
        }
    }
    let all: Vec<&Input> = toolkit_inputs.iter().chain(inputs.iter()).collect();
    let libs = libraries(&all, &mut Vec::new());
    let mut total = Vec::new();
    let mut outcomes = Vec::new();
    let mut files_json = Vec::new();
    let mut problems: Vec<FormatError> = lib_problems;
    for t in &toolkit_inputs {
        if matches!(
            t.format,
            Ok(Format::ToolEmuToolkits | Format::AsbEnvironment)
        ) {
            problems.extend(check_file(t, &libs, &taxonomy)?.problems);
        }
    }
    for input in &inputs {
        let report = check_file(input, &libs, &taxonomy)?;
        let kind = input
            .format
            .as_ref()
            .map(|f| f.as_str())
            .unwrap_or("unknown");
        if report.problems.is_empty() {
            println!("{}: {kind}: {}", input.name, counts_text(&report.counts));
        } else {
            let n = report.problems.len();
            println!(
                "{}: {kind}: {n} problem{}",
                input.name,
                if n == 1 { "" } else { "s" }
            );
        }
        add_counts(&mut total, &report.counts);
        outcomes.extend(report.outcomes.iter().cloned());
        files_json.push(json!({
            "file": input.name,
            "format": input.format.as_ref().ok(),
            "counts": counts_json(&report.counts),
            "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
        problems.extend(report.problems);
    }
    for p in &problems {
        println!("{p}");
    }
    println!("total: {}", counts_text(&total));
    let coverage: MappingReport = taxonomy.map_all(outcomes.iter().map(String::as_str));
    println!(
        "taxonomy: {} of {} outcomes mapped ({:.1}%), {} unmapped",
        coverage.mapped.len(),
        coverage.total(),
        100.0 * coverage.share_mapped(),
        coverage.unmapped.len()
    );
    for u in &coverage.unmapped {
        println!("  unmapped: {u}");
    }
    let valid = problems.is_empty();
    if valid {
        println!(
            "valid (toolkit library: {}, {} toolkits)",
            libs.toolemu_source,
            libs.toolemu.len()
        );
    } else {
        let n = problems.len();
        println!("invalid: {n} problem{}", if n == 1 { "" } else { "s" });
    }
    if args.json {
        let out = json!({
            "valid": valid,
            "files": files_json,
            "total": counts_json(&total),
            "taxonomy": {
                "outcomes": coverage.total(),
                "mapped": coverage.mapped.len(),
                "unmapped": coverage.unmapped,
                "share_mapped": coverage.share_mapped(),
            },
            "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        println!("{out}");
    }
    Ok(ExitCode::from(if valid { 0 } else { 1 }))
}
