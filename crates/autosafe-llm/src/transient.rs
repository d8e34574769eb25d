//! Failures that are the infrastructure's, not the item's, and a watch that notices them
//! wherever an item's work meets one.
//!
//! A stage turns a model error into whatever its item records (an unmeasured verdict, an
//! environment error, a rejected attempt). A transient failure (the server unreachable, failing,
//! overloaded, refusing our credentials; the reply cache unreadable) says nothing about the item,
//! so it must never become a finished record: the stage runs each item under [`watch`], and an
//! item that met one stays pending and is tried again by the next run. The note is taken in
//! [`crate::Structured`], the layer every model stack has, so it sees errors however deep they
//! started (including a request shared by single-flight).

use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::prompts::PromptError;
use crate::types::LlmError;

/// The first transient failure an item met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transient {
    /// `api_error` (transport, HTTP) or `cache_error`.
    pub reason: &'static str,
    /// The error, as its message says it (already redacted).
    pub detail: String,
}

/// What a watch saw of its item: the first transient failure, the first prompt error.
#[derive(Default)]
struct Noted {
    transient: Option<Transient>,
    prompt: Option<PromptError>,
}

type Seen = Arc<Mutex<Noted>>;

tokio::task_local! {
    static SEEN: Seen;
}

impl LlmError {
    /// True when the failure is the infrastructure's, so trying the same item again later may
    /// succeed: transport errors and timeouts, 5xx, 429 and 408/409 after the client's retries,
    /// 401/403/404 (credentials, base URL or model name wrong: every item would fail alike), and
    /// reply-cache errors. A reply the model gave (unparsable, cut, refused), a 400/413/422 for
    /// this request, a configuration or engine error are not transient.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            LlmError::Transport { .. } | LlmError::Cache(_) => true,
            LlmError::Http { status, .. } => {
                matches!(status, 401 | 403 | 404 | 408 | 409 | 429) || *status >= 500
            }
            LlmError::InvalidReply { .. } | LlmError::Config(_) | LlmError::Engine(_) => false,
        }
    }
}

/// Runs `work` (one item) and returns its output with the first transient failure any model call
/// inside it met, if one did. A template of the prompt set that failed inside it is an error
/// instead: the run's prompts are broken, so no item's output may be recorded and the stage
/// stops (fixing the template and resuming does the item).
pub async fn watch<F: Future>(work: F) -> Result<(F::Output, Option<Transient>), PromptError> {
    let seen: Seen = Arc::default();
    let out = SEEN.scope(seen.clone(), work).await;
    let noted = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    match noted.prompt {
        Some(e) => Err(e),
        None => Ok((out, noted.transient)),
    }
}

/// Notes a prompt error for the item being watched (outside a watch: nothing).
pub(crate) fn note_prompt(err: &PromptError) {
    let _ = SEEN.try_with(|seen| {
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        s.prompt.get_or_insert_with(|| err.clone());
    });
}

/// Notes `err` for the item being watched, if it is transient (outside a watch: nothing).
pub(crate) fn note(err: &LlmError) {
    if !err.is_transient() {
        return;
    }
    let _ = SEEN.try_with(|seen| {
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        if s.transient.is_none() {
            s.transient = Some(Transient {
                reason: match err {
                    LlmError::Cache(_) => "cache_error",
                    _ => "api_error",
                },
                detail: err.to_string(),
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> LlmError {
        LlmError::Http {
            status,
            endpoint: "e".into(),
            body: String::new(),
        }
    }

    #[test]
    fn infrastructure_failures_are_transient_and_replies_are_not() {
        for s in [401, 404, 429, 500, 502, 503] {
            assert!(http(s).is_transient(), "{s}");
        }
        for s in [400, 413, 422] {
            assert!(!http(s).is_transient(), "{s}");
        }
        assert!(LlmError::Cache("malformed".into()).is_transient());
        let bad = LlmError::InvalidReply {
            message: "not JSON".into(),
            raw: "x".into(),
        };
        assert!(!bad.is_transient());
    }

    #[tokio::test]
    async fn a_watch_sees_the_first_transient_failure_of_its_item_only() {
        let (out, seen) = watch(async {
            note(&http(400));
            note(&http(503));
            note(&LlmError::Cache("c".into()));
            7
        })
        .await
        .unwrap();
        assert_eq!(out, 7);
        let seen = seen.expect("noted");
        assert_eq!(seen.reason, "api_error");
        assert!(seen.detail.starts_with("HTTP 503"), "{}", seen.detail);
        let (_, clean) = watch(async { note(&http(422)) }).await.unwrap();
        assert_eq!(clean, None);
        note(&http(500)); // outside a watch: ignored
    }
}
