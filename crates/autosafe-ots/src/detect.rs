//! Telling file formats apart by content (never by file name).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The formats AutoSafe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// ToolEmu toolkit list (`all_toolkits.json`).
    ToolEmuToolkits,
    /// ToolEmu case list (`all_cases.json`).
    ToolEmuCases,
    /// ToolEmu trajectories (JSON Lines).
    ToolEmuTrajectories,
    /// ToolEmu evaluator rows (JSON Lines).
    ToolEmuEvaluations,
    /// Agent-SafetyBench environment schema (a list of functions).
    AsbEnvironment,
    /// Agent-SafetyBench cases.
    AsbCases,
    /// ASSEBench labelled records.
    AsseBench,
    /// AutoSafe scenarios (JSON Lines).
    Scenarios,
    /// AutoSafe snapshots (JSON Lines).
    Snapshots,
}

impl Format {
    /// A short human name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::ToolEmuToolkits => "ToolEmu toolkits",
            Format::ToolEmuCases => "ToolEmu cases",
            Format::ToolEmuTrajectories => "ToolEmu trajectories",
            Format::ToolEmuEvaluations => "ToolEmu evaluator rows",
            Format::AsbEnvironment => "Agent-SafetyBench environment",
            Format::AsbCases => "Agent-SafetyBench cases",
            Format::AsseBench => "ASSEBench records",
            Format::Scenarios => "AutoSafe scenarios",
            Format::Snapshots => "AutoSafe snapshots",
        }
    }
}

/// Why a file's format could not be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// The file holds nothing but whitespace.
    #[error("the file is empty")]
    Empty,
    /// The first record could not be read at all.
    #[error("not JSON or JSON Lines: {0}")]
    NotJson(String),
    /// The first record has keys of no known format.
    #[error("unknown format (first record has keys: {0})")]
    Unknown(String),
}

/// Whether the file is one JSON array or JSON Lines, as seen from its first character.
pub fn is_json_array(text: &str) -> bool {
    text.trim_start().starts_with('[')
}

/// Detects the format from the first record: the first element of a JSON array (read even when
/// the file is truncated later), or the first line of a JSON Lines file.
pub fn detect(text: &str) -> Result<Format, DetectError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(DetectError::Empty);
    }
    let first: Value = if let Some(rest) = trimmed.strip_prefix('[') {
        let rest = rest.trim_start();
        if rest.starts_with(']') {
            return Err(DetectError::Empty);
        }
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(DetectError::NotJson(e.to_string())),
            None => return Err(DetectError::Empty),
        }
    } else {
        let line = trimmed.lines().next().unwrap_or("");
        serde_json::from_str(line).map_err(|e| DetectError::NotJson(e.to_string()))?
    };
    let array = is_json_array(text);
    let Value::Object(obj) = &first else {
        return Err(DetectError::Unknown(format!(
            "none; first record is not an object: {}",
            crate::read::kind_of(&first)
        )));
    };
    let has = |k: &str| obj.contains_key(k);
    let format = if array {
        if has("toolkit") && has("tools") {
            Format::ToolEmuToolkits
        } else if has("User Instruction") || (has("Toolkits") && has("Potential Risky Outcomes")) {
            Format::ToolEmuCases
        } else if has("risks") && has("environments") {
            Format::AsbCases
        } else if has("contents") && has("label") {
            Format::AsseBench
        } else if has("name") && has("parameters") && !has("summary") {
            Format::AsbEnvironment
        } else {
            return Err(DetectError::Unknown(
                obj.keys().cloned().collect::<Vec<_>>().join(", "),
            ));
        }
    } else if has("intermediate_steps") {
        Format::ToolEmuTrajectories
    } else if has("eval_scores") || has("Overall Quantitative Score") {
        Format::ToolEmuEvaluations
    } else if has("scenario") && has("proposed") && has("verdict") {
        Format::Snapshots
    } else if has("case") && has("source") && has("categories") {
        Format::Scenarios
    } else {
        return Err(DetectError::Unknown(
            obj.keys().cloned().collect::<Vec<_>>().join(", "),
        ));
    };
    Ok(format)
}
