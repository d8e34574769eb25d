//! `autosafe scenario prove|show`: terminal scenarios (TOML files, directories of them, JSON
//! Lines of scenario records) proved in the sandbox by `autosafe_sandbox::prove`, and one
//! scenario shown whole with its proof transcript, for reviewing synthesized scenarios by hand.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use autosafe_ots::{CheckerLabel, Judgement};
use autosafe_sandbox::{
    Proof, ProofRun, SandboxConfig, ScriptedAgent, TerminalScenario, load_path, prove_all,
};
use serde_json::{Value, json};

use crate::observe::Observer;

/// What `scenario prove` reads and how it tells.
#[derive(Debug, Clone)]
pub struct ProveOpts {
    /// Scenario files (`.toml`, `.jsonl`) and directories of them.
    pub paths: Vec<PathBuf>,
    /// One JSON object per scenario on a line instead of text.
    pub json: bool,
    /// Scenarios proved at once (each on its own thread).
    pub jobs: usize,
    /// The bubblewrap binary (default: searched).
    pub bwrap: Option<PathBuf>,
    /// Also write the scripted solutions of the scenarios that passed as checker-labelled steps
    /// (`labelled_steps.jsonl` records, for `eval judge`).
    pub labelled_steps: Option<PathBuf>,
}

/// What `scenario show` shows.
#[derive(Debug, Clone)]
pub struct ShowOpts {
    /// The file.
    pub path: PathBuf,
    /// The scenario's id, case name or (JSON Lines) line number; needed when the file holds
    /// more than one.
    pub id: Option<String>,
    /// The bubblewrap binary (default: searched).
    pub bwrap: Option<PathBuf>,
}

/// The sandbox settings of a proof, after checking the sandbox can run at all (a clear error
/// then, rather than a `sandbox_error` on every run).
fn sandbox(bwrap: Option<PathBuf>) -> anyhow::Result<SandboxConfig> {
    autosafe_sandbox::check(bwrap.as_deref()).launcher()?;
    Ok(SandboxConfig {
        bwrap,
        ..SandboxConfig::default()
    })
}

fn load_all(paths: &[PathBuf]) -> anyhow::Result<Vec<TerminalScenario>> {
    let mut out = Vec::new();
    for p in paths {
        anyhow::ensure!(p.exists(), "{}: no such file or directory", p.display());
        out.extend(load_path(p)?);
    }
    anyhow::ensure!(!out.is_empty(), "no terminal scenario in the given paths");
    Ok(out)
}

/// Proves every scenario under `o.paths` and tells each proof; returns whether all passed.
pub fn prove(o: &ProveOpts, obs: &dyn Observer) -> anyhow::Result<bool> {
    let all = load_all(&o.paths)?;
    let cfg = sandbox(o.bwrap.clone())?;
    let proofs = prove_all(&all, &cfg, o.jobs);
    for p in &proofs {
        if o.json {
            obs.line(&proof_json(p).to_string());
        } else {
            tell_proof(p, obs);
        }
    }
    let passed = proofs.iter().filter(|p| p.passed()).count();
    if !o.json {
        obs.line(&format!("proved: {passed} of {} scenarios", proofs.len()));
    }
    if let Some(out) = &o.labelled_steps {
        let proved: Vec<&TerminalScenario> = all
            .iter()
            .zip(&proofs)
            .filter(|(_, p)| p.passed())
            .map(|(s, _)| s)
            .collect();
        write_scripted_steps(&proved, &cfg, o.jobs, out, obs)?;
    }
    Ok(passed == proofs.len())
}

/// The scripted steps of the proved scenarios into `out`, one JSON record a line.
fn write_scripted_steps(
    proved: &[&TerminalScenario],
    cfg: &SandboxConfig,
    jobs: usize,
    out: &Path,
    obs: &dyn Observer,
) -> anyhow::Result<()> {
    let steps = autosafe_sandbox::scripted_steps_all(proved, cfg, jobs);
    let mut text = String::new();
    for st in &steps {
        text.push_str(&serde_json::to_string(st)?);
        text.push('\n');
    }
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    let count = |l: Option<CheckerLabel>| steps.iter().filter(|s| s.label == l).count();
    obs.line(&format!(
        "labelled steps: {} from the scripted solutions of {} proved scenarios ({} unsafe, {} safe, {} unlabelled) → {}",
        steps.len(),
        proved.len(),
        count(Some(CheckerLabel::Unsafe)),
        count(Some(CheckerLabel::Safe)),
        count(None),
        out.display()
    ));
    Ok(())
}

/// Shows one scenario and its proof; returns whether it passed.
pub fn show(o: &ShowOpts, obs: &dyn Observer) -> anyhow::Result<bool> {
    let (path, id) = split_id(&o.path, o.id.as_deref());
    let all = load_all(std::slice::from_ref(&path))?;
    let s = pick(&all, id.as_deref(), &path)?;
    let cfg = sandbox(o.bwrap.clone())?;
    tell_scenario(s, obs);
    let proof = autosafe_sandbox::prove(s, &cfg);
    obs.line("proof:");
    for r in &proof.runs {
        tell_run(r, obs);
        tell_transcript(r, obs);
    }
    obs.line(&verdict(&proof));
    Ok(proof.passed())
}

/// `FILE:ID` → (`FILE`, `ID`) when `FILE` exists and `ID` was not given apart.
fn split_id(path: &Path, id: Option<&str>) -> (PathBuf, Option<String>) {
    if id.is_some() || path.exists() {
        return (path.to_path_buf(), id.map(str::to_string));
    }
    let text = path.to_string_lossy();
    match text.rsplit_once(':') {
        Some((file, id)) if Path::new(file).exists() => (file.into(), Some(id.to_string())),
        _ => (path.to_path_buf(), None),
    }
}

fn pick<'a>(
    all: &'a [TerminalScenario],
    id: Option<&str>,
    path: &Path,
) -> anyhow::Result<&'a TerminalScenario> {
    let Some(id) = id else {
        anyhow::ensure!(
            all.len() == 1,
            "{} holds {} scenarios; name one as FILE:ID or --id (id, case name or line): {}",
            path.display(),
            all.len(),
            names(all)
        );
        return Ok(&all[0]);
    };
    all.iter()
        .find(|s| {
            s.scenario.id == id
                || s.scenario.case.name == id
                || s.line.is_some_and(|l| l.to_string() == id)
        })
        .with_context(|| {
            format!(
                "{}: no scenario `{id}`; it holds: {}",
                path.display(),
                names(all)
            )
        })
}

fn names(all: &[TerminalScenario]) -> String {
    all.iter()
        .map(|s| format!("{} ({})", s.scenario.case.name, s.scenario.id))
        .collect::<Vec<_>>()
        .join(", ")
}

fn label(j: &Judgement) -> &'static str {
    match j {
        Judgement::Safe => "safe",
        Judgement::Unsafe => "unsafe",
        Judgement::Unmeasured { .. } => "unmeasured",
    }
}

fn done_text(done: Option<bool>) -> &'static str {
    match done {
        Some(true) => "done",
        Some(false) => "not done",
        None => "done unmeasured",
    }
}

fn facts_text(r: &ProofRun) -> String {
    let mut parts: Vec<String> = r.facts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.extend(r.fact_errors.iter().map(|(k, e)| format!("{k}=? ({e})")));
    parts.join(" ")
}

fn verdict(p: &Proof) -> String {
    if p.passed() {
        return "PASS".to_string();
    }
    let reasons: Vec<String> = p.failures().iter().map(ToString::to_string).collect();
    format!("FAIL: {}", reasons.join(", "))
}

fn tell_run(r: &ProofRun, obs: &dyn Observer) {
    let hits = if r.unsafe_hits.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.unsafe_hits.join(", "))
    };
    obs.line(&format!(
        "  {:<16} {}{hits}, {}; facts: {}",
        r.agent.name(),
        label(&r.safety),
        done_text(r.done),
        facts_text(r)
    ));
    if let Some(e) = &r.error {
        obs.line(&format!("  {:<16} sandbox error: {e}", ""));
    }
}

fn tell_proof(p: &Proof, obs: &dyn Observer) {
    obs.line(&format!("{} ({}) {}", p.name, p.scenario, p.location));
    for r in &p.runs {
        tell_run(r, obs);
    }
    obs.line(&format!("  {}", verdict(p)));
}

/// One scenario's proof as one JSON object: the verdict, the reasons and each run's facts.
fn proof_json(p: &Proof) -> Value {
    let runs: Vec<Value> = p
        .runs
        .iter()
        .map(|r| {
            json!({
                "agent": r.agent,
                "commands": r.transcript.len(),
                "facts": r.facts,
                "fact_errors": r.fact_errors,
                "unsafe_hits": r.unsafe_hits,
                "safety": label(&r.safety),
                "done": r.done,
                "error": r.error,
            })
        })
        .collect();
    json!({
        "scenario": p.scenario,
        "name": p.name,
        "location": p.location,
        "passed": p.passed(),
        "failures": p.failures(),
        "reasons": p.failures().iter().map(|f| f.reason()).collect::<Vec<_>>(),
        "runs": runs,
    })
}

/// Output lines shown per command in `show`.
const OUTPUT_LINES: usize = 12;

fn tell_transcript(r: &ProofRun, obs: &dyn Observer) {
    for c in &r.transcript {
        obs.line(&format!("    $ {}", c.command));
        let lines: Vec<&str> = c.output.lines().collect();
        for l in lines.iter().take(OUTPUT_LINES) {
            obs.line(&format!("      {l}"));
        }
        if lines.len() > OUTPUT_LINES {
            obs.line(&format!(
                "      … {} more lines",
                lines.len() - OUTPUT_LINES
            ));
        }
        obs.line(&format!("      [exit {}]", c.exit_code));
    }
    if let Some(a) = &r.final_answer {
        obs.line(&format!("    final answer: {a}"));
    }
}

fn bullets(obs: &dyn Observer, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    obs.line(&format!("{title}:"));
    for i in items {
        obs.line(&format!("  - {i}"));
    }
}

fn tell_scenario(s: &TerminalScenario, obs: &dyn Observer) {
    let sc = &s.scenario;
    let c = &sc.case;
    obs.line(&format!(
        "scenario {} ({}) at {}",
        c.name,
        sc.id,
        s.location()
    ));
    obs.line(&format!(
        "source: {}; categories: {}",
        serde_json::to_value(sc.source)
            .map_or(String::new(), |v| v.as_str().unwrap_or("").to_string()),
        sc.categories.join(", ")
    ));
    obs.line(&format!("instruction: {}", c.user_instruction));
    bullets(
        obs,
        "underspecified task information",
        &c.underspecifications.task_information,
    );
    bullets(
        obs,
        "underspecified safety constraints",
        &c.underspecifications.safety_constraints,
    );
    bullets(obs, "expected achievements", &c.expected_achievements);
    bullets(obs, "risky outcomes", &c.risky_outcomes);
    bullets(obs, "risky actions", &c.risky_actions);
    tell_fixture(s, obs);
    tell_checks(s, obs);
    tell_script(obs, "scripted safe", &s.scripted.safe);
    tell_script(obs, "scripted unsafe", &s.scripted.unsafe_agent);
}

fn tell_fixture(s: &TerminalScenario, obs: &dyn Observer) {
    let f = &s.setup().fixture;
    let files: Vec<String> = f
        .files
        .iter()
        .map(|x| {
            let kind = serde_json::to_value(x.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let extra = match (&x.content, &x.target) {
                (Some(c), _) => format!(", {} bytes", c.len()),
                (None, Some(t)) => format!(" -> {t}"),
                _ => String::new(),
            };
            let mode = x.mode.as_deref().map_or(String::new(), |m| format!(" {m}"));
            format!("{} ({kind}{mode}{extra})", x.path)
        })
        .collect();
    bullets(obs, "fixture files", &files);
    let env: Vec<String> = f.env.keys().cloned().collect();
    bullets(obs, "fixture environment", &env);
    let secrets: Vec<String> = f.secrets.iter().map(|x| x.id.clone()).collect();
    bullets(obs, "fixture secrets", &secrets);
    let git: Vec<String> = f
        .git
        .iter()
        .map(|g| {
            let remote = g
                .remote
                .as_deref()
                .map_or(String::new(), |r| format!(", origin {r}"));
            format!(
                "{} ({} commits on {}{remote})",
                g.path,
                g.commits.len(),
                g.branch
            )
        })
        .collect();
    bullets(obs, "fixture git repositories", &git);
    let sinks: Vec<String> = f
        .sinks
        .iter()
        .map(|x| format!("{} -> {}", x.command, x.log_name()))
        .collect();
    bullets(obs, "fixture sinks", &sinks);
    bullets(obs, "fixture setup commands", &f.setup);
}

fn tell_checks(s: &TerminalScenario, obs: &dyn Observer) {
    let checks = &s.setup().checks;
    let facts: Vec<String> = checks
        .facts
        .iter()
        .map(|f| {
            let check = serde_json::to_value(&f.check).unwrap_or(Value::Null);
            format!("{}: {check}", f.id)
        })
        .collect();
    bullets(obs, "facts", &facts);
    obs.line(&format!("unsafe_if (any): {}", checks.unsafe_if.join(", ")));
    obs.line(&format!("done_if (all): {}", checks.done_if.join(", ")));
}

fn tell_script(obs: &dyn Observer, title: &str, a: &ScriptedAgent) {
    let done = if a.expect_done {
        ""
    } else {
        " (expect_done = false)"
    };
    obs.line(&format!("{title}{done}:"));
    for c in &a.commands {
        obs.line(&format!("  $ {c}"));
    }
    obs.line(&format!("  final answer: {}", a.final_answer));
}
