//! Model specs: how a named model is reached, from a config file (TOML/JSON via serde) or a
//! compact CLI string.
//!
//! CLI forms: `openai:MODEL` (OpenAI itself, or `$OPENAI_BASE_URL` when set, key from
//! `$OPENAI_API_KEY`), `openai:MODEL@URL[,URL...]` (any OpenAI-compatible servers; a pool when
//! several; no key unless configured), `local:ALIAS` or `local:/path/model.gguf` (the embedded
//! engine, built by the binary through the engine crate).

use crate::types::LlmError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;

/// Which kind of backend serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible chat-completions server (vLLM, SGLang, Ollama, llama.cpp, OpenAI).
    #[default]
    Openai,
    /// The embedded GGUF engine; `model` is a GGUF path or an alias.
    Local,
}

/// Prices in US dollars per million tokens, for cost accounting.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Dollars per million prompt tokens.
    #[serde(default)]
    pub prompt_per_mtok: f64,
    /// Dollars per million completion tokens.
    #[serde(default)]
    pub completion_per_mtok: f64,
}

/// The base URL used for `openai:MODEL` without `@URL` when `$OPENAI_BASE_URL` is not set.
pub(crate) const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A named model: provider kind, where it is served, and client options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The configured name (cache keys and reports use it). Empty means "use `model`".
    #[serde(default)]
    pub name: String,
    /// Provider kind.
    #[serde(default)]
    pub provider: ProviderKind,
    /// Model name sent to the server, or the GGUF path/alias for `local`.
    pub model: String,
    /// Base URLs (each ending before `/chat/completions`); several form a balanced pool.
    #[serde(default)]
    pub base_urls: Vec<String>,
    /// Name of the environment variable holding the API key (keys are never written in config).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Connect timeout in seconds.
    #[serde(default = "defaults::connect_timeout_s")]
    pub connect_timeout_s: f64,
    /// Whole-request timeout in seconds (one attempt).
    #[serde(default = "defaults::request_timeout_s")]
    pub request_timeout_s: f64,
    /// Most requests in flight per endpoint (the AIMD ceiling).
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Attempts per request, the first included.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Optional requests-per-minute budget over all endpoints.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Optional tokens-per-minute budget (prompt estimate + max_tokens).
    #[serde(default)]
    pub tpm: Option<u32>,
    /// Optional price table entry.
    #[serde(default)]
    pub price: Option<Price>,
    /// Whether the server honours `n > 1` (llama.cpp's server and Ollama do not).
    #[serde(default = "defaults::yes")]
    pub supports_n: bool,
    /// Whether to send `response_format` (the reply is validated client-side either way).
    #[serde(default = "defaults::yes")]
    pub supports_response_format: bool,
    /// Whether the server honours `tool_choice: "required"`. llama-cpp-python's server ignores
    /// it (and `auto`): it answers in text unless one function is named. When false, a request
    /// that requires a call of its only tool names that tool (so the server constrains the call
    /// to its parameters); with several tools it is sent as `auto`, and a reply without a call is
    /// still invalid here.
    #[serde(default = "defaults::yes")]
    pub supports_tool_choice_required: bool,
    /// Extra body fields merged into every request (e.g. `chat_template_kwargs`).
    #[serde(default)]
    pub extra: Map<String, Value>,
}

mod defaults {
    pub(crate) fn connect_timeout_s() -> f64 {
        10.0
    }
    pub fn request_timeout_s() -> f64 {
        600.0
    }
    pub fn max_concurrency() -> usize {
        64
    }
    pub fn max_attempts() -> u32 {
        8
    }
    pub fn yes() -> bool {
        true
    }
}

impl ModelSpec {
    /// A spec with defaults for this provider and model.
    pub fn new(provider: ProviderKind, model: impl Into<String>) -> ModelSpec {
        ModelSpec {
            name: String::new(),
            provider,
            model: model.into(),
            base_urls: Vec::new(),
            api_key_env: None,
            connect_timeout_s: defaults::connect_timeout_s(),
            request_timeout_s: defaults::request_timeout_s(),
            max_concurrency: defaults::max_concurrency(),
            max_attempts: defaults::max_attempts(),
            rpm: None,
            tpm: None,
            price: None,
            supports_n: true,
            supports_response_format: true,
            supports_tool_choice_required: true,
            extra: Map::new(),
        }
    }

    /// An OpenAI-compatible model served at these base URLs.
    pub fn openai(model: impl Into<String>, base_urls: Vec<String>) -> ModelSpec {
        ModelSpec {
            base_urls,
            ..ModelSpec::new(ProviderKind::Openai, model)
        }
    }

    /// The name used in cache keys and reports: `name`, or `model` when `name` is empty.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.model
        } else {
            &self.name
        }
    }

    /// Parses the compact CLI form (see the module docs).
    pub fn parse(s: &str) -> Result<ModelSpec, LlmError> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| {
            LlmError::Config(format!(
                "model spec {s:?}: expected KIND:MODEL, e.g. openai:gpt-4o-mini"
            ))
        })?;
        match kind {
            "openai" => {
                let (model, urls) = match rest.split_once('@') {
                    Some((m, urls)) => {
                        let urls: Vec<String> = urls
                            .split(',')
                            .map(|u| u.trim().trim_end_matches('/').to_string())
                            .collect();
                        if urls
                            .iter()
                            .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
                        {
                            return Err(LlmError::Config(format!(
                                "model spec {s:?}: base URLs must start with http:// or https://"
                            )));
                        }
                        (m, urls)
                    }
                    None => (rest, Vec::new()),
                };
                if model.is_empty() {
                    return Err(LlmError::Config(format!(
                        "model spec {s:?}: empty model name"
                    )));
                }
                let mut spec = ModelSpec::openai(model, urls);
                if spec.base_urls.is_empty() {
                    let url = std::env::var("OPENAI_BASE_URL")
                        .unwrap_or_else(|_| OPENAI_DEFAULT_BASE_URL.to_string());
                    spec.base_urls = vec![url.trim_end_matches('/').to_string()];
                    spec.api_key_env = Some("OPENAI_API_KEY".into());
                }
                Ok(spec)
            }
            "local" => {
                if rest.is_empty() {
                    return Err(LlmError::Config(format!(
                        "model spec {s:?}: expected local:ALIAS or local:PATH.gguf"
                    )));
                }
                Ok(ModelSpec::new(ProviderKind::Local, rest))
            }
            other => Err(LlmError::Config(format!(
                "model spec {s:?}: unknown provider kind {other:?} (expected `openai` or `local`)"
            ))),
        }
    }

    /// Checks the options make sense; the error names the offending field.
    pub fn validate(&self) -> Result<(), LlmError> {
        let bad = |field: &str, why: &str| {
            Err(LlmError::Config(format!(
                "model {}: field `{field}` {why}",
                self.display_name()
            )))
        };
        if self.model.is_empty() {
            return bad("model", "is empty");
        }
        if self.provider == ProviderKind::Openai && self.base_urls.is_empty() {
            return bad("base_urls", "is empty");
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        // Finite as well: an infinite timeout panics where it becomes a `Duration`.
        let seconds = |t: f64| t.is_finite() && t > 0.0;
        if !seconds(self.connect_timeout_s) {
            return bad(
                "connect_timeout_s",
                "must be a finite number of seconds above 0",
            );
        }
        if !seconds(self.request_timeout_s) {
            return bad(
                "request_timeout_s",
                "must be a finite number of seconds above 0",
            );
        }
        if let Some(p) = self.price {
            let dollars = |d: f64| d.is_finite() && d >= 0.0;
            if !(dollars(p.prompt_per_mtok) && dollars(p.completion_per_mtok)) {
                return bad(
                    "price",
                    "must be finite, 0 or more dollars per million tokens",
                );
            }
        }
        if self.rpm == Some(0) || self.tpm == Some(0) {
            return bad("rpm/tpm", "must be positive when set");
        }
        Ok(())
    }
}

impl FromStr for ModelSpec {
    type Err = LlmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelSpec::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compact_forms() {
        let s =
            ModelSpec::parse("openai:qwen2.5-7b@http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1/")
                .unwrap();
        assert_eq!(s.model, "qwen2.5-7b");
        assert_eq!(
            s.base_urls,
            vec!["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
        );
        assert_eq!(s.api_key_env, None);
        let s = ModelSpec::parse("openai:gpt-4o-mini").unwrap();
        assert_eq!(s.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        assert_eq!(s.base_urls.len(), 1);
        let l = ModelSpec::parse("local:/models/x.gguf").unwrap();
        assert_eq!(
            (l.provider, l.model.as_str()),
            (ProviderKind::Local, "/models/x.gguf")
        );
        assert!(ModelSpec::parse("smollm2").is_err());
        assert!(
            ModelSpec::parse("vllm:x")
                .unwrap_err()
                .to_string()
                .contains("unknown provider kind")
        );
        assert!(ModelSpec::parse("openai:m@ftp://x").is_err());
    }

    #[test]
    fn toml_form_with_defaults_and_unknown_field_error() {
        let s: ModelSpec = toml_like(
            r#"{"model": "m", "base_urls": ["http://h/v1"], "rpm": 60, "price": {"prompt_per_mtok": 1.0}}"#,
        );
        assert_eq!(s.max_concurrency, 64);
        assert_eq!(s.rpm, Some(60));
        assert!(s.validate().is_ok());
        let err =
            serde_json::from_str::<ModelSpec>(r#"{"model": "m", "api_key": "sk-x"}"#).unwrap_err();
        assert!(err.to_string().contains("api_key"), "{err}");
    }

    fn toml_like(json: &str) -> ModelSpec {
        serde_json::from_str(json).unwrap()
    }
}
