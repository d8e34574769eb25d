//! Pieces shared by the stages: failure classification, seeds, JSON reply parsing, stage file
//! paths (shard-aware), the toolkits a scenario offers, and the stage error type.

use autosafe_llm::{ChatReply, FinishReason, LlmError, Transient};
use autosafe_ots::{Scenario, ToolLibrary, Toolkit, UnmeasuredReason};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::PipelineError;
use crate::shard::stable_hash;

/// Errors that stop a stage (I/O, bad input files, configuration). Per-record model failures
/// are not errors: they are recorded as rejected or unmeasured with their reason.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Run directory, store, prompt or export error.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The stage was configured wrongly (unknown toolkit, bad cell, …).
    #[error("configuration: {0}")]
    Config(String),
}

impl From<autosafe_llm::PromptError> for StageError {
    fn from(e: autosafe_llm::PromptError) -> Self {
        StageError::Pipeline(e.into())
    }
}

/// Runs one item's work under the transient-failure watch ([`autosafe_llm::transient`]):
/// `Ok(Err(_))` when a model call in it met a transient failure. Nothing of such an item may be
/// written: it stays pending (counted with [`crate::StageStats::pending`]) and the next run tries
/// it again. `Err` when a template of the prompt set failed to render in it: the run's prompts
/// are at fault, not the item, so the stage stops with that error (nothing of the item written;
/// resuming after the template is fixed does it). Every stage and evaluation runner goes through
/// this.
pub async fn attempt<F: std::future::Future>(
    work: F,
) -> Result<Result<F::Output, Transient>, StageError> {
    Ok(match autosafe_llm::watch(work).await? {
        (_, Some(failure)) => Err(failure),
        (out, None) => Ok(out),
    })
}

/// Why one model call produced nothing usable: the unmeasured reason, a message, the raw text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageFailure {
    /// The reason category.
    pub reason: UnmeasuredReason,
    /// What went wrong.
    pub detail: String,
    /// The raw model output that could not be used, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl StageFailure {
    /// A failure from an error of the model stack: HTTP/transport/config errors are
    /// `api_error`; an invalid reply is `truncated` when it was cut by the token limit and
    /// `parse_error` otherwise.
    pub(crate) fn from_llm(err: &LlmError) -> Self {
        match err {
            LlmError::InvalidReply { message, raw } => StageFailure {
                reason: if message.contains("cut off by the token limit") {
                    UnmeasuredReason::Truncated
                } else {
                    UnmeasuredReason::ParseError
                },
                detail: message.clone(),
                raw: Some(raw.clone()),
            },
            other => StageFailure {
                reason: UnmeasuredReason::ApiError,
                detail: other.to_string(),
                raw: None,
            },
        }
    }

    /// A parse failure with the raw text.
    pub fn parse(detail: impl Into<String>, raw: impl Into<String>) -> Self {
        StageFailure {
            reason: UnmeasuredReason::ParseError,
            detail: detail.into(),
            raw: Some(raw.into()),
        }
    }
}

/// Checks the first choice of a reply: a reply cut by the token budget is `truncated` (not a
/// result); a reply with no choice is an `api_error`.
pub(crate) fn first_choice(reply: &ChatReply) -> Result<&autosafe_llm::Choice, StageFailure> {
    let c = reply.choices.first().ok_or_else(|| StageFailure {
        reason: UnmeasuredReason::ApiError,
        detail: "the reply has no choices".into(),
        raw: None,
    })?;
    if c.finish_reason == FinishReason::Length {
        return Err(StageFailure {
            reason: UnmeasuredReason::Truncated,
            detail: "the reply was cut off by the token limit (finish_reason length)".into(),
            raw: Some(c.content.clone().unwrap_or_default()),
        });
    }
    Ok(c)
}

/// Parses a reply text as one JSON object, tolerating one surrounding Markdown code fence.
pub(crate) fn parse_json_object(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_str::<Value>(autosafe_llm::text::strip_fence(text)) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "the reply is JSON but not an object ({})",
            autosafe_ots::read::kind_of(&other)
        )),
        Err(e) => Err(format!("the reply is not valid JSON: {e}")),
    }
}

/// Validates `value` against a JSON schema; the problems (at most 8), empty when valid.
pub(crate) fn schema_problems(schema: &Value, value: &Value) -> Vec<String> {
    match jsonschema::validator_for(schema) {
        Ok(v) => v
            .iter_errors(value)
            .take(8)
            .map(|e| format!("at `{}`: {e}", e.instance_path()))
            .collect(),
        Err(e) => vec![format!("invalid schema: {e}")],
    }
}

/// A deterministic seed for one model call, derived from a record id and the call's role,
/// sample and turn.
pub fn seed_for(id: &str, role: &str, sample: u32, turn: u32) -> u64 {
    stable_hash(&format!("{id}\u{1f}{role}\u{1f}{sample}\u{1f}{turn}"))
}

/// The toolkits a scenario offers the agent, resolved in `library`, restricted to
/// `Scenario::tools` when that is set. Unknown toolkit names are an error naming them.
pub fn scenario_toolkits(
    library: &ToolLibrary,
    scenario: &Scenario,
) -> Result<Vec<Toolkit>, String> {
    let mut out = Vec::new();
    for name in &scenario.case.toolkits {
        let tk = library
            .get(name)
            .ok_or_else(|| format!("scenario {}: unknown toolkit `{name}`", scenario.id))?;
        let mut tk = tk.clone();
        if let Some(subset) = &scenario.tools {
            let keep: Vec<_> = tk
                .tools
                .iter()
                .filter(|t| subset.contains(&tk.qualified_name(t)))
                .cloned()
                .collect();
            tk.tools = keep;
        }
        out.push(tk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_replies_parse_with_fences_and_fail_with_reasons() {
        let m = parse_json_object("```json\n{\"label\": \"safe\"}\n```").unwrap();
        assert_eq!(m["label"], "safe");
        assert!(
            parse_json_object("[1]")
                .unwrap_err()
                .contains("not an object")
        );
        assert!(
            parse_json_object("label: safe")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn llm_errors_map_to_unmeasured_reasons() {
        let cut = LlmError::InvalidReply {
            message: "the reply was cut off by the token limit; answer more briefly".into(),
            raw: "{\"la".into(),
        };
        assert_eq!(
            StageFailure::from_llm(&cut).reason,
            UnmeasuredReason::Truncated
        );
        let bad = LlmError::InvalidReply {
            message: "at ``: missing".into(),
            raw: "x".into(),
        };
        let f = StageFailure::from_llm(&bad);
        assert_eq!(f.reason, UnmeasuredReason::ParseError);
        assert_eq!(f.raw.as_deref(), Some("x"));
        let http = LlmError::Http {
            status: 500,
            endpoint: "e".into(),
            body: "b".into(),
        };
        assert_eq!(
            StageFailure::from_llm(&http).reason,
            UnmeasuredReason::ApiError
        );
        assert_ne!(seed_for("a", "judge", 0, 1), seed_for("a", "judge", 0, 2));
        assert_eq!(seed_for("a", "judge", 0, 1), seed_for("a", "judge", 0, 1));
    }
}
