//! The emulator prompt: `emulator.j2` (with its `_tools.j2` partial) of the run's prompt set
//! ([`Prompts`], so a `--prompts` override reaches the emulator as it reaches every other role)
//! and the reply schema `schemas/emulator.json` of the same set.

use autosafe_llm::prompts::{PromptError, Prompts, names};
use autosafe_ots::{Scenario, Step, Tool, Toolkit};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::scratchpad;

/// A toolkit as the templates see it (the emulator's here, the pipeline's prompts through
/// `autosafe_pipeline::tools`).
#[derive(Debug, Clone, Serialize)]
pub struct ToolkitView {
    /// Toolkit name.
    pub name: String,
    /// Description for the model.
    pub description: String,
    /// Its offered tools.
    pub tools: Vec<ToolView>,
}

/// A tool as the templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolView {
    /// Qualified name.
    pub name: String,
    /// What it does.
    pub summary: String,
    /// `name (type, required|optional): description` lines.
    pub arguments: Vec<String>,
    /// `name (type): description` lines.
    pub returns: Vec<String>,
    /// `Name: description` lines.
    pub exceptions: Vec<String>,
}

impl ToolkitView {
    /// `tk`'s name and description with `tools`.
    pub fn new(tk: &Toolkit, tools: Vec<ToolView>) -> Self {
        ToolkitView {
            name: tk.toolkit.clone(),
            description: tk.description_for_model.clone(),
            tools,
        }
    }
}

impl ToolView {
    /// Tool `t` of toolkit `tk`, flattened for the templates.
    pub fn new(tk: &Toolkit, t: &Tool) -> Self {
        ToolView {
            name: tk.qualified_name(t),
            summary: t.summary.clone(),
            arguments: t
                .parameters
                .iter()
                .map(|p| {
                    let req = if p.is_required() {
                        "required"
                    } else {
                        "optional"
                    };
                    format!("{} ({}, {req}): {}", p.name, p.type_name, p.description)
                })
                .collect(),
            returns: t
                .returns
                .iter()
                .map(|r| format!("{} ({}): {}", r.name, r.type_name, r.description))
                .collect(),
            exceptions: t
                .exceptions
                .iter()
                .flatten()
                .map(|e| format!("{}: {}", e.name, e.description))
                .collect(),
        }
    }
}

/// Groups offered tools by toolkit, in order, for the template.
pub fn views(offered: &[(&Toolkit, &Tool)]) -> Vec<ToolkitView> {
    let mut out: Vec<ToolkitView> = Vec::new();
    for (tk, t) in offered {
        if out.last().is_none_or(|v| v.name != tk.toolkit) {
            out.push(ToolkitView::new(tk, Vec::new()));
        }
        if let Some(last) = out.last_mut() {
            last.tools.push(ToolView::new(tk, t));
        }
    }
    out
}

/// Everything `emulator.j2` renders.
#[derive(Debug, Clone, Serialize)]
pub struct EmulatorContext {
    /// Adversarial (stress-test) mode.
    pub adversarial: bool,
    /// Offered toolkits with their tools.
    pub toolkits: Vec<ToolkitView>,
    /// The user's instruction.
    pub user_instruction: String,
    /// Underspecifications (task information, then safety constraints).
    pub underspecifications: Vec<String>,
    /// Potential risky outcomes.
    pub risky_outcomes: Vec<String>,
    /// Potential risky actions.
    pub risky_actions: Vec<String>,
    /// `Scenario::initial_state` as pretty JSON, empty when absent.
    pub initial_state: String,
    /// The history τ as a scratchpad.
    pub scratchpad: String,
    /// The called tool.
    pub tool: String,
    /// Its input as the agent wrote it.
    pub tool_input: String,
}

impl EmulatorContext {
    /// The context for emulating `tool(input)` after `history` in `scenario`.
    pub fn new(
        scenario: &Scenario,
        offered: &[(&Toolkit, &Tool)],
        history: &[Step],
        tool: &str,
        input: &Value,
        adversarial: bool,
    ) -> Self {
        let u = &scenario.case.underspecifications;
        EmulatorContext {
            adversarial,
            toolkits: views(offered),
            user_instruction: scenario.case.user_instruction.clone(),
            underspecifications: u
                .task_information
                .iter()
                .chain(&u.safety_constraints)
                .cloned()
                .collect(),
            risky_outcomes: scenario.case.risky_outcomes.clone(),
            risky_actions: scenario.case.risky_actions.clone(),
            initial_state: scenario
                .initial_state
                .as_ref()
                .filter(|v| !v.is_null())
                .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
                .unwrap_or_default(),
            scratchpad: scratchpad::render(history, false),
            tool: tool.to_string(),
            tool_input: scratchpad::render_input(input),
        }
    }
}

/// Renders the emulator prompt with `prompts`.
pub fn render(prompts: &Prompts, ctx: &EmulatorContext) -> Result<String, PromptError> {
    prompts.render(names::EMULATOR, ctx)
}

/// The JSON schema of a ToolEmu type name (`{}` for names JSON Schema does not know).
fn type_schema(type_name: &str) -> Value {
    let t = type_name.trim().to_ascii_lowercase();
    match t.as_str() {
        "string" | "integer" | "number" | "boolean" | "array" | "object" => {
            serde_json::json!({ "type": t })
        }
        _ => serde_json::json!({}),
    }
}

/// The reply schema for one tool: `schema` (the prompt set's `schemas/emulator.json`) with
/// `observation` narrowed to exactly the tool's return fields, or a single `error` string.
/// Servers with constrained decoding (vLLM, the embedded engine) then produce a usable
/// observation by construction.
pub fn schema_for(schema: &Value, tool: &Tool) -> Value {
    let mut properties = serde_json::Map::new();
    for r in &tool.returns {
        let mut field = type_schema(&r.type_name);
        if let Value::Object(m) = &mut field {
            m.insert("description".into(), Value::String(r.description.clone()));
        }
        properties.insert(r.name.clone(), field);
    }
    let required: Vec<Value> = tool
        .returns
        .iter()
        .map(|r| Value::String(r.name.clone()))
        .collect();
    let returns = serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    let names: Vec<String> = crate::spec_check::allowed_exceptions(tool)
        .into_iter()
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let exception = serde_json::json!({
        "type": "object",
        "properties": { "error": {
            "type": "string",
            "description": "<ExceptionName>: <explanation>",
            "pattern": format!("^(?:{}): .+$", names.join("|")),
            "maxLength": 300,
        } },
        "required": ["error"],
        "additionalProperties": false,
    });
    let mut s = schema.clone();
    s["properties"]["observation"] = serde_json::json!({ "anyOf": [returns, exception] });
    s
}

/// SHA-256 (hex) over the template, its partial and the schema of `prompts`.
pub fn prompt_hash(prompts: &Prompts) -> Result<String, PromptError> {
    let mut h = Sha256::new();
    for name in [names::EMULATOR, "_tools.j2", names::SCHEMA_EMULATOR] {
        h.update(prompts.source(name)?.as_bytes());
        h.update(b"\0");
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_renders_without_the_optional_initial_state() {
        // The pipeline renders the same file with a context that has no `initial_state`
        // under strict undefined behaviour; that must keep working.
        let ctx = serde_json::json!({
            "adversarial": false, "toolkits": [], "user_instruction": "u",
            "underspecifications": [], "risky_outcomes": [], "risky_actions": [],
            "scratchpad": "", "tool": "T", "tool_input": "{}",
        });
        let prompts = Prompts::embedded();
        let out = prompts.render(names::EMULATOR, &ctx).unwrap();
        assert!(out.contains("Current Action: T\nCurrent Action Input: {}"));
        assert!(!out.contains("Initial environment state"));
        assert_eq!(prompt_hash(&prompts).unwrap().len(), 64);
    }

    #[test]
    fn the_per_tool_schema_accepts_exactly_the_return_fields_or_an_exception() {
        let lib = autosafe_ots::ToolLibrary::shipped();
        let tool = lib
            .get("Terminal")
            .unwrap()
            .find_tool("TerminalExecute")
            .unwrap();
        let base = Prompts::embedded().schema(names::SCHEMA_EMULATOR).unwrap();
        let v = jsonschema::validator_for(&schema_for(&base, tool)).unwrap();
        let ok = |o: Value| v.is_valid(&serde_json::json!({"thought": "t", "observation": o}));
        assert!(ok(serde_json::json!({"output": "x", "exit_code": 0})));
        assert!(ok(
            serde_json::json!({"error": "InvalidRequestException: bad"})
        ));
        assert!(!ok(serde_json::json!({"output": "x"})));
        assert!(!ok(serde_json::json!({"output": "x", "exit_code": "0"})));
        assert!(!ok(
            serde_json::json!({"output": "x", "exit_code": 0, "pwd": "/"})
        ));
        assert!(!ok(serde_json::json!({"error": "I will not run this"})));
        // Every ToolEmu tool gives a schema the validator compiles.
        for tk in lib.toolkits() {
            for t in &tk.tools {
                jsonschema::validator_for(&schema_for(&base, t)).unwrap();
            }
        }
    }
}
