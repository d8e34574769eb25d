//! The provider-neutral chat types and the [`ChatModel`] trait.
//!
//! The shapes follow OpenAI's chat-completions API, so that they map one to one onto the wire
//! format and onto what OpenAI-compatible servers (vLLM, SGLang, Ollama, llama.cpp) accept.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The author of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System prompt.
    System,
    /// The user (or the harness speaking for it).
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

/// A tool call made by the assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, echoed by the tool message that answers it.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as the raw JSON text the model produced.
    pub arguments: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Text content (absent for assistant messages that only call tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For tool messages: the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Optional author name (tool name for tool messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    fn text(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }
    /// An assistant text message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }
    /// A tool result answering `call_id`.
    pub fn tool(
        call_id: impl Into<String>,
        name: impl Into<String>,
        content: impl Into<String>,
    ) -> Self {
        Message {
            role: Role::Tool,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
            name: Some(name.into()),
        }
    }
}

/// A function the model may call (OpenAI `tools[].function`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Function name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// Some tool call is required.
    Required,
    /// This function must be called.
    Function(String),
}

/// A JSON-schema response format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// Schema name (OpenAI requires one).
    pub name: String,
    /// The JSON Schema the reply must satisfy.
    pub schema: Value,
    /// Ask the server for strict adherence where supported.
    #[serde(default)]
    pub strict: bool,
}

/// The format the reply must take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid under a schema.
    JsonSchema(JsonSchemaFormat),
}

/// A chat-completion request. Everything in it (but nothing else) enters the cache key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Tool choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Reply format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Maximum tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Number of choices wanted (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// `Some(false)`: at most one tool call per reply (sent to servers; the embedded engine stops
    /// generating after the first complete call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The reply ends right after the first complete JSON value that follows this marker
    /// (a ReAct step ends with its `Action Input`): the embedded engine stops generating there
    /// ([`crate::text::end_after_json`]); a server never sees it, and the caller cuts the reply
    /// at the same point, so text after the step is never part of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_after_json: Option<String>,
    /// Which sample of the same work this is; separates cache entries, never sent to a server.
    #[serde(default)]
    pub sample_index: u32,
}

impl ChatRequest {
    /// A request with these messages and default sampling.
    pub fn new(messages: Vec<Message>) -> Self {
        ChatRequest {
            messages,
            ..Default::default()
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end or stop string.
    Stop,
    /// Token budget reached: the reply is cut and is not a result.
    Length,
    /// The model called tools.
    ToolCalls,
    /// Filtered by the provider.
    ContentFilter,
    /// Anything else the server said.
    #[serde(untagged)]
    Other(String),
}

/// One choice of a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Text content.
    #[serde(default)]
    pub content: Option<String>,
    /// Tool calls.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}

/// Token usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
}

/// A chat-completion reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    /// The model that answered, as the server named it.
    pub model: String,
    /// The choices (n of them).
    pub choices: Vec<Choice>,
    /// Token usage.
    pub usage: Usage,
    /// True when served from the cache without a request.
    #[serde(default)]
    pub cached: bool,
}

impl ChatReply {
    /// The first choice's text, or the empty string.
    pub fn text(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.content.as_deref())
            .unwrap_or("")
    }
}

/// Per-call context that is not part of the request: which stage asked, for usage accounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// Stage label, e.g. `synthesize`, `judge`.
    pub stage: String,
}

impl CallContext {
    /// A context for this stage label.
    pub fn stage(stage: impl Into<String>) -> Self {
        CallContext {
            stage: stage.into(),
        }
    }
}

/// Errors of model access.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// The server answered with an HTTP error status that is not retried (or retries ran out).
    #[error("HTTP {status} from {endpoint}: {body}")]
    Http {
        /// Status code.
        status: u16,
        /// Which endpoint (base URL without credentials).
        endpoint: String,
        /// Response body, truncated.
        body: String,
    },
    /// Connecting, reading or timing out failed after retries.
    #[error("transport error talking to {endpoint}: {message}")]
    Transport {
        /// Which endpoint.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The reply could not be parsed or did not satisfy the requested schema, after retries.
    #[error("invalid reply: {message}")]
    InvalidReply {
        /// What is wrong with it.
        message: String,
        /// The raw text the model produced.
        raw: String,
    },
    /// A model spec or option is wrong.
    #[error("configuration error: {0}")]
    Config(String),
    /// The local engine failed (model file missing or corrupt, decoding error).
    #[error("engine error: {0}")]
    Engine(String),
    /// The cache store failed.
    #[error("cache error: {0}")]
    Cache(String),
}

/// Anything that answers chat requests: a remote server pool, the embedded engine, a cache
/// around either.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    /// The configured model name (as used in cache keys and reports).
    fn name(&self) -> &str;

    /// Answers one request.
    async fn chat(&self, request: &ChatRequest, ctx: &CallContext) -> Result<ChatReply, LlmError>;
}
