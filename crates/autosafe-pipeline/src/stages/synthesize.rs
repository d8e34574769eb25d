//! Scenario synthesis (D_r): a sampling plan over (toolkit or toolkit pair, risk category,
//! source) cells; the generator model writes ToolEmu-format cases under the generator schema;
//! cases are validated and de-duplicated; every attempt is logged with its outcome, and a
//! coverage table per cell (asked, produced, rejected by reason) is written.
//!
//! Rejection reasons: `api_error`, `parse_error`, `truncated` (the model gave nothing usable),
//! `schema_invalid`, `empty_field`, `unknown_toolkit`, `toolkit_outside_cell`, `unknown_tool`,
//! `source_mismatch`, `unknown_category`, `category_mismatch`, `unmapped_outcome`, the scenario
//! gates of [`crate::gates`] (`implausible_instruction`, `copied_from_example`,
//! `outcome_outside_category`, `unneeded_toolkit`; off with `gates = false`),
//! `exact_duplicate`, `near_duplicate`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use autosafe_llm::{
    CallContext, ChatModel, ChatRequest, JsonSchemaFormat, Message, ResponseFormat,
};
use autosafe_ots::{
    Case, Provenance, RiskSource, Scenario, Taxonomy, ToolLibrary, Toolkit, Underspecifications,
    content_id,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::case_review::CaseReview;
use super::common::{
    StageError, StageFailure, first_choice, parse_json_object, schema_problems, seed_for,
};
use super::synth_terminal::{self, TerminalKit};
use crate::dedup::{DedupConfig, Deduper};
use crate::gates::{Gates, body_text};
use crate::prompts::{CategoryView, GeneratorCtx, Prompts, names};
use crate::rundir::{Counted, RunDir, RunFile, Stage, StageStats, write_json_atomic};
use crate::shard::{ShardSpec, stable_hash};
use crate::stage_records::Failure;
use crate::store::{Record, RecordReader, RecordWriter};
use crate::task_loop::run_items;
use crate::tools::toolkit_views;

/// Synthesis settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Toolkit names (empty: every toolkit of the library).
    pub toolkits: Vec<String>,
    /// Also plan cells for pairs of toolkits (consecutive pairs of the toolkit list).
    pub pairs: bool,
    /// Category ids (empty: every taxonomy category).
    pub categories: Vec<String>,
    /// Sources (empty: all three).
    pub sources: Vec<RiskSource>,
    /// Cases asked per cell.
    pub per_cell: u32,
    /// Keep at most this many cells (a deterministic sample by hash), 0 for all.
    pub max_cells: usize,
    /// Format examples shown to the generator.
    pub examples: usize,
    /// Near-duplicate filter.
    pub dedup: DedupConfig,
    /// Token budget of one case.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Requests in flight.
    pub concurrency: usize,
    /// Require every risky outcome to start with a taxonomy category name (`<name>: …`) in the
    /// generator schema, so constrained decoding cannot write an outcome that maps to no
    /// category (for small models; a model without constrained decoding that writes another
    /// prefix gets `schema_invalid`).
    pub outcome_prefix: bool,
    /// Require the cell's category as the first entry of `categories` in the generator schema
    /// (`prefixItems`; for small models under constrained decoding).
    pub category_first: bool,
    /// At most this many entries in each list of a case (schema `maxItems`; for small models).
    pub max_items: Option<usize>,
    /// At most this many characters in each text of a case (schema `maxLength`; for small models).
    pub max_text: Option<usize>,
    /// Apply the scenario gates (`data/scenario_gates.toml`) to every case.
    pub gates: bool,
    /// What the generator writes: `emulator` (ToolEmu cases the LLM emulator plays) or
    /// `terminal` (complete terminal scenarios, each proved in the sandbox before it is kept:
    /// see [`super::synth_terminal`]). Not written when `emulator`, so manifests of emulator runs
    /// read as before.
    #[serde(skip_serializing_if = "is_emulator")]
    pub environment: autosafe_env::EnvChoice,
    /// Terminal synthesis: rounds in which a candidate that failed the loader's validation, the
    /// cell or instruction checks or its proof is shown why and asked again (default 1; 0 keeps
    /// the first reply's verdict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repairs: Option<u32>,
    /// With `outcome_prefix`, also require the *first* outcome to name the cell's category. Off by
    /// default: on the 1.5B it let every case past the category gate by labelling whatever risk it
    /// wrote with the cell's category (`docs/ablation/shaping/`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub first_outcome_in_cell: bool,
    /// Emulator cases: after the gates, the judge's model reviews each case
    /// ([`super::case_review`]) and one it finds unrealistic or risk-free is rejected as
    /// `implausible_case`. Off by default (one more call a case; see `docs/data-quality.md`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub review: bool,
}

fn is_emulator(e: &autosafe_env::EnvChoice) -> bool {
    *e == autosafe_env::EnvChoice::Emulator
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            toolkits: Vec::new(),
            pairs: false,
            categories: Vec::new(),
            sources: Vec::new(),
            per_cell: 1,
            max_cells: 0,
            examples: 2,
            dedup: DedupConfig::default(),
            max_tokens: 1024,
            temperature: 0.8,
            concurrency: 16,
            outcome_prefix: false,
            category_first: false,
            max_items: None,
            max_text: None,
            gates: true,
            environment: autosafe_env::EnvChoice::Emulator,
            repairs: None,
            first_outcome_in_cell: false,
            review: false,
        }
    }
}

impl SynthConfig {
    /// Repair rounds of a terminal candidate (`repairs`, default 1).
    pub(crate) fn repair_rounds(&self) -> u32 {
        self.repairs.unwrap_or(1)
    }
}

/// One cell of the sampling plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cell {
    /// Toolkit names (one, or a pair).
    pub toolkits: Vec<String>,
    /// Category id.
    pub category: String,
    /// Risk source.
    pub source: RiskSource,
}

impl Cell {
    /// `Toolkit[+Toolkit]/category/source`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.toolkits.join("+"),
            self.category,
            self.source
        )
    }
}

/// How a generation attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynthOutcome {
    /// The case was valid and new: its scenario was written.
    Accepted,
    /// The attempt produced no scenario (see its failure).
    Rejected,
}

/// The outcome of one generation attempt (`synthesize_log.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthLog {
    /// Attempt id (`sa_…`) from cell and index.
    pub id: String,
    /// Cell key.
    pub cell: String,
    /// Index within the cell.
    pub index: u32,
    /// Accepted or rejected.
    pub outcome: SynthOutcome,
    /// Why it was rejected, and the raw generator output of a rejected attempt.
    #[serde(flatten)]
    pub failure: Option<Failure>,
    /// The accepted scenario's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_id: Option<String>,
    /// Terminal synthesis: the rejection reason of each earlier round that was sent back to the
    /// generator for repair, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

impl SynthLog {
    /// The rejection reason, `None` when accepted.
    pub fn reason(&self) -> Option<&str> {
        self.failure.as_ref().map(|f| f.reason.as_str())
    }

    /// Where this attempt is counted in the synthesize stage's counts.
    pub fn counted(&self) -> Counted<'_> {
        match self.reason() {
            None => Counted::Output,
            Some(r) => Counted::Rejected(r),
        }
    }
}

impl Record for SynthLog {
    fn record_id(&self) -> &str {
        &self.id
    }
}

/// Coverage of one cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellCoverage {
    /// Cases asked.
    pub asked: u64,
    /// Cases accepted.
    pub produced: u64,
    /// Rejections by reason.
    pub rejected: BTreeMap<String, u64>,
}

/// Narrows the generator schema to one cell: `Toolkits` may only name the cell's toolkits,
/// `source` must be the cell's source, and `categories` may only hold taxonomy ids (whether the
/// cell's category is among them is still checked after parsing).
/// Servers and the embedded engine that honour JSON schemas then cannot produce a case that the
/// validation below would reject for naming an unknown toolkit, source or category.
pub(crate) fn narrow_schema_to_cell(
    schema: &Value,
    cell: &Cell,
    taxonomy: &autosafe_ots::taxonomy::Taxonomy,
) -> Value {
    let mut schema = schema.clone();
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return schema;
    };
    if let Some(items) = props.get_mut("Toolkits").and_then(|t| t.get_mut("items")) {
        items["enum"] = serde_json::json!(cell.toolkits);
        if let Some(t) = props.get_mut("Toolkits").and_then(Value::as_object_mut) {
            t.insert("minItems".into(), serde_json::json!(cell.toolkits.len()));
            t.insert("maxItems".into(), serde_json::json!(cell.toolkits.len()));
        }
    }
    if let Some(source) = props.get_mut("source") {
        source["enum"] = serde_json::json!([cell.source]);
    }
    if let Some(cats) = props.get_mut("categories").and_then(Value::as_object_mut) {
        let ids: Vec<&str> = taxonomy
            .categories()
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        cats.insert("items".into(), serde_json::json!({ "enum": ids }));
    }
    schema
}

/// Makes every risky outcome of the generator schema start with a taxonomy category name
/// (`Data loss or corruption: …`), so each maps to a category by its prefix
/// (`SynthConfig::outcome_prefix`), and with `first_in_cell` the first one with the cell's category
/// (`SynthConfig::first_outcome_in_cell`).
pub(crate) fn require_outcome_prefix(
    schema: &mut Value,
    cell: &Cell,
    taxonomy: &Taxonomy,
    first_in_cell: bool,
) {
    let Some(outcomes) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("Potential Risky Outcomes"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let Some(items) = outcomes.get_mut("items").and_then(Value::as_object_mut) else {
        return;
    };
    items.insert(
        "pattern".into(),
        Value::String(outcome_pattern(taxonomy, &cell.category, false)),
    );
    if !first_in_cell {
        return;
    }
    let mut first = items.clone();
    first.insert(
        "pattern".into(),
        Value::String(outcome_pattern(taxonomy, &cell.category, true)),
    );
    outcomes.insert("prefixItems".into(), Value::Array(vec![first.into()]));
}

/// Makes the cell's category the first entry of `categories` in the generator schema
/// (`prefixItems`), so a case cannot miss it (`SynthConfig::category_first`).
pub(crate) fn require_category_first(schema: &mut Value, cell: &Cell) {
    if let Some(cats) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("categories"))
        .and_then(Value::as_object_mut)
    {
        cats.insert(
            "prefixItems".into(),
            serde_json::json!([{ "const": cell.category }]),
        );
    }
}

/// `^(<category name>|…): \S.*$` with the cell's category first, or `only` that one (anchored at
/// both ends, as llama.cpp's schema-to-grammar converter requires): an outcome must name its
/// category.
fn outcome_pattern(taxonomy: &Taxonomy, first: &str, only: bool) -> String {
    let others = taxonomy
        .categories()
        .iter()
        .filter(|c| c.id != first && !only);
    let mut names: Vec<&str> = taxonomy
        .categories()
        .iter()
        .filter(|c| c.id == first)
        .chain(others)
        .map(|c| c.name.as_str())
        .collect();
    names.dedup();
    let escaped: Vec<String> = names
        .iter()
        .map(|n| {
            n.chars()
                .flat_map(|c| {
                    let special = "\\.+*?()|[]{}^$/".contains(c);
                    special.then_some('\\').into_iter().chain([c])
                })
                .collect()
        })
        .collect();
    format!("^({}): \\S.*$", escaped.join("|"))
}

/// Caps every list of the generator schema at `max_items` entries and every text at
/// `max_text` characters (for small models: less to write, less to get wrong, no case cut by the
/// token budget). `None` leaves the schema's own limits.
pub(crate) fn limit_schema_sizes(
    schema: &mut Value,
    max_items: Option<usize>,
    max_text: Option<usize>,
) {
    match schema {
        Value::Object(o) => {
            let ty = o
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if ty == "array"
                && let Some(n) = max_items
            {
                let cur = o
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX);
                let min = o.get("minItems").and_then(Value::as_u64).unwrap_or(0);
                o.insert(
                    "maxItems".into(),
                    serde_json::json!(cur.min(n as u64).max(min)),
                );
            }
            if ty == "string"
                && !o.contains_key("enum")
                && let Some(n) = max_text
            {
                let cur = o
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .unwrap_or(u64::MAX);
                o.insert("maxLength".into(), serde_json::json!(cur.min(n as u64)));
            }
            for v in o.values_mut() {
                limit_schema_sizes(v, max_items, max_text);
            }
        }
        Value::Array(a) => {
            for v in a {
                limit_schema_sizes(v, max_items, max_text);
            }
        }
        _ => {}
    }
}

/// The id of attempt `index` of a cell (`sa_…`).
fn attempt_id(cell: &Cell, index: u32) -> String {
    content_id(
        "sa",
        &serde_json::json!({"toolkits": cell.toolkits, "category": cell.category, "source": cell.source, "index": index}),
    )
}

/// How many generation attempts a synthesis run plans (for this shard): its progress total.
pub fn planned_attempts(
    config: &SynthConfig,
    library: &ToolLibrary,
    taxonomy: &Taxonomy,
    shard: Option<ShardSpec>,
) -> Result<u64, StageError> {
    let spec = shard.unwrap_or_default();
    let cells = plan_cells(config, library, taxonomy)?;
    Ok(cells
        .iter()
        .flat_map(|c| (0..config.per_cell).map(move |i| attempt_id(c, i)))
        .filter(|id| spec.owns(id))
        .count() as u64)
}

/// Builds the cells: toolkit sets × categories × sources, optionally sampled down.
pub(crate) fn plan_cells(
    config: &SynthConfig,
    library: &ToolLibrary,
    taxonomy: &Taxonomy,
) -> Result<Vec<Cell>, StageError> {
    let terminal = config.environment == autosafe_env::EnvChoice::Terminal;
    let toolkits: Vec<String> = if terminal {
        super::synth_terminal::cell_toolkits(&config.toolkits)?
    } else if config.toolkits.is_empty() {
        library.toolkits().map(|t| t.toolkit.clone()).collect()
    } else {
        config.toolkits.clone()
    };
    for t in &toolkits {
        if library.get(t).is_none() {
            return Err(StageError::Config(format!(
                "synthesize.toolkits: unknown toolkit `{t}`"
            )));
        }
    }
    let categories: Vec<String> = if config.categories.is_empty() {
        taxonomy.categories().iter().map(|c| c.id.clone()).collect()
    } else {
        config.categories.clone()
    };
    for c in &categories {
        if taxonomy.get(c).is_none() {
            return Err(StageError::Config(format!(
                "synthesize.categories: unknown category `{c}`"
            )));
        }
    }
    let sources = if config.sources.is_empty() {
        RiskSource::ALL.to_vec()
    } else {
        config.sources.clone()
    };
    let mut sets: Vec<Vec<String>> = toolkits.iter().map(|t| vec![t.clone()]).collect();
    if config.pairs && !terminal {
        sets.extend(toolkits.windows(2).map(|w| w.to_vec()));
    }
    let mut cells = Vec::new();
    for set in &sets {
        for c in &categories {
            for &s in &sources {
                cells.push(Cell {
                    toolkits: set.clone(),
                    category: c.clone(),
                    source: s,
                });
            }
        }
    }
    if config.max_cells > 0 && cells.len() > config.max_cells {
        let mut keyed: Vec<(u64, Cell)> = cells
            .into_iter()
            .map(|c| (stable_hash(&c.key()), c))
            .collect();
        keyed.sort_by_key(|k| k.0);
        keyed.truncate(config.max_cells);
        cells = keyed.into_iter().map(|(_, c)| c).collect();
        cells.sort_by_key(Cell::key);
    }
    Ok(cells)
}

/// The inputs synthesis reads besides the model.
pub struct SynthInputs {
    /// Toolkits cases may use.
    pub library: ToolLibrary,
    /// The taxonomy.
    pub taxonomy: Taxonomy,
    /// ToolEmu's per-toolkit risk lists (`toolkit_risks.json`), by toolkit name.
    pub toolkit_risks: BTreeMap<String, Vec<String>>,
    /// Format example cases (`format_example_cases.json`), as JSON values.
    pub examples: Vec<Value>,
    /// The sandbox that proves terminal scenarios (`environment = "terminal"` only).
    pub sandbox: autosafe_sandbox::SandboxConfig,
    /// The plausibility reviewer of `[synthesize] review` (the run's judge model).
    pub reviewer: Option<super::judge::StepJudge>,
}

/// What a synthesis run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SynthReport {
    /// Stage counts (recomputed from the log, so a resumed run reports the same).
    pub stats: StageStats,
    /// Coverage by cell key.
    pub coverage: BTreeMap<String, CellCoverage>,
    /// The scenario file.
    pub scenarios: PathBuf,
}

/// The gates and the texts of the format examples they compare against.
struct GateInputs {
    gates: Gates,
    examples: Vec<String>,
}

enum Checked {
    Accept(Box<Scenario>),
    Reject(String, String),
}

/// One generation attempt as the model answered it: id, cell, index, the object or the failure,
/// and the reviewer's answers on the case it makes (`[synthesize] review`).
type Generated = (
    String,
    Cell,
    u32,
    Result<serde_json::Map<String, Value>, StageFailure>,
    Option<Result<CaseReview, StageFailure>>,
);

/// Settles one attempt: its log line, and its scenario when the case is valid, passes the gates
/// and is no duplicate of one kept before (`existing`: on file before this run).
fn settle(
    (id, cell, index, result, review): Generated,
    provenance: &Provenance,
    inputs: &SynthInputs,
    gates: Option<&GateInputs>,
    existing: &HashSet<String>,
    deduper: &mut Deduper,
) -> (SynthLog, Option<Scenario>) {
    let log = |outcome, failure, scenario_id| SynthLog {
        id: id.clone(),
        cell: cell.key(),
        index,
        outcome,
        failure,
        scenario_id,
        repaired: Vec::new(),
    };
    let reject = |reason: &str, detail: String, raw: String| -> (SynthLog, Option<Scenario>) {
        let f = Failure {
            raw: Some(raw),
            ..Failure::new(reason, detail)
        };
        (log(SynthOutcome::Rejected, Some(f), None), None)
    };
    let obj = match result {
        Ok(obj) => obj,
        Err(f) => {
            let mut f = Failure::from(f);
            if f.detail.starts_with("schema_invalid") {
                f.reason = "schema_invalid".into();
            }
            return (log(SynthOutcome::Rejected, Some(f), None), None);
        }
    };
    let provenance = Provenance {
        reference: Some(cell.key()),
        ..provenance.clone()
    };
    let sc = match check_case(&obj, &cell, &id, inputs, gates, provenance) {
        Checked::Accept(sc) => sc,
        Checked::Reject(r, d) => return reject(&r, d, Value::Object(obj).to_string()),
    };
    match review {
        Some(Ok(r)) if !r.accept => {
            let detail = format!("no to {}: {}", r.failed().join(", "), r.reason);
            return reject("implausible_case", detail, sc.case.user_instruction.clone());
        }
        Some(Err(f)) => {
            let detail = format!("the review failed ({}): {}", f.reason.as_str(), f.detail);
            return reject("review_unmeasured", detail, f.raw.unwrap_or_default());
        }
        _ => {}
    }
    let dup = if existing.contains(&sc.id) {
        None
    } else {
        deduper.check(&sc.id, &sc.case.user_instruction)
    };
    match dup {
        Some(d) => reject(d.reason(), d.detail(), sc.case.user_instruction.clone()),
        None => (
            log(SynthOutcome::Accepted, None, Some(sc.id.clone())),
            Some(*sc),
        ),
    }
}

/// A string list of the generator object (empty when absent or not a list).
fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The case a generator object describes (fields it lacks are empty).
fn case_of(obj: &serde_json::Map<String, Value>, attempt_id: &str) -> Case {
    let strings = |k: &str| string_list(obj.get(k));
    let instruction = obj
        .get("User Instruction")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let under = obj
        .get("Underspecifications")
        .cloned()
        .unwrap_or(Value::Null);
    let under_list = |k: &str| string_list(under.get(k));
    Case {
        name: format!("synth_{}", attempt_id.trim_start_matches("sa_")),
        toolkits: strings("Toolkits"),
        user_instruction: instruction,
        underspecifications: Underspecifications {
            task_information: under_list("Task Information"),
            safety_constraints: under_list("Safety & Security Constraints"),
            extra: Default::default(),
        },
        expected_achievements: strings("Expected Achievements"),
        risky_outcomes: strings("Potential Risky Outcomes"),
        risky_actions: strings("Potential Risky Actions"),
        extra: Default::default(),
    }
}

/// Every text of a case with its field name.
fn case_texts(case: &Case) -> Vec<(&'static str, &String)> {
    let mut texts: Vec<(&'static str, &String)> =
        vec![("User Instruction", &case.user_instruction)];
    for (k, list) in [
        ("Toolkits", &case.toolkits),
        ("Expected Achievements", &case.expected_achievements),
        ("Potential Risky Outcomes", &case.risky_outcomes),
        ("Potential Risky Actions", &case.risky_actions),
        (
            "Task Information",
            &case.underspecifications.task_information,
        ),
        (
            "Safety & Security Constraints",
            &case.underspecifications.safety_constraints,
        ),
    ] {
        texts.extend(list.iter().map(|s| (k, s)));
    }
    texts
}

/// Toolkits known and within the cell; tools named in the texts exist in the case's
/// toolkits (`tks`). The rejection reason and detail otherwise.
fn known_toolkits_and_tools(
    case: &Case,
    cell: &Cell,
    texts: &[(&str, &String)],
    inputs: &SynthInputs,
    tks: &[&Toolkit],
) -> Result<(), (&'static str, String)> {
    // Toolkits: known, and within the cell.
    for t in &case.toolkits {
        if inputs.library.get(t).is_none() {
            return Err((
                "unknown_toolkit",
                format!("toolkit `{t}` is not in the library"),
            ));
        }
        if !cell.toolkits.contains(t) {
            return Err((
                "toolkit_outside_cell",
                format!("toolkit `{t}` is not one of the cell's {:?}", cell.toolkits),
            ));
        }
    }
    // Tools named in the text must exist in the case's toolkits.
    for (_, text) in texts {
        for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
            for tk in tks {
                if word.len() > tk.name_for_model.len()
                    && word.starts_with(&tk.name_for_model)
                    && word[tk.name_for_model.len()..].starts_with(|c: char| c.is_ascii_uppercase())
                    && tk.find_tool(word).is_none()
                {
                    return Err((
                        "unknown_tool",
                        format!("`{word}` is not a tool of toolkit {}", tk.toolkit),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Validates one generator object for `cell` and builds the scenario.
fn check_case(
    obj: &serde_json::Map<String, Value>,
    cell: &Cell,
    attempt_id: &str,
    inputs: &SynthInputs,
    gates: Option<&GateInputs>,
    provenance: Provenance,
) -> Checked {
    let reject = |r: &str, d: String| Checked::Reject(r.to_string(), d);
    let case = case_of(obj, attempt_id);
    // Empty fields (whitespace-only text passes the schema's minLength).
    let texts = case_texts(&case);
    if let Some((k, _)) = texts.iter().find(|(_, s)| s.trim().is_empty()) {
        return reject("empty_field", format!("`{k}` holds an empty text"));
    }
    let tks: Vec<&Toolkit> = case
        .toolkits
        .iter()
        .filter_map(|t| inputs.library.get(t))
        .collect();
    if let Err((r, d)) = known_toolkits_and_tools(&case, cell, &texts, inputs, &tks) {
        return reject(r, d);
    }
    let source = obj.get("source").and_then(Value::as_str).unwrap_or("");
    if source != cell.source.as_str() {
        return reject(
            "source_mismatch",
            format!("source `{source}`, the cell asks for `{}`", cell.source),
        );
    }
    let mut categories = string_list(obj.get("categories"));
    if let Some(c) = categories.iter().find(|c| inputs.taxonomy.get(c).is_none()) {
        return reject(
            "unknown_category",
            format!("category `{c}` is not in the taxonomy"),
        );
    }
    if !categories.contains(&cell.category) {
        return reject(
            "category_mismatch",
            format!(
                "categories {categories:?} lack the cell's `{}`",
                cell.category
            ),
        );
    }
    if let Some(o) = case
        .risky_outcomes
        .iter()
        .find(|o| inputs.taxonomy.map_one(o).is_none())
    {
        return reject(
            "unmapped_outcome",
            format!("outcome maps to no category: {o}"),
        );
    }
    if let Some(g) = gates {
        let request = format!(
            "{}\n{}",
            case.user_instruction,
            case.underspecifications.task_information.join("\n")
        );
        let passed = g
            .gates
            .instruction(&case.user_instruction)
            .and_then(|_| {
                g.gates
                    .not_copied(&body_text(&Value::Object(obj.clone())), &g.examples)
            })
            .and_then(|_| {
                g.gates
                    .outcomes_in_category(&case, &cell.category, &inputs.taxonomy)
            })
            .and_then(|_| g.gates.toolkits_needed(&request, &tks));
        if let Err(r) = passed {
            return reject(r.reason, r.detail);
        }
    }
    categories.sort();
    categories.dedup();
    Checked::Accept(Box::new(Scenario::new(
        case,
        cell.source,
        categories,
        provenance,
    )))
}

/// Runs synthesis into the run directory: `scenarios.jsonl` (or its shard file),
/// `synthesize_log.jsonl`, `coverage.json`. Resumes: attempts already logged are skipped.
pub async fn synthesize(
    run: &RunDir,
    shard: Option<ShardSpec>,
    generator: Arc<dyn ChatModel>,
    prompts: Arc<Prompts>,
    inputs: &SynthInputs,
    config: &SynthConfig,
) -> Result<SynthReport, StageError> {
    let cells = plan_cells(config, &inputs.library, &inputs.taxonomy)?;
    let shard_spec = shard.unwrap_or_default();
    // The attempts, generated lazily (twice: to work, then to count), so memory does not grow
    // with the number of attempts.
    let attempts = || {
        cells
            .iter()
            .flat_map(|c| (0..config.per_cell).map(move |i| (attempt_id(c, i), c, i)))
            .filter(move |(id, _, _)| shard_spec.owns(id))
    };
    let scen_path = run.stage_file(Stage::Synthesize, shard);
    let log_path = run.file(RunFile::SynthesizeLog, shard);
    let (scen_writer, scen_resume) = RecordWriter::<Scenario>::open(&scen_path, 64)?;
    let (log_writer, _) = RecordWriter::<SynthLog>::open(&log_path, 64)?;
    let existing: HashSet<String> = scen_resume.finished;
    let terminal = (config.environment == autosafe_env::EnvChoice::Terminal)
        .then(|| TerminalKit::new(inputs.sandbox.clone()))
        .transpose()?;
    let mut deduper = Deduper::new(config.dedup);
    if let Some(kit) = &terminal {
        kit.seed(&mut deduper);
    }
    let (mut deduper, finished) = resume(&scen_path, &log_path, &existing, deduper)?;
    let template = match terminal {
        Some(_) => names::TERMINAL_GENERATOR,
        None => names::SCENARIO_GENERATOR,
    };
    let provenance = Provenance {
        origin: "synthesized".into(),
        reference: None,
        generator: Some(generator.name().to_string()),
        prompt_hash: Some(prompts.hash(template)?),
        extra: Default::default(),
    };
    let asker = Generator {
        schema: prompts.schema(names::SCHEMA_GENERATOR)?,
        examples: format_examples(&inputs.examples, config.examples),
        model: generator,
        prompts,
        inputs,
        config,
    };
    let todo = attempts()
        .filter(|(id, _, _)| !finished.contains(id))
        .map(|(id, cell, i)| (id, cell.clone(), i));
    let sinks = synth_terminal::Sinks {
        scenarios: &scen_writer,
        log: &log_writer,
        existing: &existing,
        deduper: &mut deduper,
    };
    let left = match terminal {
        Some(kit) => {
            synth_terminal::run(
                todo,
                config.concurrency,
                &asker,
                Arc::new(kit),
                &provenance,
                sinks,
            )
            .await?
        }
        None => run_emulator(todo, &asker, &provenance, sinks).await?,
    };
    scen_writer.finish().await?;
    log_writer.finish().await?;

    let (stats, coverage) = tally(attempts(), &finished, &log_path, &left)?;
    let cov_name = match shard.filter(|s| s.count > 1) {
        Some(s) => format!("coverage.{}.json", s.file_tag()),
        None => "coverage.json".into(),
    };
    write_json_atomic(&run.path().join(cov_name), &coverage)?;
    Ok(SynthReport {
        stats,
        coverage,
        scenarios: scen_path,
    })
}

/// Runs the emulator-case attempts `todo`; returns the attempts left pending (those that met a
/// transient failure are not logged).
async fn run_emulator(
    todo: impl Iterator<Item = (String, Cell, u32)>,
    asker: &Generator<'_>,
    provenance: &Provenance,
    sinks: synth_terminal::Sinks<'_>,
) -> Result<StageStats, StageError> {
    let (inputs, config) = (asker.inputs, asker.config);
    let gates = config.gates.then(|| GateInputs {
        gates: Gates::shipped(),
        examples: inputs.examples.iter().map(body_text).collect(),
    });
    let synth_terminal::Sinks {
        scenarios,
        log,
        existing,
        deduper,
    } = sinks;
    run_items(
        todo,
        config.concurrency,
        |(id, cell, index)| {
            let gates = gates.as_ref();
            async move {
                let result = asker.generate(&id, &cell, index).await;
                let review = match (&inputs.reviewer, &result) {
                    (Some(reviewer), Ok(obj)) => {
                        review(reviewer, obj, &cell, &id, index, inputs, gates).await
                    }
                    _ => None,
                };
                (id, cell, index, result, review)
            }
        },
        async |attempt| -> Result<(), StageError> {
            let (l, scenario) = settle(
                attempt,
                provenance,
                inputs,
                gates.as_ref(),
                existing,
                deduper,
            );
            if let Some(sc) = scenario {
                scenarios.write(sc).await?;
            }
            log.write(l).await?;
            Ok(())
        },
    )
    .await
}

/// The reviewer's answers on the case `obj` makes, when it passes every check before the review
/// (a case the cheap checks reject costs no review).
async fn review(
    reviewer: &super::judge::StepJudge,
    obj: &serde_json::Map<String, Value>,
    cell: &Cell,
    id: &str,
    index: u32,
    inputs: &SynthInputs,
    gates: Option<&GateInputs>,
) -> Option<Result<CaseReview, StageFailure>> {
    let Checked::Accept(sc) = check_case(obj, cell, id, inputs, gates, Provenance::default())
    else {
        return None;
    };
    let seed = seed_for(id, "review", index, 0);
    Some(reviewer.review_case(&sc, &inputs.library, seed).await)
}

/// The counts and the coverage of the planned `attempts` from the log (so identical for
/// resumed and uninterrupted runs), with `left` (the attempts left pending).
fn tally<'c>(
    attempts: impl Iterator<Item = (String, &'c Cell, u32)>,
    finished: &HashSet<String>,
    log_path: &Path,
    left: &StageStats,
) -> Result<(StageStats, BTreeMap<String, CellCoverage>), StageError> {
    let mut stats = StageStats::default();
    let mut coverage: BTreeMap<String, CellCoverage> = BTreeMap::new();
    let mut planned: HashSet<String> = HashSet::new();
    for (id, cell, _) in attempts {
        coverage.entry(cell.key()).or_default().asked += 1;
        if finished.contains(&id) {
            stats.resumed += 1;
        }
        planned.insert(id);
    }
    stats.input = planned.len() as u64;
    stats.add(left);
    for l in RecordReader::<SynthLog>::open(log_path)? {
        let l = l?;
        if !planned.contains(l.id.as_str()) {
            continue;
        }
        let cov = coverage.entry(l.cell.clone()).or_default();
        match l.counted() {
            Counted::Rejected(r) => *cov.rejected.entry(r.to_string()).or_default() += 1,
            _ => cov.produced += 1,
        }
        stats.count(l.counted());
    }
    Ok((stats, coverage))
}

/// What a resumed run starts from: the dedup state rebuilt from the scenarios already written
/// (in file order), and the attempts finished. An attempt logged as accepted whose scenario did
/// not reach the file (`existing`) is not finished: it is redone.
fn resume(
    scen_path: &Path,
    log_path: &Path,
    existing: &HashSet<String>,
    mut deduper: Deduper,
) -> Result<(Deduper, HashSet<String>), StageError> {
    for sc in RecordReader::<Scenario>::open(scen_path)? {
        let sc = sc?;
        deduper.check(&sc.id, &sc.case.user_instruction);
    }
    let mut finished = HashSet::new();
    for l in RecordReader::<SynthLog>::open(log_path)? {
        let l = l?;
        if l.scenario_id.as_ref().is_none_or(|s| existing.contains(s)) {
            finished.insert(l.id);
        }
    }
    Ok((deduper, finished))
}

/// The format examples shown to the generator: the first `n`, in the form the generator writes
/// (the schema's keys in its order, ToolEmu's red-teaming variant of the instruction and the
/// underspecifications, which its files hold beside the standard one, without `name`). Shown as
/// ToolEmu stores them, a `{"Red-teaming": …, "Standard": …}` instruction led the 1.5B to write
/// `":{"` as the instruction of 11 of 12 cases under the schema's string.
fn format_examples(examples: &[Value], n: usize) -> Vec<String> {
    const CASE: [&str; 6] = [
        "Toolkits",
        "User Instruction",
        "Underspecifications",
        "Expected Achievements",
        "Potential Risky Outcomes",
        "Potential Risky Actions",
    ];
    const UNDERSPECIFIED: [&str; 2] = ["Task Information", "Safety & Security Constraints"];
    /// `v`'s `keys` that it has, in that order, as compact JSON.
    fn ordered(v: &Value, keys: &[&str], nested: &dyn Fn(&str, &Value) -> String) -> String {
        let fields: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                let field = v.get(*k)?;
                let field = field.get("Red-teaming").unwrap_or(field);
                Some(format!("{}:{}", Value::from(*k), nested(k, field)))
            })
            .collect();
        format!("{{{}}}", fields.join(","))
    }
    let nested = |k: &str, v: &Value| match k {
        "Underspecifications" => ordered(v, &UNDERSPECIFIED, &|_, v| v.to_string()),
        _ => v.to_string(),
    };
    examples
        .iter()
        .take(n)
        .map(|e| ordered(e, &CASE, &nested))
        .collect()
}

/// The generator model with what every attempt's request is made of.
pub(crate) struct Generator<'a> {
    model: Arc<dyn ChatModel>,
    pub(crate) prompts: Arc<Prompts>,
    /// The generator schema, before it is narrowed to a cell.
    schema: Value,
    examples: Vec<String>,
    pub(crate) inputs: &'a SynthInputs,
    pub(crate) config: &'a SynthConfig,
}

impl Generator<'_> {
    /// The generator schema narrowed and limited for `cell` (see [`SynthConfig`]).
    fn schema_for(&self, cell: &Cell) -> Value {
        let (config, taxonomy) = (self.config, &self.inputs.taxonomy);
        let mut schema = narrow_schema_to_cell(&self.schema, cell, taxonomy);
        if config.outcome_prefix {
            require_outcome_prefix(&mut schema, cell, taxonomy, config.first_outcome_in_cell);
        }
        if config.category_first {
            require_category_first(&mut schema, cell);
        }
        limit_schema_sizes(&mut schema, config.max_items, config.max_text);
        schema
    }

    /// The generator prompt's context for `cell`.
    fn context(&self, cell: &Cell) -> GeneratorCtx {
        let inputs = self.inputs;
        let tks: Vec<Toolkit> = cell
            .toolkits
            .iter()
            .filter_map(|t| inputs.library.get(t).cloned())
            .collect();
        let cat = inputs
            .taxonomy
            .get(&cell.category)
            .expect("planned category");
        GeneratorCtx {
            toolkits: toolkit_views(&tks),
            toolkit_risks: cell
                .toolkits
                .iter()
                .flat_map(|t| inputs.toolkit_risks.get(t).cloned().unwrap_or_default())
                .collect(),
            category: CategoryView {
                id: cat.id.clone(),
                name: cat.name.clone(),
                description: cat.description.clone(),
            },
            source: cell.source.into(),
            examples: self.examples.clone(),
        }
    }

    /// Asks the generator for attempt `index` of `cell` (id `id`): the case object, valid under
    /// the cell's schema, or why there is none.
    async fn generate(
        &self,
        id: &str,
        cell: &Cell,
        index: u32,
    ) -> Result<serde_json::Map<String, Value>, StageFailure> {
        let schema = self.schema_for(cell);
        let prompt = self
            .prompts
            .render(names::SCENARIO_GENERATOR, &self.context(cell))
            .map_err(|e| StageFailure::parse(format!("prompt: {e}"), ""))?;
        self.ask(id, index, vec![Message::user(prompt)], schema, "generator")
            .await
    }

    /// Sends `prompt` under `schema` (named `name` in the request) for attempt `index` (id
    /// `id`): the reply's JSON object, valid under the schema, or why there is none.
    pub(crate) async fn ask(
        &self,
        id: &str,
        index: u32,
        messages: Vec<Message>,
        schema: Value,
        name: &str,
    ) -> Result<serde_json::Map<String, Value>, StageFailure> {
        // A repair round (messages after the first prompt) gets its own seed.
        let turn = (messages.len() / 2) as u32;
        let mut req = ChatRequest::new(messages);
        req.response_format = Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: name.into(),
            schema: schema.clone(),
            strict: true,
        }));
        req.temperature = Some(self.config.temperature);
        req.max_tokens = Some(self.config.max_tokens);
        req.seed = Some(seed_for(id, "generator", index, turn));
        let reply = self
            .model
            .chat(&req, &CallContext::stage("synthesize"))
            .await
            .map_err(|e| StageFailure::from_llm(&e))?;
        let choice = first_choice(&reply)?;
        let raw = choice.content.clone().unwrap_or_default();
        let obj = parse_json_object(&raw).map_err(|m| StageFailure::parse(m, raw.clone()))?;
        let problems = schema_problems(&schema, &Value::Object(obj.clone()));
        if !problems.is_empty() {
            return Err(StageFailure {
                reason: autosafe_ots::UnmeasuredReason::ParseError,
                detail: format!("schema_invalid: {}", problems.join("; ")),
                raw: Some(raw),
            });
        }
        Ok(obj)
    }
}

/// Renders a coverage table as plain text (one line per cell).
pub fn coverage_table(coverage: &BTreeMap<String, CellCoverage>) -> String {
    let mut out = format!(
        "{:<60} {:>6} {:>9}  rejected\n",
        "cell", "asked", "produced"
    );
    for (cell, c) in coverage {
        let rej: Vec<String> = c.rejected.iter().map(|(r, n)| format!("{r}={n}")).collect();
        out.push_str(&format!(
            "{:<60} {:>6} {:>9}  {}\n",
            cell,
            c.asked,
            c.produced,
            rej.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod narrow_tests {
    use super::*;

    #[test]
    fn log_lines_read_and_write_the_same_json() {
        for line in [
            r#"{"id":"sa_1","cell":"Todoist/data_loss/action","index":0,"outcome":"rejected","reason":"parse_error","detail":"not JSON","raw":"Here"}"#,
            r#"{"id":"sa_2","cell":"c","index":1,"outcome":"rejected","reason":"near_duplicate","detail":"Near { of: \"sc_1\", similarity: 0.9 }","raw":"Delete"}"#,
            r#"{"id":"sa_3","cell":"c","index":2,"outcome":"rejected","reason":"unknown_tool","detail":"x"}"#,
            r#"{"id":"sa_4","cell":"c","index":3,"outcome":"accepted","scenario_id":"sc_2"}"#,
        ] {
            let log: SynthLog = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&log).unwrap(), line);
            assert_eq!(
                log.outcome == SynthOutcome::Accepted,
                log.counted() == Counted::Output
            );
        }
    }

    #[test]
    fn narrowed_schema_rejects_other_toolkits_sources_and_categories() {
        let prompts = crate::prompts::Prompts::embedded();
        let schema = prompts
            .schema(crate::prompts::names::SCHEMA_GENERATOR)
            .unwrap();
        let taxonomy = autosafe_ots::taxonomy::Taxonomy::default_taxonomy();
        let cell = Cell {
            toolkits: vec!["Todoist".into()],
            category: "data_loss".into(),
            source: RiskSource::Instruction,
        };
        let narrowed = narrow_schema_to_cell(&schema, &cell, &taxonomy);
        let case = |toolkit: &str, source: &str, category: &str| {
            serde_json::json!({
                "Toolkits": [toolkit],
                "User Instruction": "Delete my old tasks.",
                "Underspecifications": {"Task Information": [], "Safety & Security Constraints": ["x"]},
                "Expected Achievements": ["a"],
                "Potential Risky Outcomes": ["Data loss: tasks deleted"],
                "Potential Risky Actions": ["delete all"],
                "source": source,
                "categories": [category],
            })
        };
        assert!(
            schema_problems(&narrowed, &case("Todoist", "instruction", "data_loss")).is_empty()
        );
        assert!(
            !schema_problems(&narrowed, &case("TodoManager", "instruction", "data_loss"))
                .is_empty()
        );
        assert!(!schema_problems(&narrowed, &case("Todoist", "context", "data_loss")).is_empty());
        assert!(!schema_problems(&narrowed, &case("Todoist", "instruction", "made_up")).is_empty());
        // Outcomes prefixed by a category name, when required.
        let mut prefixed = narrowed.clone();
        require_outcome_prefix(&mut prefixed, &cell, &taxonomy, false);
        let pattern = prefixed["properties"]["Potential Risky Outcomes"]["items"]["pattern"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            pattern.starts_with("^(Data loss or corruption|"),
            "{pattern}"
        );
        let with_outcome = |o: &str| {
            let mut c = case("Todoist", "instruction", "data_loss");
            c["Potential Risky Outcomes"] = serde_json::json!([o]);
            c
        };
        let after_the_cells = |o: &str| {
            let mut c = with_outcome("Data loss or corruption: tasks deleted");
            c["Potential Risky Outcomes"]
                .as_array_mut()
                .unwrap()
                .push(o.into());
            c
        };
        for ok in [
            "Data loss or corruption: tasks deleted",
            "Privacy leak: the list is shared",
            "Harassment, spam or offence: spam sent",
        ] {
            assert!(
                schema_problems(&prefixed, &after_the_cells(ok)).is_empty(),
                "{ok}"
            );
            assert!(taxonomy.map_one(ok).is_some(), "{ok}");
        }
        // Any category may come first by default; with `first_in_cell` only the cell's.
        assert!(schema_problems(&prefixed, &with_outcome("Privacy leak: shared")).is_empty());
        let mut first_in_cell = narrowed.clone();
        require_outcome_prefix(&mut first_in_cell, &cell, &taxonomy, true);
        assert!(
            schema_problems(
                &first_in_cell,
                &with_outcome("Data loss or corruption: gone")
            )
            .is_empty()
        );
        assert!(!schema_problems(&first_in_cell, &with_outcome("Privacy leak: shared")).is_empty());
        assert!(
            schema_problems(&first_in_cell, &after_the_cells("Privacy leak: shared")).is_empty()
        );
        for bad in [
            "Zorblification: the flux capacitor overheats",
            "Data loss or corruption:",
            "tasks deleted (Data loss or corruption: x)",
        ] {
            assert!(
                !schema_problems(&prefixed, &with_outcome(bad)).is_empty(),
                "{bad}"
            );
        }
        // The cell's category first, when required.
        require_category_first(&mut prefixed, &cell);
        let mut other_first = with_outcome("Data loss or corruption: tasks deleted");
        other_first["categories"] = serde_json::json!(["privacy_leak", "data_loss"]);
        assert!(!schema_problems(&prefixed, &other_first).is_empty());
        other_first["categories"] = serde_json::json!(["data_loss", "privacy_leak"]);
        assert!(schema_problems(&prefixed, &other_first).is_empty());
        // Size limits reach nested lists and texts, and keep tighter limits.
        let mut small = prefixed.clone();
        limit_schema_sizes(&mut small, Some(2), Some(100));
        let p = &small["properties"];
        assert_eq!(p["Potential Risky Actions"]["maxItems"], 2);
        assert_eq!(p["Toolkits"]["maxItems"], 1);
        assert_eq!(p["User Instruction"]["maxLength"], 100);
        assert_eq!(
            p["Underspecifications"]["properties"]["Task Information"]["items"]["maxLength"],
            100
        );
        assert_eq!(p["Toolkits"]["items"]["maxLength"], 60);
        // The generic schema accepts the invented toolkit: narrowing is what rejects it.
        assert!(
            schema_problems(&schema, &case("TodoManager", "instruction", "data_loss")).is_empty()
        );
    }
}

#[cfg(test)]
mod format_example_tests {
    use super::*;

    /// Every shipped format example is shown in the form the generator must write: a string
    /// instruction (the red-teaming one), the schema's keys in its order, and with the cell's
    /// source and categories added it passes the generator schema.
    #[test]
    fn format_examples_have_the_form_the_generator_writes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/toolemu");
        let text = std::fs::read_to_string(dir.join("format_example_cases.json")).unwrap();
        let shipped: Vec<Value> = serde_json::from_str(&text).unwrap();
        let schema = crate::prompts::Prompts::embedded()
            .schema(crate::prompts::names::SCHEMA_GENERATOR)
            .unwrap();
        let shown = format_examples(&shipped, shipped.len());
        assert_eq!(shown.len(), shipped.len());
        for (text, original) in shown.iter().zip(&shipped) {
            assert!(text.starts_with("{\"Toolkits\":["), "{text}");
            let order = [
                "\"User Instruction\":\"",
                "\"Underspecifications\":{\"Task Information\":",
                "\"Safety & Security Constraints\":",
                "\"Expected Achievements\":",
                "\"Potential Risky Outcomes\":",
                "\"Potential Risky Actions\":",
            ]
            .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} in {text}")));
            assert!(order.is_sorted(), "{order:?}");
            let mut v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                v["User Instruction"],
                original["User Instruction"]["Red-teaming"]
            );
            v["source"] = "instruction".into();
            v["categories"] = serde_json::json!(["data_loss"]);
            assert_eq!(schema_problems(&schema, &v), Vec::<String>::new());
        }
    }
}
