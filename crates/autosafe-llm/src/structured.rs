//! Structured output: replies checked against the requested JSON schema and tool-call arguments
//! against each tool's parameters schema, client-side (the `jsonschema` crate) whether or not the
//! server enforced anything. An invalid reply is re-asked with the validation error fed back, at most
//! `max_repairs` times, then returned as [`LlmError::InvalidReply`] carrying the raw text.

use crate::split_n::{merge_replies, split_request};
use crate::types::{
    CallContext, ChatModel, ChatReply, ChatRequest, Choice, FinishReason, LlmError, Message,
    ResponseFormat,
};
use crate::usage::UsageLedger;
use serde_json::Value;
use std::sync::Arc;

/// What a request asks to be checked.
struct Checks {
    schema: Option<jsonschema::Validator>,
    json_object: bool,
    tools: Vec<(String, jsonschema::Validator)>,
    tool_required: bool,
}

fn compile(schema: &Value, what: &str) -> Result<jsonschema::Validator, LlmError> {
    jsonschema::validator_for(schema)
        .map_err(|e| LlmError::Config(format!("{what}: invalid JSON schema: {e}")))
}

impl Checks {
    fn of(req: &ChatRequest) -> Result<Option<Checks>, LlmError> {
        let (schema, json_object) = match &req.response_format {
            Some(ResponseFormat::JsonSchema(f)) => (
                Some(compile(
                    &f.schema,
                    &format!("response_format `{}`", f.name),
                )?),
                false,
            ),
            Some(ResponseFormat::JsonObject) => (None, true),
            _ => (None, false),
        };
        let tools = req
            .tools
            .iter()
            .map(|t| {
                Ok((
                    t.name.clone(),
                    compile(&t.parameters, &format!("tool `{}` parameters", t.name))?,
                ))
            })
            .collect::<Result<Vec<_>, LlmError>>()?;
        let tool_required = matches!(
            req.tool_choice,
            Some(crate::types::ToolChoice::Required) | Some(crate::types::ToolChoice::Function(_))
        );
        if schema.is_none() && !json_object && tools.is_empty() {
            return Ok(None);
        }
        Ok(Some(Checks {
            schema,
            json_object,
            tools,
            tool_required,
        }))
    }

    /// The problems with one choice, empty when it is valid.
    fn problems(&self, c: &Choice) -> Vec<String> {
        let mut out = Vec::new();
        if c.finish_reason == FinishReason::Length {
            out.push("the reply was cut off by the token limit; answer more briefly".to_string());
            return out;
        }
        if c.tool_calls.is_empty() {
            if self.tool_required {
                out.push("a tool call is required but the reply has none".into());
            }
            if self.schema.is_some() || self.json_object {
                let text = c.content.as_deref().unwrap_or("");
                match serde_json::from_str::<Value>(crate::text::strip_fence(text)) {
                    Err(e) => out.push(format!("the reply is not valid JSON: {e}")),
                    Ok(v) => {
                        if self.json_object && !v.is_object() {
                            out.push("the reply must be a JSON object".into());
                        }
                        if let Some(s) = &self.schema {
                            out.extend(
                                s.iter_errors(&v)
                                    .take(8)
                                    .map(|e| format!("at `{}`: {e}", e.instance_path())),
                            );
                        }
                    }
                }
            }
        }
        for call in &c.tool_calls {
            match self.tools.iter().find(|(n, _)| n == &call.name) {
                None if self.tools.is_empty() => {}
                None => out.push(format!(
                    "tool `{}` does not exist; available: {}",
                    call.name,
                    self.tools
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Some((_, v)) => {
                    match serde_json::from_str::<Value>(if call.arguments.trim().is_empty() {
                        "{}"
                    } else {
                        &call.arguments
                    }) {
                        Err(e) => out.push(format!(
                            "arguments of `{}` are not valid JSON: {e}",
                            call.name
                        )),
                        Ok(args) => out.extend(v.iter_errors(&args).take(8).map(|e| {
                            format!(
                                "arguments of `{}` at `{}`: {e}",
                                call.name,
                                e.instance_path()
                            )
                        })),
                    }
                }
            }
        }
        out
    }
}

/// The raw text of a choice for error reports: content, else the tool calls as JSON.
fn raw_text(c: &Choice) -> String {
    if c.tool_calls.is_empty() {
        c.content.clone().unwrap_or_default()
    } else {
        serde_json::to_string(&c.tool_calls).unwrap_or_default()
    }
}

/// The structured-output layer.
pub struct Structured<M> {
    inner: M,
    max_repairs: u32,
    ledger: Option<Arc<UsageLedger>>,
}

impl<M: ChatModel> Structured<M> {
    /// Wraps `inner`; re-asks at most `max_repairs` times.
    pub fn new(inner: M, max_repairs: u32, ledger: Option<Arc<UsageLedger>>) -> Structured<M> {
        Structured {
            inner,
            max_repairs,
            ledger,
        }
    }

    async fn one(
        &self,
        request: &ChatRequest,
        checks: &Checks,
        ctx: &CallContext,
    ) -> Result<ChatReply, LlmError> {
        let mut conv = request.clone();
        let mut round = 0;
        loop {
            let reply = self.inner.chat(&conv, ctx).await?;
            let Some(choice) = reply.choices.first() else {
                return Err(LlmError::InvalidReply {
                    message: "reply has no choices".into(),
                    raw: String::new(),
                });
            };
            let problems = checks.problems(choice);
            if problems.is_empty() {
                return Ok(reply);
            }
            let message = problems.join("; ");
            if round >= self.max_repairs {
                return Err(LlmError::InvalidReply {
                    message: format!("after {} attempt(s): {message}", round + 1),
                    raw: raw_text(choice),
                });
            }
            round += 1;
            if let Some(l) = &self.ledger {
                l.record_repair(self.inner.name(), &ctx.stage);
            }
            let mut assistant = Message::assistant(choice.content.clone().unwrap_or_default());
            if !choice.tool_calls.is_empty() {
                assistant.content = choice.content.clone();
                assistant.tool_calls = choice.tool_calls.clone();
            }
            conv.messages.push(assistant);
            for call in &choice.tool_calls {
                conv.messages.push(Message::tool(
                    call.id.clone(),
                    call.name.clone(),
                    "error: invalid call, not executed",
                ));
            }
            conv.messages.push(Message::user(format!(
                "Your previous reply was invalid: {message}. Reply again, following the required format exactly."
            )));
        }
    }
}

#[async_trait::async_trait]
impl<M: ChatModel> ChatModel for Structured<M> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, request: &ChatRequest, ctx: &CallContext) -> Result<ChatReply, LlmError> {
        let result = self.checked(request, ctx).await;
        if let Err(e) = &result {
            crate::transient::note(e);
        }
        result
    }
}

impl<M: ChatModel> Structured<M> {
    /// [`ChatModel::chat`] with the checks (the trait method adds the transient-failure note).
    async fn checked(
        &self,
        request: &ChatRequest,
        ctx: &CallContext,
    ) -> Result<ChatReply, LlmError> {
        let Some(checks) = Checks::of(request)? else {
            return self.inner.chat(request, ctx).await;
        };
        if request.n.unwrap_or(1) <= 1 {
            return self.one(request, &checks, ctx).await;
        }
        // Each sample is repaired on its own conversation.
        let parts = split_request(request);
        let replies =
            futures_util::future::try_join_all(parts.iter().map(|r| self.one(r, &checks, ctx)))
                .await?;
        Ok(merge_replies(replies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{JsonSchemaFormat, ToolCall, ToolSpec};
    use serde_json::json;

    fn req_with_schema() -> ChatRequest {
        let mut r = ChatRequest::new(vec![Message::user("x")]);
        r.response_format = Some(ResponseFormat::JsonSchema(JsonSchemaFormat {
            name: "verdict".into(),
            schema: json!({"type": "object", "required": ["label"], "properties": {"label": {"enum": ["safe", "unsafe"]}}}),
            strict: true,
        }));
        r
    }

    fn choice(content: &str) -> Choice {
        Choice {
            content: Some(content.into()),
            tool_calls: vec![],
            finish_reason: FinishReason::Stop,
        }
    }

    #[test]
    fn schema_problems_are_named() {
        let checks = Checks::of(&req_with_schema()).unwrap().unwrap();
        assert!(checks.problems(&choice(r#"{"label": "safe"}"#)).is_empty());
        assert!(
            checks
                .problems(&choice("```json\n{\"label\": \"unsafe\"}\n```"))
                .is_empty()
        );
        assert!(
            checks
                .problems(&choice("{label"))
                .join(" ")
                .contains("not valid JSON")
        );
        assert!(
            checks
                .problems(&choice(r#"{"label": "maybe"}"#))
                .join(" ")
                .contains("/label")
        );
        let mut cut = choice(r#"{"label": "safe"}"#);
        cut.finish_reason = FinishReason::Length;
        assert!(!checks.problems(&cut).is_empty());
    }

    #[test]
    fn tool_arguments_are_checked_against_parameters() {
        let mut r = ChatRequest::new(vec![Message::user("x")]);
        r.tools = vec![ToolSpec {
            name: "rm".into(),
            description: String::new(),
            parameters: json!({"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}}),
        }];
        let checks = Checks::of(&r).unwrap().unwrap();
        let call = |name: &str, args: &str| Choice {
            content: None,
            tool_calls: vec![ToolCall {
                id: "1".into(),
                name: name.into(),
                arguments: args.into(),
            }],
            finish_reason: FinishReason::ToolCalls,
        };
        assert!(
            checks
                .problems(&call("rm", r#"{"path": "/tmp/x"}"#))
                .is_empty()
        );
        assert!(
            checks
                .problems(&call("rm", r#"{"path": 3}"#))
                .join(" ")
                .contains("/path")
        );
        assert!(
            checks
                .problems(&call("rm", "{"))
                .join(" ")
                .contains("not valid JSON")
        );
        assert!(
            checks
                .problems(&call("mv", "{}"))
                .join(" ")
                .contains("does not exist")
        );
        assert!(
            checks
                .problems(&choice("I will not call a tool"))
                .is_empty()
        );
    }

    #[test]
    fn bad_schema_is_a_config_error() {
        let mut r = req_with_schema();
        if let Some(ResponseFormat::JsonSchema(f)) = &mut r.response_format {
            f.schema = json!({"type": 12});
        }
        assert!(matches!(Checks::of(&r), Err(LlmError::Config(_))));
    }
}
