//! Toolkits as the agent sees them: native function specs (JSON Schema) and the text
//! descriptions used in prompts.

use autosafe_llm::ToolSpec;
use autosafe_ots::Toolkit;
use serde_json::{Map, Value, json};

/// One toolkit's tools as JSON-schema function specs, named by qualified name (`TodoistDeleteTask`).
pub(crate) fn tool_specs(toolkit: &Toolkit) -> Vec<ToolSpec> {
    toolkit
        .tools
        .iter()
        .map(|tool| {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for p in &tool.parameters {
                let mut schema = p.extra.clone();
                schema.insert("type".into(), Value::String(p.type_name.clone()));
                schema.insert("description".into(), Value::String(p.description.clone()));
                properties.insert(p.name.clone(), Value::Object(schema));
                if p.is_required() {
                    required.push(Value::String(p.name.clone()));
                }
            }
            ToolSpec {
                name: toolkit.qualified_name(tool),
                description: tool.summary.clone(),
                parameters: json!({"type": "object", "properties": properties, "required": required}),
            }
        })
        .collect()
}

/// All tools of several toolkits as function specs.
pub(crate) fn all_tool_specs(toolkits: &[Toolkit]) -> Vec<ToolSpec> {
    toolkits.iter().flat_map(tool_specs).collect()
}

/// Function specs in OpenAI's `tools` shape: `{"type": "function", "function": {…}}`.
pub(crate) fn openai_tools(specs: &[ToolSpec]) -> Vec<Value> {
    specs
        .iter()
        .map(|s| json!({"type": "function", "function": {"name": s.name, "description": s.description, "parameters": s.parameters}}))
        .collect()
}

/// Toolkits and tools flattened for prompt templates (shared with the emulator's prompt).
pub use autosafe_env::emulator::prompt::{ToolView, ToolkitView};

/// Flattens toolkits for the templates.
pub(crate) fn toolkit_views(toolkits: &[Toolkit]) -> Vec<ToolkitView> {
    toolkits
        .iter()
        .map(|tk| ToolkitView::new(tk, tk.tools.iter().map(|t| ToolView::new(tk, t)).collect()))
        .collect()
}

/// Qualified names of every tool of these toolkits.
pub(crate) fn tool_names(toolkits: &[Toolkit]) -> Vec<String> {
    toolkits
        .iter()
        .flat_map(|tk| tk.tools.iter().map(|t| tk.qualified_name(t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn specs_agree_with_the_ots_openai_conversion_for_every_toolemu_tool() {
        let tks = fixtures::toolkits();
        let mut n = 0;
        for tk in &tks {
            let mut theirs = Value::Array(autosafe_ots::openai::toolkit_to_openai(tk));
            autosafe_ots::openai::strip_extensions(&mut theirs);
            let ours = openai_tools(&tool_specs(tk));
            assert_eq!(Value::Array(ours), theirs, "toolkit {}", tk.toolkit);
            n += tk.tools.len();
        }
        assert!(n > 300, "{n} tools compared");
    }

    #[test]
    fn todoist_specs_match_the_toolemu_definition() {
        let tks = fixtures::toolkits_of(&fixtures::scenario());
        let specs = all_tool_specs(&tks);
        let delete = specs
            .iter()
            .find(|s| s.name == "TodoistDeleteTask")
            .expect("DeleteTask");
        assert_eq!(delete.parameters["type"], "object");
        assert_eq!(delete.parameters["properties"]["task_id"]["type"], "string");
        assert_eq!(delete.parameters["required"], json!(["task_id"]));
        let search = specs
            .iter()
            .find(|s| s.name == "TodoistSearchTasks")
            .unwrap();
        assert_eq!(search.parameters["required"], json!([]));
        assert_eq!(tool_names(&tks).len(), specs.len());
        let views = toolkit_views(&tks);
        assert_eq!(views[0].name, "Todoist");
        let dv = views[0]
            .tools
            .iter()
            .find(|t| t.name == "TodoistDeleteTask")
            .unwrap();
        assert!(dv.arguments[0].starts_with("task_id (string, required): "));
        assert!(dv.exceptions[0].starts_with("NotFoundException: "));
        let oa = openai_tools(&specs);
        assert_eq!(oa[0]["type"], "function");
        assert!(oa[0]["function"]["name"].is_string());
    }
}
