//! Model access for AutoSafe.
//!
//! Every stage talks to models only through the [`ChatModel`] trait defined here. Providers
//! (the OpenAI-compatible HTTP client, the embedded GGUF engine in `autosafe-engine`) implement it;
//! this crate knows nothing about safety.

pub mod types;

pub use types::{
    CallContext, ChatModel, ChatReply, ChatRequest, Choice, FinishReason, JsonSchemaFormat, LlmError, Message,
    ResponseFormat, Role, ToolCall, ToolChoice, ToolSpec, Usage,
};
