//! The binary step judge (the paper's detector) and the reflector.
//!
//! Both render their prompt (`judge_step.j2`, `reflector.j2`) from the four fields
//! [User Instruction], [Potential Risky Outcomes], [Background], [Current Action], ask for a
//! JSON reply under their schema, and check the reply themselves. Any failure (API error,
//! unparsable or schema-invalid reply after the client's bounded repairs, a reply cut by the
//! token budget) is a [`Judgement::Unmeasured`] verdict with the reason and the raw text,
//! never a pass.

use std::sync::Arc;

use autosafe_llm::{
    CallContext, ChatModel, ChatRequest, JsonSchemaFormat, Message, ResponseFormat,
};
use autosafe_ots::{AgentTurn, JudgeKind, JudgeRef, Judgement, Scenario, Step, Verdict};

use super::common::{StageFailure, first_choice, parse_json_object, schema_problems};
use crate::prompts::{JudgeCtx, Prompts, names};

/// The reflector's output: a verdict (label + reason) and, when unsafe, a suggestion.
#[derive(Debug, Clone, PartialEq)]
pub struct ReflectorVerdict {
    /// Label and reason (or unmeasured).
    pub verdict: Verdict,
    /// What the agent should do instead (empty when safe or unmeasured).
    pub suggestion: String,
}

/// A step judge or reflector backed by a chat model.
#[derive(Clone)]
pub struct StepJudge {
    model: Arc<dyn ChatModel>,
    prompts: Arc<Prompts>,
    /// Token budget of one verdict.
    pub max_tokens: u32,
    /// Usage-accounting label (`judge`, `reflector`, `verify`).
    pub stage: String,
}

impl StepJudge {
    /// A judge using `model` and the prompt set.
    pub fn new(model: Arc<dyn ChatModel>, prompts: Arc<Prompts>) -> Self {
        StepJudge {
            model,
            prompts,
            max_tokens: 512,
            stage: "judge".into(),
        }
    }

    /// The same judge with another usage label.
    pub fn labelled(mut self, stage: &str) -> Self {
        self.stage = stage.into();
        self
    }

    /// Who judges, as recorded in verdicts.
    pub fn judge_ref(&self) -> JudgeRef {
        JudgeRef {
            kind: JudgeKind::Llm,
            name: self.model.name().to_string(),
        }
    }

    /// Renders `template` with `ctx`, asks the model for a JSON reply under the schema
    /// `schema_name` (temperature 0, `seed`, this judge's token budget) and checks the reply:
    /// the object and the raw text, or the failure (api_error, truncated, parse_error with the
    /// raw text). The evaluation runners ask their rubric prompts through this too.
    pub async fn ask<C: serde::Serialize + Sync>(
        &self,
        template: &str,
        schema_name: &str,
        ctx: &C,
        seed: u64,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, String), StageFailure> {
        let prompt = self
            .prompts
            .render(template, ctx)
            .map_err(|e| StageFailure::parse(format!("prompt: {e}"), ""))?;
        let schema = self
            .prompts
            .schema(schema_name)
            .map_err(|e| StageFailure::parse(format!("schema: {e}"), ""))?;
        let mut req = ChatRequest::new(vec![Message::user(prompt)]);
        req.response_format = Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: schema_name
                .trim_start_matches("schemas/")
                .trim_end_matches(".json")
                .to_string(),
            schema: schema.clone(),
            strict: true,
        }));
        req.temperature = Some(0.0);
        req.seed = Some(seed);
        req.max_tokens = Some(self.max_tokens);
        let reply = self
            .model
            .chat(&req, &CallContext::stage(self.stage.clone()))
            .await
            .map_err(|e| StageFailure::from_llm(&e))?;
        let choice = first_choice(&reply)?;
        let raw = choice.content.clone().unwrap_or_default();
        let obj = parse_json_object(&raw).map_err(|m| StageFailure::parse(m, raw.clone()))?;
        let problems = schema_problems(&schema, &serde_json::Value::Object(obj.clone()));
        if !problems.is_empty() {
            return Err(StageFailure::parse(
                format!(
                    "reply does not satisfy {schema_name}: {}",
                    problems.join("; ")
                ),
                raw,
            ));
        }
        Ok((obj, raw))
    }

    fn verdict_of(&self, obj: &serde_json::Map<String, serde_json::Value>, raw: String) -> Verdict {
        let judgement = match obj.get("label").and_then(|v| v.as_str()) {
            Some("safe") => Judgement::Safe,
            Some("unsafe") => Judgement::Unsafe,
            other => {
                return Verdict::unmeasured(
                    self.judge_ref(),
                    autosafe_ots::UnmeasuredReason::ParseError,
                    format!("label {other:?} is neither safe nor unsafe"),
                    Some(raw),
                );
            }
        };
        Verdict {
            judgement,
            rationale: obj
                .get("reason")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            score: None,
            judge: self.judge_ref(),
            raw: Some(raw),
        }
    }

    fn unmeasured(&self, f: StageFailure) -> Verdict {
        Verdict::unmeasured(self.judge_ref(), f.reason, f.detail, f.raw)
    }

    /// Judges `current` after `history` in `scenario`: safe, unsafe, or unmeasured with reason.
    pub async fn judge(
        &self,
        scenario: &Scenario,
        history: &[Step],
        current: &AgentTurn,
        seed: u64,
    ) -> Verdict {
        let ctx = JudgeCtx::new(scenario, history, current);
        match self
            .ask(names::JUDGE_STEP, names::SCHEMA_JUDGE, &ctx, seed)
            .await
        {
            Ok((obj, raw)) => self.verdict_of(&obj, raw),
            Err(f) => self.unmeasured(f),
        }
    }

    /// The critique and suggestion of a round the checkers decided (`reflect_checkers.j2`).
    pub(crate) fn checker_feedback(
        &self,
        ctx: &serde_json::Value,
    ) -> Result<(String, String), StageFailure> {
        let part = |part: &str| {
            let mut c = ctx.clone();
            c["part"] = part.into();
            self.prompts
                .render(names::REFLECT_CHECKERS, &c)
                .map_err(|e| StageFailure::parse(format!("prompt: {e}"), ""))
        };
        Ok((part("critique")?, part("suggestion")?))
    }

    /// Reflects on `current`: a verdict, and a suggestion when unsafe.
    pub async fn reflect(
        &self,
        scenario: &Scenario,
        history: &[Step],
        current: &AgentTurn,
        seed: u64,
    ) -> ReflectorVerdict {
        let ctx = JudgeCtx::new(scenario, history, current);
        match self
            .ask(names::REFLECTOR, names::SCHEMA_REFLECTOR, &ctx, seed)
            .await
        {
            Ok((obj, raw)) => {
                let suggestion = obj
                    .get("suggestion")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                let verdict = self.verdict_of(&obj, raw);
                ReflectorVerdict {
                    verdict,
                    suggestion,
                }
            }
            Err(f) => ReflectorVerdict {
                verdict: self.unmeasured(f),
                suggestion: String::new(),
            },
        }
    }
}
