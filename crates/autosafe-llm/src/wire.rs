//! The OpenAI chat-completions wire format: request bodies out, replies in.

use crate::types::{
    ChatReply, ChatRequest, Choice, FinishReason, Message, ResponseFormat, ToolCall, ToolChoice,
    Usage,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Server capabilities that change the request body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WireOptions {
    /// Send `response_format` (otherwise the schema is only checked client-side).
    pub response_format: bool,
    /// Send `tool_choice: "required"` as is (otherwise: the only tool by name, or `auto`).
    pub tool_choice_required: bool,
}

fn message_json(m: &Message) -> Value {
    let mut o = Map::new();
    o.insert(
        "role".into(),
        serde_json::to_value(m.role).unwrap_or(Value::Null),
    );
    // An assistant turn that only calls tools has no text. OpenAI takes `null` there, but
    // llama-cpp-python's server refuses anything but a string (HTTP 500), and every server takes
    // "" as no text.
    let content = match (&m.content, m.tool_calls.is_empty()) {
        (Some(c), _) => Value::String(c.clone()),
        (None, false) => Value::String(String::new()),
        (None, true) => Value::Null,
    };
    o.insert("content".into(), content);
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        o.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(id) = &m.tool_call_id {
        o.insert("tool_call_id".into(), Value::String(id.clone()));
    }
    if let Some(name) = &m.name {
        o.insert("name".into(), Value::String(name.clone()));
    }
    Value::Object(o)
}

/// The JSON body for `POST {base}/chat/completions`. `sample_index` is never sent.
pub(crate) fn request_body(
    model: &str,
    req: &ChatRequest,
    opts: WireOptions,
    extra: &Map<String, Value>,
) -> Value {
    let mut o = Map::new();
    o.insert("model".into(), Value::String(model.to_string()));
    o.insert(
        "messages".into(),
        Value::Array(req.messages.iter().map(message_json).collect()),
    );
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
        o.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required if opts.tool_choice_required => json!("required"),
            ToolChoice::Required => match req.tools.as_slice() {
                [only] => json!({"type": "function", "function": {"name": only.name}}),
                _ => json!("auto"),
            },
            ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
        };
        o.insert("tool_choice".into(), v);
    }
    if let (Some(rf), true) = (&req.response_format, opts.response_format) {
        let v = match rf {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema(s) => {
                json!({"type": "json_schema", "json_schema": {"name": s.name, "schema": s.schema, "strict": s.strict}})
            }
        };
        o.insert("response_format".into(), v);
    }
    if let Some(t) = req.temperature {
        o.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        o.insert("top_p".into(), json!(p));
    }
    if let Some(m) = req.max_tokens {
        o.insert("max_tokens".into(), json!(m));
    }
    if !req.stop.is_empty() {
        o.insert("stop".into(), json!(req.stop));
    }
    if let Some(s) = req.seed {
        o.insert("seed".into(), json!(s));
    }
    if let Some(n) = req.n.filter(|n| *n > 1) {
        o.insert("n".into(), json!(n));
    }
    if let (Some(p), false) = (req.parallel_tool_calls, req.tools.is_empty()) {
        o.insert("parallel_tool_calls".into(), json!(p));
    }
    for (k, v) in extra {
        o.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(o)
}

#[derive(Deserialize)]
struct WireReply {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

fn finish_reason(s: Option<String>) -> FinishReason {
    match s.as_deref() {
        None | Some("stop") | Some("eos") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_string()),
    }
}

/// Parses a chat-completions reply body. The error is a short description for retries/logs.
pub(crate) fn parse_reply(body: &[u8], fallback_model: &str) -> Result<ChatReply, String> {
    let wire: WireReply = serde_json::from_slice(body)
        .map_err(|e| format!("reply body is not a chat completion: {e}"))?;
    if wire.choices.is_empty() {
        return Err("reply has no choices".into());
    }
    let choices = wire
        .choices
        .into_iter()
        .enumerate()
        .map(|(ci, c)| Choice {
            content: c.message.content,
            tool_calls: c
                .message
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, t)| ToolCall {
                    id: t.id.unwrap_or_else(|| format!("call_{ci}_{i}")),
                    name: t.function.name,
                    arguments: match t.function.arguments {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    },
                })
                .collect(),
            finish_reason: finish_reason(c.finish_reason),
        })
        .collect();
    let usage = wire.usage.map(|u| Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
    });
    Ok(ChatReply {
        model: wire.model.unwrap_or_else(|| fallback_model.to_string()),
        choices,
        usage: usage.unwrap_or_default(),
        cached: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{JsonSchemaFormat, ToolSpec};

    #[test]
    fn body_carries_everything_but_sample_index() {
        let mut r = ChatRequest::new(vec![Message::system("s"), Message::user("u")]);
        r.tools = vec![ToolSpec {
            name: "f".into(),
            description: "d".into(),
            parameters: json!({"type": "object"}),
        }];
        r.tool_choice = Some(ToolChoice::Function("f".into()));
        r.response_format = Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: "x".into(),
            schema: json!({"type": "object"}),
            strict: true,
        }));
        r.temperature = Some(0.5);
        r.seed = Some(3);
        r.n = Some(2);
        r.sample_index = 9;
        let b = request_body(
            "m",
            &r,
            WireOptions {
                response_format: true,
                tool_choice_required: true,
            },
            &Map::new(),
        );
        assert_eq!(b["model"], "m");
        assert_eq!(b["messages"][1]["role"], "user");
        assert_eq!(b["tools"][0]["function"]["name"], "f");
        assert_eq!(b["tool_choice"]["function"]["name"], "f");
        assert_eq!(b["response_format"]["json_schema"]["strict"], true);
        assert_eq!(b["seed"], 3);
        assert_eq!(b["n"], 2);
        assert!(b.get("sample_index").is_none());
        let b2 = request_body(
            "m",
            &r,
            WireOptions {
                response_format: false,
                tool_choice_required: true,
            },
            &Map::new(),
        );
        assert!(b2.get("response_format").is_none());
        // A server that ignores `required` (llama-cpp-python) gets the only tool by name, or
        // `auto` when there are several.
        r.tool_choice = Some(ToolChoice::Required);
        let lenient = WireOptions {
            response_format: false,
            tool_choice_required: false,
        };
        let b3 = request_body("m", &r, lenient, &Map::new());
        assert_eq!(b3["tool_choice"]["function"]["name"], "f");
        r.tools.push(r.tools[0].clone());
        let b4 = request_body("m", &r, lenient, &Map::new());
        assert_eq!(b4["tool_choice"], "auto");
        let strict = WireOptions {
            tool_choice_required: true,
            ..lenient
        };
        assert_eq!(
            request_body("m", &r, strict, &Map::new())["tool_choice"],
            "required"
        );
        // A turn that only calls a tool is sent with "" as its text (llama-cpp-python refuses
        // `null`); a message without text or calls keeps `null`.
        let mut call = Message::assistant("");
        call.content = None;
        call.tool_calls = vec![crate::types::ToolCall {
            id: "c1".into(),
            name: "f".into(),
            arguments: "{}".into(),
        }];
        let mut bare = Message::user("");
        bare.content = None;
        r.messages = vec![call, bare];
        let b5 = request_body("m", &r, strict, &Map::new());
        assert_eq!(b5["messages"][0]["content"], "");
        assert_eq!(b5["messages"][0]["tool_calls"][0]["id"], "c1");
        assert!(b5["messages"][1]["content"].is_null());
    }

    #[test]
    fn parses_tool_calls_and_finish_reasons() {
        let body = br#"{"model":"x","choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
        let r = parse_reply(body, "fallback").unwrap();
        assert_eq!(r.choices[0].tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.choices[0].finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.usage.prompt_tokens, 5);
        assert!(parse_reply(b"{not json", "m").is_err());
        assert!(parse_reply(br#"{"choices":[]}"#, "m").is_err());
    }
}
