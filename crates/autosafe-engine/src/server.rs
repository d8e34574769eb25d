//! An OpenAI-compatible HTTP server over any [`ChatModel`]: `POST /v1/chat/completions`
//! (tools, `tool_choice`, `response_format` text/json_object/json_schema, `n`, `seed`, `stop`)
//! and `GET /v1/models`. Bad requests get OpenAI-style error bodies
//! (`{"error": {"message", "type", "param", "code"}}`). Streaming is not offered: a request with
//! `stream: true` is refused with a 400 error rather than answered in another shape.

use crate::openai::{error_json, parse_request, reply_json};
use autosafe_llm::{CallContext, ChatModel, LlmError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

struct AppState {
    model: Arc<dyn ChatModel>,
    counter: AtomicU64,
}

/// The routes, serving `model`.
pub fn router(model: Arc<dyn ChatModel>) -> Router {
    let state = Arc::new(AppState {
        model,
        counter: AtomicU64::new(0),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .fallback(not_found)
        .with_state(state)
}

/// Serves `model` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    model: Arc<dyn ChatModel>,
) -> std::io::Result<()> {
    axum::serve(listener, router(model)).await
}

fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    (status, axum::Json(error_json(message, kind, param, code))).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown endpoint",
        "invalid_request_error",
        None,
        Some("unknown_url"),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn models(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": state.model.name(), "object": "model", "created": 0, "owned_by": "autosafe"}]
    }))
}

async fn chat(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &e.message,
                "invalid_request_error",
                e.param.as_deref(),
                None,
            );
        }
    };
    match state
        .model
        .chat(&request, &CallContext::stage("serve"))
        .await
    {
        Ok(reply) => {
            let n = state.counter.fetch_add(1, Ordering::Relaxed);
            let id = format!("chatcmpl-{:x}-{n}", now());
            axum::Json(reply_json(&reply, &id, now())).into_response()
        }
        Err(LlmError::Config(msg)) => error(
            StatusCode::BAD_REQUEST,
            &msg,
            "invalid_request_error",
            None,
            None,
        ),
        Err(LlmError::InvalidReply { message, .. }) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &message,
            "server_error",
            None,
            Some("invalid_reply"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
            "server_error",
            None,
            None,
        ),
    }
}
