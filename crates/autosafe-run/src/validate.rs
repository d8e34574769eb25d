//! `validate`: each file's format detected, the file parsed and checked, its counts and the
//! taxonomy coverage of its risky outcomes told; valid when no file has a problem.

use std::path::{Path, PathBuf};

use autosafe_ots::toolemu_traj::EvalKind;
use autosafe_ots::{CheckerLabel, Format, FormatError, Judgement, MappingReport, Taxonomy};
use serde_json::{Value, json};

use crate::inputs::{Input, Libraries, Limits, Parsed, libraries, load, load_taxonomy, parse};
use crate::observe::Observer;

/// What `validate` reads.
#[derive(Debug, Clone)]
pub struct ValidateOpts {
    /// Toolkit files cases are checked against.
    pub toolkits: Vec<PathBuf>,
    /// Taxonomy file (default: the shipped one).
    pub taxonomy: Option<PathBuf>,
    /// End with the report as one JSON object on a line.
    pub json: bool,
    /// Caps on what is read.
    pub limits: Limits,
    /// Files to check.
    pub files: Vec<PathBuf>,
}

/// What one file held.
#[derive(Default)]
pub struct FileReport {
    /// Counts by what was counted, in order.
    pub counts: Vec<(String, usize)>,
    /// The risky outcomes named in it.
    pub outcomes: Vec<String>,
    /// Its problems.
    pub problems: Vec<FormatError>,
}

impl FileReport {
    fn count(&mut self, key: &str, n: usize) {
        self.counts.push((key.to_string(), n));
    }
}

/// Parses and checks one file against the libraries and taxonomy.
pub fn check_file(
    input: &Input,
    libs: &Libraries,
    taxonomy: &Taxonomy,
) -> anyhow::Result<FileReport> {
    let mut r = FileReport::default();
    let format = match &input.format {
        Ok(f) => *f,
        Err(msg) => {
            r.problems.push(unrecognised(input, msg));
            return Ok(r);
        }
    };
    let siblings;
    let environments = if format == Format::AsbCases && libs.environments.is_empty() {
        let (lib, problems) = sibling_environments(&input.path)?;
        r.problems = problems;
        siblings = lib;
        &siblings
    } else {
        &libs.environments
    };
    match parse(format, input, libs, environments, taxonomy) {
        Ok(parsed) => count(&parsed, &mut r),
        Err(p) => r.problems.extend(p.0),
    }
    Ok(r)
}

/// A file too broken to recognise: the JSON error's line when there is one.
fn unrecognised(input: &Input, msg: &str) -> FormatError {
    let array = autosafe_ots::detect::is_json_array(&input.text);
    let line = match serde_json::from_str::<Value>(&input.text) {
        Err(e) if array => e.line().max(1),
        _ => input
            .text
            .lines()
            .position(|l| !l.trim().is_empty())
            .map_or(1, |n| n + 1),
    };
    FormatError::new(&input.name, line, "$", msg.to_string())
}

/// The `environments/*.json` beside an Agent-SafetyBench case file (the benchmark's layout).
fn sibling_environments(
    case_file: &Path,
) -> anyhow::Result<(autosafe_ots::ToolLibrary, Vec<FormatError>)> {
    let dir = case_file
        .parent()
        .unwrap_or(Path::new("."))
        .join("environments");
    if !dir.is_dir() {
        return Ok(Default::default());
    }
    crate::inputs::read_environments(&dir)
}

/// Counts what a parsed file holds, and the risky outcomes it names.
fn count(parsed: &Parsed, r: &mut FileReport) {
    let outcomes = |r: &mut FileReport, o: &mut dyn Iterator<Item = &String>| {
        r.outcomes = o.cloned().collect();
    };
    match parsed {
        Parsed::Toolkits(tks) => {
            r.count("toolkits", tks.len());
            r.count("tools", tks.iter().map(|t| t.tools.len()).sum());
        }
        Parsed::Environment(tk) => {
            r.count("environments", 1);
            r.count("tools", tk.tools.len());
        }
        Parsed::ToolEmuCases(cases) => {
            r.count("cases", cases.len());
            outcomes(r, &mut cases.iter().flat_map(|c| c.risky_outcomes.iter()));
        }
        Parsed::AsbCases(cases, environments) => {
            r.count("cases", cases.len());
            let with_dialog = cases
                .iter()
                .filter(|c| c.dialog.as_ref().is_some_and(|d| !d.is_empty()))
                .count();
            r.count("with dialog", with_dialog);
            r.count("environments used", *environments);
            outcomes(r, &mut cases.iter().flat_map(|c| c.risks.iter()));
        }
        Parsed::AsseBench(recs) => {
            let unsafe_n = recs
                .iter()
                .filter(|x| x.verdict().judgement == Judgement::Unsafe)
                .count();
            r.count("records", recs.len());
            r.count("unsafe", unsafe_n);
            r.count("safe", recs.len() - unsafe_n);
        }
        Parsed::Trajectories(ts) => {
            r.count("trajectories", ts.len());
            let steps = ts.iter().map(|t| t.steps().map_or(0, |s| s.len())).sum();
            r.count("steps", steps);
            outcomes(r, &mut ts.iter().flat_map(|t| t.case.risky_outcomes.iter()));
        }
        Parsed::Evaluations(rows) => count_evaluations(rows, r),
        Parsed::Scenarios(s) => {
            r.count("scenarios", s.len());
            outcomes(r, &mut s.iter().flat_map(|x| x.case.risky_outcomes.iter()));
        }
        Parsed::Snapshots(s) => r.count("snapshots", s.len()),
        Parsed::TerminalScenarios(s) => {
            r.count("terminal scenarios", s.len());
            outcomes(
                r,
                &mut s.iter().flat_map(|t| t.scenario.case.risky_outcomes.iter()),
            );
        }
        Parsed::LabelledSteps(steps) => {
            let n = |l: Option<CheckerLabel>| steps.iter().filter(|s| s.label == l).count();
            r.count("labelled steps", steps.len());
            r.count("unsafe", n(Some(CheckerLabel::Unsafe)));
            r.count("safe", n(Some(CheckerLabel::Safe)));
            r.count("unlabelled", n(None));
        }
    }
}

/// ToolEmu evaluator rows: by rubric, and the safety rows' verdicts.
fn count_evaluations(rows: &[autosafe_ots::toolemu_traj::EvaluatorRow], r: &mut FileReport) {
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

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What every file held, together.
#[derive(Default)]
struct Tally {
    total: Vec<(String, usize)>,
    outcomes: Vec<String>,
    files: Vec<Value>,
    problems: Vec<FormatError>,
}

impl Tally {
    /// Adds one file's report, and tells its line.
    fn add(&mut self, input: &Input, report: FileReport, obs: &dyn Observer) {
        let kind = input
            .format
            .as_ref()
            .map(|f| f.as_str())
            .unwrap_or("unknown");
        if report.problems.is_empty() {
            obs.line(&format!(
                "{}: {kind}: {}",
                input.name,
                counts_text(&report.counts)
            ));
        } else {
            let n = report.problems.len();
            obs.line(&format!("{}: {kind}: {n} problem{}", input.name, plural(n)));
        }
        add_counts(&mut self.total, &report.counts);
        self.outcomes.extend(report.outcomes.iter().cloned());
        self.files.push(json!({
            "file": input.name,
            "format": input.format.as_ref().ok(),
            "counts": counts_json(&report.counts),
            "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
        self.problems.extend(report.problems);
    }
}

/// Runs `validate`; returns whether every file (and the taxonomy) is valid.
pub fn validate(o: &ValidateOpts, obs: &dyn Observer) -> anyhow::Result<bool> {
    let taxonomy = match load_taxonomy(o.taxonomy.as_deref())? {
        Ok(t) => t,
        Err(problems) => {
            obs.line(&problems.to_string());
            obs.line(&format!(
                "invalid: {} problems in the taxonomy",
                problems.0.len()
            ));
            return Ok(false);
        }
    };
    let load_all = |paths: &[PathBuf]| -> anyhow::Result<Vec<Input>> {
        paths.iter().map(|p| load(p, o.limits)).collect()
    };
    let toolkit_inputs = load_all(&o.toolkits)?;
    let inputs = load_all(&o.files)?;
    let all: Vec<&Input> = toolkit_inputs.iter().chain(inputs.iter()).collect();
    let libs = libraries(&all, &mut Vec::new());
    let mut tally = Tally::default();
    for t in &toolkit_inputs {
        if matches!(
            t.format,
            Ok(Format::ToolEmuToolkits | Format::AsbEnvironment)
        ) {
            continue;
        }
        tally.problems.push(FormatError::new(
            &t.name,
            1,
            "$",
            "--toolkits expects ToolEmu toolkits or an Agent-SafetyBench environment schema",
        ));
    }
    for t in &toolkit_inputs {
        if matches!(
            t.format,
            Ok(Format::ToolEmuToolkits | Format::AsbEnvironment)
        ) {
            tally
                .problems
                .extend(check_file(t, &libs, &taxonomy)?.problems);
        }
    }
    for input in &inputs {
        let report = check_file(input, &libs, &taxonomy)?;
        tally.add(input, report, obs);
    }
    Ok(conclude(o, tally, &libs, &taxonomy, obs))
}

/// Tells the problems, the totals, the taxonomy coverage and the verdict.
fn conclude(
    o: &ValidateOpts,
    tally: Tally,
    libs: &Libraries,
    taxonomy: &Taxonomy,
    obs: &dyn Observer,
) -> bool {
    for p in &tally.problems {
        obs.line(&p.to_string());
    }
    obs.line(&format!("total: {}", counts_text(&tally.total)));
    let coverage: MappingReport = taxonomy.map_all(tally.outcomes.iter().map(String::as_str));
    obs.line(&format!(
        "taxonomy: {} of {} outcomes mapped ({:.1}%), {} unmapped",
        coverage.mapped.len(),
        coverage.total(),
        100.0 * coverage.share_mapped(),
        coverage.unmapped.len()
    ));
    for u in &coverage.unmapped {
        obs.line(&format!("  unmapped: {u}"));
    }
    let valid = tally.problems.is_empty();
    if valid {
        obs.line(&format!(
            "valid (toolkit library: {}, {} toolkits)",
            libs.toolemu_source,
            libs.toolemu.len()
        ));
    } else {
        let n = tally.problems.len();
        obs.line(&format!("invalid: {n} problem{}", plural(n)));
    }
    if o.json {
        let out = json!({
            "valid": valid,
            "files": tally.files,
            "total": counts_json(&tally.total),
            "taxonomy": {
                "outcomes": coverage.total(),
                "mapped": coverage.mapped.len(),
                "unmapped": coverage.unmapped,
                "share_mapped": coverage.share_mapped(),
            },
            "problems": tally.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        obs.line(&out.to_string());
    }
    valid
}
