//! Model stacks pointed at the scripted OpenAI-compatible server (the only test double: it
//! stands in for the remote model provider), and helpers to read the requests it gets.

use std::sync::Arc;
use std::time::Duration;

use autosafe_llm::client::ClientOptions;
use autosafe_llm::pool::PoolConfig;
use autosafe_llm::retry::Backoff;
use autosafe_llm::{ChatModel, ModelSpec, StackOptions, UsageLedger, build_remote_with};
use autosafe_scripted_server::{RequestInfo, ScriptedServer};
use serde_json::Value;

/// A model stack on the scripted server (no cache, one structured repair, fast retries).
pub fn model(server: &ScriptedServer, name: &str) -> Arc<dyn ChatModel> {
    model_at(&server.base_url(), name)
}

/// [`model`] for a server known by its base URL (e.g. one in another process).
pub fn model_at(base_url: &str, name: &str) -> Arc<dyn ChatModel> {
    let mut spec = ModelSpec::openai("scripted", vec![base_url.to_string()]);
    spec.name = name.to_string();
    spec.max_attempts = 2;
    spec.request_timeout_s = 30.0;
    let mut pool = PoolConfig::with_max(spec.max_concurrency);
    pool.cooldown = Duration::from_millis(5);
    pool.max_cooldown = Duration::from_millis(20);
    let opts = ClientOptions {
        backoff: Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        pool,
    };
    let stack = StackOptions {
        cache: None,
        ledger: UsageLedger::new(),
        max_repairs: 1,
    };
    build_remote_with(&spec, opts, &stack).unwrap().0
}

/// Every message's text, joined.
pub fn all_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["content"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The last user message's text.
pub fn last_user(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m["role"] == "user")
                .and_then(|m| m["content"].as_str())
        })
        .unwrap_or("")
        .to_string()
}

/// The text between `start` and the next `end` (or the end), empty when `start` is absent.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let Some(i) = text.find(start) else { return "" };
    let rest = &text[i + start.len()..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// The text of every request the server received under the JSON schema `name`, in order.
pub fn sent_with_schema(server: &ScriptedServer, name: &str) -> Vec<String> {
    server
        .log()
        .iter()
        .filter_map(|l| l.body.as_ref())
        .filter(|b| b["response_format"]["json_schema"]["name"] == name)
        .map(all_text)
        .collect()
}

/// The JSON schema name of a request, `None` for free text (the agent).
pub fn schema_name(info: &RequestInfo) -> Option<String> {
    info.body["response_format"]["json_schema"]["name"]
        .as_str()
        .map(str::to_string)
}
