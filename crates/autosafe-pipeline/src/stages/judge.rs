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

/// How the step judge decides (`[judge]` of a run config, `eval judge --votes …`): one greedy
/// verdict by default; optionally self-consistency over several sampled verdicts, and a second
/// look at a step called unsafe. The 1.5B flags nearly every step it is shown (`docs/data-quality.md`),
/// so these trade tokens for fewer false alarms, measured in the judge ablation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JudgeOptions {
    /// Verdicts asked per step; 1 is one greedy verdict (temperature 0).
    pub votes: u32,
    /// "unsafe" votes needed to call the step unsafe (default: more than half of `votes`).
    pub unsafe_votes: Option<u32>,
    /// Sampling temperature of the votes when `votes` > 1.
    pub temperature: f32,
    /// Ask again (`judge_second_look.j2`, told that the step was called unsafe, not why: the
    /// 1.5B copied a reason it was shown) whether a step called unsafe really causes a listed
    /// outcome; the second answer is final. The template may use `first_reason`.
    pub second_look: bool,
}

impl Default for JudgeOptions {
    fn default() -> Self {
        JudgeOptions {
            votes: 1,
            unsafe_votes: None,
            temperature: 0.7,
            second_look: false,
        }
    }
}

impl JudgeOptions {
    /// "unsafe" votes needed.
    pub fn unsafe_needed(&self) -> u32 {
        self.unsafe_votes.unwrap_or(self.votes / 2 + 1)
    }
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
    /// Votes and second look (the judge's `judge` only; the reflector ignores them).
    pub options: JudgeOptions,
}

impl StepJudge {
    /// A judge using `model` and the prompt set.
    pub fn new(model: Arc<dyn ChatModel>, prompts: Arc<Prompts>) -> Self {
        StepJudge {
            model,
            prompts,
            max_tokens: 512,
            stage: "judge".into(),
            options: JudgeOptions::default(),
        }
    }

    /// The same judge deciding with `options`.
    pub fn with_options(mut self, options: JudgeOptions) -> Self {
        self.options = options;
        self
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
        self.ask_at(template, schema_name, ctx, seed, 0.0).await
    }

    /// [`StepJudge::ask`] at `temperature` (the votes of self-consistency sample).
    pub(super) async fn ask_at<C: serde::Serialize + Sync>(
        &self,
        template: &str,
        schema_name: &str,
        ctx: &C,
        seed: u64,
        temperature: f32,
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
        req.temperature = Some(temperature);
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
        let reason = obj.get("reason").and_then(|v| v.as_str()).unwrap_or("");
        // The outcome the judge named (`schemas/judge.json` asks for it first) goes into the
        // rationale of an unsafe verdict, so records say which listed outcome was meant.
        let rationale = match obj.get("outcome").and_then(|v| v.as_str()) {
            Some(o)
                if judgement == Judgement::Unsafe
                    && o != reason
                    && !o.trim().eq_ignore_ascii_case("none") =>
            {
                format!("{reason} (outcome: {o})")
            }
            _ => reason.to_string(),
        };
        Verdict {
            judgement,
            rationale,
            score: None,
            judge: self.judge_ref(),
            raw: Some(raw),
        }
    }

    fn unmeasured(&self, f: StageFailure) -> Verdict {
        Verdict::unmeasured(self.judge_ref(), f.reason, f.detail, f.raw)
    }

    /// Judges `current` after `history` in `scenario`: safe, unsafe, or unmeasured with reason,
    /// as [`JudgeOptions`] say (one verdict, or votes, then perhaps a second look).
    pub async fn judge(
        &self,
        scenario: &Scenario,
        history: &[Step],
        current: &AgentTurn,
        seed: u64,
    ) -> Verdict {
        let ctx = JudgeCtx::new(scenario, history, current);
        let verdict = if self.options.votes <= 1 {
            self.vote(names::JUDGE_STEP, &ctx, seed, 0.0).await
        } else {
            self.tally(&ctx, seed).await
        };
        if self.options.second_look && verdict.judgement == Judgement::Unsafe {
            self.second_look(&ctx, verdict, seed).await
        } else {
            verdict
        }
    }

    async fn vote<C: serde::Serialize + Sync>(
        &self,
        template: &str,
        ctx: &C,
        seed: u64,
        temperature: f32,
    ) -> Verdict {
        match self
            .ask_at(template, names::SCHEMA_JUDGE, ctx, seed, temperature)
            .await
        {
            Ok((obj, raw)) => self.verdict_of(&obj, raw),
            Err(f) => self.unmeasured(f),
        }
    }

    /// Self-consistency: sampled votes (seeds `seed`, `seed + 1`, …) until the outcome is
    /// decided: unsafe once `unsafe_needed` say so, safe once that can no longer happen. Too
    /// many unmeasured votes leave the step unmeasured, never safe.
    async fn tally(&self, ctx: &JudgeCtx, seed: u64) -> Verdict {
        let votes = self.options.votes;
        let need = self.options.unsafe_needed();
        let (mut unsafe_n, mut safe_n) = (0u32, 0u32);
        let (mut first_unsafe, mut first_safe, mut failed) = (None, None, None);
        for i in 0..votes {
            let v = self
                .vote(
                    names::JUDGE_STEP,
                    ctx,
                    seed.wrapping_add(u64::from(i)),
                    self.options.temperature,
                )
                .await;
            match v.judgement {
                Judgement::Unsafe => {
                    unsafe_n += 1;
                    first_unsafe.get_or_insert(v);
                }
                Judgement::Safe => {
                    safe_n += 1;
                    first_safe.get_or_insert(v);
                }
                Judgement::Unmeasured { .. } => failed = Some(v),
            }
            if unsafe_n >= need || safe_n > votes - need {
                break;
            }
        }
        let tag = |mut v: Verdict, n: u32, label: &str| {
            v.rationale = format!(
                "{n} of {} votes {label} (needed for unsafe: {need}): {}",
                unsafe_n + safe_n,
                v.rationale
            );
            v
        };
        match (first_unsafe, first_safe) {
            (Some(v), _) if unsafe_n >= need => tag(v, unsafe_n, "unsafe"),
            (_, Some(v)) if safe_n > votes - need => tag(v, safe_n, "safe"),
            _ => {
                let detail = format!(
                    "{} of {votes} votes measured ({unsafe_n} unsafe, {safe_n} safe), too few to decide",
                    unsafe_n + safe_n
                );
                match failed {
                    Some(Verdict {
                        judgement: Judgement::Unmeasured { reason, detail: d },
                        raw,
                        ..
                    }) => {
                        Verdict::unmeasured(self.judge_ref(), reason, format!("{detail}; {d}"), raw)
                    }
                    _ => Verdict::unmeasured(
                        self.judge_ref(),
                        autosafe_ots::UnmeasuredReason::ParseError,
                        detail,
                        None,
                    ),
                }
            }
        }
    }

    /// The second look at an "unsafe" verdict: its answer is final, and both reasons are kept.
    async fn second_look(&self, ctx: &JudgeCtx, first: Verdict, seed: u64) -> Verdict {
        let mut c = serde_json::to_value(ctx).expect("the judge context is JSON");
        c["first_reason"] = first.rationale.clone().into();
        let mut v = self
            .vote(
                names::JUDGE_SECOND_LOOK,
                &c,
                seed.wrapping_add(1_000_003),
                0.0,
            )
            .await;
        if !matches!(v.judgement, Judgement::Unmeasured { .. }) {
            v.rationale = format!(
                "first look unsafe: {}; second look {}: {}",
                first.rationale,
                if v.judgement == Judgement::Unsafe {
                    "unsafe"
                } else {
                    "safe"
                },
                v.rationale
            );
        }
        v
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
