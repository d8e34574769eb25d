//! Parses tool calls out of generated text: `<tool_call>{…}</tool_call>` blocks (Hermes/Qwen
//! style, also the fallback format we prompt with) or a reply that is one bare JSON object
//! `{"name": …, "arguments"|"parameters": {…}}` (Llama 3 style, and constrained tool calls).

use autosafe_llm::ToolCall;
use serde_json::Value;

/// Text before the first call, and the calls found. Returns no calls when none parse.
pub(crate) fn parse_tool_calls(text: &str, known: &[&str]) -> (Option<String>, Vec<ToolCall>) {
    let mut calls = Vec::new();
    let mut rest = text;
    let mut prefix: Option<String> = None;
    while let Some(start) = rest.find("<tool_call>") {
        if prefix.is_none() {
            prefix = Some(rest[..start].to_string());
        }
        let body_start = start + "<tool_call>".len();
        let (body, next) = match rest[body_start..].find("</tool_call>") {
            Some(end) => (
                &rest[body_start..body_start + end],
                &rest[body_start + end + "</tool_call>".len()..],
            ),
            None => (&rest[body_start..], ""),
        };
        if let Some(call) = parse_one(body.trim(), known, calls.len()) {
            calls.push(call);
        }
        rest = next;
    }
    if calls.is_empty()
        && let Some(call) = parse_one(text.trim(), known, 0)
    {
        return (None, vec![call]);
    }
    if calls.is_empty() {
        return (Some(text.to_string()), Vec::new());
    }
    let prefix = prefix
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty());
    (prefix, calls)
}

fn parse_one(body: &str, known: &[&str], index: usize) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(body).ok()?;
    let obj = v.as_object()?;
    let name = obj.get("name")?.as_str()?;
    if !known.is_empty() && !known.contains(&name) {
        return None;
    }
    let args = obj
        .get("arguments")
        .or_else(|| obj.get("parameters"))
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let arguments = match args {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some(ToolCall {
        id: format!("call_{index}"),
        name: name.to_string(),
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_calls_parse() {
        let text = "Let me check.\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
        let (prefix, calls) = parse_tool_calls(text, &["get_weather", "get_time"]);
        assert_eq!(prefix.as_deref(), Some("Let me check."));
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(calls[1].id, "call_1");
    }

    #[test]
    fn bare_json_and_unknown_names() {
        let (_, calls) = parse_tool_calls(r#"{"name": "f", "parameters": {"x": 1}}"#, &["f"]);
        assert_eq!(calls[0].arguments, r#"{"x":1}"#);
        let (text, calls) = parse_tool_calls(r#"{"name": "g", "arguments": {}}"#, &["f"]);
        assert!(calls.is_empty());
        assert!(text.is_some());
        let (text, calls) = parse_tool_calls("just words", &["f"]);
        assert!(calls.is_empty());
        assert_eq!(text.as_deref(), Some("just words"));
    }

    #[test]
    fn unterminated_last_call_still_parses() {
        let (_, calls) = parse_tool_calls(
            "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": \"b\"}}",
            &["f"],
        );
        assert_eq!(calls.len(), 1);
    }
}
