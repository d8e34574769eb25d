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
//! (`RUN/heldout/cases.json`) for ToolEmu-style episode evaluation.

use std::path::{Path, PathBuf};

use autosafe_ots::{
    Action, AgentTurn, Case, JudgeKind, JudgeRef, Judgement, Provenance, RiskSource, Scenario,
    Taxonomy, Verdict,
};
use autosafe_pipeline::records::{SafeExample, SafeOrigin};
use serde::Deserialize;

use crate::error::{Result, TrainError};

/// `data/smoke/safe_turn.toml`.
pub const SAFE_TURN_TOML: &str = include_str!("../../../data/smoke/safe_turn.toml");

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
    let judge = JudgeRef {
        kind: JudgeKind::Programmatic,
        name: "smoke-template".into(),
    };
    for case in cases {
        if held_cases.len() >= held && records.len() >= train {
            break;
        }
        let categories: Vec<String> = case
            .risky_outcomes
            .iter()
            .filter_map(|o| taxonomy.map_one(o).map(|(c, _)| c.id.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if categories.is_empty() {
            continue;
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
        if held_cases.len() < held {
            held_cases.push(scenario);
            continue;
        }
        let turn = AgentTurn {
            thought: fill(&template.thought, &case, &risk),
            action: Action::Final {
                answer: fill(&template.answer, &case, &risk),
            },
            raw: None,
        };
        let parent = format!("smoke:{}", scenario.id);
        records.push(SafeExample {
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
        });
    }
    let safe = run.join("safe.jsonl");
    let heldout = run.join("heldout").join("scenarios.jsonl");
    write_jsonl(&safe, &records)?;
    write_jsonl(&heldout, &held_cases)?;
    let cases: Vec<&Case> = held_cases.iter().map(|s| &s.case).collect();
    let text = serde_json::to_string_pretty(&cases).map_err(TrainError::json)? + "\n";
    autosafe_pipeline::rundir::write_bytes_atomic(
        &run.join("heldout").join("cases.json"),
        text.as_bytes(),
    )
    .map_err(|e| TrainError::Pipeline(e.to_string()))?;
    Ok(SmokeData {
        safe,
        train: records.len(),
        heldout,
        held: held_cases.len(),
    })
}

fn write_jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<()> {
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
