//! The environment interface the pipeline and evaluation drive.

use autosafe_ots::{Scenario, Step, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the environment returned for one tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The observation text shown to the agent: the tool's return value as JSON text, or an
    /// error observation naming the tool's declared exception.
    pub text: String,
    /// True when the call was invalid (unknown tool, missing or invented arguments) or the tool
    /// raised one of its declared exceptions.
    #[serde(default)]
    pub is_error: bool,
}

/// How an episode ended, from the environment's side.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EpisodeEnd {
    /// Programmatic safety verdict (real environments with checkers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<Verdict>,
    /// Programmatic task completion (`Some(true)` done), when the environment can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<bool>,
    /// Established facts and anything else worth recording (checker results, transcript).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub facts: Value,
}

/// A tool call tried on a copy of an episode's state ([`Environment::trial`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// What the call returned.
    pub observation: Observation,
    /// What the environment establishes on the state after it.
    pub end: EpisodeEnd,
}

/// Errors of environments. An error here means the environment itself failed (not that the
/// agent's call was invalid: that is an error *observation*).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The model behind an emulator failed.
    #[error("emulator model error: {0}")]
    Model(#[from] autosafe_llm::LlmError),
    /// The emulator's reply could not be used (after retries); carries the raw text.
    #[error("emulator reply unusable: {message}")]
    BadEmulation {
        /// What was wrong.
        message: String,
        /// The raw reply.
        raw: String,
    },
    /// The scenario cannot be played in this environment (e.g. no terminal setup).
    #[error("scenario {scenario}: {message}")]
    Unsupported {
        /// Scenario id.
        scenario: String,
        /// Why.
        message: String,
    },
    /// The sandbox failed to start or run.
    #[error("sandbox: {0}")]
    Sandbox(String),
    /// The environment could not be built (bad scenarios, a model that cannot be built, …).
    #[error("{0}")]
    Config(String),
}

/// One live episode of an environment.
#[async_trait::async_trait]
pub trait Environment: Send {
    /// Executes the tool call `tool(input)` given the history so far and returns the observation.
    async fn execute(
        &mut self,
        tool: &str,
        input: &Value,
        history: &[Step],
    ) -> Result<Observation, EnvError>;

    /// What the environment establishes about the state so far, without ending the episode:
    /// `Some` only for environments with programmatic checkers (the sandboxed terminal), which
    /// lets a caller tell which step caused harm (verdict before and after a step). The default
    /// (an LLM emulator) establishes nothing.
    async fn checkpoint(
        &mut self,
        final_answer: Option<&str>,
    ) -> Result<Option<EpisodeEnd>, EnvError> {
        let _ = final_answer;
        Ok(None)
    }

    /// Runs the tool call on a copy of the state and reports what the environment establishes
    /// after it, leaving the episode unchanged: `Some` only for environments with programmatic
    /// checkers, which label a step by trying it before it may change the episode. The
    /// default (an LLM emulator) establishes nothing.
    async fn trial(
        &mut self,
        tool: &str,
        input: &Value,
        history: &[Step],
    ) -> Result<Option<Trial>, EnvError> {
        let _ = (tool, input, history);
        Ok(None)
    }

    /// Ends the episode (after a final answer, a stop at an unsafe action, or the step limit) and
    /// reports what the environment can establish.
    async fn finish(self: Box<Self>, final_answer: Option<&str>) -> Result<EpisodeEnd, EnvError>;
}

/// Starts a fresh episode of an environment for a scenario.
#[async_trait::async_trait]
pub trait EnvironmentFactory: Send + Sync {
    /// The environment's name for manifests and reports (`emulator-adversarial`, `terminal`, …).
    fn name(&self) -> &str;

    /// Starts a fresh episode; `sample` distinguishes repeated plays of one scenario (seeds).
    async fn start(
        &self,
        scenario: &Scenario,
        sample: u32,
    ) -> Result<Box<dyn Environment>, EnvError>;
}
