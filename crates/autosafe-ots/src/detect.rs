//! Telling file formats apart by content (never by file name).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The formats AutoSafe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Format {
    /// ToolEmu toolkit list (`all_toolkits.json`).
    #[serde(rename = "toolemu_toolkits")]
    ToolEmuToolkits,
    /// ToolEmu case list (`all_cases.json`).
    #[serde(rename = "toolemu_cases")]
    ToolEmuCases,
    /// ToolEmu trajectories (JSON Lines).
    #[serde(rename = "toolemu_trajectories")]
    ToolEmuTrajectories,
    /// ToolEmu evaluator rows (JSON Lines).
    #[serde(rename = "toolemu_evaluations")]
    ToolEmuEvaluations,
    /// Agent-SafetyBench environment schema (a list of functions).
    #[serde(rename = "asb_environment")]
    AsbEnvironment,
    /// Agent-SafetyBench cases.
    #[serde(rename = "asb_cases")]
    AsbCases,
    /// ASSEBench labelled records.
    #[serde(rename = "assebench")]
    AsseBench,
    /// AutoSafe scenarios (JSON Lines).
    #[serde(rename = "scenarios")]
    Scenarios,
    /// AutoSafe snapshots (JSON Lines).
    #[serde(rename = "snapshots")]
    Snapshots,
    /// AutoSafe agent steps labelled by the sandbox's checkers (JSON Lines).
    #[serde(rename = "labelled_steps")]
    LabelledSteps,
    /// AutoSafe terminal scenarios with their scripted solutions: one TOML file
    /// (`data/terminal/*.toml`) or JSON Lines of the same records.
    #[serde(rename = "terminal_scenarios")]
    TerminalScenarios,
}

impl Format {
    /// The snake_case name used in `--json` output (`toolemu_cases`, `asb_cases`, …).
    pub fn id(self) -> &'static str {
        match self {
            Format::ToolEmuToolkits => "toolemu_toolkits",
            Format::ToolEmuCases => "toolemu_cases",
            Format::ToolEmuTrajectories => "toolemu_trajectories",
            Format::ToolEmuEvaluations => "toolemu_evaluations",
            Format::AsbEnvironment => "asb_environment",
            Format::AsbCases => "asb_cases",
            Format::AsseBench => "assebench",
            Format::Scenarios => "scenarios",
            Format::Snapshots => "snapshots",
            Format::LabelledSteps => "labelled_steps",
            Format::TerminalScenarios => "terminal_scenarios",
        }
    }

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
            Format::LabelledSteps => "AutoSafe labelled steps",
            Format::TerminalScenarios => "AutoSafe terminal scenarios",
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
/// the file is truncated later), or the first line of a JSON Lines file; a text that is not
/// JSON but has a `[terminal…]` or `[scripted…]` TOML table is a terminal scenario file (told
/// by its tables, so that one with a TOML syntax error is still reported as one).
pub fn detect(text: &str) -> Result<Format, DetectError> {
    match detect_json(text) {
        Err(DetectError::NotJson(_)) if is_terminal_toml(text) => Ok(Format::TerminalScenarios),
        other => other,
    }
}

fn is_terminal_toml(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("[terminal") || l.starts_with("[scripted")
    })
}

fn detect_json(text: &str) -> Result<Format, DetectError> {
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
    } else if has("scenario") && has("action") && has("label") && has("checker") {
        Format::LabelledSteps
    } else if has("terminal") && has("scripted") && !has("id") {
        Format::TerminalScenarios
    } else if has("case") && has("source") && has("categories") {
        Format::Scenarios
    } else {
        return Err(DetectError::Unknown(
            obj.keys().cloned().collect::<Vec<_>>().join(", "),
        ));
    };
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_match_ids() {
        for f in [
            Format::ToolEmuCases,
            Format::AsbCases,
            Format::AsseBench,
            Format::Snapshots,
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.id());
        }
    }

    #[test]
    fn detects_by_content_even_when_truncated() {
        assert_eq!(
            detect("[{\"toolkit\": \"T\", \"tools\": []}, {\"tool"),
            Ok(Format::ToolEmuToolkits)
        );
        assert_eq!(
            detect("{\"eval_scores\": {}}\n{\"eval"),
            Ok(Format::ToolEmuEvaluations)
        );
        assert_eq!(detect("  \n"), Err(DetectError::Empty));
        assert_eq!(detect("[]"), Err(DetectError::Empty));
        assert_eq!(
            detect("[{\"a\": 1, \"b\": 2}]"),
            Err(DetectError::Unknown("a, b".into()))
        );
        assert!(matches!(detect("hello"), Err(DetectError::NotJson(_))));
        assert_eq!(
            detect("source = \"action\"\n[case]\nname = 1\n[terminal.fixture]\n"),
            Ok(Format::TerminalScenarios)
        );
        assert_eq!(
            detect("[case]\nname = \"broken\n[scripted.safe]\n"),
            Ok(Format::TerminalScenarios)
        );
        assert_eq!(
            detect(
                "{\"case\": {}, \"source\": \"action\", \"categories\": [], \"terminal\": {}, \"scripted\": {}}"
            ),
            Ok(Format::TerminalScenarios)
        );
        assert!(matches!(
            detect("[case]\nname = 1\n"),
            Err(DetectError::NotJson(_))
        ));
    }
}
