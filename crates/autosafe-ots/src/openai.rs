//! ToolEmu tools <-> OpenAI function-calling schema.
//!
//! [`to_openai`] gives `{"type":"function","function":{"name","description","parameters"}}` with
//! the qualified tool name (`TerminalExecute`) and a JSON Schema object for the parameters.
//! What JSON Schema cannot say (return fields, exceptions, parameters whose `required` key is
//! absent, parameter order, the toolkit's metadata, unknown keys) goes under the extension key
//! [`EXTENSION_KEY`] inside `function`, so [`from_openai`] restores the tool exactly. Call
//! [`strip_extensions`] before sending tools to a real server. Plain OpenAI functions without
//! the extension convert too (name = function name, summary = description, no returns).

use serde_json::{Map, Value, json};

use crate::toolkit::{ExceptionSpec, Parameter, ReturnField, Tool, Toolkit};

/// Key holding ToolEmu-only information inside an OpenAI `function` object.
pub const EXTENSION_KEY: &str = "x-toolemu";

/// Why an OpenAI tool could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OpenAiError {
    /// Path of the offending field, e.g. `function.parameters.properties.path`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> OpenAiError {
    OpenAiError {
        field: field.into(),
        message: message.into(),
    }
}

/// Toolkit metadata carried in the extension so a toolkit can be rebuilt from its tools.
fn toolkit_meta(tk: &Toolkit) -> Value {
    let mut m = Map::new();
    m.insert("toolkit".into(), json!(tk.toolkit));
    if let Some(c) = &tk.category {
        m.insert("category".into(), json!(c));
    }
    m.insert("name_for_model".into(), json!(tk.name_for_model));
    m.insert("name_for_human".into(), json!(tk.name_for_human));
    m.insert(
        "description_for_model".into(),
        json!(tk.description_for_model),
    );
    m.insert(
        "description_for_human".into(),
        json!(tk.description_for_human),
    );
    if !tk.extra.is_empty() {
        m.insert("extra".into(), Value::Object(tk.extra.clone()));
    }
    Value::Object(m)
}

/// Converts one tool of `toolkit` to an OpenAI tool (with the extension).
pub fn to_openai(toolkit: &Toolkit, tool: &Tool) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut required_unset = Vec::new();
    for p in &tool.parameters {
        let mut schema = p.extra.clone();
        schema.insert("type".into(), json!(p.type_name));
        schema.insert("description".into(), json!(p.description));
        properties.insert(p.name.clone(), Value::Object(schema));
        match p.required {
            Some(true) => required.push(json!(p.name)),
            Some(false) => {}
            None => required_unset.push(json!(p.name)),
        }
    }
    let mut ext = Map::new();
    ext.insert("tool".into(), json!(tool.name));
    ext.insert("toolkit".into(), toolkit_meta(toolkit));
    ext.insert(
        "parameter_order".into(),
        Value::Array(tool.parameters.iter().map(|p| json!(p.name)).collect()),
    );
    if !required_unset.is_empty() {
        ext.insert("required_unset".into(), Value::Array(required_unset));
    }
    ext.insert(
        "returns".into(),
        serde_json::to_value(&tool.returns).expect("serialisable"),
    );
    if let Some(ex) = &tool.exceptions {
        ext.insert(
            "exceptions".into(),
            serde_json::to_value(ex).expect("serialisable"),
        );
    }
    if !tool.extra.is_empty() {
        ext.insert("extra".into(), Value::Object(tool.extra.clone()));
    }
    json!({
        "type": "function",
        "function": {
            "name": toolkit.qualified_name(tool),
            "description": tool.summary,
            "parameters": {"type": "object", "properties": properties, "required": required},
            EXTENSION_KEY: ext,
        }
    })
}

/// Converts every tool of a toolkit.
pub fn toolkit_to_openai(toolkit: &Toolkit) -> Vec<Value> {
    toolkit
        .tools
        .iter()
        .map(|t| to_openai(toolkit, t))
        .collect()
}

/// Removes the extension key everywhere, leaving what an OpenAI-compatible server accepts.
pub fn strip_extensions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove(EXTENSION_KEY);
            map.values_mut().for_each(strip_extensions);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_extensions),
        _ => {}
    }
}

fn str_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, OpenAiError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(err(format!("{path}.{key}"), "expected a string")),
        None => Err(err(format!("{path}.{key}"), "missing required field")),
    }
}

/// The `properties` and `required` of a function's `parameters` schema (both empty without one).
fn schema_parts(
    parameters: Option<&Value>,
    params_path: &str,
) -> Result<(Map<String, Value>, Vec<String>), OpenAiError> {
    Ok(match parameters {
        None | Some(Value::Null) => (Map::new(), Vec::new()),
        Some(Value::Object(schema)) => {
            let props = match schema.get("properties") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(p)) => p.clone(),
                Some(_) => {
                    return Err(err(
                        format!("{params_path}.properties"),
                        "expected an object",
                    ));
                }
            };
            let req = match schema.get("required") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(r)) => r
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                Some(_) => {
                    return Err(err(
                        format!("{params_path}.required"),
                        "expected an array of names",
                    ));
                }
            };
            (props, req)
        }
        Some(_) => return Err(err(params_path, "expected a JSON Schema object")),
    })
}

/// The parameters in the extension's `parameter_order` (then the remaining properties), each
/// with its type, description, required flag and the rest of its schema.
fn parameters(
    properties: &Map<String, Value>,
    required: &[String],
    ext: &Map<String, Value>,
    params_path: &str,
) -> Result<Vec<Parameter>, OpenAiError> {
    let names = |key: &str| -> Vec<String> {
        ext.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut order = names("parameter_order");
    for k in properties.keys() {
        if !order.contains(k) {
            order.push(k.clone());
        }
    }
    let unset = names("required_unset");
    let mut parameters = Vec::new();
    for pname in order {
        let Some(schema) = properties.get(&pname) else {
            return Err(err(
                format!("{params_path}.properties.{pname}"),
                "listed in parameter_order but not in properties",
            ));
        };
        let mut schema = schema.as_object().cloned().ok_or_else(|| {
            err(
                format!("{params_path}.properties.{pname}"),
                "expected an object",
            )
        })?;
        let type_name = match schema.remove("type") {
            Some(Value::String(t)) => t,
            None => "string".to_string(),
            Some(other) => {
                // Union types such as ["string","null"]: keep them as JSON Schema extras.
                schema.insert("type".into(), other);
                "string".to_string()
            }
        };
        let description = match schema.remove("description") {
            Some(Value::String(d)) => d,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let req = if unset.contains(&pname) {
            None
        } else {
            Some(required.contains(&pname))
        };
        parameters.push(Parameter {
            name: pname,
            type_name,
            description,
            required: req,
            extra: schema,
        });
    }
    Ok(parameters)
}

/// The toolkit the extension names (with no tools), if it names one.
fn toolkit_from_ext(ext: &Map<String, Value>, fpath: &str) -> Result<Option<Toolkit>, OpenAiError> {
    Ok(match ext.get("toolkit") {
        Some(meta) => {
            let mut meta = meta.as_object().cloned().ok_or_else(|| {
                err(
                    format!("{fpath}.{EXTENSION_KEY}.toolkit"),
                    "expected an object",
                )
            })?;
            let tk_extra = meta
                .remove("extra")
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            meta.insert("tools".into(), json!([]));
            let mut tk: Toolkit = serde_json::from_value(Value::Object(meta))
                .map_err(|e| err(format!("{fpath}.{EXTENSION_KEY}.toolkit"), e.to_string()))?;
            tk.extra = tk_extra;
            Some(tk)
        }
        None => None,
    })
}

/// Converts an OpenAI tool back. Returns the tool and, when the extension carried it, the
/// toolkit it belongs to (with no tools). Without the extension the tool name is the function
/// name and the toolkit is `None`.
pub fn from_openai(value: &Value) -> Result<(Tool, Option<Toolkit>), OpenAiError> {
    let outer = value
        .as_object()
        .ok_or_else(|| err("$", "expected an object"))?;
    // Accept both the wrapped `{"type":"function","function":{..}}` and a bare function object.
    let (func, fpath) = match outer.get("function") {
        Some(Value::Object(f)) => (f, "function"),
        Some(_) => return Err(err("function", "expected an object")),
        None => (outer, "$"),
    };
    let name = str_field(func, "name", fpath)?;
    let summary = match func.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(err(format!("{fpath}.description"), "expected a string")),
    };
    let empty = Map::new();
    let ext = match func.get(EXTENSION_KEY) {
        Some(Value::Object(e)) => e,
        Some(_) => {
            return Err(err(
                format!("{fpath}.{EXTENSION_KEY}"),
                "expected an object",
            ));
        }
        None => &empty,
    };
    let params_path = format!("{fpath}.parameters");
    let (properties, required) = schema_parts(func.get("parameters"), &params_path)?;
    let parameters = parameters(&properties, &required, ext, &params_path)?;
    let returns: Vec<ReturnField> = match ext.get("returns") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| err(format!("{fpath}.{EXTENSION_KEY}.returns"), e.to_string()))?,
        None => Vec::new(),
    };
    let exceptions: Option<Vec<ExceptionSpec>> = match ext.get("exceptions") {
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .map_err(|e| err(format!("{fpath}.{EXTENSION_KEY}.exceptions"), e.to_string()))?,
        ),
        None => None,
    };
    let extra = ext
        .get("extra")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let toolkit = toolkit_from_ext(ext, fpath)?;
    let tool_name = match ext.get("tool").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None => match &toolkit {
            Some(tk) => name
                .strip_prefix(tk.name_for_model.as_str())
                .unwrap_or(name)
                .to_string(),
            None => name.to_string(),
        },
    };
    Ok((
        Tool {
            name: tool_name,
            summary,
            parameters,
            returns,
            exceptions,
            extra,
        },
        toolkit,
    ))
}

/// Rebuilds toolkits from OpenAI tools that carry the extension, grouping tools by toolkit in
/// first-seen order.
pub fn toolkits_from_openai(values: &[Value]) -> Result<Vec<Toolkit>, OpenAiError> {
    let mut out: Vec<Toolkit> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let (tool, tk) =
            from_openai(v).map_err(|e| err(format!("[{i}].{}", e.field), e.message))?;
        let tk = tk.ok_or_else(|| {
            err(
                format!("[{i}].function.{EXTENSION_KEY}.toolkit"),
                "missing; cannot tell which toolkit the tool belongs to",
            )
        })?;
        match out.iter_mut().find(|t| t.toolkit == tk.toolkit) {
            Some(existing) => existing.tools.push(tool),
            None => {
                let mut tk = tk;
                tk.tools.push(tool);
                out.push(tk);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_openai_function_converts() {
        let v = json!({"type": "function", "function": {"name": "read_file", "description": "Read a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string", "description": "p"},
            "n": {"type": "integer", "description": "lines", "minimum": 1}}, "required": ["path"]}}});
        let (tool, tk) = from_openai(&v).unwrap();
        assert!(tk.is_none());
        assert_eq!(tool.name, "read_file");
        assert_eq!(tool.summary, "Read a file.");
        let path = tool.parameters.iter().find(|p| p.name == "path").unwrap();
        assert_eq!(path.required, Some(true));
        let n = tool.parameters.iter().find(|p| p.name == "n").unwrap();
        assert_eq!(
            (n.type_name.as_str(), n.required, n.extra.get("minimum")),
            ("integer", Some(false), Some(&json!(1)))
        );
    }

    #[test]
    fn strip_removes_only_the_extension() {
        let tk = Toolkit {
            toolkit: "T".into(),
            category: None,
            name_for_model: "T".into(),
            name_for_human: "T".into(),
            description_for_model: "d".into(),
            description_for_human: "d".into(),
            tools: vec![],
            extra: Map::new(),
        };
        let tool = Tool {
            name: "Run".into(),
            summary: "s".into(),
            parameters: vec![],
            returns: vec![],
            exceptions: None,
            extra: Map::new(),
        };
        let mut v = to_openai(&tk, &tool);
        assert!(v["function"].get(EXTENSION_KEY).is_some());
        strip_extensions(&mut v);
        assert_eq!(
            v,
            json!({"type": "function", "function": {"name": "TRun", "description": "s", "parameters": {"type": "object", "properties": {}, "required": []}}})
        );
    }

    #[test]
    fn bad_openai_tool_names_the_field() {
        let e = from_openai(&json!({"function": {"description": "x"}})).unwrap_err();
        assert_eq!(e.to_string(), "function.name: missing required field");
        let e = from_openai(&json!({"function": {"name": "f", "parameters": {"properties": 3}}}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "function.parameters.properties: expected an object"
        );
    }
}
