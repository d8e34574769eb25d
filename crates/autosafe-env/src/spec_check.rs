//! Checks of a tool call and of a tool's return value against the tool's ToolEmu spec, done in
//! code so that an invalid call never costs a model request.

use std::collections::BTreeSet;

use autosafe_ots::{Tool, Toolkit};
use serde_json::{Map, Value, json};

use crate::traits::Observation;

/// The exception ToolEmu tools raise for malformed calls.
pub(crate) const INVALID_REQUEST: &str = "InvalidRequestException";

/// True when `value` has the ToolEmu type `type_name`; unknown type names accept anything.
pub(crate) fn has_type(value: &Value, type_name: &str) -> bool {
    match type_name.trim().to_ascii_lowercase().as_str() {
        "string" => value.is_string(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The problems of calling `tool` with `input`: not an object, missing required arguments,
/// arguments the tool does not declare, wrong types. Empty when the call is valid.
pub(crate) fn call_problems(tool: &Tool, input: &Value) -> Vec<String> {
    let empty = Map::new();
    let args = match input {
        Value::Object(m) => m,
        Value::Null => &empty,
        Value::String(s) if s.trim().is_empty() => &empty,
        other => {
            return vec![format!(
                "the action input must be a JSON object, got {}",
                type_of(other)
            )];
        }
    };
    let mut out = Vec::new();
    for p in &tool.parameters {
        match args.get(&p.name) {
            None | Some(Value::Null) if p.is_required() => {
                out.push(format!("missing required argument `{}`", p.name))
            }
            Some(v) if !v.is_null() && !has_type(v, &p.type_name) => out.push(format!(
                "argument `{}` must be of type {}, got {}",
                p.name,
                p.type_name,
                type_of(v)
            )),
            _ => {}
        }
    }
    let declared: BTreeSet<&str> = tool.parameters.iter().map(|p| p.name.as_str()).collect();
    for k in args.keys() {
        if !declared.contains(k.as_str()) {
            out.push(format!(
                "unexpected argument `{k}` (declared: {})",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.iter().copied().collect::<Vec<_>>().join(", ")
                }
            ));
        }
    }
    out
}

/// The exception a malformed call raises: the tool's declared `InvalidRequestException`, else
/// its first declared exception whose name says "Invalid", else `InvalidRequestException`.
pub(crate) fn invalid_call_exception(tool: &Tool) -> String {
    let declared = tool.exceptions.iter().flatten();
    declared
        .clone()
        .find(|e| e.name == INVALID_REQUEST)
        .or_else(|| declared.clone().find(|e| e.name.contains("Invalid")))
        .map_or_else(|| INVALID_REQUEST.to_string(), |e| e.name.clone())
}

/// An error observation `{"error": "<Exception>: <message>"}`.
pub(crate) fn error_observation(exception: &str, message: &str) -> Observation {
    Observation {
        text: json!({ "error": format!("{exception}: {message}") }).to_string(),
        is_error: true,
    }
}

/// The error observation for a call to a tool the scenario does not offer.
pub(crate) fn unknown_tool_observation(tool: &str, available: &[String]) -> Observation {
    error_observation(
        INVALID_REQUEST,
        &format!(
            "unknown tool `{tool}`; available tools: {}",
            if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            }
        ),
    )
}

/// Checks a call against the offered tools: `Ok(tool)` when it may run, `Err(observation)` with
/// the error observation to return instead.
pub fn check_call<'a>(
    offered: &[(&'a Toolkit, &'a Tool)],
    name: &str,
    input: &Value,
) -> Result<(&'a Toolkit, &'a Tool), Observation> {
    let Some(&(tk, tool)) = offered.iter().find(|(tk, t)| tk.qualified_name(t) == name) else {
        let names: Vec<String> = offered.iter().map(|(tk, t)| tk.qualified_name(t)).collect();
        return Err(unknown_tool_observation(name, &names));
    };
    let problems = call_problems(tool, input);
    if problems.is_empty() {
        Ok((tk, tool))
    } else {
        Err(error_observation(
            &invalid_call_exception(tool),
            &problems.join("; "),
        ))
    }
}

/// Exception names an emulated observation may raise: the tool's declared ones plus
/// `InvalidRequestException`.
pub(crate) fn allowed_exceptions(tool: &Tool) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = tool
        .exceptions
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    names.insert(INVALID_REQUEST.to_string());
    names
}

/// Checks an emulated observation object: exactly the tool's return fields with their types,
/// or a single `error` naming an allowed exception. `Ok(true)` for an exception, `Ok(false)`
/// for a normal return value, `Err(problems)` otherwise.
pub(crate) fn check_observation(tool: &Tool, obs: &Map<String, Value>) -> Result<bool, String> {
    if let Some(err) = obs.get("error")
        && !tool.returns.iter().any(|r| r.name == "error")
    {
        let allowed = allowed_exceptions(tool);
        let list = allowed.iter().cloned().collect::<Vec<_>>().join(", ");
        return match err.as_str() {
            _ if obs.len() != 1 => {
                Err("an exception observation must hold only the `error` field".to_string())
            }
            Some(text) => {
                let name = text.split(':').next().unwrap_or("").trim();
                if text.contains(':') && allowed.contains(name) {
                    Ok(true)
                } else {
                    Err(format!(
                        "`error` must read \"<Exception>: <explanation>\" with a declared exception ({list}), got {text:?}"
                    ))
                }
            }
            None => Err("`error` must be a string".to_string()),
        };
    }
    let mut problems = Vec::new();
    for r in &tool.returns {
        match obs.get(&r.name) {
            None => problems.push(format!("missing return field `{}`", r.name)),
            Some(v) if !v.is_null() && !has_type(v, &r.type_name) => problems.push(format!(
                "return field `{}` must be of type {}, got {}",
                r.name,
                r.type_name,
                type_of(v)
            )),
            _ => {}
        }
    }
    for k in obs.keys() {
        if !tool.returns.iter().any(|r| &r.name == k) {
            problems.push(format!("`{k}` is not a return field of the tool"));
        }
    }
    if problems.is_empty() {
        Ok(false)
    } else {
        let fields: Vec<&str> = tool.returns.iter().map(|r| r.name.as_str()).collect();
        Err(format!(
            "{} (the observation must have exactly the fields: {})",
            problems.join("; "),
            fields.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autosafe_ots::ToolLibrary;

    fn todoist() -> Toolkit {
        ToolLibrary::shipped().get("Todoist").unwrap().clone()
    }

    #[test]
    fn calls_are_checked_against_the_spec() {
        let tk = todoist();
        let offered: Vec<(&Toolkit, &Tool)> = tk.tools.iter().map(|t| (&tk, t)).collect();
        assert!(check_call(&offered, "TodoistDeleteTask", &json!({"task_id": "t1"})).is_ok());
        let e = check_call(&offered, "TodoistNuke", &json!({})).unwrap_err();
        assert!(e.is_error && e.text.contains("unknown tool `TodoistNuke`"));
        assert!(e.text.contains("TodoistDeleteTask"));
        let e = check_call(&offered, "TodoistDeleteTask", &json!({})).unwrap_err();
        assert!(
            e.text
                .contains("InvalidRequestException: missing required argument `task_id`")
        );
        let e = check_call(
            &offered,
            "TodoistDeleteTask",
            &json!({"task_id": "t", "force": true}),
        )
        .unwrap_err();
        assert!(e.text.contains("unexpected argument `force`"), "{}", e.text);
        let e = check_call(&offered, "TodoistDeleteTask", &json!({"task_id": 3})).unwrap_err();
        assert!(e.text.contains("must be of type string"), "{}", e.text);
        let e = check_call(&offered, "TodoistDeleteTask", &json!("task t1")).unwrap_err();
        assert!(e.text.contains("must be a JSON object"), "{}", e.text);
        // An empty input is an empty object: valid for a tool without required arguments.
        assert!(check_call(&offered, "TodoistSearchTasks", &json!("")).is_ok());
    }

    #[test]
    fn observations_must_match_the_return_fields() {
        let tk = todoist();
        let del = tk.find_tool("TodoistDeleteTask").unwrap();
        let obj = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            check_observation(del, &obj(json!({"success": true}))),
            Ok(false)
        );
        assert!(
            check_observation(del, &obj(json!({})))
                .unwrap_err()
                .contains("missing return field `success`")
        );
        assert!(
            check_observation(del, &obj(json!({"success": true, "note": "x"})))
                .unwrap_err()
                .contains("`note`")
        );
        assert!(
            check_observation(del, &obj(json!({"success": "yes"})))
                .unwrap_err()
                .contains("type boolean")
        );
        assert_eq!(
            check_observation(del, &obj(json!({"error": "NotFoundException: no task t9"}))),
            Ok(true)
        );
        assert!(
            check_observation(del, &obj(json!({"error": "I refuse to delete tasks"}))).is_err()
        );
        assert!(check_observation(del, &obj(json!({"error": "BoomException: x"}))).is_err());
    }
}
