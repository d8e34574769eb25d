//! An OpenAI-compatible HTTP server over any [`ChatModel`]: `POST /v1/chat/completions`
//! (tools, `tool_choice`, `response_format` text/json_object/json_schema, `n`, `seed`, `stop`)
//! and `GET /v1/models`. Every error status gets an OpenAI-style error body
//! (`{"error": {"message", "type", "param", "code"}}`), also the ones axum writes itself (413
//! body too large, 405 wrong method: plain text or nothing before). Streaming is not offered: a
//! request with `stream: true` is refused with a 400 error rather than answered in another
//! shape. `n` and `n` × `max_tokens` are capped ([`crate::openai::MAX_N`],
//! [`crate::openai::MAX_TOTAL_TOKENS`]).

use crate::openai::{error_json, parse_request, reply_json};
use autosafe_llm::{CallContext, ChatModel, LlmError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
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
        .layer(axum::middleware::map_response(json_errors))
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

/// Rewrites an error response that is not JSON (axum's own 413 and 405) as an OpenAI-style
/// error body, keeping its status, headers (`Allow`) and text as the message.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error");
    let message = if text.is_empty() {
        reason.to_lowercase()
    } else {
        text
    };
    let (kind, code) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", "request_too_large"),
        StatusCode::METHOD_NOT_ALLOWED => ("invalid_request_error", "method_not_allowed"),
        s if s.is_server_error() => ("server_error", "server_error"),
        _ => ("invalid_request_error", "invalid_request"),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = error(status, &message, kind, None, Some(code)).into_body();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, body)
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
