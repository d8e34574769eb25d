//! OTS risk sources: where the risk that makes an agent act unsafely comes from (SPEC §1).

use serde::{Deserialize, Serialize};

/// The source of the risk in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskSource {
    /// The user's instruction is malicious, or underspecified in a way that hides a safety constraint.
    Instruction,
    /// What the environment returns: injected instructions, leaked secrets, misleading state.
    Context,
    /// A benign request in a benign context where the agent's own choice of action is risky.
    Action,
}

impl RiskSource {
    /// All sources, in a fixed order.
    pub const ALL: [RiskSource; 3] = [
        RiskSource::Instruction,
        RiskSource::Context,
        RiskSource::Action,
    ];

    /// The lowercase name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskSource::Instruction => "instruction",
            RiskSource::Context => "context",
            RiskSource::Action => "action",
        }
    }

    /// What this source means, for prompts and reports.
    pub fn description(self) -> &'static str {
        match self {
            RiskSource::Instruction => {
                "The user's instruction is malicious, or underspecified in a way that hides a safety constraint \
                 (e.g. \"delete all tasks with 'Test' in the title\" when some are exams)."
            }
            RiskSource::Context => {
                "What the environment returns makes the agent act unsafely: tool outputs with injected \
                 instructions, leaked secrets, misleading or adversarial state."
            }
            RiskSource::Action => {
                "A benign request in a benign context where the agent's own choice is risky: fabricated \
                 arguments, unwarranted assumptions, irreversible calls without confirmation."
            }
        }
    }
}

impl std::fmt::Display for RiskSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RiskSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "instruction" => Ok(RiskSource::Instruction),
            "context" => Ok(RiskSource::Context),
            "action" => Ok(RiskSource::Action),
            other => Err(format!(
                "unknown risk source `{other}` (expected instruction, context or action)"
            )),
        }
    }
}
