//! The LLM tool emulator (ToolEmu's virtual environment), standard or adversarial.
//!
//! Each call is first checked in code against the tool's spec ([`crate::spec_check`]): an
//! unknown tool, a missing required argument, an undeclared argument or a wrong type gives an
//! error observation at once, with no model request. A valid call is emulated by the model:
//! the prompt (`emulator.j2` of the run's prompt set, [`EmulatorOptions::prompts`]) carries the offered tool specs, the whole history (for
//! state consistency), the current call, `Scenario::initial_state` when present and, in
//! adversarial mode, the case's underspecifications, risky outcomes and risky actions with the
//! stress-test rules. The reply must be JSON under the set's `schemas/emulator.json` whose
//! observation has exactly the tool's return fields (or is a declared exception); otherwise the
//! model is re-asked with the problem fed back, at most [`EmulatorOptions::max_retries`] times,
//! then the call fails with [`EnvError::BadEmulation`] carrying the raw reply.

pub mod prompt;
pub mod reply;

use std::sync::{Arc, OnceLock};

use autosafe_llm::prompts::{Prompts, names};
use autosafe_llm::{
    CallContext, ChatModel, ChatRequest, FinishReason, JsonSchemaFormat, LlmError, Message,
    ResponseFormat,
};
use autosafe_ots::{Scenario, Step, Tool, ToolLibrary};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::spec_check::check_call;
use crate::traits::{EnvError, Environment, EnvironmentFactory, EpisodeEnd, Observation};

/// How the emulator plays the tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmulatorMode {
    /// Realistic, consistent outputs.
    Standard,
    /// Realistic, consistent outputs steered toward the case's risky outcomes (never refuses).
    Adversarial,
}

impl EmulatorMode {
    /// `standard` or `adversarial`.
    pub fn as_str(self) -> &'static str {
        match self {
            EmulatorMode::Standard => "standard",
            EmulatorMode::Adversarial => "adversarial",
        }
    }
}

/// Request settings of the emulator.
#[derive(Debug, Clone, PartialEq)]
pub struct EmulatorOptions {
    /// Re-asks after an unusable reply (so at most `max_retries + 1` requests per call).
    pub max_retries: u32,
    /// Token budget of one reply; a reply cut by it is unusable.
    pub max_tokens: u32,
    /// Sampling temperature (`None`: the server's default).
    pub temperature: Option<f32>,
    /// Mixed into every derived seed, so runs can be re-seeded as a whole.
    pub base_seed: u64,
    /// Stage label for usage accounting.
    pub stage: String,
    /// The prompt set `emulator.j2` and `schemas/emulator.json` come from: the run's, so a
    /// `--prompts` override applies (default: the embedded set).
    pub prompts: Arc<Prompts>,
}

/// The embedded prompt set, built once for every default [`EmulatorOptions`].
fn embedded_prompts() -> Arc<Prompts> {
    static EMBEDDED: OnceLock<Arc<Prompts>> = OnceLock::new();
    EMBEDDED
        .get_or_init(|| Arc::new(Prompts::embedded()))
        .clone()
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            max_retries: 2,
            max_tokens: 1024,
            temperature: Some(0.0),
            base_seed: 0,
            stage: "emulator".to_string(),
            prompts: embedded_prompts(),
        }
    }
}

/// The seed of the emulator request for step `step` of sample `sample` of a scenario: the first
/// 8 bytes of SHA-256 over (base seed, scenario id, sample, step), so re-runs reproduce.
pub fn derive_seed(base: u64, scenario_id: &str, sample: u32, step: usize) -> u64 {
    let mut h = Sha256::new();
    h.update(base.to_le_bytes());
    h.update(scenario_id.as_bytes());
    h.update(b"\0");
    h.update(sample.to_le_bytes());
    h.update((step as u64).to_le_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Starts emulated episodes.
pub struct EmulatorFactory {
    model: Arc<dyn ChatModel>,
    mode: EmulatorMode,
    library: Arc<ToolLibrary>,
    options: EmulatorOptions,
    name: String,
    /// The reply schema and its validator, or why the schema does not compile.
    schema: Result<Arc<ReplySchema>, String>,
}

/// The prompt set's `schemas/emulator.json`, compiled once per factory.
struct ReplySchema {
    schema: Value,
    validator: jsonschema::Validator,
}

impl ReplySchema {
    fn new(prompts: &Prompts) -> Result<ReplySchema, String> {
        let schema = prompts
            .schema(names::SCHEMA_EMULATOR)
            .map_err(|e| e.to_string())?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("{}: not a JSON schema: {e}", names::SCHEMA_EMULATOR))?;
        Ok(ReplySchema { schema, validator })
    }
}

impl EmulatorFactory {
    /// An emulator of the toolkits in `library`, played by `model`.
    pub fn new(
        model: Arc<dyn ChatModel>,
        mode: EmulatorMode,
        library: Arc<ToolLibrary>,
        options: EmulatorOptions,
    ) -> Self {
        EmulatorFactory {
            schema: ReplySchema::new(&options.prompts).map(Arc::new),
            model,
            mode,
            library,
            options,
            name: format!("emulator-{}", mode.as_str()),
        }
    }

    /// The mode.
    pub fn mode(&self) -> EmulatorMode {
        self.mode
    }

    /// SHA-256 of the prompt template, partial and schema (for manifests).
    pub fn prompt_hash(&self) -> String {
        prompt::prompt_hash(&self.options.prompts).expect("the prompt set has the emulator's files")
    }
}

#[async_trait::async_trait]
impl EnvironmentFactory for EmulatorFactory {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(
        &self,
        scenario: &Scenario,
        sample: u32,
    ) -> Result<Box<dyn Environment>, EnvError> {
        let missing: Vec<&str> = scenario
            .case
            .toolkits
            .iter()
            .filter(|t| self.library.get(t).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(EnvError::Unsupported {
                scenario: scenario.id.clone(),
                message: format!("toolkits not in the tool library: {}", missing.join(", ")),
            });
        }
        let schema = self.schema.clone().map_err(EnvError::Config)?;
        Ok(Box::new(EmulatorEpisode {
            model: self.model.clone(),
            schema,
            adversarial: self.mode == EmulatorMode::Adversarial,
            library: self.library.clone(),
            scenario: scenario.clone(),
            options: self.options.clone(),
            sample,
            calls: 0,
        }))
    }
}

/// One emulated episode.
pub(crate) struct EmulatorEpisode {
    model: Arc<dyn ChatModel>,
    schema: Arc<ReplySchema>,
    adversarial: bool,
    library: Arc<ToolLibrary>,
    scenario: Scenario,
    options: EmulatorOptions,
    sample: u32,
    calls: usize,
}

impl EmulatorEpisode {
    fn request(&self, prompt: String, tool: &Tool, step: usize) -> ChatRequest {
        let mut req = ChatRequest::new(vec![Message::user(prompt)]);
        req.response_format = Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: "tool_emulation".into(),
            schema: prompt::schema_for(&self.schema.schema, tool),
            strict: false,
        }));
        req.temperature = self.options.temperature;
        req.max_tokens = Some(self.options.max_tokens);
        req.seed = Some(derive_seed(
            self.options.base_seed,
            &self.scenario.id,
            self.sample,
            step,
        ));
        req.sample_index = self.sample;
        req
    }
}

#[async_trait::async_trait]
impl Environment for EmulatorEpisode {
    async fn execute(
        &mut self,
        tool: &str,
        input: &Value,
        history: &[Step],
    ) -> Result<Observation, EnvError> {
        self.calls += 1;
        let offered = self.library.tools_for(&self.scenario);
        let (_, spec) = match check_call(&offered, tool, input) {
            Ok(found) => found,
            Err(obs) => return Ok(obs),
        };
        let ctx = prompt::EmulatorContext::new(
            &self.scenario,
            &offered,
            history,
            tool,
            input,
            self.adversarial,
        );
        let text =
            prompt::render(&self.options.prompts, &ctx).map_err(|e| EnvError::BadEmulation {
                message: format!("cannot render prompts/emulator.j2: {e:#}"),
                raw: String::new(),
            })?;
        let mut req = self.request(text, spec, history.len());
        let call_ctx = CallContext::stage(self.options.stage.clone());
        let mut attempt = 0;
        loop {
            let reply = match self.model.chat(&req, &call_ctx).await {
                Ok(r) => r,
                Err(LlmError::InvalidReply { message, raw }) => {
                    return Err(EnvError::BadEmulation { message, raw });
                }
                Err(e) => return Err(EnvError::Model(e)),
            };
            let raw = reply.text().to_string();
            let cut = reply
                .choices
                .first()
                .is_some_and(|c| c.finish_reason == FinishReason::Length);
            let problem = if cut {
                "the reply was cut off by the token limit; answer more briefly".to_string()
            } else {
                match reply::parse(&raw, spec, &self.schema.validator) {
                    Ok(obs) => return Ok(obs),
                    Err(p) => p,
                }
            };
            if attempt >= self.options.max_retries {
                return Err(EnvError::BadEmulation {
                    message: format!("after {} attempt(s): {problem}", attempt + 1),
                    raw,
                });
            }
            attempt += 1;
            req.messages.push(Message::assistant(raw));
            req.messages.push(Message::user(format!(
                "Your previous reply was invalid: {problem}. Reply again with one JSON object \
                 {{\"thought\": ..., \"observation\": ...}} whose observation has exactly the \
                 return fields of {tool} (or is one of its declared exceptions)."
            )));
        }
    }

    async fn finish(self: Box<Self>, _final_answer: Option<&str>) -> Result<EpisodeEnd, EnvError> {
        Ok(EpisodeEnd {
            safety: None,
            completed: None,
            facts: serde_json::json!({ "tool_calls": self.calls }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_stable_and_differ_by_scenario_sample_and_step() {
        let s = derive_seed(0, "sc_a", 0, 0);
        assert_eq!(s, derive_seed(0, "sc_a", 0, 0));
        let others = [
            derive_seed(0, "sc_b", 0, 0),
            derive_seed(0, "sc_a", 1, 0),
            derive_seed(0, "sc_a", 0, 1),
            derive_seed(1, "sc_a", 0, 0),
        ];
        assert!(others.iter().all(|o| *o != s));
    }
}
