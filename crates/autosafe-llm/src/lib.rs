//! Model access for AutoSafe.
//!
//! Every stage talks to models only through the [`ChatModel`] trait defined here. Providers
//! (the OpenAI-compatible HTTP client [`OpenAiClient`], the embedded GGUF engine in `autosafe-engine`)
//! implement it; layers wrap any provider the same way:
//!
//! - [`Metered`] records requests, tokens and errors in a shared [`UsageLedger`];
//! - [`Cached`] answers repeated requests from an SQLite [`Cache`] and sends identical in-flight
//!   requests once;
//! - [`Structured`] validates JSON-schema replies and tool-call arguments, re-asking with the error;
//! - [`SplitN`] turns `n > 1` into n single calls with derived seeds.
//!
//! [`build_remote`] assembles the stack for a [`ModelSpec`]; [`wrap_model`] does the same for an
//! externally built model.
//!
//! [`Prompts`] is the prompt set every role renders (the emulator's included): the embedded
//! `prompts/` files, a `--prompts` directory's overrides, their hashes and the minijinja setup.
//! It lives here, below the environments and the stages, so that one set serves them all; what
//! the templates say is theirs. Apart from that text this crate knows nothing about safety.

pub mod aimd;
pub mod budget;
pub mod cache;
pub mod canonical;
pub mod client;
pub mod pool;
pub mod prompts;
pub mod redact;
pub mod retry;
pub mod seeds;
pub mod spec;
pub mod split_n;
pub mod stack;
pub mod structured;
pub mod text;
pub mod transient;
pub mod types;
pub mod usage;
mod wire;

pub use cache::{Cache, Cached};
pub use canonical::{cache_key, canonical_json};
pub use client::{ClientOptions, OpenAiClient};
pub use prompts::{PromptError, Prompts};
pub use spec::{ModelSpec, Price, ProviderKind};
pub use split_n::SplitN;
pub use stack::{StackOptions, build_remote, build_remote_with, wrap_model};
pub use structured::Structured;
pub use transient::{Transient, watch};
pub use types::{
    CallContext, ChatModel, ChatReply, ChatRequest, Choice, FinishReason, JsonSchemaFormat,
    LlmError, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolSpec, Usage,
};
pub use usage::{Metered, UsageLedger, UsageReport, UsageStats};
