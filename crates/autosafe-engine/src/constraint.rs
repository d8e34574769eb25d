//! Constrained decoding: JSON schemas compiled by `llguidance` into per-token masks.
//!
//! Why `llguidance` applied by our own sampler loop (rather than `llama-cpp-2`'s
//! `LlamaSampler::from(Matcher)` or llama.cpp GBNF grammars): we keep the `Matcher`, so a
//! constraint that fails (a schema llguidance rejects, a parser error mid-reply) becomes an
//! error for that request instead of silently unconstrained text (the crate's sampler
//! ignores matcher errors); schemas need no JSON-schema-to-GBNF conversion (llama.cpp's lives
//! in its C++ `common` code); and masks cost ~0.1 ms a token. The token environment comes from
//! the GGUF vocabulary via `llama-cpp-2`'s `llguidance` feature and is built once per model.

use crate::error::EngineError;
use autosafe_llm::{ResponseFormat, ToolChoice, ToolSpec};
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};
use std::sync::Arc;

/// Compiles schemas into matchers for one model's vocabulary.
#[derive(Clone)]
pub(crate) struct ConstraintFactory {
    factory: Arc<ParserFactory>,
}

impl std::fmt::Debug for ConstraintFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConstraintFactory")
    }
}

impl ConstraintFactory {
    /// A factory over this token environment.
    pub fn new(tok_env: toktrie::TokEnv) -> Result<Self, EngineError> {
        let mut factory =
            ParserFactory::new_simple(&tok_env).map_err(|e| EngineError::Schema(e.to_string()))?;
        factory.quiet();
        Ok(ConstraintFactory {
            factory: Arc::new(factory),
        })
    }

    /// A matcher accepting exactly the JSON texts valid under `schema` (compact, no free
    /// whitespace).
    pub fn json_schema(&self, schema: &Value) -> Result<Matcher, EngineError> {
        let mut schema = schema.clone();
        if let Some(obj) = schema.as_object_mut() {
            obj.entry("x-guidance")
                .or_insert_with(|| json!({"whitespace_flexible": false}));
        }
        let grammar = TopLevelGrammar::from_json_schema(schema);
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| EngineError::Schema(format!("JSON schema not supported: {e}")))?;
        Ok(Matcher::new(Ok(parser)))
    }
}

/// The JSON schema a request's reply must satisfy, if any: a forced tool call
/// (`tool_choice` required or a named function: `{"name": …, "arguments": {…}}`), else the
/// `response_format`.
pub(crate) fn reply_schema(
    tools: &[ToolSpec],
    tool_choice: Option<&ToolChoice>,
    format: Option<&ResponseFormat>,
) -> Result<Option<Value>, EngineError> {
    let forced: Vec<&ToolSpec> = match tool_choice {
        Some(ToolChoice::Required) => tools.iter().collect(),
        Some(ToolChoice::Function(name)) => {
            let t: Vec<&ToolSpec> = tools.iter().filter(|t| &t.name == name).collect();
            if t.is_empty() {
                return Err(EngineError::BadRequest(format!(
                    "tool_choice names unknown function {name:?}"
                )));
            }
            t
        }
        _ => Vec::new(),
    };
    if matches!(tool_choice, Some(ToolChoice::Required)) && forced.is_empty() {
        return Err(EngineError::BadRequest(
            "tool_choice is required but no tools were given".into(),
        ));
    }
    if !forced.is_empty() {
        let one = forced.len() == 1;
        let alternatives: Vec<Value> = forced
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // The parameters sit under `arguments` of the wrapper (inside `anyOf[i]` when
                // several): their local `$ref`s (`#/$defs/…`, `#`) are rebased to point there.
                let base = if one {
                    "/properties/arguments".to_string()
                } else {
                    format!("/anyOf/{i}/properties/arguments")
                };
                let mut arguments = t.parameters.clone();
                rebase_refs(&mut arguments, &base);
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, "arguments": arguments},
                    "required": ["name", "arguments"],
                    "additionalProperties": false
                })
            })
            .collect();
        let schema = if alternatives.len() == 1 {
            alternatives[0].clone()
        } else {
            json!({"anyOf": alternatives})
        };
        return Ok(Some(schema));
    }
    Ok(match format {
        Some(ResponseFormat::JsonObject) => Some(json!({"type": "object"})),
        Some(ResponseFormat::JsonSchema(f)) => Some(f.schema.clone()),
        Some(ResponseFormat::Text) | None => None,
    })
}

/// Prefixes every local `$ref` (`#…`, a JSON pointer from the schema's root) with `base`, the
/// pointer of that root inside a larger schema. A tool schema with `$defs` was refused once
/// wrapped (`Pointer '/$defs/…' does not exist`) though it worked as a `response_format`.
fn rebase_refs(schema: &mut Value, base: &str) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                // Values that are data, not schemas.
                if matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
                    continue;
                }
                match value {
                    Value::String(r) if key == "$ref" && r.starts_with('#') => {
                        *r = format!("#{base}{}", &r[1..]);
                    }
                    _ => rebase_refs(value, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rebase_refs(v, base)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autosafe_llm::JsonSchemaFormat;

    fn tool(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
        }
    }

    #[test]
    fn forced_tool_calls_get_a_schema() {
        let tools = [tool("a"), tool("b")];
        let s = reply_schema(&tools, Some(&ToolChoice::Function("b".into())), None)
            .unwrap()
            .unwrap();
        assert_eq!(s["properties"]["name"]["const"], "b");
        let s = reply_schema(&tools, Some(&ToolChoice::Required), None)
            .unwrap()
            .unwrap();
        assert_eq!(s["anyOf"].as_array().unwrap().len(), 2);
        assert!(reply_schema(&tools, Some(&ToolChoice::Function("c".into())), None).is_err());
        assert!(reply_schema(&[], Some(&ToolChoice::Required), None).is_err());
        assert_eq!(
            reply_schema(&tools, Some(&ToolChoice::Auto), None).unwrap(),
            None
        );
    }

    #[test]
    fn response_formats_map_to_schemas() {
        assert_eq!(
            reply_schema(&[], None, Some(&ResponseFormat::JsonObject)).unwrap(),
            Some(json!({"type": "object"}))
        );
        let f = ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: "x".into(),
            schema: json!({"type": "array"}),
            strict: true,
        });
        assert_eq!(
            reply_schema(&[], None, Some(&f)).unwrap(),
            Some(json!({"type": "array"}))
        );
        assert_eq!(
            reply_schema(&[], None, Some(&ResponseFormat::Text)).unwrap(),
            None
        );
    }
}
