//! OpenAI chat-completions wire format: parsing requests into [`ChatRequest`]s and writing
//! [`ChatReply`]s back, for [`crate::server`].

use autosafe_llm::{
    ChatReply, ChatRequest, FinishReason, JsonSchemaFormat, Message, ResponseFormat, Role,
    ToolCall, ToolChoice, ToolSpec, Usage,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Most choices (`n`) one request may ask for: `n = 1000` once held the engine for over 300 s.
pub(crate) const MAX_N: u32 = 16;

/// Most tokens one request may ask to generate over all its choices (`n` × `max_tokens`).
pub(crate) const MAX_TOTAL_TOKENS: u64 = 65_536;

/// A request that cannot be served, with the parameter at fault (OpenAI's `param`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BadRequest {
    /// What is wrong.
    pub message: String,
    /// The offending parameter, e.g. `messages[1].role`.
    pub param: Option<String>,
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> BadRequest {
    BadRequest {
        message: message.into(),
        param: Some(param.into()),
    }
}

#[derive(Deserialize)]
struct WireRequest {
    #[serde(default)]
    messages: Option<Vec<WireMessage>>,
    #[serde(default)]
    tools: Vec<WireTool>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stop: Option<Value>,
    seed: Option<u64>,
    n: Option<u32>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<Value>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<Value>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    logit_bias: Option<Value>,
}

/// A parsed request: what to generate and how to send it back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedRequest {
    /// What to generate.
    pub request: ChatRequest,
    /// `stream: true`: answer with Server-Sent Events.
    pub stream: bool,
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    pub include_usage: bool,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
    tool_call_id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    arguments: Value,
}

#[derive(Deserialize)]
struct WireTool {
    #[serde(rename = "type")]
    kind: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: Option<Value>,
}

fn text_content(v: &Value, param: &str) -> Result<String, BadRequest> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => {
                        return Err(bad(
                            format!("{param}[{i}]"),
                            "only text content parts are supported",
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad(
            param,
            "content must be a string or an array of text parts",
        )),
    }
}

/// Parses an OpenAI chat-completions request body.
pub(crate) fn parse_request(body: &[u8]) -> Result<ParsedRequest, BadRequest> {
    let wire: WireRequest = serde_json::from_slice(body).map_err(|e| BadRequest {
        message: format!("invalid JSON body: {e}"),
        param: None,
    })?;
    refuse_unsupported(&wire)?;
    let include_usage = include_usage(wire.stream, wire.stream_options.as_ref())?;
    let stream = wire.stream;
    let request = chat_request(wire)?;
    Ok(ParsedRequest {
        request,
        stream,
        include_usage,
    })
}

/// Parameters this server cannot honour, refused rather than ignored.
fn refuse_unsupported(wire: &WireRequest) -> Result<(), BadRequest> {
    if wire.logprobs == Some(true) {
        return Err(bad("logprobs", "logprobs are not supported by this server"));
    }
    if wire.top_logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(bad(
            "top_logprobs",
            "top_logprobs are not supported by this server",
        ));
    }
    for (name, v) in [
        ("presence_penalty", wire.presence_penalty),
        ("frequency_penalty", wire.frequency_penalty),
    ] {
        if v.is_some_and(|p| p != 0.0) {
            return Err(bad(
                name,
                format!("{name} is not supported by this server (only 0)"),
            ));
        }
    }
    if wire
        .logit_bias
        .as_ref()
        .is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty()))
    {
        return Err(bad(
            "logit_bias",
            "logit_bias is not supported by this server",
        ));
    }
    Ok(())
}

/// `stream_options.include_usage` (only allowed with `stream: true`).
fn include_usage(stream: bool, options: Option<&Value>) -> Result<bool, BadRequest> {
    let Some(options) = options.filter(|v| !v.is_null()) else {
        return Ok(false);
    };
    if !stream {
        return Err(bad(
            "stream_options",
            "stream_options is only allowed when stream is true",
        ));
    }
    match options.get("include_usage") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(
            "stream_options.include_usage",
            "include_usage must be true or false",
        )),
    }
}

fn chat_request(wire: WireRequest) -> Result<ChatRequest, BadRequest> {
    let wire_messages = wire
        .messages
        .ok_or_else(|| bad("messages", "missing required parameter 'messages'"))?;
    if wire_messages.is_empty() {
        return Err(bad("messages", "messages must not be empty"));
    }
    let messages = messages(wire_messages)?;
    let tools = tools(wire.tools)?;
    let tool_choice = tool_choice(wire.tool_choice)?;
    check_tool_choice(tool_choice.as_ref(), &tools)?;
    let response_format = response_format(wire.response_format)?;
    let stop = stop(wire.stop)?;
    let max_tokens = check_limits(
        wire.temperature,
        wire.top_p,
        wire.n,
        wire.max_tokens,
        wire.max_completion_tokens,
    )?;
    Ok(ChatRequest {
        messages,
        tools,
        tool_choice,
        response_format,
        temperature: wire.temperature,
        top_p: wire.top_p,
        max_tokens,
        stop,
        seed: wire.seed,
        n: wire.n,
        parallel_tool_calls: wire.parallel_tool_calls,
        end_after_json: None,
        sample_index: 0,
    })
}

/// The messages, roles checked and content parts joined.
fn messages(wire: Vec<WireMessage>) -> Result<Vec<Message>, BadRequest> {
    let mut messages = Vec::with_capacity(wire.len());
    for (i, m) in wire.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(bad(
                    format!("messages[{i}].role"),
                    format!("unknown role {other:?}"),
                ));
            }
        };
        let content = match &m.content {
            None => None,
            Some(v) => Some(text_content(v, &format!("messages[{i}].content"))?),
        };
        let tool_calls = m
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: match c.function.arguments {
                    Value::String(s) => s,
                    other => other.to_string(),
                },
            })
            .collect();
        messages.push(Message {
            role,
            content,
            tool_calls,
            tool_call_id: m.tool_call_id,
            name: m.name,
        });
    }
    Ok(messages)
}

/// The tools: function tools only, parameters default to an empty object schema.
fn tools(wire: Vec<WireTool>) -> Result<Vec<ToolSpec>, BadRequest> {
    let mut tools = Vec::new();
    for (i, t) in wire.into_iter().enumerate() {
        if t.kind != "function" {
            return Err(bad(
                format!("tools[{i}].type"),
                "only function tools are supported",
            ));
        }
        tools.push(ToolSpec {
            name: t.function.name,
            description: t.function.description,
            parameters: t
                .function
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    Ok(tools)
}

/// `tool_choice`: a mode name or a named function.
fn tool_choice(wire: Option<Value>) -> Result<Option<ToolChoice>, BadRequest> {
    Ok(match wire {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(bad("tool_choice", format!("unknown tool_choice {other:?}"))),
        }),
        Some(v) if v.get("type").and_then(Value::as_str) != Some("function") => {
            return Err(bad(
                "tool_choice.type",
                "only {\"type\":\"function\",\"function\":{\"name\":…}} is supported",
            ));
        }
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(ToolChoice::Function(name.to_string())),
            None => {
                return Err(bad(
                    "tool_choice",
                    "expected a string or {\"type\":\"function\",\"function\":{\"name\":…}}",
                ));
            }
        },
    })
}

/// A `tool_choice` that forces a call needs the tools to call.
fn check_tool_choice(choice: Option<&ToolChoice>, tools: &[ToolSpec]) -> Result<(), BadRequest> {
    match choice {
        Some(ToolChoice::Required) if tools.is_empty() => Err(bad(
            "tool_choice",
            "tool_choice \"required\" needs at least one tool in tools",
        )),
        Some(ToolChoice::Function(name)) if !tools.iter().any(|t| &t.name == name) => Err(bad(
            "tool_choice",
            format!("tool_choice names unknown function {name:?}"),
        )),
        _ => Ok(()),
    }
}

/// `response_format`: text, a JSON object or a JSON schema.
fn response_format(wire: Option<Value>) -> Result<Option<ResponseFormat>, BadRequest> {
    Ok(match wire {
        None | Some(Value::Null) => None,
        Some(v) => Some(match v.get("type").and_then(Value::as_str) {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some("json_schema") => {
                let js = v
                    .get("json_schema")
                    .ok_or_else(|| bad("response_format.json_schema", "missing"))?;
                let schema = js
                    .get("schema")
                    .cloned()
                    .ok_or_else(|| bad("response_format.json_schema.schema", "missing"))?;
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(bad(
                        "response_format.json_schema.schema",
                        "must be a JSON Schema object",
                    ));
                }
                ResponseFormat::JsonSchema(JsonSchemaFormat {
                    name: js
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("response")
                        .to_string(),
                    schema,
                    strict: js.get("strict").and_then(Value::as_bool).unwrap_or(false),
                })
            }
            _ => {
                return Err(bad(
                    "response_format.type",
                    "expected text, json_object or json_schema",
                ));
            }
        }),
    })
}

/// `stop`: one string or an array of strings.
fn stop(wire: Option<Value>) -> Result<Vec<String>, BadRequest> {
    Ok(match wire {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("stop", "stop must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("stop", "stop must be a string or an array of strings")),
    })
}

/// Checks the sampling ranges and this server's limits on `n` and generated tokens; the
/// token budget asked for.
fn check_limits(
    temperature: Option<f32>,
    top_p: Option<f32>,
    n: Option<u32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
) -> Result<Option<u32>, BadRequest> {
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(bad("temperature", "temperature must be between 0 and 2"));
    }
    if let Some(p) = top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(bad("top_p", "top_p must be between 0 and 1"));
    }
    if n == Some(0) {
        return Err(bad("n", "n must be at least 1"));
    }
    let n = n.unwrap_or(1);
    if n > MAX_N {
        return Err(bad(
            "n",
            format!("n = {n} is above this server's limit of {MAX_N} choices a request"),
        ));
    }
    let max_tokens = max_completion_tokens.or(max_tokens);
    if let Some(m) = max_tokens {
        let total = u64::from(n) * u64::from(m);
        if total > MAX_TOTAL_TOKENS {
            let param = match max_completion_tokens {
                Some(_) => "max_completion_tokens",
                None => "max_tokens",
            };
            return Err(bad(
                param,
                format!(
                    "n × {param} = {total} tokens is above this server's limit of {MAX_TOTAL_TOKENS} generated tokens a request"
                ),
            ));
        }
    }
    Ok(max_tokens)
}

fn finish_str(f: &FinishReason) -> String {
    match f {
        FinishReason::Stop => "stop".into(),
        FinishReason::Length => "length".into(),
        FinishReason::ToolCalls => "tool_calls".into(),
        FinishReason::ContentFilter => "content_filter".into(),
        FinishReason::Other(s) => s.clone(),
    }
}

/// Writes a reply as an OpenAI `chat.completion` object.
pub(crate) fn reply_json(reply: &ChatReply, id: &str, created: u64) -> Value {
    let choices: Vec<Value> = reply
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut message = json!({"role": "assistant", "content": c.content});
            if !c.tool_calls.is_empty() {
                message["tool_calls"] = c
                    .tool_calls
                    .iter()
                    .map(|t| json!({"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}))
                    .collect();
            }
            json!({"index": i, "message": message, "finish_reason": finish_str(&c.finish_reason), "logprobs": null})
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": reply.model,
        "choices": choices,
        "usage": usage_json(&reply.usage)
    })
}

/// OpenAI's `usage` object.
pub(crate) fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens
    })
}

/// What every chunk of one streamed reply shares.
#[derive(Debug, Clone)]
pub(crate) struct ChunkHead {
    pub id: String,
    pub created: u64,
    pub model: String,
    /// `stream_options.include_usage`: every chunk carries `"usage": null`, the last one the
    /// totals.
    pub include_usage: bool,
}

/// A `chat.completion.chunk` with one choice's `delta` (and its `finish_reason`, if it ended).
pub(crate) fn delta_chunk(
    head: &ChunkHead,
    index: u32,
    delta: Value,
    finish: Option<&FinishReason>,
) -> Value {
    let choice = json!({"index": index, "delta": delta, "logprobs": null,
                        "finish_reason": finish.map(finish_str)});
    chunk(head, vec![choice], None)
}

/// The last chunk of a stream with `include_usage`: no choices, the token counts.
pub(crate) fn usage_chunk(head: &ChunkHead, usage: &Usage) -> Value {
    chunk(head, Vec::new(), Some(usage_json(usage)))
}

fn chunk(head: &ChunkHead, choices: Vec<Value>, usage: Option<Value>) -> Value {
    let mut v = json!({
        "id": head.id,
        "object": "chat.completion.chunk",
        "created": head.created,
        "model": head.model,
        "choices": choices,
    });
    if head.include_usage {
        v["usage"] = usage.unwrap_or(Value::Null);
    }
    v
}

/// The `delta`s announcing a choice's tool calls: each call's id and name, then its arguments.
pub(crate) fn tool_call_deltas(calls: &[ToolCall]) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            [
                json!({"tool_calls": [{"index": i, "id": c.id, "type": "function",
                                       "function": {"name": c.name, "arguments": ""}}]}),
                json!({"tool_calls": [{"index": i, "function": {"arguments": c.arguments}}]}),
            ]
        })
        .collect()
}

/// An OpenAI-style error body.
pub(crate) fn error_json(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_request() {
        let body = json!({
            "model": "local:smollm2",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "stop": "END", "seed": 3, "max_completion_tokens": 9, "temperature": 0.5
        });
        let parsed = parse_request(body.to_string().as_bytes()).unwrap();
        assert!(!parsed.stream);
        let req = parsed.request;
        assert_eq!(req.messages.len(), 4);
        assert_eq!(req.messages[1].content.as_deref(), Some("hi"));
        assert_eq!(req.messages[2].tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(req.tool_choice, Some(ToolChoice::Function("f".into())));
        assert!(matches!(
            req.response_format,
            Some(ResponseFormat::JsonSchema(_))
        ));
        assert_eq!(req.stop, vec!["END".to_string()]);
        assert_eq!(req.max_tokens, Some(9));
    }

    #[test]
    fn n_and_total_tokens_are_capped_naming_the_limit() {
        let req = |extra: Value| {
            let mut body = json!({"messages": [{"role": "user", "content": "x"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse_request(body.to_string().as_bytes())
        };
        let e = req(json!({"n": 1000})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        assert!(e.message.contains("limit of 16"), "{}", e.message);
        let e = req(json!({"n": 16, "max_tokens": 5000})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(e.message.contains("80000"), "{}", e.message);
        assert!(e.message.contains("limit of 65536"), "{}", e.message);
        let e = req(json!({"max_completion_tokens": 100000})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_completion_tokens"));
        assert!(req(json!({"n": 16, "max_tokens": 4096})).is_ok());
    }

    #[test]
    fn bad_requests_name_the_parameter() {
        let e =
            parse_request(br#"{"messages": [{"role": "wizard", "content": "x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = parse_request(br#"{"model": "m"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = parse_request(b"{not json").unwrap_err();
        assert!(e.message.contains("invalid JSON"), "{}", e.message);
        let e =
            parse_request(br#"{"messages": [{"role": "user", "content": "x"}], "temperature": 9}"#)
                .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
    }

    #[test]
    fn streaming_options_and_unsupported_parameters() {
        let with = |extra: Value| {
            let mut body = json!({"messages": [{"role": "user", "content": "x"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse_request(body.to_string().as_bytes())
        };
        let p = with(json!({"stream": true, "stream_options": {"include_usage": true}})).unwrap();
        assert!(p.stream && p.include_usage);
        let p = with(json!({"stream": true})).unwrap();
        assert!(p.stream && !p.include_usage);
        for (extra, param) in [
            (
                json!({"stream_options": {"include_usage": true}}),
                "stream_options",
            ),
            (
                json!({"stream": true, "stream_options": {"include_usage": 1}}),
                "stream_options.include_usage",
            ),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"logit_bias": {"42": 5}}), "logit_bias"),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (
                json!({"tool_choice": {"type": "custom", "custom": {"name": "f"}}}),
                "tool_choice.type",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f"}}],
                    "tool_choice": {"type": "function", "function": {"name": "g"}}}),
                "tool_choice",
            ),
        ] {
            let e = with(extra.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{extra}: {}", e.message);
        }
        assert!(with(json!({"logprobs": false, "frequency_penalty": 0, "logit_bias": {}})).is_ok());
    }
}
