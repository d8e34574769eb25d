//! `stream: true`: a reply as Server-Sent Events of OpenAI `chat.completion.chunk`s.
//!
//! The first chunk of each choice carries the role; content follows as the engine produces it
//! ([`crate::engine::DeltaSink`]); when a choice may be a tool call (tools offered, not
//! `tool_choice: "none"`), text that may begin a call (a leading `{`, a `<tool_call>` tag) is
//! held back until the reply ends, then sent as tool-call deltas (id and name, then the
//! arguments in one piece). Each choice ends with a chunk carrying its `finish_reason`; with
//! `stream_options.include_usage` a chunk with no choices and the token counts follows; the
//! stream ends with `data: [DONE]`. An error after the stream started is sent as an event with
//! an OpenAI error body (clients raise it), then `[DONE]`, so no client waits on a dead stream.

use crate::Engine;
use crate::model::uses_tools;
use crate::openai::{ChunkHead, delta_chunk, error_json, tool_call_deltas, usage_chunk};
use crate::server::{llm_error, llm_error_parts};
use autosafe_llm::{CallContext, ChatModel, ChatReply, ChatRequest, Choice, LlmError};
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The rest of a streamed reply: resolves to the whole reply once generation ends.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Result<ChatReply, LlmError>> + Send>>;

/// A model whose reply text can be sent while it is generated.
pub trait StreamingModel: Send + Sync {
    /// Checks and starts `request`; its choices' text goes to `deltas` as `(index, text)` while
    /// generated (a model may send nothing there and give everything in the reply). An error
    /// here comes before any output.
    fn start_stream(
        &self,
        request: &ChatRequest,
        deltas: mpsc::UnboundedSender<(u32, String)>,
    ) -> Result<ReplyFuture, LlmError>;
}

impl StreamingModel for Engine {
    fn start_stream(
        &self,
        request: &ChatRequest,
        deltas: mpsc::UnboundedSender<(u32, String)>,
    ) -> Result<ReplyFuture, LlmError> {
        let pending = self.start(request, Some(&deltas))?;
        Ok(Box::pin(async move {
            pending.finish().await.map_err(LlmError::from)
        }))
    }
}

/// Any [`ChatModel`] streamed the only way it can be: the whole reply once it is generated.
pub(crate) struct Buffered(pub Arc<dyn ChatModel>);

impl StreamingModel for Buffered {
    fn start_stream(
        &self,
        request: &ChatRequest,
        _deltas: mpsc::UnboundedSender<(u32, String)>,
    ) -> Result<ReplyFuture, LlmError> {
        let model = Arc::clone(&self.0);
        let request = request.clone();
        Ok(Box::pin(async move {
            model.chat(&request, &CallContext::stage("serve")).await
        }))
    }
}

/// Starts `request` and answers with its event stream (or an error response when it cannot be
/// started).
pub(crate) fn respond(
    model: &dyn StreamingModel,
    request: &ChatRequest,
    head: ChunkHead,
) -> Response {
    let (delta_tx, delta_rx) = mpsc::unbounded_channel();
    let reply = match model.start_stream(request, delta_tx) {
        Ok(f) => f,
        Err(e) => return llm_error(e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let texts = (0..request.n.unwrap_or(1).max(1))
        .map(|_| ChoiceText::new(uses_tools(request)))
        .collect();
    tokio::spawn(pump(
        Pump {
            head,
            out: tx,
            texts,
        },
        reply,
        delta_rx,
    ));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// One choice's text so far, and how much of it went out as content.
struct ChoiceText {
    raw: String,
    sent: usize,
    /// The reply may be a tool call: hold back what may start one.
    tools: bool,
    /// A call may have started: nothing more goes out before the reply ends.
    held: bool,
}

const CALL_TAG: &str = "<tool_call>";

impl ChoiceText {
    fn new(tools: bool) -> Self {
        ChoiceText {
            raw: String::new(),
            sent: 0,
            tools,
            held: false,
        }
    }

    /// Adds generated text; the content that can go out now, if any.
    fn push(&mut self, text: &str) -> Option<String> {
        self.raw.push_str(text);
        if self.held {
            return None;
        }
        let end = if self.tools {
            let start = self.raw.trim_start();
            if start.is_empty() {
                return None;
            }
            if start.starts_with('{') {
                self.held = true;
                return None;
            }
            match self.raw.find(CALL_TAG) {
                Some(at) => {
                    self.held = true;
                    at
                }
                None => self.raw.len() - partial_tag(&self.raw),
            }
        } else {
            self.raw.len()
        };
        (end > self.sent).then(|| {
            let piece = self.raw[self.sent..end].to_string();
            self.sent = end;
            piece
        })
    }

    /// The deltas that finish this choice: content not sent yet, then its tool calls.
    fn finish(&self, choice: &Choice) -> Vec<Value> {
        let sent = &self.raw[..self.sent];
        let content = choice.content.as_deref().unwrap_or("");
        let rest = if choice.tool_calls.is_empty() || self.sent == 0 {
            content.strip_prefix(sent).unwrap_or("")
        } else {
            ""
        };
        let mut deltas = Vec::new();
        if !rest.is_empty() {
            deltas.push(json!({"content": rest}));
        }
        deltas.extend(tool_call_deltas(&choice.tool_calls));
        deltas
    }
}

/// The length of the longest end of `text` that begins [`CALL_TAG`] (the tag may be arriving).
fn partial_tag(text: &str) -> usize {
    (1..CALL_TAG.len())
        .rev()
        .find(|&k| text.ends_with(&CALL_TAG[..k]))
        .unwrap_or(0)
}

struct Pump {
    head: ChunkHead,
    out: mpsc::Sender<Bytes>,
    texts: Vec<ChoiceText>,
}

impl Pump {
    /// Sends one event; false when the client has gone.
    async fn send(&self, data: &Value) -> bool {
        self.out
            .send(Bytes::from(format!("data: {data}\n\n")))
            .await
            .is_ok()
    }

    async fn content(&mut self, index: u32, text: &str) -> bool {
        let Some(piece) = self
            .texts
            .get_mut(index as usize)
            .and_then(|c| c.push(text))
        else {
            return true;
        };
        let chunk = delta_chunk(&self.head, index, json!({"content": piece}), None);
        self.send(&chunk).await
    }

    async fn finish(&mut self, reply: &ChatReply) -> bool {
        for (i, choice) in reply.choices.iter().enumerate() {
            let index = i as u32;
            let deltas = match self.texts.get(i) {
                Some(t) => t.finish(choice),
                None => ChoiceText::new(false).finish(choice),
            };
            for delta in deltas {
                if !self
                    .send(&delta_chunk(&self.head, index, delta, None))
                    .await
                {
                    return false;
                }
            }
            let last = delta_chunk(&self.head, index, json!({}), Some(&choice.finish_reason));
            if !self.send(&last).await {
                return false;
            }
        }
        !self.head.include_usage || self.send(&usage_chunk(&self.head, &reply.usage)).await
    }
}

/// Writes the events of one reply to `pump.out` until it ends or the client goes (then the
/// reply future is dropped, which cancels the generation).
async fn pump(
    mut pump: Pump,
    mut reply: ReplyFuture,
    mut deltas: mpsc::UnboundedReceiver<(u32, String)>,
) {
    for index in 0..pump.texts.len() as u32 {
        let role = json!({"role": "assistant", "content": ""});
        if !pump.send(&delta_chunk(&pump.head, index, role, None)).await {
            return;
        }
    }
    let mut open = true;
    let out = pump.out.clone();
    let result = loop {
        tokio::select! {
            biased;
            _ = out.closed() => return,
            d = deltas.recv(), if open => match d {
                Some((i, text)) => {
                    if !pump.content(i, &text).await {
                        return;
                    }
                }
                None => open = false,
            },
            r = &mut reply => break r,
        }
    };
    while let Ok((i, text)) = deltas.try_recv() {
        if !pump.content(i, &text).await {
            return;
        }
    }
    let ok = match result {
        Ok(reply) => pump.finish(&reply).await,
        Err(e) => {
            let (_, message, kind, code) = llm_error_parts(e);
            pump.send(&error_json(&message, kind, None, code)).await
        }
    };
    if ok {
        let _ = pump.out.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_streams_and_a_tool_call_is_held_back() {
        let mut t = ChoiceText::new(true);
        assert_eq!(t.push("Let me "), Some("Let me ".into()));
        assert_eq!(t.push("check.\n<tool"), Some("check.\n".into()));
        assert_eq!(t.push("_call>{\"name\""), None);
        assert_eq!(t.push(": \"f\"}"), None);
        let mut t = ChoiceText::new(true);
        assert_eq!(t.push("  "), None);
        assert_eq!(t.push("{\"name\""), None);
        let mut t = ChoiceText::new(false);
        assert_eq!(t.push("{\"ok\""), Some("{\"ok\"".into()));
    }
}
