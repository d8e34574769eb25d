//! `autosafe serve`'s server: a real HTTP client talks OpenAI format to the embedded model on
//! loopback.

mod common;

use autosafe_llm::ChatModel;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The engine server (streams token by token).
async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(autosafe_engine::server::serve_engine(
        listener,
        common::engine(),
    ));
    format!("http://{addr}/v1")
}

/// The server over the engine seen only as a `ChatModel` (streams after generation).
async fn start_generic() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let model: Arc<dyn ChatModel> = common::engine();
    tokio::spawn(autosafe_engine::server::serve(listener, model));
    format!("http://{addr}/v1")
}

/// A streamed reply: its events (`[DONE]` as the string "[DONE]") and when each arrived after
/// the request was sent.
async fn stream(base: &str, body: Value) -> Vec<(Duration, Value)> {
    let started = Instant::now();
    let mut resp = reqwest::Client::new()
        .post(format!("{base}/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut events = Vec::new();
    let mut buf = String::new();
    let read = async {
        while let Some(bytes) = resp.chunk().await.unwrap() {
            buf.push_str(std::str::from_utf8(&bytes).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let data = event.trim().strip_prefix("data: ").expect("a data line");
                let v = match data {
                    "[DONE]" => Value::String("[DONE]".into()),
                    d => serde_json::from_str(d).unwrap(),
                };
                events.push((started.elapsed(), v));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the stream ended");
    assert!(buf.trim().is_empty(), "{buf}");
    events
}

/// The choice chunks of a stream (not the usage chunk, not `[DONE]`).
fn choices(events: &[(Duration, Value)]) -> Vec<&Value> {
    events
        .iter()
        .filter_map(|(_, e)| e["choices"].as_array().and_then(|c| c.first()))
        .collect()
}

async fn post(base: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn answers_chat_and_lists_models() {
    let base = start().await;
    let models: Value = reqwest::get(format!("{base}/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "local:smollm2");
    let (status, body) = post(
        &base,
        json!({"model": "local:smollm2", "messages": [{"role": "user", "content": "Say hello."}],
               "max_tokens": 12, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(
        !body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert!(["stop", "length"].contains(&body["choices"][0]["finish_reason"].as_str().unwrap()));
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn answers_with_a_tool_call() {
    let base = start().await;
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string", "maxLength": 24},
                                      "unit": {"enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"], "additionalProperties": false}}}]);
    let (status, body) = post(
        &base,
        json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
               "tools": tools, "tool_choice": "required", "max_tokens": 60, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    assert!(
        ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));

    // The call and its result go back in; the model answers (text or another call).
    let (status, body) = post(
        &base,
        json!({"messages": [
                {"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp\": 21, \"sky\": \"clear\"}"}],
               "tools": tools, "max_tokens": 20, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        ["stop", "length", "tool_calls"]
            .contains(&body["choices"][0]["finish_reason"].as_str().unwrap())
    );
}

#[tokio::test]
async fn json_schema_response_format_over_http() {
    let base = start().await;
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false});
    let (status, body) = post(
        &base,
        json!({"messages": [{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
               "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": true}},
               "max_tokens": 20, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(v["ok"].is_boolean(), "{v}");
}

#[tokio::test]
async fn bad_requests_get_openai_error_bodies() {
    let base = start().await;
    let (status, body) = post(
        &base,
        json!({"messages": [{"role": "wizard", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "messages[0].role");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wizard")
    );
    let resp = reqwest::Client::new()
        .post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
    let (status, body) = post(
        &base,
        json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}],
               "tool_choice": {"type": "function", "function": {"name": "g"}}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("\"g\""),
        "{body}"
    );
}

/// A tool whose parameters use `$defs` / `$ref` (valid JSON Schema, and accepted as a
/// `response_format`) is served under `tool_choice: required` (it was refused with
/// "Pointer '/$defs/…' does not exist" once wrapped in the tool-call schema).
#[tokio::test]
async fn a_tool_schema_with_defs_and_refs_is_served() {
    let base = start().await;
    let parameters = json!({
        "type": "object",
        "$defs": {"unit": {"enum": ["celsius", "fahrenheit"]}},
        "properties": {"city": {"type": "string", "maxLength": 24}, "unit": {"$ref": "#/$defs/unit"}},
        "required": ["city", "unit"], "additionalProperties": false});
    for tools in [
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": parameters}}]),
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": parameters}},
               {"type": "function", "function": {"name": "get_time", "parameters": parameters}}]),
    ] {
        let (status, body) = post(
            &base,
            json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                   "tools": tools, "tool_choice": "required", "max_tokens": 60, "temperature": 0}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let call = &body["choices"][0]["message"]["tool_calls"][0];
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(
            ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()),
            "{args}"
        );
    }
}

/// Every error status has an OpenAI-style JSON body: a body over the limit (413), a wrong method
/// (405, with `Allow`), an unknown path (404).
#[tokio::test]
async fn every_error_status_has_an_openai_error_body() {
    let base = start().await;
    let client = reqwest::Client::new();
    let check = |resp: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(resp.status().as_u16(), status);
        let allow = resp.headers().get("allow").cloned();
        let body: Value = resp.json().await.expect("a JSON error body");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{body}"
        );
        allow
    };
    let big = format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "x".repeat(8 << 20)
    );
    let resp = client
        .post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    check(resp, 413, "request_too_large").await;
    let resp = client
        .get(format!("{base}/chat/completions"))
        .send()
        .await
        .unwrap();
    let allow = check(resp, 405, "method_not_allowed").await;
    assert_eq!(allow.unwrap(), "POST");
    let resp = client.get(format!("{base}/nowhere")).send().await.unwrap();
    check(resp, 404, "unknown_url").await;
}

/// `n` and `n` × `max_tokens` are capped: a 400 naming the limit, nothing generated.
#[tokio::test]
async fn n_and_total_tokens_are_capped() {
    let base = start().await;
    let started = std::time::Instant::now();
    let (status, body) = post(
        &base,
        json!({"messages": [{"role": "user", "content": "x"}], "n": 1000}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "n");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 16"),
        "{body}"
    );
    let (status, body) = post(
        &base,
        json!({"messages": [{"role": "user", "content": "x"}], "n": 8, "max_tokens": 10000}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "max_tokens");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// `stream: true`: a role chunk, content token by token (the first piece long before the
/// last), the text and usage of the same request unstreamed, `finish_reason`, a usage chunk,
/// `[DONE]`.
#[tokio::test]
async fn streams_chunks_token_by_token() {
    let base = start().await;
    let ask = json!({"messages": [{"role": "user", "content": "Tell me a story about a cat."}],
                     "max_tokens": 64, "temperature": 0});
    let (status, whole) = post(&base, ask.clone()).await;
    assert_eq!(status, 200, "{whole}");
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = stream(&base, streamed).await;
    let (_, first) = &events[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(
        events
            .iter()
            .all(|(_, e)| e == "[DONE]" || e["id"] == first["id"])
    );
    let content: Vec<(Duration, &str)> = events
        .iter()
        .filter_map(|(t, e)| Some((*t, e["choices"][0]["delta"]["content"].as_str()?)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let text: String = content.iter().map(|(_, c)| *c).collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(content.len() > 10, "{} content chunks", content.len());
    // Sent as generated: the first piece comes in the first half of the reply's time.
    let done = events.last().unwrap().0;
    assert!(
        content[0].0 < done / 2,
        "first content at {:?} of {done:?}",
        content[0].0
    );
    let finish = choices(&events).last().unwrap()["finish_reason"].clone();
    assert_eq!(finish, whole["choices"][0]["finish_reason"]);
    let n = events.len();
    assert_eq!(events[n - 1].1, "[DONE]");
    let usage = &events[n - 2].1;
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert_eq!(usage["usage"], whole["usage"]);
    assert!(events[..n - 2].iter().all(|(_, e)| e["usage"].is_null()));
}

/// A streamed tool call: an id and name, then arguments, `finish_reason: tool_calls`; with
/// `n: 2` each choice gets its role and its end.
#[tokio::test]
async fn streams_tool_call_deltas_for_every_choice() {
    let base = start().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                       "required": ["city"], "additionalProperties": false}}}]);
    let events = stream(
        &base,
        json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
               "tools": tools, "tool_choice": "required", "max_tokens": 40, "temperature": 0,
               "n": 2, "stream": true}),
    )
    .await;
    for index in [0, 1] {
        let mine: Vec<&Value> = choices(&events)
            .into_iter()
            .filter(|c| c["index"] == index)
            .collect();
        assert_eq!(mine[0]["delta"]["role"], "assistant");
        let calls: Vec<&Value> = mine
            .iter()
            .filter_map(|c| c["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(calls[0]["index"], 0);
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert!(calls[0]["id"].as_str().is_some_and(|id| !id.is_empty()));
        let args: String = calls
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        let args: Value = serde_json::from_str(&args).unwrap();
        assert!(args["city"].is_string(), "{args}");
        assert_eq!(mine.last().unwrap()["finish_reason"], "tool_calls");
    }
    assert_eq!(events.last().unwrap().1, "[DONE]");
}

/// An error once the stream has started is an error event, then the end: the client is not
/// left waiting. (A request longer than the context is refused by the engine thread.)
#[tokio::test]
async fn an_error_after_the_stream_started_ends_it() {
    let base = start().await;
    let events = stream(
        &base,
        json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5000,
               "stream": true}),
    )
    .await;
    let error = events
        .iter()
        .find_map(|(_, e)| e.get("error"))
        .expect("an error event");
    assert!(
        error["message"].as_str().unwrap().contains("context size"),
        "{error}"
    );
    assert_eq!(events.last().unwrap().1, "[DONE]");
}

/// A request that cannot start is still a plain 400, streamed or not; and a model that is not
/// the engine streams its reply in one piece after generation.
#[tokio::test]
async fn streaming_from_any_chat_model_and_early_errors() {
    let base = start().await;
    let (status, body) = post(
        &base,
        json!({"messages": [{"role": "user", "content": "x"}], "stream": true,
               "tools": [{"type": "function", "function": {"name": "f"}}],
               "tool_choice": {"type": "function", "function": {"name": "g"}}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "tool_choice");
    let base = start_generic().await;
    let events = stream(
        &base,
        json!({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12,
               "temperature": 0, "stream": true}),
    )
    .await;
    let content: Vec<&Value> = choices(&events)
        .into_iter()
        .filter(|c| {
            c["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .collect();
    assert_eq!(content.len(), 1, "{events:?}");
    assert!(choices(&events).last().unwrap()["finish_reason"].is_string());
    assert_eq!(events.last().unwrap().1, "[DONE]");
}
