//! The offline smoke dataset: D_safe records templated from ToolEmu cases, and held-apart
//! scenarios to evaluate on.
//!
//! The embedded SmolLM2 model cannot produce a useful D_safe through the pipeline: it keeps 0
//! scenarios in the default run. So the smoke loop builds its data from the shipped ToolEmu
//! cases. Each record is one case's scenario with an empty history. Its safe turn is the final
//! answer of `data/smoke/safe_turn.toml`, which declines to act and asks about the case's own
//! underspecifications. Cases are taken fewest tools first (the shortest prompts, the fastest to
//! train on a CPU), ties broken by a stable hash of the name. The first `held` go to held-apart
//! scenarios (`RUN/heldout/scenarios.jsonl`) that training never sees, the next `train` to
//! `RUN/safe.jsonl`. The held-apart cases are also written as a ToolEmu case list
//! (`RUN/heldout/cases.json`) for ToolEmu-style episode evaluation, and as start-state snapshots
//! (`RUN/heldout/snapshots.jsonl`, empty history) for `autosafe eval snapshots`.
//! [`write_terminal_snapshots`] adds start-state snapshots of shipped terminal scenarios
//! (`RUN/heldout/terminal_snapshots.jsonl`) for `autosafe eval snapshots --env terminal`.
//! [`check_held_apart`] reads the files back and fails when a held-apart case is in the training
//! data.

use std::path::{Path, PathBuf};

use autosafe_ots::{
    Action, AgentTurn, Case, JudgeKind, JudgeRef, Judgement, Provenance, RiskSource, Scenario,
    Snapshot, Taxonomy, Verdict,
};
use autosafe_pipeline::stage_records::{SafeExample, SafeOrigin};
use serde::Deserialize;

use crate::error::{Result, TrainError};

/// `data/smoke/safe_turn.toml`.
pub(crate) const SAFE_TURN_TOML: &str = include_str!("../../../data/smoke/safe_turn.toml");

#[derive(Deserialize)]
struct Template {
    thought: String,
    answer: String,
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone)]
pub struct SmokeData {
    /// `RUN/safe.jsonl`.
    pub safe: PathBuf,
    /// Training records.
    pub train: usize,
    /// `RUN/heldout/scenarios.jsonl`.
    pub heldout: PathBuf,
    /// Held-apart scenarios (also `RUN/heldout/cases.json`, ToolEmu's case format).
    pub held: usize,
    /// `RUN/heldout/snapshots.jsonl`: one start-state snapshot per held-apart scenario.
    pub snapshots: PathBuf,
    /// `RUN/snapshots.jsonl`: each training record's unsafe counterpart (the case's risky
    /// action), so the smoke run has preference pairs for `--method dpo` too.
    pub train_snapshots: PathBuf,
}

/// The start state of a scenario as a snapshot: empty history, the given proposed action and its
/// label. `autosafe eval snapshots` samples the evaluated agent's own next action from the
/// history and judges that; the proposed action and verdict only document where the state came
/// from.
pub(crate) fn start_snapshot(
    scenario: Scenario,
    proposed: AgentTurn,
    verdict: Verdict,
) -> Snapshot {
    Snapshot {
        id: Snapshot::compute_id(&scenario.id, &[], &proposed, 0),
        scenario,
        history: Vec::new(),
        proposed,
        verdict,
        sample: 0,
        agent: None,
        labelled_by: Default::default(),
        judge_verdict: None,
    }
}

/// A held-apart ToolEmu scenario as a start-state snapshot. ToolEmu describes its risky actions in
/// words only, so the proposed turn carries the case's first "Potential Risky Actions" entry as
/// text, labelled unsafe by the case's authors (judge kind `human`, `toolemu:<case>`).
pub(crate) fn toolemu_start_snapshot(scenario: &Scenario) -> Snapshot {
    case_risky_snapshot(scenario, "held-apart start state")
}

/// The case's first "Potential Risky Actions" entry as a text turn at the scenario's start,
/// labelled unsafe by the case's authors; `what` says what the snapshot is for.
fn case_risky_snapshot(scenario: &Scenario, what: &str) -> Snapshot {
    let risky = scenario
        .case
        .risky_actions
        .first()
        .cloned()
        .unwrap_or_else(|| "(the case lists no risky action)".into());
    let proposed = AgentTurn {
        thought: format!("{what}: ToolEmu's documented potential risky action (text, never run)"),
        action: Action::Final { answer: risky },
        raw: None,
    };
    let verdict = Verdict {
        judgement: Judgement::Unsafe,
        rationale: "listed by the case under Potential Risky Actions".into(),
        score: None,
        judge: JudgeRef {
            kind: JudgeKind::Human,
            name: format!("toolemu:{}", scenario.case.name),
        },
        raw: None,
    };
    start_snapshot(scenario.clone(), proposed, verdict)
}

/// Writes `RUN/heldout/terminal_snapshots.jsonl`: one start-state snapshot per terminal scenario,
/// each with the given command (the CLI takes the last command of the scenario's scripted unsafe
/// agent) as the proposed action (`TerminalExecute`), labelled unsafe by the scenario's checkers
/// (judge kind `programmatic`; the shipped scenario tests show that the scripted unsafe command
/// list trips `unsafe_if`). Returns the path.
pub fn write_terminal_snapshots(run: &Path, scenarios: &[(Scenario, String)]) -> Result<PathBuf> {
    let snaps: Vec<Snapshot> = scenarios
        .iter()
        .map(|(sc, command)| {
            let proposed = AgentTurn {
                thought: "held-apart start state: the scenario's scripted unsafe agent's last \
                          command (never run here)"
                    .into(),
                action: Action::Tool {
                    tool: "TerminalExecute".into(),
                    input: serde_json::json!({ "command": command }),
                    call_id: None,
                },
                raw: None,
            };
            let verdict = Verdict {
                judgement: Judgement::Unsafe,
                rationale: "the scripted unsafe agent of the scenario (its checkers' unsafe_if)"
                    .into(),
                score: None,
                judge: JudgeRef {
                    kind: JudgeKind::Programmatic,
                    name: format!("terminal:{}", sc.case.name),
                },
                raw: None,
            };
            start_snapshot(sc.clone(), proposed, verdict)
        })
        .collect();
    let path = run.join("heldout").join("terminal_snapshots.jsonl");
    write_jsonl(&path, &snaps)?;
    Ok(path)
}

/// What [`check_held_apart`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldApartCheck {
    /// Training records read (`RUN/safe.jsonl`).
    pub train: usize,
    /// Original safe steps read (`RUN/utility.jsonl`): mixed into training (`--utility-share`),
    /// so checked like the training records.
    pub utility: usize,
    /// Held-apart scenarios and snapshots read (`RUN/heldout/*.jsonl`).
    pub held: usize,
}

impl HeldApartCheck {
    /// What the check established, for the console.
    pub fn summary(&self) -> String {
        format!(
            "{} held-apart scenarios/snapshots share no scenario id, case name or instruction \
             with the {} training records and {} original safe steps",
            self.held, self.train, self.utility
        )
    }
}

/// Reads `RUN/safe.jsonl`, `RUN/utility.jsonl` and every `RUN/heldout/*snapshots.jsonl` /
/// `scenarios.jsonl` back and fails when a held-apart scenario shares its id, case name or user
/// instruction with a record training can take (a safe example or an original safe step).
pub fn check_held_apart(run: &Path) -> Result<HeldApartCheck> {
    let read = |p: &Path| -> Result<Vec<serde_json::Value>> {
        if !p.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(p).map_err(|e| TrainError::io(p, e))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| TrainError::Json(format!("{}:{}: {e}", p.display(), i + 1)))
            })
            .collect()
    };
    let keys = |sc: &serde_json::Value| -> [String; 3] {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().trim().to_string();
        [
            s(&sc["id"]),
            s(&sc["case"]["name"]),
            s(&sc["case"]["User Instruction"]),
        ]
    };
    let train = read(&run.join("safe.jsonl"))?;
    let utility = read(&run.join("utility.jsonl"))?;
    let mut seen = std::collections::HashMap::new();
    for r in train.iter().chain(&utility) {
        for k in keys(&r["scenario"]) {
            if !k.is_empty() {
                seen.insert(k, r["id"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    let mut held = 0;
    let dir = run.join("heldout");
    for name in [
        "scenarios.jsonl",
        "snapshots.jsonl",
        "terminal_snapshots.jsonl",
    ] {
        let path = dir.join(name);
        for (i, v) in read(&path)?.iter().enumerate() {
            let sc = if name == "scenarios.jsonl" {
                v
            } else {
                &v["scenario"]
            };
            held += 1;
            for k in keys(sc) {
                if let Some(rec) = seen.get(&k) {
                    return Err(TrainError::Spec {
                        field: format!("{}:{}", path.display(), i + 1),
                        message: format!(
                            "held-apart scenario is in the training data (record {rec}): `{k}`"
                        ),
                    });
                }
            }
        }
    }
    Ok(HeldApartCheck {
        train: train.len(),
        utility: utility.len(),
        held,
    })
}

fn fill(t: &str, case: &Case, risk: &str) -> String {
    let u = &case.underspecifications;
    let missing: Vec<&str> = u
        .task_information
        .iter()
        .chain(&u.safety_constraints)
        .map(|s| s.trim().trim_end_matches('.'))
        .filter(|s| !s.is_empty())
        .collect();
    let missing = if missing.is_empty() {
        "the details of the request".to_string()
    } else {
        missing.join("; ")
    };
    t.replace("{instruction}", &case.user_instruction)
        .replace("{risk}", risk)
        .replace("{missing}", &missing)
}

/// The scenario of a case whose outcomes map to a category, with the risk its templated answer
/// names; `None` when no outcome maps.
pub(crate) fn scenario_of(case: &Case, taxonomy: &Taxonomy) -> Option<(Scenario, String)> {
    let categories: Vec<String> = case
        .risky_outcomes
        .iter()
        .filter_map(|o| taxonomy.map_one(o).map(|(c, _)| c.id.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if categories.is_empty() {
        return None;
    }
    let provenance = Provenance {
        origin: "toolemu".into(),
        reference: Some(case.name.clone()),
        ..Default::default()
    };
    let risk = case
        .risky_outcomes
        .first()
        .map(|r| {
            r.split_once(':')
                .map(|(_, d)| d)
                .unwrap_or(r)
                .trim()
                .trim_end_matches('.')
                .to_string()
        })
        .unwrap_or_else(|| "possible harm".into());
    let scenario = Scenario::new(
        case.clone(),
        RiskSource::Instruction,
        categories,
        provenance,
    );
    Some((scenario, risk))
}

/// The templated safe record of `scenario`: a final answer that asks before acting.
fn safe_record(
    scenario: Scenario,
    case: &Case,
    risk: &str,
    template: &Template,
    judge: &JudgeRef,
) -> SafeExample {
    let turn = AgentTurn {
        thought: fill(&template.thought, case, risk),
        action: Action::Final {
            answer: fill(&template.answer, case, risk),
        },
        raw: None,
    };
    let parent = format!("smoke:{}", scenario.id);
    SafeExample {
        id: SafeExample::compute_id(&parent, SafeOrigin::Reflected, &turn),
        parent_id: parent,
        scenario,
        history: Vec::new(),
        safe_turn: turn,
        rounds_used: 0,
        reflections: Vec::new(),
        verdict: Verdict {
            judgement: Judgement::Safe,
            rationale: "templated smoke record: asks before acting".into(),
            score: None,
            judge: judge.clone(),
            raw: None,
        },
        origin: SafeOrigin::Reflected,
        agent: Some("smoke-template".into()),
        programmatic: None,
        labelled_by: Default::default(),
    }
}

/// Builds the dataset from the ToolEmu cases in `cases_file` into the run directory `run`:
/// `train` records, `held` held-apart scenarios (the first by stable hash of the case name).
pub fn write_dataset(
    cases_file: &Path,
    run: &Path,
    train: usize,
    held: usize,
) -> Result<SmokeData> {
    let text = std::fs::read_to_string(cases_file).map_err(|e| TrainError::io(cases_file, e))?;
    let mut cases: Vec<Case> = serde_json::from_str(&text)
        .map_err(|e| TrainError::Json(format!("{}: {e}", cases_file.display())))?;
    let template: Template = toml::from_str(SAFE_TURN_TOML)
        .map_err(|e| TrainError::Json(format!("data/smoke/safe_turn.toml: {e}")))?;
    let taxonomy = Taxonomy::default_taxonomy();
    // Fewest tools first (the prompt lists every tool, so these are the shortest records and
    // train fastest on a CPU); a stable hash of the name breaks ties.
    let library = autosafe_ots::ToolLibrary::shipped();
    let tool_count = |c: &Case| -> usize {
        c.toolkits
            .iter()
            .map(|t| library.get(t).map_or(0, |k| k.tools.len()))
            .sum()
    };
    cases.sort_by_key(|c| {
        (
            tool_count(c),
            autosafe_pipeline::shard::stable_hash(&format!("smoke:{}", c.name)),
        )
    });
    let mut held_cases = Vec::new();
    let mut records = Vec::new();
    let mut unsafe_sides = Vec::new();
    let judge = JudgeRef {
        kind: JudgeKind::Programmatic,
        name: "smoke-template".into(),
    };
    for case in cases {
        if held_cases.len() >= held && records.len() >= train {
            break;
        }
        let Some((scenario, risk)) = scenario_of(&case, &taxonomy) else {
            continue;
        };
        if held_cases.len() < held {
            held_cases.push(scenario);
            continue;
        }
        let record = safe_record(scenario, &case, &risk, &template, &judge);
        let mut rejected = case_risky_snapshot(&record.scenario, "smoke pair");
        rejected.id = record.parent_id.clone();
        unsafe_sides.push(rejected);
        records.push(record);
    }
    let safe = run.join("safe.jsonl");
    write_jsonl(&safe, &records)?;
    let train_snapshots = run.join("snapshots.jsonl");
    write_jsonl(&train_snapshots, &unsafe_sides)?;
    let cases: Vec<&Case> = held_cases.iter().map(|s| &s.case).collect();
    let (heldout, snapshots) = write_toolemu_held_apart(run, &held_cases, &cases)?;
    Ok(SmokeData {
        safe,
        train: records.len(),
        heldout,
        held: held_cases.len(),
        snapshots,
        train_snapshots,
    })
}

/// Writes held-apart ToolEmu items into `RUN/heldout/`: `scenarios.jsonl` and their start-state
/// `snapshots.jsonl` (`scenarios`), and `cases.json` (`cases`, ToolEmu's own format, for
/// `autosafe eval toolemu --cases`). Returns the paths of the first two.
pub(crate) fn write_toolemu_held_apart(
    run: &Path,
    scenarios: &[Scenario],
    cases: &[&Case],
) -> Result<(PathBuf, PathBuf)> {
    let dir = run.join("heldout");
    let heldout = dir.join("scenarios.jsonl");
    write_jsonl(&heldout, scenarios)?;
    let snapshots = dir.join("snapshots.jsonl");
    let snaps: Vec<Snapshot> = scenarios.iter().map(toolemu_start_snapshot).collect();
    write_jsonl(&snapshots, &snaps)?;
    let text = serde_json::to_string_pretty(cases).map_err(TrainError::json)? + "\n";
    autosafe_pipeline::rundir::write_bytes_atomic(&dir.join("cases.json"), text.as_bytes())
        .map_err(|e| TrainError::Pipeline(e.to_string()))?;
    Ok((heldout, snapshots))
}

pub(crate) fn write_jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut text = String::new();
    for it in items {
        text.push_str(&serde_json::to_string(it).map_err(TrainError::json)?);
        text.push('\n');
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| TrainError::io(d, e))?;
    }
    autosafe_pipeline::rundir::write_bytes_atomic(path, text.as_bytes())
        .map_err(|e| TrainError::Pipeline(e.to_string()))
}
