//! Synthesis of terminal scenarios (`[synthesize] environment = "terminal"`, issue #16): for each
//! cell (risk source × category; toolkit `Terminal`) the generator writes a complete terminal
//! scenario (case, fixture, checkers, scripted safe and unsafe agents) under
//! `prompts/schemas/terminal_generator.json`, with shipped scenarios of the same risk source as
//! examples. A candidate is kept only when it passes, in order:
//!
//! 1. the loader's validation of `data/terminal/*.toml` (`invalid_scenario`), the cell
//!    (`source_mismatch`, `unknown_category`, `category_mismatch`);
//! 2. the instruction gate (`instruction_spells_unsafe`, `data/scenario_gates.toml`);
//! 3. the proof in the sandbox (`autosafe_sandbox::prove`; its reasons: `unsafe_at_fixture`,
//!    `done_at_fixture`, `unsafe_script_does_no_harm`, `safe_script_not_done`,
//!    `safe_script_does_harm`, `sandbox_error`);
//! 4. the near-duplicate filter against the shipped scenarios and those kept before
//!    (`exact_duplicate`, `near_duplicate`).
//!
//! A kept scenario is a pipeline [`Scenario`] record with `terminal` set (what
//! `elicit --env terminal --scenarios` plays); its scripted agents ride in
//! `provenance.scripted`, outside the id.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use autosafe_llm::Message;
use autosafe_ots::{Provenance, RiskSource, Scenario, Taxonomy};
use autosafe_sandbox::{SandboxConfig, ScenarioRecord, TerminalScenario};
use serde_json::{Map, Value};

use super::common::{StageError, StageFailure};
use super::synthesize::{Cell, Generator, SynthLog, SynthOutcome};
use crate::dedup::Deduper;
use crate::gates::Gates;
use crate::prompts::{CategoryView, TerminalGeneratorCtx, TerminalRepairCtx, names};
use crate::rundir::StageStats;
use crate::stage_records::Failure;
use crate::store::RecordWriter;
use crate::task_loop::run_items;

/// The toolkit every terminal cell uses (the scenarios' `Toolkits`).
pub(crate) const TERMINAL_TOOLKIT: &str = "Terminal";

/// The toolkits of terminal cells: `Terminal`; a config naming any other is an error.
pub(crate) fn cell_toolkits(configured: &[String]) -> Result<Vec<String>, StageError> {
    match configured.iter().find(|t| *t != TERMINAL_TOOLKIT) {
        Some(t) => Err(StageError::Config(format!(
            "synthesize.toolkits: `{t}`: terminal scenarios use the toolkit `{TERMINAL_TOOLKIT}` only"
        ))),
        None => Ok(vec![TERMINAL_TOOLKIT.to_string()]),
    }
}

/// The shipped scenarios as the generator's examples and the dedup's first entries.
pub(crate) fn shipped() -> Result<Vec<TerminalScenario>, StageError> {
    autosafe_sandbox::shipped().map_err(|e| StageError::Config(e.to_string()))
}

/// A terminal scenario in the form of its TOML file, as JSON, without provenance (the
/// generator's reply form).
pub fn scenario_json(t: &TerminalScenario) -> Value {
    let mut r = t.record();
    r.provenance = None;
    serde_json::to_value(r).expect("a scenario record is JSON")
}

/// The generator schema narrowed to a cell: its source, categories from the taxonomy with the
/// cell's first.
pub(crate) fn schema_for(schema: &Value, cell: &Cell, taxonomy: &Taxonomy) -> Value {
    let mut schema = schema.clone();
    if let Some(p) = schema.get_mut("properties") {
        p["source"]["enum"] = serde_json::json!([cell.source]);
        let ids: Vec<&str> = taxonomy
            .categories()
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        p["categories"]["items"] = serde_json::json!({ "enum": ids });
        p["categories"]["prefixItems"] = serde_json::json!([{ "const": cell.category }]);
        positional_fact_ids_schema(&mut p["terminal"]["properties"]["checks"]["properties"]);
    }
    schema
}

/// The id pattern of the fact at 1-based position `i`.
fn fact_id_pattern(i: usize) -> String {
    format!("^f{i}_[a-z0-9_]{{1,40}}$")
}

/// Fact ids unique by construction: the fact at position `i` must have an id `f{i}_name`, and
/// `unsafe_if` / `done_if` may name only such ids. The 1.5B gave several facts one id (to mean
/// "any of these files"), 21 loader findings in 12 candidates, which a repair round did not fix.
fn positional_fact_ids_schema(checks: &mut Value) {
    let max = checks["facts"]["maxItems"]
        .as_u64()
        .unwrap_or(8)
        .clamp(1, 9) as usize;
    let item = checks["facts"]["items"].clone();
    let positions: Vec<Value> = (1..=max)
        .map(|i| {
            let mut at = item.clone();
            if let Some(kinds) = at["anyOf"].as_array_mut() {
                for kind in kinds {
                    kind["properties"]["id"] = serde_json::json!({ "pattern": fact_id_pattern(i) });
                }
            }
            at
        })
        .collect();
    checks["facts"]["prefixItems"] = Value::Array(positions);
    let reference = format!("^!?f[1-{max}]_[a-z0-9_]{{1,40}}$");
    for list in ["unsafe_if", "done_if"] {
        checks[list]["items"] = serde_json::json!({ "type": "string", "pattern": reference });
    }
}

/// A scenario's JSON form with its fact ids renamed to the positional form the narrowed schema
/// asks for (`f1_name`, …), references renamed alike, so examples show what a reply must be.
pub(crate) fn positional_fact_ids(v: &mut Value) {
    let checks = &mut v["terminal"]["checks"];
    let Some(facts) = checks["facts"].as_array_mut() else {
        return;
    };
    let mut renamed = std::collections::HashMap::new();
    for (i, fact) in facts.iter_mut().enumerate() {
        let Some(id) = fact["id"].as_str().map(str::to_string) else {
            continue;
        };
        let name: String = id
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let new = format!("f{}_{name}", i + 1);
        fact["id"] = new.clone().into();
        renamed.insert(id, new);
    }
    for list in ["unsafe_if", "done_if"] {
        for r in checks[list].as_array_mut().into_iter().flatten() {
            let Some(s) = r.as_str() else { continue };
            let (neg, id) = s.strip_prefix('!').map_or(("", s), |id| ("!", id));
            if let Some(new) = renamed.get(id) {
                *r = format!("{neg}{new}").into();
            }
        }
    }
}

/// Up to `n` shipped scenarios of `source` as JSON examples (canonical, without the case name),
/// those sharing `category` first.
pub(crate) fn examples(
    shipped: &[TerminalScenario],
    source: RiskSource,
    category: &str,
    n: usize,
) -> Vec<String> {
    let mut same: Vec<&TerminalScenario> = shipped
        .iter()
        .filter(|t| t.scenario.source == source)
        .collect();
    same.sort_by_key(|t| !t.scenario.categories.iter().any(|c| c == category));
    same.into_iter()
        .take(n)
        .map(|t| {
            let mut v = scenario_json(t);
            if let Some(case) = v["case"].as_object_mut() {
                case.remove("name");
            }
            positional_fact_ids(&mut v);
            autosafe_ots::canonical_json(&v)
        })
        .collect()
}

/// What the terminal path needs besides the generator.
pub(crate) struct TerminalKit {
    pub shipped: Vec<TerminalScenario>,
    pub gates: Gates,
    pub sandbox: SandboxConfig,
}

impl TerminalKit {
    pub(crate) fn new(sandbox: SandboxConfig) -> Result<Self, StageError> {
        Ok(TerminalKit {
            shipped: shipped()?,
            gates: Gates::shipped(),
            sandbox,
        })
    }

    /// A deduper that already holds the shipped scenarios' instructions.
    pub(crate) fn seed(&self, deduper: &mut Deduper) {
        for t in &self.shipped {
            deduper.check(&t.scenario.id, &t.scenario.case.user_instruction);
        }
    }
}

/// A rejection: reason, detail.
type Rejected = (String, String);

/// The candidate of a generator object for `cell`: the loader's validation, the cell, the
/// instruction gate (the proof and dedup come after).
pub(crate) fn check(
    mut obj: Map<String, Value>,
    cell: &Cell,
    attempt_id: &str,
    taxonomy: &Taxonomy,
    gates: &Gates,
) -> Result<TerminalScenario, Rejected> {
    let rej = |r: &str, d: String| Err((r.to_string(), d));
    let name = format!("synth_{}", attempt_id.trim_start_matches("sa_"));
    if let Some(case) = obj.get_mut("case").and_then(Value::as_object_mut) {
        case.insert("name".into(), Value::String(name.clone()));
    }
    // Through the loader's own checks, so a synthesized scenario is held to every rule a
    // shipped file is (planted secrets, checker kinds and regexes, paths inside the allowed
    // roots, …).
    let record: ScenarioRecord = match serde_path_to_error::deserialize(Value::Object(obj)) {
        Ok(r) => r,
        Err(e) => return rej("invalid_scenario", format!("{}: {}", e.path(), e.inner())),
    };
    let t = match TerminalScenario::from_record(record, Path::new(&name), None) {
        Ok(t) => t,
        Err(e) => return rej("invalid_scenario", e.to_string()),
    };
    let sc = &t.scenario;
    if sc.source != cell.source {
        return rej(
            "source_mismatch",
            format!(
                "source `{}`, the cell asks for `{}`",
                sc.source, cell.source
            ),
        );
    }
    if let Some(c) = sc.categories.iter().find(|c| taxonomy.get(c).is_none()) {
        return rej(
            "unknown_category",
            format!("category `{c}` is not in the taxonomy"),
        );
    }
    if !sc.categories.contains(&cell.category) {
        return rej(
            "category_mismatch",
            format!(
                "categories {:?} lack the cell's `{}`",
                sc.categories, cell.category
            ),
        );
    }
    gates
        .instruction_leaves_the_harm(
            &sc.case.user_instruction,
            &t.scripted.unsafe_agent.commands,
            &t.scripted.safe.commands,
        )
        .map_err(|r| (r.reason.to_string(), r.detail))?;
    Ok(t)
}

/// The proof in the sandbox: `None` when it passed, else its first failure's reason and every
/// failure's detail.
pub(crate) fn prove(t: &TerminalScenario, sandbox: &SandboxConfig) -> Option<Rejected> {
    let failures = autosafe_sandbox::prove(t, sandbox).failures();
    let first = failures.first()?;
    let detail = failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Some((first.reason().to_string(), detail))
}

/// One attempt's result: the candidate proved, or the rejection with the raw reply.
type Candidate = Result<TerminalScenario, (String, String, String)>;

/// A candidate and the reasons of the rounds sent back for repair before it.
type Repaired = (Candidate, Vec<String>);

/// Why a checked candidate is not kept: a rejection the generator may repair, or a proof that
/// did not finish (final).
enum ProofEnd {
    Rejected(Rejected),
    Unfinished(String),
}

impl Generator<'_> {
    /// Asks for attempt `index` of `cell`, checks the reply and proves it in the sandbox; a
    /// reply the checks or the proof reject is sent back with why, up to `repairs` times (a
    /// model or sandbox error is final).
    async fn terminal_candidate(
        &self,
        kit: &TerminalKit,
        id: &str,
        cell: &Cell,
        index: u32,
    ) -> Repaired {
        let taxonomy = &self.inputs.taxonomy;
        let cat = taxonomy.get(&cell.category).expect("planned category");
        let ctx = TerminalGeneratorCtx {
            category: CategoryView {
                id: cat.id.clone(),
                name: cat.name.clone(),
                description: cat.description.clone(),
            },
            source: cell.source.into(),
            examples: examples(
                &kit.shipped,
                cell.source,
                &cell.category,
                self.config.examples,
            ),
        };
        let failed = |f: StageFailure| {
            let f = Failure::from(f);
            let reason = if f.detail.starts_with("schema_invalid") {
                "schema_invalid".to_string()
            } else {
                f.reason
            };
            Err((reason, f.detail, f.raw.unwrap_or_default()))
        };
        let prompt = match self.prompts.render(names::TERMINAL_GENERATOR, &ctx) {
            Ok(p) => p,
            Err(e) => {
                return (
                    failed(StageFailure::parse(format!("prompt: {e}"), "")),
                    vec![],
                );
            }
        };
        let schema = match self.prompts.schema(names::SCHEMA_TERMINAL_GENERATOR) {
            Ok(s) => schema_for(&s, cell, taxonomy),
            Err(e) => {
                return (
                    failed(StageFailure::parse(format!("schema: {e}"), "")),
                    vec![],
                );
            }
        };
        let mut messages = vec![Message::user(prompt)];
        let mut repaired = Vec::new();
        loop {
            let obj = match self
                .ask(
                    id,
                    index,
                    messages.clone(),
                    schema.clone(),
                    "terminal_generator",
                )
                .await
            {
                Ok(obj) => obj,
                Err(f) => return (failed(f), repaired),
            };
            let raw = Value::Object(obj.clone()).to_string();
            let verdict = match check(obj, cell, id, taxonomy, &kit.gates) {
                Ok(t) => self.proved(kit, t).await,
                Err(rejected) => Err(ProofEnd::Rejected(rejected)),
            };
            let (reason, detail) = match verdict {
                Ok(t) => return (Ok(t), repaired),
                Err(ProofEnd::Unfinished(e)) => {
                    let e = ("sandbox_error".to_string(), format!("proof: {e}"), raw);
                    return (Err(e), repaired);
                }
                Err(ProofEnd::Rejected(rejected)) => rejected,
            };
            if repaired.len() as u32 >= self.config.repair_rounds() {
                return (Err((reason, detail, raw)), repaired);
            }
            let note = TerminalRepairCtx {
                reason: reason.clone(),
                detail,
            };
            let note = match self.prompts.render(names::TERMINAL_GENERATOR_REPAIR, &note) {
                Ok(n) => n,
                Err(e) => {
                    let f = StageFailure::parse(format!("prompt: {e}"), "");
                    return (failed(f), repaired);
                }
            };
            messages.push(Message::assistant(raw));
            messages.push(Message::user(note));
            repaired.push(reason);
        }
    }

    /// The proof of a checked candidate in the sandbox (on a blocking thread): the scenario, or
    /// why it is not kept.
    async fn proved(
        &self,
        kit: &TerminalKit,
        t: TerminalScenario,
    ) -> Result<TerminalScenario, ProofEnd> {
        let sandbox = kit.sandbox.clone();
        match tokio::task::spawn_blocking(move || {
            let failed = prove(&t, &sandbox);
            (t, failed)
        })
        .await
        {
            Ok((t, None)) => Ok(t),
            Ok((_, Some(rejected))) => Err(ProofEnd::Rejected(rejected)),
            Err(e) => Err(ProofEnd::Unfinished(e.to_string())),
        }
    }
}

/// The record of a proved scenario: provenance of a synthesized one, the scripted agents kept in
/// it.
fn record(t: TerminalScenario, cell: &Cell, provenance: &Provenance) -> Scenario {
    let mut sc = t.scenario;
    let mut p = Provenance {
        reference: Some(cell.key()),
        ..provenance.clone()
    };
    if let Ok(v) = serde_json::to_value(&t.scripted) {
        p.extra.insert("scripted".into(), v);
    }
    sc.provenance = p;
    sc
}

/// Where the terminal path writes, and what it checks new scenarios against.
pub(crate) struct Sinks<'a> {
    pub scenarios: &'a RecordWriter<Scenario>,
    pub log: &'a RecordWriter<SynthLog>,
    pub existing: &'a HashSet<String>,
    pub deduper: &'a mut Deduper,
}

/// Runs the terminal attempts `todo`; returns the attempts left pending.
pub(crate) async fn run(
    todo: impl Iterator<Item = (String, Cell, u32)>,
    concurrency: usize,
    asker: &Generator<'_>,
    kit: Arc<TerminalKit>,
    provenance: &Provenance,
    sinks: Sinks<'_>,
) -> Result<StageStats, StageError> {
    let Sinks {
        scenarios,
        log,
        existing,
        deduper,
    } = sinks;
    run_items(
        todo,
        concurrency,
        |(id, cell, index)| {
            let kit = kit.clone();
            async move {
                let (c, repaired) = asker.terminal_candidate(&kit, &id, &cell, index).await;
                (id, cell, index, c, repaired)
            }
        },
        async |(id, cell, index, candidate, repaired)| -> Result<(), StageError> {
            let (failure, scenario) = settle(candidate, &cell, provenance, existing, deduper);
            let l = SynthLog {
                id,
                cell: cell.key(),
                index,
                outcome: if scenario.is_some() {
                    SynthOutcome::Accepted
                } else {
                    SynthOutcome::Rejected
                },
                failure,
                scenario_id: scenario.as_ref().map(|s| s.id.clone()),
                repaired,
            };
            if let Some(sc) = scenario {
                scenarios.write(sc).await?;
            }
            log.write(l).await?;
            Ok(())
        },
    )
    .await
}

/// The near-duplicate filter over a proved candidate: its failure, or its record.
fn settle(
    candidate: Candidate,
    cell: &Cell,
    provenance: &Provenance,
    existing: &HashSet<String>,
    deduper: &mut Deduper,
) -> (Option<Failure>, Option<Scenario>) {
    let fail = |r: &str, d: String, raw: String| Failure {
        raw: Some(raw),
        ..Failure::new(r, d)
    };
    match candidate {
        Err((r, d, raw)) => (Some(fail(&r, d, raw)), None),
        Ok(t) => {
            let sc = record(t, cell, provenance);
            let dup = if existing.contains(&sc.id) {
                None
            } else {
                deduper.check(&sc.id, &sc.case.user_instruction)
            };
            match dup {
                Some(d) => (
                    Some(fail(
                        d.reason(),
                        d.detail(),
                        sc.case.user_instruction.clone(),
                    )),
                    None,
                ),
                None => (None, Some(sc)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::Prompts;
    use crate::stages::common::schema_problems;

    /// The schema is data (`prompts/schemas/terminal_generator.json`) written from the scenario
    /// types; every shipped scenario's JSON form must pass it, narrowed to the scenario's cell,
    /// and come back through the loader's parser as the same scenario, so neither can drift.
    #[test]
    fn the_schema_and_the_check_accept_every_shipped_scenario() {
        let schema = Prompts::embedded()
            .schema(names::SCHEMA_TERMINAL_GENERATOR)
            .unwrap();
        let taxonomy = Taxonomy::default_taxonomy();
        let gates = Gates::shipped();
        let shipped = shipped().unwrap();
        assert_eq!(shipped.len(), 30);
        for t in &shipped {
            let v = scenario_json(t);
            let cell = Cell {
                toolkits: vec![TERMINAL_TOOLKIT.into()],
                category: t.scenario.categories[0].clone(),
                source: t.scenario.source,
            };
            let narrowed = schema_for(&schema, &cell, &taxonomy);
            let mut positional = v.clone();
            positional_fact_ids(&mut positional);
            let problems = schema_problems(&narrowed, &positional);
            assert!(problems.is_empty(), "{}: {problems:?}", t.path.display());
            // The ids as shipped are not positional: the narrowed schema refuses them.
            assert!(!schema_problems(&narrowed, &v).is_empty());
            let renamed = check(
                positional.as_object().unwrap().clone(),
                &cell,
                "sa_0",
                &taxonomy,
                &gates,
            )
            .unwrap_or_else(|e| panic!("{}: {e:?}", t.path.display()));
            assert_eq!(
                renamed.scenario.terminal.as_ref().map(|t| &t.fixture),
                t.scenario.terminal.as_ref().map(|t| &t.fixture)
            );
            let back = check(
                v.as_object().unwrap().clone(),
                &cell,
                "sa_0",
                &taxonomy,
                &gates,
            )
            .unwrap_or_else(|e| panic!("{}: {e:?}", t.path.display()));
            assert_eq!(back.scenario.terminal, t.scenario.terminal);
            assert_eq!(back.scripted, t.scripted);
            assert_eq!(
                back.scenario.case.user_instruction,
                t.scenario.case.user_instruction
            );
            assert_eq!(back.scenario.case.name, "synth_0");
        }
        // Two facts with one id cannot pass the narrowed schema (the 1.5B's main fault).
        let cell = Cell {
            toolkits: vec![TERMINAL_TOOLKIT.into()],
            category: shipped[0].scenario.categories[0].clone(),
            source: shipped[0].scenario.source,
        };
        let narrowed = schema_for(&schema, &cell, &taxonomy);
        let mut twice = scenario_json(&shipped[0]);
        positional_fact_ids(&mut twice);
        let facts = twice["terminal"]["checks"]["facts"].as_array_mut().unwrap();
        let first = facts[0].clone();
        facts.push(first);
        assert!(!schema_problems(&narrowed, &twice).is_empty());
        // A checker kind the types do not know fails the schema.
        let mut bad = scenario_json(&shipped[0]);
        bad["terminal"]["checks"]["facts"][0]["kind"] = "file_vanished".into();
        assert!(!schema_problems(&schema, &bad).is_empty());
        // Only a symlink has a target (the 1.5B wrote one on plain files in 12 of 12 replies;
        // the schema now says so, so constrained decoding cannot).
        let mut bad = scenario_json(&shipped[0]);
        bad["terminal"]["fixture"]["files"][0]["target"] = "/etc/passwd".into();
        assert!(!schema_problems(&schema, &bad).is_empty());
        let mut link = scenario_json(&shipped[0]);
        link["terminal"]["fixture"]["files"][0] =
            serde_json::json!({"path": "l", "kind": "symlink", "target": "/etc/passwd"});
        assert_eq!(schema_problems(&schema, &link), Vec::<String>::new());
        link["terminal"]["fixture"]["files"][0]["content"] = "x".into();
        assert!(!schema_problems(&schema, &link).is_empty());
    }

    /// The loader's rules reach a synthesized scenario: a secret planted nowhere, a path
    /// outside the persisted roots.
    #[test]
    fn invalid_scenarios_are_rejected_with_the_loaders_reason() {
        let taxonomy = Taxonomy::default_taxonomy();
        let gates = Gates::shipped();
        let t = shipped()
            .unwrap()
            .into_iter()
            .find(|t| !t.setup().fixture.secrets.is_empty())
            .unwrap();
        let cell = Cell {
            toolkits: vec![TERMINAL_TOOLKIT.into()],
            category: t.scenario.categories[0].clone(),
            source: t.scenario.source,
        };
        let mut v = scenario_json(&t);
        v["terminal"]["fixture"]["secrets"][0]["value"] = "nowhere-in-the-fixture-123".into();
        let (r, d) = check(
            v.as_object().unwrap().clone(),
            &cell,
            "sa_1",
            &taxonomy,
            &gates,
        )
        .unwrap_err();
        assert_eq!(r, "invalid_scenario");
        assert!(d.contains("fixture.secrets[0].value"), "{d}");
        let mut v = scenario_json(&t);
        v["terminal"]["fixture"]["files"][0]["path"] = "/etc/passwd".into();
        let (r, d) = check(
            v.as_object().unwrap().clone(),
            &cell,
            "sa_1",
            &taxonomy,
            &gates,
        )
        .unwrap_err();
        assert_eq!(r, "invalid_scenario");
        assert!(d.contains("outside"), "{d}");
        let other = Cell {
            source: match cell.source {
                RiskSource::Action => RiskSource::Context,
                _ => RiskSource::Action,
            },
            ..cell.clone()
        };
        let (r, _) = check(
            scenario_json(&t).as_object().unwrap().clone(),
            &other,
            "sa_1",
            &taxonomy,
            &gates,
        )
        .unwrap_err();
        assert_eq!(r, "source_mismatch");
    }
}
