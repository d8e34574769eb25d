//! `autosafe serve`'s server: a real HTTP client talks OpenAI format to the embedded model on
//! loopback.

mod common;

use autosafe_llm::ChatModel;
use serde_json::{Value, json};
use std::sync::Arc;

async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let model: Arc<dyn ChatModel> = common::engine();
    tokio::spawn(autosafe_engine::server::serve(listener, model));
    format!("http://{addr}/v1")
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
