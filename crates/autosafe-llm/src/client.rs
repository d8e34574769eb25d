//! The OpenAI-compatible HTTP client: a pool of base URLs, timeouts, retries with backoff and
//! `Retry-After`, AIMD concurrency per URL, optional rpm/tpm budgets.

use crate::budget::Budget;
use crate::pool::{EndpointStatus, Pool, PoolConfig};
use crate::redact::{redact, register_secret, register_url_secrets};
use crate::retry::{Backoff, RetryCause, parse_retry_after};
use crate::spec::{ModelSpec, ProviderKind};
use crate::types::{CallContext, ChatModel, ChatReply, ChatRequest, LlmError};
use crate::usage::UsageLedger;
use crate::wire::{self, WireOptions};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client tuning beyond what a [`ModelSpec`] holds (tests shorten the waits).
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Pool and AIMD settings.
    pub pool: PoolConfig,
}

impl ClientOptions {
    /// Defaults for a spec.
    pub fn for_spec(spec: &ModelSpec) -> ClientOptions {
        ClientOptions {
            backoff: Backoff::default(),
            pool: PoolConfig::with_max(spec.max_concurrency),
        }
    }
}

/// A chat model served by OpenAI-compatible servers.
pub struct OpenAiClient {
    name: String,
    model: String,
    http: reqwest::Client,
    pool: Pool,
    chat_urls: Vec<String>,
    auth: Option<HeaderValue>,
    timeout: Duration,
    max_attempts: u32,
    backoff: Backoff,
    wire: WireOptions,
    extra: Map<String, Value>,
    budget: Budget,
    ledger: Option<Arc<UsageLedger>>,
}

enum Attempt {
    Done(ChatReply),
    Retry {
        cause: RetryCause,
        retry_after: Option<Duration>,
        error: LlmError,
    },
    Fatal(LlmError),
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// A transport failure of `endpoint` (sending, or reading the body): retried, its text redacted.
fn transport_failure(endpoint: &str, e: &reqwest::Error) -> Attempt {
    Attempt::Retry {
        cause: transport_cause(e),
        retry_after: None,
        error: LlmError::Transport {
            endpoint: endpoint.to_string(),
            message: redact(&error_chain(e)),
        },
    }
}

fn transport_cause(e: &reqwest::Error) -> RetryCause {
    if e.is_timeout() {
        RetryCause::Timeout
    } else if e.is_connect() {
        RetryCause::Connect
    } else {
        RetryCause::Dropped
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl OpenAiClient {
    /// A client for this spec with default tuning. Reads the API key from `spec.api_key_env`.
    pub fn from_spec(spec: &ModelSpec) -> Result<OpenAiClient, LlmError> {
        Self::with_options(spec, ClientOptions::for_spec(spec))
    }

    /// A client for this spec with explicit tuning.
    pub fn with_options(spec: &ModelSpec, opts: ClientOptions) -> Result<OpenAiClient, LlmError> {
        Self::with_env_lookup(spec, opts, |var| std::env::var(var).ok())
    }

    /// Like [`OpenAiClient::with_options`], reading environment variables through `env` (tests use
    /// this to supply a key without touching the process environment).
    pub fn with_env_lookup(
        spec: &ModelSpec,
        opts: ClientOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<OpenAiClient, LlmError> {
        if spec.provider != ProviderKind::Openai {
            return Err(LlmError::Config(format!(
                "model {}: provider `local` is built by the engine crate, not the HTTP client",
                spec.display_name()
            )));
        }
        spec.validate()?;
        let auth = match &spec.api_key_env {
            Some(var) => {
                let key = env(var).ok_or_else(|| {
                    LlmError::Config(format!(
                        "model {}: environment variable {var} (named by `api_key_env`) is not set",
                        spec.display_name()
                    ))
                })?;
                register_secret(&key);
                let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    LlmError::Config(format!(
                        "model {}: the API key in {var} is not a valid header value",
                        spec.display_name()
                    ))
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        register_url_secrets(&spec.base_urls);
        let base_urls: Vec<String> = spec
            .base_urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs_f64(spec.connect_timeout_s))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| LlmError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(OpenAiClient {
            name: spec.display_name().to_string(),
            model: spec.model.clone(),
            http,
            chat_urls: base_urls
                .iter()
                .map(|u| format!("{u}/chat/completions"))
                .collect(),
            pool: Pool::new(base_urls, opts.pool),
            auth,
            timeout: Duration::from_secs_f64(spec.request_timeout_s),
            max_attempts: spec.max_attempts,
            backoff: opts.backoff,
            wire: WireOptions {
                response_format: spec.supports_response_format,
                tool_choice_required: spec.supports_tool_choice_required,
            },
            extra: spec.extra.clone(),
            budget: Budget::new(spec.rpm, spec.tpm),
            ledger: None,
        })
    }

    /// Records retries into this ledger.
    pub fn with_ledger(mut self, ledger: Arc<UsageLedger>) -> OpenAiClient {
        self.ledger = Some(ledger);
        self
    }

    /// The state of each endpoint (in flight, AIMD limit, cooling).
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.pool.status()
    }

    /// One request. Every error it returns is redacted here, where server text enters: an
    /// endpoint's user-info, a gateway echoing our `Authorization` header.
    async fn attempt(&self, url: &str, endpoint: &str, body: &bytes::Bytes) -> Attempt {
        let endpoint = &redact(endpoint);
        let mut rb = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .timeout(self.timeout)
            .body(body.clone());
        if let Some(a) = &self.auth {
            rb = rb.header(AUTHORIZATION, a.clone());
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return transport_failure(endpoint, &e),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return transport_failure(endpoint, &e),
        };
        if (200..300).contains(&status) {
            return match wire::parse_reply(&bytes, &self.model) {
                Ok(reply) => Attempt::Done(reply),
                Err(message) => Attempt::Retry {
                    cause: RetryCause::Malformed,
                    retry_after: None,
                    error: LlmError::InvalidReply {
                        message: format!("{endpoint}: {message}"),
                        raw: redact(&truncate(&String::from_utf8_lossy(&bytes), 4000)),
                    },
                },
            };
        }
        let error = LlmError::Http {
            status,
            endpoint: endpoint.to_string(),
            body: redact(&truncate(&String::from_utf8_lossy(&bytes), 500)),
        };
        match RetryCause::from_status(status) {
            Some(cause) => Attempt::Retry {
                cause,
                retry_after,
                error,
            },
            None => Attempt::Fatal(error),
        }
    }
}

#[async_trait::async_trait]
impl ChatModel for OpenAiClient {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: &ChatRequest, ctx: &CallContext) -> Result<ChatReply, LlmError> {
        let body_json = wire::request_body(&self.model, request, self.wire, &self.extra);
        let body = bytes::Bytes::from(
            serde_json::to_vec(&body_json)
                .map_err(|e| LlmError::Config(format!("request body: {e}")))?,
        );
        let est_tokens = body.len() as u64 / 4
            + u64::from(request.max_tokens.unwrap_or(256))
                * u64::from(request.n.unwrap_or(1).max(1));
        let mut attempt_no = 0;
        loop {
            attempt_no += 1;
            if !self.budget.is_unlimited() {
                self.budget.wait(est_tokens).await;
            }
            let lease = self.pool.acquire().await;
            let url = &self.chat_urls[lease.index()];
            let started = Instant::now();
            let outcome = self.attempt(url, lease.base_url(), &body).await;
            let (cause, retry_after, error) = match outcome {
                Attempt::Done(reply) => {
                    let units = 1.0 + reply.usage.completion_tokens as f64 / 64.0;
                    lease.success(started.elapsed().div_f64(units));
                    return Ok(reply);
                }
                Attempt::Fatal(e) => {
                    drop(lease);
                    return Err(e);
                }
                Attempt::Retry {
                    cause,
                    retry_after,
                    error,
                } => {
                    match cause {
                        RetryCause::RateLimited | RetryCause::Overloaded => {
                            lease.overload(retry_after)
                        }
                        RetryCause::Conflict => drop(lease),
                        _ => lease.failure(),
                    }
                    (cause, retry_after, error)
                }
            };
            if attempt_no >= self.max_attempts {
                return Err(error);
            }
            if let Some(l) = &self.ledger {
                l.record_retry(&self.name, &ctx.stage, cause.label());
            }
            tracing::debug!(model = %self.name, attempt = attempt_no, cause = cause.label(), "retrying: {error}");
            tokio::time::sleep(self.backoff.delay(attempt_no, retry_after)).await;
        }
    }
}
