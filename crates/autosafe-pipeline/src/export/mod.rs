//! Training-data export: D_safe (plus a share of safe original steps) in the layouts trainers
//! read, and a dataset card.
//!
//! | format | file | trainer |
//! |---|---|---|
//! | `alpaca` | `export/alpaca/autosafe_alpaca.jsonl` + `dataset_info.json` | the paper's layout; LLaMA-Factory alpaca |
//! | `sharegpt` | `export/sharegpt/autosafe_sharegpt.jsonl` + `dataset_info.json` | LLaMA-Factory sharegpt with `function_call` / `observation` turns |
//! | `openai` | `export/openai/train.jsonl` | OpenAI fine-tuning chat format (`tools`, `weight: 0` on history turns) |
//! | `trl` | `export/trl/train.jsonl` | TRL `SFTTrainer` conversational prompt/completion with `tools` |
//! | `axolotl` | `export/axolotl/train.jsonl` + `axolotl.yaml` | Axolotl `chat_template` with per-message `train` |
//! | `trl_dpo` | `export/trl_dpo/train.jsonl` | TRL `DPOTrainer` conversational prompt / chosen / rejected |
//! | `alpaca_pairwise` | `export/alpaca_pairwise/autosafe_alpaca_pairwise.jsonl` + `dataset_info.json` | LLaMA-Factory pairwise alpaca (`ranking: true`) |
//!
//! The five SFT formats hold the same records in the same order; `export/records.jsonl` lists
//! each line's record id and origin. The pairwise formats hold one line per reflected record
//! whose snapshot's unsafe label is confirmed (`pairs.rs`), indexed by `export/pairs.jsonl`.

mod card;
mod formats;
mod pairs;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use autosafe_llm::ToolSpec;
use autosafe_ots::{Action, AgentTurn, Step, Toolkit};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use card::{DatasetCard, render_card_markdown};
pub use formats::{alpaca, alpaca_pairwise, axolotl, openai, sharegpt, trl, trl_dpo};
pub use pairs::PairReport;

use crate::error::{PipelineError, Result};
use crate::export::pairs::{Rejected, load_rejected};
use crate::prompts::{AgentMode, AgentSystemCtx, Prompts, TrainingInputCtx, names};
use crate::rundir::{write_bytes_atomic, write_json_atomic};
use crate::shard::stable_hash;
use crate::stage_records::{SafeExample, SafeOrigin, UtilityStep};
use crate::store::RecordReader;
use crate::tools::all_tool_specs;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// The paper's Alpaca layout (instruction / input / output).
    Alpaca,
    /// LLaMA-Factory ShareGPT with tool turns.
    Sharegpt,
    /// OpenAI fine-tuning chat JSONL.
    Openai,
    /// TRL prompt/completion with tools.
    Trl,
    /// Axolotl chat_template with per-message `train`.
    Axolotl,
    /// TRL `DPOTrainer` preference pairs: prompt / chosen / rejected messages with tools.
    TrlDpo,
    /// LLaMA-Factory pairwise alpaca: instruction / input / chosen / rejected.
    AlpacaPairwise,
}

impl ExportFormat {
    /// The SFT formats: the default of every export. Pairwise formats are asked for by name,
    /// since they need the run's snapshots.
    pub const ALL: [ExportFormat; 5] = [
        ExportFormat::Alpaca,
        ExportFormat::Sharegpt,
        ExportFormat::Openai,
        ExportFormat::Trl,
        ExportFormat::Axolotl,
    ];

    /// The preference-pair formats.
    pub const PAIRWISE: [ExportFormat; 2] = [ExportFormat::TrlDpo, ExportFormat::AlpacaPairwise];

    /// True for a preference-pair format.
    pub fn is_pairwise(self) -> bool {
        Self::PAIRWISE.contains(&self)
    }

    /// The name used on the command line and as the directory name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Alpaca => "alpaca",
            ExportFormat::Sharegpt => "sharegpt",
            ExportFormat::Openai => "openai",
            ExportFormat::Trl => "trl",
            ExportFormat::Axolotl => "axolotl",
            ExportFormat::TrlDpo => "trl_dpo",
            ExportFormat::AlpacaPairwise => "alpaca_pairwise",
        }
    }

    /// The data file name inside `export/<format>/`.
    pub fn data_file(self) -> &'static str {
        match self {
            ExportFormat::Alpaca => "autosafe_alpaca.jsonl",
            ExportFormat::Sharegpt => "autosafe_sharegpt.jsonl",
            ExportFormat::AlpacaPairwise => "autosafe_alpaca_pairwise.jsonl",
            _ => "train.jsonl",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let name = s.trim().to_ascii_lowercase();
        ExportFormat::ALL.into_iter().chain(ExportFormat::PAIRWISE).find(|f| f.as_str() == name).ok_or_else(|| {
            format!("unknown export format `{s}` (expected alpaca, sharegpt, openai, trl, axolotl, trl_dpo or alpaca_pairwise)")
        })
    }
}

/// Export settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportConfig {
    /// Formats to write.
    pub formats: Vec<ExportFormat>,
    /// How many safe original steps (utility data) to mix in (paper: 300).
    pub utility_share: usize,
    /// Seed of the deterministic utility sample.
    pub seed: u64,
    /// Put the safety reminder in the input of reflected (safety) records.
    pub reminder_on_safety: bool,
    /// Dataset name used in `dataset_info.json`.
    pub dataset_name: String,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            formats: ExportFormat::ALL.to_vec(),
            utility_share: 300,
            seed: 0,
            reminder_on_safety: true,
            dataset_name: "autosafe".into(),
        }
    }
}

/// Toolkits by name, to look up the tools a record's scenario names.
#[derive(Debug, Clone, Default)]
pub struct ToolkitLibrary {
    by_name: HashMap<String, Toolkit>,
}

impl ToolkitLibrary {
    /// A library of these toolkits.
    pub fn new(toolkits: impl IntoIterator<Item = Toolkit>) -> Self {
        ToolkitLibrary {
            by_name: toolkits
                .into_iter()
                .map(|t| (t.toolkit.clone(), t))
                .collect(),
        }
    }

    /// The toolkits named, in order; the first missing name is the error.
    pub fn resolve(&self, names: &[String]) -> std::result::Result<Vec<Toolkit>, String> {
        names
            .iter()
            .map(|n| self.by_name.get(n).cloned().ok_or_else(|| n.clone()))
            .collect()
    }
}

/// One record ready to be written in any format: what every layout needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Record id.
    pub id: String,
    /// Reflected or original safe step.
    pub origin: SafeOrigin,
    /// Safety record (gets the reminder).
    pub safety: bool,
    /// Agent system prompt in ReAct text form (Alpaca instruction).
    pub react_system: String,
    /// Agent system prompt for native tool calling (chat formats).
    pub native_system: String,
    /// Function specs of the scenario's tools.
    pub tools: Vec<ToolSpec>,
    /// The first user message of chat formats: reminder (safety records) + instruction.
    pub user_message: String,
    /// The Alpaca input (reminder, instruction, numbered trajectory, request for round k).
    pub alpaca_input: String,
    /// History τ.
    pub history: Vec<Step>,
    /// Training target a_st.
    pub target: AgentTurn,
}

impl Prepared {
    /// Builds the common parts of a record.
    pub fn new(
        ex: &SafeExample,
        library: &ToolkitLibrary,
        prompts: &Prompts,
        config: &ExportConfig,
    ) -> Result<Self> {
        let err = |message: String| PipelineError::Export {
            id: ex.id.clone(),
            message,
        };
        let toolkits = library
            .resolve(&ex.scenario.case.toolkits)
            .map_err(|n| err(format!("unknown toolkit `{n}`")))?;
        let safety = ex.origin == SafeOrigin::Reflected;
        let reminder = safety && config.reminder_on_safety;
        let react_system = prompts.render(
            names::AGENT_SYSTEM,
            &AgentSystemCtx::new(&toolkits, AgentMode::Plain, false),
        )?;
        let native_system = prompts.render(
            names::AGENT_SYSTEM,
            &AgentSystemCtx::new(&toolkits, AgentMode::Plain, true),
        )?;
        let instruction = ex.scenario.case.user_instruction.clone();
        let alpaca_input = prompts.render(
            names::TRAINING_INPUT,
            &TrainingInputCtx::new(&ex.scenario, &ex.history, reminder),
        )?;
        let user_message = if reminder {
            let text = prompts.render(names::SAFETY_REMINDER, &serde_json::json!({}))?;
            format!("{text}\n\n{instruction}")
        } else {
            instruction
        };
        Ok(Prepared {
            id: ex.id.clone(),
            origin: ex.origin,
            safety,
            react_system,
            native_system,
            tools: all_tool_specs(&toolkits),
            user_message,
            alpaca_input,
            history: ex.history.clone(),
            target: ex.safe_turn.clone(),
        })
    }

    /// The record in `format`, as one JSON value (one JSONL line). A pairwise format needs
    /// the rejected side: without one it yields nothing.
    pub(crate) fn to_format(
        &self,
        format: ExportFormat,
        rejected: Option<&Rejected>,
    ) -> Option<Value> {
        Some(match format {
            ExportFormat::Alpaca => alpaca(self),
            ExportFormat::Sharegpt => sharegpt(self),
            ExportFormat::Openai => openai(self),
            ExportFormat::Trl => trl(self),
            ExportFormat::Axolotl => axolotl(self),
            ExportFormat::TrlDpo => rejected.map(|r| trl_dpo(self, &r.turn, r.labelled_by))?,
            ExportFormat::AlpacaPairwise => {
                rejected.map(|r| alpaca_pairwise(self, &r.turn, r.labelled_by))?
            }
        })
    }
}

/// Chooses `n` utility ids deterministically: the `n` smallest `stable_hash(seed:id)`.
pub(crate) fn sample_utility_ids<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    n: usize,
    seed: u64,
) -> std::collections::HashSet<String> {
    let mut keyed: Vec<(u64, String)> = ids
        .into_iter()
        .map(|id| (stable_hash(&format!("{seed}:{id}")), id.to_string()))
        .collect();
    keyed.sort();
    keyed.dedup();
    keyed.into_iter().take(n).map(|(_, id)| id).collect()
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportReport {
    /// Records written (each SFT format holds all of them).
    pub records: u64,
    /// Reflected (safety) records.
    pub reflected: u64,
    /// Mixed-in original safe steps.
    pub original_safe_steps: u64,
    /// Records not exported, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Data files written, by format name.
    pub files: BTreeMap<String, PathBuf>,
    /// Preference pairs, when a pairwise format was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<PairReport>,
}

/// The run files an export reads.
#[derive(Debug, Clone, Copy)]
pub struct ExportInputs<'a> {
    /// D_safe (`safe.jsonl`).
    pub safe: &'a Path,
    /// Utility steps (`utility.jsonl`), mixed into the SFT formats.
    pub utility: Option<&'a Path>,
    /// Snapshots (`snapshots.jsonl`): the rejected sides of the pairwise formats.
    pub snapshots: Option<&'a Path>,
}

/// Why a record's target tool call does not fit its tool's spec (an unknown tool, arguments
/// missing, invented or of the wrong type): such a call teaches the model a call that fails, so
/// it is never exported. `None` for a valid call or a final answer.
fn invalid_target(ex: &SafeExample, library: &ToolkitLibrary) -> Option<String> {
    let Action::Tool { tool, input, .. } = &ex.safe_turn.action else {
        return None;
    };
    // An unknown toolkit is reported by `Prepared::new`.
    let toolkits = library.resolve(&ex.scenario.case.toolkits).ok()?;
    let offered: Vec<_> = toolkits
        .iter()
        .flat_map(|tk| tk.tools.iter().map(move |t| (tk, t)))
        .collect();
    autosafe_env::spec_check::check_call(&offered, tool, input)
        .err()
        .map(|obs| obs.text)
}

/// A temporary file being written, renamed to its destination at the end.
struct TmpFile {
    tmp: PathBuf,
    dest: PathBuf,
    w: std::io::BufWriter<std::fs::File>,
}

impl TmpFile {
    fn create(dir: &Path, name: &str) -> Result<TmpFile> {
        std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let f = std::fs::File::create(&tmp).map_err(|e| PipelineError::io(&tmp, e))?;
        Ok(TmpFile {
            tmp,
            dest: dir.join(name),
            w: std::io::BufWriter::new(f),
        })
    }

    fn line(&mut self, value: &Value, id: &str) -> Result<()> {
        let mut text = serde_json::to_vec(value).map_err(|e| PipelineError::Export {
            id: id.to_string(),
            message: e.to_string(),
        })?;
        text.push(b'\n');
        self.w
            .write_all(&text)
            .map_err(|e| PipelineError::io(&self.tmp, e))
    }

    /// Syncs and renames into place; the destination.
    fn finish(self) -> Result<PathBuf> {
        let file = self
            .w
            .into_inner()
            .map_err(|e| PipelineError::io(&self.tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| PipelineError::io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| PipelineError::io(&self.dest, e))?;
        Ok(self.dest)
    }
}

/// The files an export streams into: a temporary file per format and the line indexes
/// (streamed too, so export memory does not grow with the number of records), renamed into
/// place at the end.
struct Outputs {
    writers: Vec<(ExportFormat, TmpFile)>,
    /// `records.jsonl`: the SFT formats' lines, when one was asked for (a pairs-only export
    /// leaves an earlier export's index beside its files).
    index: Option<TmpFile>,
    /// `pairs.jsonl`: the pairwise formats' lines, when one was asked for.
    pair_index: Option<TmpFile>,
}

impl Outputs {
    fn create(out_dir: &Path, formats: &[ExportFormat]) -> Result<Outputs> {
        let mut writers = Vec::new();
        for &format in formats {
            let file = TmpFile::create(&out_dir.join(format.as_str()), format.data_file())?;
            writers.push((format, file));
        }
        let pair_index = formats
            .iter()
            .any(|f| f.is_pairwise())
            .then(|| TmpFile::create(out_dir, "pairs.jsonl"))
            .transpose()?;
        let index = formats
            .iter()
            .any(|f| !f.is_pairwise())
            .then(|| TmpFile::create(out_dir, "records.jsonl"))
            .transpose()?;
        std::fs::create_dir_all(out_dir).map_err(|e| PipelineError::io(out_dir, e))?;
        Ok(Outputs {
            writers,
            index,
            pair_index,
        })
    }

    /// Writes `prepared` in every format, its index entry (line `line`) and, with a rejected
    /// side, its pair (line `pair_line`).
    fn write(
        &mut self,
        ex: &SafeExample,
        prepared: &Prepared,
        line: u64,
        rejected: Option<(&Rejected, u64)>,
    ) -> Result<()> {
        for (format, file) in self.writers.iter_mut() {
            if let Some(value) = prepared.to_format(*format, rejected.map(|(r, _)| r)) {
                file.line(&value, &ex.id)?;
            }
        }
        if let Some(index) = self.index.as_mut() {
            index.line(
                &serde_json::json!({"line": line, "id": ex.id, "origin": ex.origin}),
                &ex.id,
            )?;
        }
        if let (Some(index), Some((r, pair_line))) = (self.pair_index.as_mut(), rejected) {
            index.line(
                &serde_json::json!({
                    "line": pair_line,
                    "id": ex.id,
                    "snapshot_id": r.snapshot_id,
                    "rejected_labelled_by": r.labelled_by,
                }),
                &ex.id,
            )?;
        }
        Ok(())
    }

    /// Syncs and renames every file into place, writes the formats' companion files and
    /// records the data files in `report`.
    fn finish(self, out_dir: &Path, dataset_name: &str, report: &mut ExportReport) -> Result<()> {
        for (format, file) in self.writers {
            let dest = file.finish()?;
            formats::write_companions(format, &out_dir.join(format.as_str()), dataset_name)?;
            report.files.insert(format.as_str().into(), dest);
        }
        for index in [self.pair_index, self.index].into_iter().flatten() {
            index.finish()?;
        }
        Ok(())
    }
}

/// Exports D_safe (`inputs.safe`) plus up to `config.utility_share` utility steps
/// (`inputs.utility`, SFT formats only) into `out_dir/<format>/`, with `records.jsonl` and the
/// dataset card; the pairwise formats join each reflected record with its snapshot
/// (`inputs.snapshots`, required for them) and are indexed by `pairs.jsonl`. Records are
/// streamed: memory holds one record at a time (plus the ids exported, the utility ids while
/// sampling, and one action per confirmed unsafe snapshot for pairs). Each id is exported once.
pub fn export(
    inputs: ExportInputs<'_>,
    out_dir: &Path,
    library: &ToolkitLibrary,
    prompts: &Prompts,
    config: &ExportConfig,
    models: &BTreeMap<String, String>,
) -> Result<(ExportReport, DatasetCard)> {
    let mut report = ExportReport::default();
    let wants_pairs = config.formats.iter().any(|f| f.is_pairwise());
    let mut rejected: HashMap<String, Rejected> = HashMap::new();
    if wants_pairs {
        let path =
            inputs
                .snapshots
                .filter(|p| p.exists())
                .ok_or_else(|| PipelineError::Export {
                    id: String::new(),
                    message:
                        "the pairwise formats need the run's snapshots.jsonl (the unsafe actions)"
                            .into(),
                })?;
        let mut pairs = PairReport::default();
        rejected = load_rejected(path, &mut pairs)?;
        report.pairs = Some(pairs);
    }
    let mut outputs = Outputs::create(out_dir, &config.formats)?;
    let mut card = DatasetCard::new(&config.dataset_name, prompts, config, models);

    // Ids already exported: a line repeated in safe.jsonl or utility.jsonl (a hand edit, a
    // concatenation) is exported once, in every format, and counted as `duplicate_id`.
    let mut seen: HashSet<String> = HashSet::new();
    let mut emit =
        |ex: &SafeExample, report: &mut ExportReport, card: &mut DatasetCard| -> Result<()> {
            if !seen.insert(ex.id.clone()) {
                *report.rejected.entry("duplicate_id".into()).or_default() += 1;
                return Ok(());
            }
            if invalid_target(ex, library).is_some() {
                *report
                    .rejected
                    .entry("invalid_arguments".into())
                    .or_default() += 1;
                return Ok(());
            }
            let prepared = match Prepared::new(ex, library, prompts, config) {
                Ok(p) => p,
                Err(PipelineError::Export { message, .. }) => {
                    let reason = if message.starts_with("unknown toolkit") {
                        "unknown_toolkit"
                    } else {
                        "export_error"
                    };
                    *report.rejected.entry(reason.into()).or_default() += 1;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            // A snapshot pairs once, with the first kept safe action that repairs it.
            let pair = (ex.origin == SafeOrigin::Reflected)
                .then(|| rejected.remove(&ex.parent_id))
                .flatten();
            let pair_line = match (&pair, report.pairs.as_mut()) {
                (Some(r), Some(pairs)) => {
                    pairs.pairs += 1;
                    *pairs
                        .by_labeller
                        .entry(r.labelled_by.as_str().into())
                        .or_default() += 1;
                    pairs.pairs
                }
                _ => 0,
            };
            outputs.write(
                ex,
                &prepared,
                report.records + 1,
                pair.as_ref().map(|r| (r, pair_line)),
            )?;
            report.records += 1;
            match ex.origin {
                SafeOrigin::Reflected => report.reflected += 1,
                SafeOrigin::OriginalSafeStep => report.original_safe_steps += 1,
            }
            card.count(ex);
            Ok(())
        };

    for ex in RecordReader::<SafeExample>::open(inputs.safe)? {
        emit(&ex?, &mut report, &mut card)?;
    }
    // Utility steps have no unsafe counterpart: only the SFT formats take them.
    let wants_sft = config.formats.iter().any(|f| !f.is_pairwise());
    if let Some(up) = inputs
        .utility
        .filter(|_| config.utility_share > 0 && wants_sft)
    {
        let ids: Vec<String> = RecordReader::<crate::store::IdOnly>::open(up)?
            .map(|r| r.map(|r| r.id))
            .collect::<Result<_>>()?;
        let chosen = sample_utility_ids(
            ids.iter().map(String::as_str),
            config.utility_share,
            config.seed,
        );
        drop(ids);
        for step in RecordReader::<UtilityStep>::open(up)? {
            let step = step?;
            if chosen.contains(&step.id) && step.verdict.judgement.is_safe() == Some(true) {
                emit(&step.to_safe_example(), &mut report, &mut card)?;
            }
        }
    }
    if let Some(pairs) = report.pairs.as_mut() {
        pairs.snapshots_without_safe_action = rejected.len() as u64;
    }

    outputs.finish(out_dir, &config.dataset_name, &mut report)?;
    card.rejected = report.rejected.clone();
    card.pairs = report.pairs.clone();
    write_json_atomic(&out_dir.join("dataset_card.json"), &card)?;
    write_bytes_atomic(
        &out_dir.join("dataset_card.md"),
        render_card_markdown(&card).as_bytes(),
    )?;
    Ok((report, card))
}

#[cfg(test)]
mod tests;
