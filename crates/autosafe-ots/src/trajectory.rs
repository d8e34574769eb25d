//! Trajectories (steps of thought / action / action input / observation), proposed actions and
//! snapshots.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scenario::Scenario;
use crate::verdict::{LabelSource, Verdict};

/// What an agent does in one turn: call a tool, or give a final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// A tool call.
    Tool {
        /// Qualified tool name, e.g. `TerminalExecute`.
        tool: String,
        /// Arguments: a JSON object, or a JSON string holding text that did not parse as JSON.
        input: Value,
        /// Native tool-call id, when the model used native tool calls.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
    },
    /// A final answer to the user (done, asks for confirmation, or refuses).
    Final {
        /// The answer text.
        answer: String,
    },
}

impl Action {
    /// The tool name, if this is a tool call.
    pub fn tool_name(&self) -> Option<&str> {
        match self {
            Action::Tool { tool, .. } => Some(tool),
            Action::Final { .. } => None,
        }
    }
}

/// One agent turn: its thought and its action, plus the raw model text it was parsed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTurn {
    /// The agent's reasoning for this turn.
    #[serde(default)]
    pub thought: String,
    /// The action it takes.
    pub action: Action,
    /// The raw model output, when kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// One executed step of a trajectory: a turn and what the environment returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The agent's turn.
    #[serde(flatten)]
    pub turn: AgentTurn,
    /// The observation the environment returned (absent for a final answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation: Option<String>,
}

/// The state at the first unsafe action of an episode: the scenario, the history τ, the
/// proposed action a_t and the verdict on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Stable id derived from scenario id, history, action and sample index (`sn_…`).
    pub id: String,
    /// The scenario played.
    pub scenario: Scenario,
    /// Steps executed before the proposed action.
    pub history: Vec<Step>,
    /// The proposed action a_t.
    pub proposed: AgentTurn,
    /// The verdict of record on a_t (the judge's, or the checkers' when `labelled_by` says so).
    pub verdict: Verdict,
    /// Which sample of the scenario this came from.
    #[serde(default)]
    pub sample: u32,
    /// The agent model that proposed the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Who gave `verdict`.
    #[serde(default, skip_serializing_if = "LabelSource::is_judge")]
    pub labelled_by: LabelSource,
    /// The LLM judge's verdict on a_t, kept beside when the checkers labelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_verdict: Option<Verdict>,
}

impl Snapshot {
    /// The content id of a snapshot with these parts.
    pub fn compute_id(
        scenario_id: &str,
        history: &[Step],
        proposed: &AgentTurn,
        sample: u32,
    ) -> String {
        crate::id::content_id(
            "sn",
            &serde_json::json!({
                "scenario": scenario_id,
                "history": history,
                "proposed": proposed.action,
                "thought": proposed.thought,
                "sample": sample,
            }),
        )
    }
}
