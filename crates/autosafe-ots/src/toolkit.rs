//! Toolkits and tools in ToolEmu's schema.
//!
//! Optional keys that ToolEmu files sometimes omit (`category`, `required`, `exceptions`) are kept
//! as `Option` so that a file read and written again is unchanged; keys we do not know are kept in
//! `extra` for the same reason.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A toolkit: a named group of tools an agent may call (ToolEmu's `all_toolkits.json` entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Toolkit {
    /// Toolkit name, e.g. `Terminal`.
    pub toolkit: String,
    /// ToolEmu tool-taxonomy category, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Name the model sees; tool names are prefixed with it (`TerminalExecute`).
    pub name_for_model: String,
    /// Human-readable name.
    pub name_for_human: String,
    /// Description shown to the model.
    pub description_for_model: String,
    /// Description shown to humans.
    pub description_for_human: String,
    /// The tools of this toolkit.
    pub tools: Vec<Tool>,
    /// Keys not part of ToolEmu's schema, kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One tool of a toolkit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Tool name within the toolkit, e.g. `Execute`.
    pub name: String,
    /// What the tool does.
    pub summary: String,
    /// Input parameters.
    pub parameters: Vec<Parameter>,
    /// Fields of the tool's return value.
    pub returns: Vec<ReturnField>,
    /// Declared exceptions, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<Vec<ExceptionSpec>>,
    /// Keys not part of ToolEmu's schema, kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    /// Parameter name.
    pub name: String,
    /// JSON type name: string, integer, number, boolean, array or object.
    #[serde(rename = "type")]
    pub type_name: String,
    /// What the parameter means.
    pub description: String,
    /// Whether the parameter is required; absent in a few ToolEmu tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Further JSON-schema keys (`items`, `enum`, `properties`, …) kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Parameter {
    /// True when the parameter must be given.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(false)
    }
}

/// A field of a tool's return value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReturnField {
    /// Field name.
    pub name: String,
    /// JSON type name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// What the field holds.
    pub description: String,
    /// Further keys kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An exception a tool declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionSpec {
    /// Exception name, e.g. `InvalidRequestException`.
    pub name: String,
    /// When it is raised.
    pub description: String,
    /// Further keys kept unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Toolkit {
    /// The full name an agent calls a tool by: `name_for_model` + tool name (`TerminalExecute`).
    pub fn qualified_name(&self, tool: &Tool) -> String {
        format!("{}{}", self.name_for_model, tool.name)
    }

    /// Finds a tool by its qualified name.
    pub fn find_tool(&self, qualified: &str) -> Option<&Tool> {
        let rest = qualified.strip_prefix(&self.name_for_model)?;
        self.tools.iter().find(|t| t.name == rest)
    }
}
