//! An OpenAI-compatible HTTP server over any [`ChatModel`]: `POST /v1/chat/completions`
//! (tools, `tool_choice`, `response_format` text/json_object/json_schema, `n`, `seed`, `stop`)
//! and `GET /v1/models`. Every error status gets an OpenAI-style error body
//! (`{"error": {"message", "type", "param", "code"}}`), also the ones axum writes itself (413
//! body too large, 405 wrong method: plain text or nothing before). `stream: true` is answered
//! with Server-Sent Events of `chat.completion.chunk`s ([`crate::stream`]): token by token when
//! the model is an [`Engine`] ([`engine_router`]), in one piece after generation for any other
//! `ChatModel` ([`router`]). `n` and `n` × `max_tokens` are capped ([`crate::openai::MAX_N`],
//! [`crate::openai::MAX_TOTAL_TOKENS`]).

use crate::Engine;
use crate::openai::{ChunkHead, error_json, parse_request, reply_json};
use crate::stream::{Buffered, StreamingModel};
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
    streaming: Arc<dyn StreamingModel>,
    counter: AtomicU64,
}

/// The routes, serving `model`; a streamed reply comes in one piece once it is generated.
pub fn router(model: Arc<dyn ChatModel>) -> Router {
    let streaming = Arc::new(Buffered(Arc::clone(&model)));
    routes(model, streaming)
}

/// The routes, serving `engine`; a streamed reply comes token by token.
pub fn engine_router(engine: Arc<Engine>) -> Router {
    let streaming: Arc<dyn StreamingModel> = engine.clone();
    routes(engine, streaming)
}

fn routes(model: Arc<dyn ChatModel>, streaming: Arc<dyn StreamingModel>) -> Router {
    let state = Arc::new(AppState {
        model,
        streaming,
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

/// Serves `engine` on `listener` until the process ends, streaming token by token.
pub async fn serve_engine(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
) -> std::io::Result<()> {
    axum::serve(listener, engine_router(engine)).await
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
    let parsed = match parse_request(&body) {
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
    let next_id = || {
        let n = state.counter.fetch_add(1, Ordering::Relaxed);
        format!("chatcmpl-{:x}-{n}", now())
    };
    if parsed.stream {
        let head = ChunkHead {
            id: next_id(),
            created: now(),
            model: state.model.name().to_string(),
            include_usage: parsed.include_usage,
        };
        return crate::stream::respond(state.streaming.as_ref(), &parsed.request, head);
    }
    match state
        .model
        .chat(&parsed.request, &CallContext::stage("serve"))
        .await
    {
        Ok(reply) => axum::Json(reply_json(&reply, &next_id(), now())).into_response(),
        Err(e) => llm_error(e),
    }
}

/// How a model's error is reported: status, message, OpenAI `type` and `code`.
pub(crate) fn llm_error_parts(
    e: LlmError,
) -> (StatusCode, String, &'static str, Option<&'static str>) {
    match e {
        LlmError::Config(msg) => (StatusCode::BAD_REQUEST, msg, "invalid_request_error", None),
        LlmError::InvalidReply { message, .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
            "server_error",
            Some("invalid_reply"),
        ),
        e => (
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
            "server_error",
            None,
        ),
    }
}

/// A model's error as an OpenAI-style error response.
pub(crate) fn llm_error(e: LlmError) -> Response {
    let (status, message, kind, code) = llm_error_parts(e);
    error(status, &message, kind, None, code)
}
