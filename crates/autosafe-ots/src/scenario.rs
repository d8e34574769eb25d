//! Scenarios: a ToolEmu case plus a stable id, risk source, taxonomy categories, an optional
//! seeded history and provenance.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::source::RiskSource;
use crate::trajectory::Step;

/// Underspecified information of a ToolEmu case.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Underspecifications {
    /// Task information the user left out.
    #[serde(rename = "Task Information")]
    pub task_information: Vec<String>,
    /// Safety and security constraints the user left out.
    #[serde(rename = "Safety & Security Constraints")]
    pub safety_constraints: Vec<String>,
    /// Keys not part of ToolEmu's schema, kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A test case in ToolEmu's format, field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Case name, e.g. `official_0`.
    pub name: String,
    /// Toolkits the agent may use (by `toolkit` name).
    #[serde(rename = "Toolkits")]
    pub toolkits: Vec<String>,
    /// The user's instruction.
    #[serde(rename = "User Instruction")]
    pub user_instruction: String,
    /// What the instruction leaves unsaid.
    #[serde(rename = "Underspecifications")]
    pub underspecifications: Underspecifications,
    /// What a good agent achieves.
    #[serde(rename = "Expected Achievements")]
    pub expected_achievements: Vec<String>,
    /// Risky outcomes, as `"<Risk>: <description>"` strings.
    #[serde(rename = "Potential Risky Outcomes")]
    pub risky_outcomes: Vec<String>,
    /// Risky actions that would lead to those outcomes.
    #[serde(rename = "Potential Risky Actions")]
    pub risky_actions: Vec<String>,
    /// Keys not part of ToolEmu's schema, kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where a scenario came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// Origin: `toolemu`, `agent-safetybench`, `synthesized`, `terminal`, …
    pub origin: String,
    /// Reference within the origin (case name, benchmark id, file:line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The model that generated it, for synthesized scenarios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// Hash of the prompt template that generated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_hash: Option<String>,
    /// Origin-specific details kept from the source data (e.g. Agent-SafetyBench's
    /// `fulfillable`, `failure_modes` and original `risks`).
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// A risk scenario: the unit the pipeline works on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Stable id derived from the content (`sc_…`), see [`Scenario::compute_id`].
    pub id: String,
    /// The ToolEmu case.
    pub case: Case,
    /// The OTS risk source.
    pub source: RiskSource,
    /// Taxonomy category ids at stake.
    pub categories: Vec<String>,
    /// Seeded history τ the agent starts from (e.g. a pre-filled dialog).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Step>,
    /// Initial state for the environment (e.g. Agent-SafetyBench `parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_state: Option<Value>,
    /// A real terminal fixture and its checkers, for the sandboxed terminal environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<crate::terminal::TerminalSetup>,
    /// When set, only these qualified tool names (of the case's toolkits) are offered to the
    /// agent; `None` offers every tool of the case's toolkits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Where it came from.
    pub provenance: Provenance,
}

impl Scenario {
    /// Builds a scenario and derives its id from everything but the id and provenance.
    pub fn new(
        case: Case,
        source: RiskSource,
        categories: Vec<String>,
        provenance: Provenance,
    ) -> Self {
        let mut s = Scenario {
            id: String::new(),
            case,
            source,
            categories,
            history: Vec::new(),
            initial_state: None,
            terminal: None,
            tools: None,
            provenance,
        };
        s.id = s.compute_id();
        s
    }

    /// The content id: hash of case, source, categories, history, initial state, terminal setup
    /// and (when set) the tool subset.
    pub fn compute_id(&self) -> String {
        let mut content = serde_json::json!({
            "case": self.case,
            "source": self.source,
            "categories": self.categories,
            "history": self.history,
            "initial_state": self.initial_state,
            "terminal": self.terminal,
        });
        if let Some(tools) = &self.tools {
            content["tools"] = serde_json::json!(tools);
        }
        crate::id::content_id("sc", &content)
    }
}
