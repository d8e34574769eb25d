//! Scripted replies and how they are rendered as HTTP responses.

use crate::{RequestInfo, ServerConfig};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use std::time::Duration;

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A normal completion with this content (`finish_reason: stop`).
    Text(String),
    /// A completion whose content was cut by the token budget (`finish_reason: length`).
    Cut(String),
    /// A completion calling these tools: `(function name, arguments JSON text)`.
    ToolCalls(Vec<(String, String)>),
    /// This exact JSON body with status 200.
    Body(Value),
    /// An HTTP error status, with an optional `Retry-After` header value.
    Status {
        /// Status code.
        status: u16,
        /// `Retry-After` header value (seconds or an HTTP date).
        retry_after: Option<String>,
        /// Body text.
        body: String,
    },
    /// Status 200 with this body, which is not valid JSON.
    Malformed(String),
    /// The connection is dropped before the body completes.
    Drop,
    /// The inner reply's body is sent in `chunks` pieces with `chunk_delay` between them.
    Slow {
        /// What to send.
        reply: Box<Reply>,
        /// Number of pieces.
        chunks: usize,
        /// Pause between pieces.
        chunk_delay: Duration,
    },
    /// The default echo reply (`echo: <last user message>`, `n` choices).
    Default,
}

impl Reply {
    /// A text completion.
    pub fn text(content: impl Into<String>) -> Reply {
        Reply::Text(content.into())
    }

    /// One tool call.
    pub fn tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Reply {
        Reply::ToolCalls(vec![(name.into(), arguments.into())])
    }

    /// An HTTP error status with an OpenAI-style error body.
    pub fn status(status: u16) -> Reply {
        let body = json!({"error": {"message": format!("scripted status {status}"), "type": "scripted", "code": status}});
        Reply::Status {
            status,
            retry_after: None,
            body: body.to_string(),
        }
    }

    /// Adds a `Retry-After` header value to a [`Reply::Status`]; other replies are unchanged.
    pub fn retry_after(self, value: impl Into<String>) -> Reply {
        match self {
            Reply::Status { status, body, .. } => Reply::Status {
                status,
                retry_after: Some(value.into()),
                body,
            },
            other => other,
        }
    }

    /// A short label for the log.
    pub(crate) fn kind(&self) -> String {
        match self {
            Reply::Text(_) => "text".into(),
            Reply::Cut(_) => "length".into(),
            Reply::ToolCalls(_) => "tool_calls".into(),
            Reply::Body(_) => "body".into(),
            Reply::Status { status, .. } => format!("status:{status}"),
            Reply::Malformed(_) => "malformed".into(),
            Reply::Drop => "drop".into(),
            Reply::Slow { reply, .. } => format!("slow:{}", reply.kind()),
            Reply::Default => "default".into(),
        }
    }
}

/// A JSON response with this status.
pub(crate) fn json_response(status: u16, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn approx_tokens(s: &str) -> u64 {
    (s.len() as u64).div_ceil(4).max(1)
}

fn prompt_tokens(body: &Value) -> u64 {
    let mut n = 0;
    if let Some(msgs) = body.get("messages").and_then(Value::as_array) {
        for m in msgs {
            n += m
                .get("content")
                .and_then(Value::as_str)
                .map(approx_tokens)
                .unwrap_or(1)
                + 3;
        }
    }
    n
}

fn last_user(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|msgs| {
            msgs.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content").and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

fn completion(
    info: &RequestInfo,
    cfg: &ServerConfig,
    choices: Vec<Value>,
    completion_tokens: u64,
) -> Value {
    let model = info
        .body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&cfg.model)
        .to_string();
    let prompt = prompt_tokens(&info.body);
    json!({
        "id": format!("chatcmpl-{}", info.index),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}
    })
}

fn text_choice(index: usize, content: &str, finish: &str) -> Value {
    json!({"index": index, "message": {"role": "assistant", "content": content}, "finish_reason": finish})
}

/// The JSON body of a successful reply.
fn success_body(reply: &Reply, info: &RequestInfo, cfg: &ServerConfig) -> Value {
    match reply {
        Reply::Text(t) => completion(info, cfg, vec![text_choice(0, t, "stop")], approx_tokens(t)),
        Reply::Cut(t) => completion(
            info,
            cfg,
            vec![text_choice(0, t, "length")],
            approx_tokens(t),
        ),
        Reply::ToolCalls(calls) => {
            let tool_calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| {
                    json!({"id": format!("call_{}_{i}", info.index), "type": "function",
                           "function": {"name": name, "arguments": args}})
                })
                .collect();
            let tokens = calls.iter().map(|(_, a)| approx_tokens(a)).sum();
            let choice = json!({"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": tool_calls},
                                "finish_reason": "tool_calls"});
            completion(info, cfg, vec![choice], tokens)
        }
        Reply::Body(v) => v.clone(),
        _ => {
            let n = if cfg.supports_n {
                info.body
                    .get("n")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .max(1)
            } else {
                1
            };
            let text = format!("echo: {}", last_user(&info.body));
            let choices = (0..n as usize)
                .map(|i| text_choice(i, &text, "stop"))
                .collect();
            completion(info, cfg, choices, approx_tokens(&text) * n)
        }
    }
}

/// Renders a reply as an HTTP response.
pub(crate) fn render(reply: Reply, info: &RequestInfo, cfg: &ServerConfig) -> Response {
    match reply {
        Reply::Status {
            status,
            retry_after,
            body,
        } => {
            let mut r = Response::new(Body::from(body));
            *r.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Reply::Malformed(text) => {
            let mut r = Response::new(Body::from(text));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Reply::Drop => {
            let stream = futures_util::stream::iter([
                Ok::<Bytes, std::io::Error>(Bytes::from_static(b"{\"choices\":")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "scripted drop",
                )),
            ]);
            Response::new(Body::from_stream(stream))
        }
        Reply::Slow {
            reply,
            chunks,
            chunk_delay,
        } => {
            let inner = render(*reply, info, cfg);
            let (parts, body) = inner.into_parts();
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
            tokio::spawn(async move {
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let chunks = chunks.max(1);
                let size = bytes.len().div_ceil(chunks).max(1);
                for (i, piece) in bytes.chunks(size).enumerate() {
                    if i > 0 {
                        tokio::time::sleep(chunk_delay).await;
                    }
                    if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                        return;
                    }
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|x| (x, rx))
            });
            let mut parts = parts;
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from_stream(stream))
        }
        other => json_response(200, &success_body(&other, info, cfg)),
    }
}
