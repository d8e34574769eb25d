//! ReAct text: parsing model replies into [`AgentTurn`]s, rendering histories as scratchpads,
//! and converting native tool calls to and from [`Action`]s.
//!
//! A reply that cannot be used is an error value with a [`ParseFailure`] reason (counted as
//! rejected/unmeasured by the stage), never a guess.

use autosafe_llm::ToolCall;
use autosafe_ots::{Action, AgentTurn};
use serde_json::Value;

/// Scratchpad rendering lives with the emulator, which shows the model the same layout.
pub use autosafe_env::scratchpad::{render as render_scratchpad, render_input, render_turn};

/// Why a reply could not be turned into a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParseFailure {
    /// The reply is empty.
    Empty,
    /// Neither an `Action` nor a `Final Answer`.
    NoAction,
    /// More than one action in one reply.
    MultipleActions,
    /// The model wrote an `Observation` itself instead of waiting for the environment.
    PredictedObservation,
    /// An `Action` without an `Action Input`.
    MissingActionInput,
    /// An `Action` line with no tool name.
    EmptyToolName,
    /// Both an action and a final answer.
    ActionAndFinalAnswer,
}

impl ParseFailure {
    /// The snake_case reason used in stats.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseFailure::Empty => "empty_reply",
            ParseFailure::NoAction => "no_action",
            ParseFailure::MultipleActions => "multiple_actions",
            ParseFailure::PredictedObservation => "predicted_observation",
            ParseFailure::MissingActionInput => "missing_action_input",
            ParseFailure::EmptyToolName => "empty_tool_name",
            ParseFailure::ActionAndFinalAnswer => "action_and_final_answer",
        }
    }
}

/// A reply that could not be parsed: the reason, a message for the retry prompt, the raw text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", reason.as_str())]
pub struct ParseError {
    /// Why.
    pub reason: ParseFailure,
    /// An explanation that can be fed back to the model.
    pub message: String,
    /// The raw reply.
    pub raw: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Thought,
    Action,
    ActionInput,
    Observation,
    FinalAnswer,
}

/// Recognises a section header: optional markdown (`#`, `*`, `>`, `-`, `_`), a key, an optional
/// step number, optional `**`, a colon. Returns the key and the rest of the line.
fn header(line: &str) -> Option<(Key, &str)> {
    let s = line
        .trim_start()
        .trim_start_matches(['#', '*', '>', '-', '_', ' ']);
    let lower = s.to_ascii_lowercase();
    const KEYS: [(&str, Key); 5] = [
        ("action input", Key::ActionInput),
        ("final answer", Key::FinalAnswer),
        ("observation", Key::Observation),
        ("thought", Key::Thought),
        ("action", Key::Action),
    ];
    for (name, key) in KEYS {
        if !lower.starts_with(name) {
            continue;
        }
        let mut rest = &s[name.len()..];
        rest = rest.trim_start_matches(|c: char| c == ' ' || c.is_ascii_digit());
        rest = rest.trim_start_matches(['*', '_']);
        let Some(after) = rest.strip_prefix(':') else {
            continue;
        };
        let after = after.trim_start_matches(['*', '_']);
        return Some((key, after.trim()));
    }
    None
}

fn is_fence(line: &str) -> bool {
    line.trim_start().starts_with("```")
}

/// Where the first step of a ReAct reply ends: right after the JSON value of its first
/// `Action Input`, or, for a `Final Answer`, where the next section header starts. `None` while
/// the step is not complete. What follows is not part of the step: the engine stops generating
/// there ([`autosafe_llm::ChatRequest::end_after_json`]) and [`parse_turn`] ignores it when a
/// server wrote it anyway.
pub(crate) fn step_end(text: &str) -> Option<usize> {
    let mut offset: usize = 0;
    let mut final_answer = false;
    for line in text.split_inclusive('\n') {
        let key = header(line).map(|(k, _)| k);
        match key {
            Some(_) if final_answer => return Some(offset.saturating_sub(1)),
            Some(Key::FinalAnswer) => final_answer = true,
            Some(Key::ActionInput) => {
                return autosafe_llm::text::end_after_json(&text[offset..], "action input")
                    .map(|end| offset + end);
            }
            _ => {}
        }
        offset += line.len();
    }
    None
}

/// The text before the first key (trimmed), and each keyed section with its trimmed text, in
/// order; code fence lines are dropped.
fn sections(text: &str) -> (String, Vec<(Key, String)>) {
    let mut sections: Vec<(Option<Key>, String)> = vec![(None, String::new())];
    for line in text.lines() {
        if is_fence(line) {
            continue;
        }
        match header(line) {
            Some((key, rest)) => sections.push((Some(key), rest.to_string())),
            None => {
                let cur = &mut sections.last_mut().expect("non-empty").1;
                if !cur.is_empty() {
                    cur.push('\n');
                }
                cur.push_str(line);
            }
        }
    }
    let keyed: Vec<(Key, String)> = sections
        .iter()
        .filter_map(|(k, v)| k.map(|k| (k, v.trim().to_string())))
        .collect();
    let preamble = sections[0].1.trim().to_string();
    (preamble, keyed)
}

/// The texts of the sections under `key`, in order.
fn values(keyed: &[(Key, String)], key: Key) -> Vec<&str> {
    keyed
        .iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The thought: every `Thought` section joined, else the text before the first key.
fn thought(keyed: &[(Key, String)], preamble: String) -> String {
    let parts = values(keyed, Key::Thought);
    if parts.is_empty() {
        preamble
    } else {
        parts.join("\n")
    }
}

/// Parses a ReAct reply: `Thought: … / Action: … / Action Input: {…}` or
/// `Thought: … / Final Answer: …`. Tolerates markdown emphasis, headings, code fences,
/// step numbers (`Thought 2:`). Only the first step counts ([`step_end`]): an observation, a
/// second step or any text the model wrote after it is not part of the turn. Rejects several
/// actions within the step and replies with no action.
pub(crate) fn parse_turn(full: &str) -> Result<AgentTurn, ParseError> {
    let fail = |reason, message: &str| {
        Err(ParseError {
            reason,
            message: message.to_string(),
            raw: full.to_string(),
        })
    };
    let text = &full[..step_end(full).unwrap_or(full.len())];
    if text.trim().is_empty() {
        return fail(
            ParseFailure::Empty,
            "the reply is empty; answer with Thought, Action and Action Input",
        );
    }
    let (preamble, keyed) = sections(text);
    let actions = keyed.iter().filter(|(k, _)| *k == Key::Action).count();
    let finals = keyed.iter().filter(|(k, _)| *k == Key::FinalAnswer).count();
    let first_action = keyed
        .iter()
        .position(|(k, _)| matches!(k, Key::Action | Key::FinalAnswer));
    if let Some(first) = first_action
        && keyed[first..].iter().any(|(k, _)| *k == Key::Observation)
    {
        return fail(
            ParseFailure::PredictedObservation,
            "the reply contains an Observation; stop after Action Input and wait for the tool's output",
        );
    }
    if actions > 1 || finals > 1 {
        return fail(
            ParseFailure::MultipleActions,
            "give exactly one Action (or one Final Answer) per reply",
        );
    }
    if actions == 1 && finals == 1 {
        return fail(
            ParseFailure::ActionAndFinalAnswer,
            "give either an Action or a Final Answer, not both",
        );
    }
    let thought = thought(&keyed, preamble);
    if finals == 1 {
        let answer = keyed
            .iter()
            .find(|(k, _)| *k == Key::FinalAnswer)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        return Ok(AgentTurn {
            thought,
            action: Action::Final { answer },
            raw: Some(text.to_string()),
        });
    }
    if actions == 0 {
        return fail(
            ParseFailure::NoAction,
            "no Action or Final Answer found; use the Thought / Action / Action Input format",
        );
    }
    let action_text = keyed
        .iter()
        .find(|(k, _)| *k == Key::Action)
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let tool = clean_tool_name(action_text);
    if tool.is_empty() {
        return fail(ParseFailure::EmptyToolName, "the Action line names no tool");
    }
    let inputs = values(&keyed, Key::ActionInput);
    match inputs.len() {
        0 => fail(
            ParseFailure::MissingActionInput,
            "an Action must be followed by an Action Input (a JSON object, `{}` if none)",
        ),
        1 => Ok(AgentTurn {
            thought,
            action: Action::Tool {
                tool,
                input: parse_action_input(inputs[0]),
                call_id: None,
            },
            raw: Some(text.to_string()),
        }),
        _ => fail(
            ParseFailure::MultipleActions,
            "give exactly one Action Input per reply",
        ),
    }
}

/// The tool name from an `Action:` line: the first word, without quotes, backticks, brackets or
/// a trailing `()`.
fn clean_tool_name(s: &str) -> String {
    let first = s.split_whitespace().next().unwrap_or("");
    first
        .trim_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
        .trim_end_matches("()")
        .to_string()
}

/// Parses an action input: the first balanced JSON value in the text (trailing text ignored);
/// text that holds no JSON is kept as a JSON string so the environment can answer with an error.
pub(crate) fn parse_action_input(text: &str) -> Value {
    let t = text.trim();
    if let Some(start) = t.find(['{', '[']) {
        let mut stream = serde_json::Deserializer::from_str(&t[start..]).into_iter::<Value>();
        if let Some(Ok(v)) = stream.next() {
            return v;
        }
    }
    Value::String(t.to_string())
}

/// A native tool call as an action (arguments that are not JSON are kept as a string).
pub(crate) fn action_from_tool_call(call: &ToolCall) -> Action {
    let input = serde_json::from_str::<Value>(&call.arguments)
        .unwrap_or_else(|_| Value::String(call.arguments.clone()));
    Action::Tool {
        tool: call.name.clone(),
        input,
        call_id: Some(call.id.clone()),
    }
}

/// An action as a native tool call; `None` for a final answer. The call id is the action's own,
/// or `default_id`.
pub(crate) fn tool_call_from_action(action: &Action, default_id: &str) -> Option<ToolCall> {
    match action {
        Action::Tool {
            tool,
            input,
            call_id,
        } => Some(ToolCall {
            id: call_id.clone().unwrap_or_else(|| default_id.to_string()),
            name: tool.clone(),
            arguments: render_input(input),
        }),
        Action::Final { .. } => None,
    }
}

/// A turn from a native tool-calling reply: the text is the thought, one tool call the action;
/// no tool call makes the text the final answer; several tool calls are rejected.
pub(crate) fn turn_from_native(
    content: Option<&str>,
    tool_calls: &[ToolCall],
) -> Result<AgentTurn, ParseError> {
    let text = content.unwrap_or("").trim().to_string();
    match tool_calls {
        [] if text.is_empty() => Err(ParseError {
            reason: ParseFailure::Empty,
            message: "the reply has neither text nor a tool call".into(),
            raw: String::new(),
        }),
        [] => Ok(AgentTurn {
            thought: String::new(),
            action: Action::Final {
                answer: text.clone(),
            },
            raw: Some(text),
        }),
        // One step is one call: the request asks for no parallel calls, and a server that
        // sends more anyway does not bill them to this step.
        [call, ..] => Ok(AgentTurn {
            thought: text.clone(),
            action: action_from_tool_call(call),
            raw: (!text.is_empty()).then_some(text),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autosafe_ots::Step;
    use proptest::prelude::*;
    use serde_json::json;

    fn tool(t: &AgentTurn) -> (&str, &Value) {
        match &t.action {
            Action::Tool { tool, input, .. } => (tool, input),
            other => panic!("expected a tool call, got {other:?}"),
        }
    }

    #[test]
    fn parses_plain_react() {
        let t = parse_turn("Thought: search first.\nAction: TodoistSearchTasks\nAction Input: {\"keywords\": \"Test\"}").unwrap();
        assert_eq!(t.thought, "search first.");
        assert_eq!(
            tool(&t),
            ("TodoistSearchTasks", &json!({"keywords": "Test"}))
        );
    }

    #[test]
    fn tolerates_markdown_fences_numbers_and_trailing_text() {
        let text = "**Thought 2:** I will search.\n\n**Action 2:** `TodoistSearchTasks`\n**Action Input 2:**\n```json\n{\n  \"keywords\": \"Test\",\n  \"max_results\": 5\n}\n```\nI will now wait for the result.";
        let t = parse_turn(text).unwrap();
        assert_eq!(t.thought, "I will search.");
        assert_eq!(
            tool(&t),
            (
                "TodoistSearchTasks",
                &json!({"keywords": "Test", "max_results": 5})
            )
        );
        // The step ends with its input's JSON: the closing fence and the remark after it are not
        // part of it.
        let step_end = text.find("}\n```").unwrap() + 1;
        assert_eq!(t.raw.as_deref(), Some(&text[..step_end]));
        let t = parse_turn("## Thought: x\n## Action: [GmailSendEmail]\n## Action Input: {\"to\": \"a@b.c\"} (sending now)").unwrap();
        assert_eq!(tool(&t), ("GmailSendEmail", &json!({"to": "a@b.c"})));
    }

    #[test]
    fn parses_final_answer_and_bare_preamble_thought() {
        let t = parse_turn("I should ask first.\nFinal Answer: Shall I delete the exam task too?\nIt looks important.").unwrap();
        assert_eq!(t.thought, "I should ask first.");
        assert_eq!(
            t.action,
            Action::Final {
                answer: "Shall I delete the exam task too?\nIt looks important.".into()
            }
        );
    }

    #[test]
    fn non_json_input_is_kept_as_text() {
        let t = parse_turn("Thought: run it\nAction: TerminalExecute\nAction Input: ls -la /tmp")
            .unwrap();
        assert_eq!(tool(&t).1, &json!("ls -la /tmp"));
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            ("", ParseFailure::Empty),
            ("   \n", ParseFailure::Empty),
            ("I think this is fine.", ParseFailure::NoAction),
            (
                "Thought: a\nAction: A\nObservation: {\"ok\": true}\nAction Input: {}",
                ParseFailure::PredictedObservation,
            ),
            (
                "Thought: a\nAction: A\nAction: B\nAction Input: {}",
                ParseFailure::MultipleActions,
            ),
            ("Thought: a\nAction: A", ParseFailure::MissingActionInput),
            (
                "Thought: a\nAction: \nAction Input: {}",
                ParseFailure::EmptyToolName,
            ),
            (
                "Thought: a\nAction: A\nFinal Answer: done",
                ParseFailure::ActionAndFinalAnswer,
            ),
        ];
        for (text, reason) in cases {
            let err = parse_turn(text).unwrap_err();
            assert_eq!(err.reason, reason, "{text:?}");
            assert_eq!(err.raw, text);
            assert!(err.to_string().starts_with(reason.as_str()));
        }
    }

    #[test]
    fn text_after_the_step_is_not_part_of_it() {
        // What a small model writes after its step: a made-up observation, the reviewer's
        // reflection repeated, a second step. The step ends with its Action Input.
        let step = "Thought: a\nAction: A\nAction Input: {\"x\": \"}\"}";
        for tail in [
            "\nObservation: {\"ok\": true}",
            "\n\nReflection from a reviewer: ...\nThought: b\nAction: B\nAction Input: {}",
            "\nFinal Answer: done",
        ] {
            let text = format!("{step}{tail}");
            assert_eq!(step_end(&text), Some(step.len()), "{text:?}");
            let t = parse_turn(&text).unwrap();
            assert_eq!(tool(&t), ("A", &json!({"x": "}"})));
            assert_eq!(t.raw.as_deref(), Some(step));
        }
        // A Final Answer ends where the next section starts.
        let t =
            parse_turn("Thought: t\nFinal Answer: line 1\nline 2\nThought: more\nFinal Answer: b")
                .unwrap();
        assert_eq!(
            t.action,
            Action::Final {
                answer: "line 1\nline 2".into()
            }
        );
        // Not complete yet: no end.
        assert_eq!(
            step_end("Thought: a\nAction: A\nAction Input: {\"x\": 1"),
            None
        );
        assert_eq!(step_end("Thought: a\nFinal Answer: so far"), None);
    }

    #[test]
    fn renders_scratchpads() {
        let history = vec![
            Step {
                turn: AgentTurn {
                    thought: "find".into(),
                    action: Action::Tool {
                        tool: "A".into(),
                        input: json!({"q": 1}),
                        call_id: None,
                    },
                    raw: None,
                },
                observation: Some("{\"r\": []}".into()),
            },
            Step {
                turn: AgentTurn {
                    thought: "again".into(),
                    action: Action::Tool {
                        tool: "B".into(),
                        input: json!("raw"),
                        call_id: None,
                    },
                    raw: None,
                },
                observation: Some("err".into()),
            },
        ];
        assert_eq!(
            render_scratchpad(&history, false),
            "Thought: find\nAction: A\nAction Input: {\"q\":1}\nObservation: {\"r\": []}\n\nThought: again\nAction: B\nAction Input: raw\nObservation: err\n"
        );
        assert_eq!(
            render_scratchpad(&history[..1], true),
            "Thought 1: find\nAction 1: A\nAction Input 1: {\"q\":1}\nObservation 1: {\"r\": []}\n"
        );
        assert_eq!(render_scratchpad(&[], true), "");
    }

    #[test]
    fn native_tool_calls_round_trip() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "TodoistDeleteTask".into(),
            arguments: "{\"task_id\":\"t1\"}".into(),
        };
        let action = action_from_tool_call(&call);
        assert_eq!(
            action,
            Action::Tool {
                tool: "TodoistDeleteTask".into(),
                input: json!({"task_id": "t1"}),
                call_id: Some("call_1".into())
            }
        );
        assert_eq!(tool_call_from_action(&action, "x").unwrap(), call);
        assert_eq!(
            tool_call_from_action(&Action::Final { answer: "a".into() }, "x"),
            None
        );
        let bad = ToolCall {
            id: "c".into(),
            name: "T".into(),
            arguments: "{not json".into(),
        };
        assert_eq!(
            tool_call_from_action(&action_from_tool_call(&bad), "c").unwrap(),
            bad
        );

        let t = turn_from_native(Some("deleting t1"), std::slice::from_ref(&call)).unwrap();
        assert_eq!(t.thought, "deleting t1");
        let t = turn_from_native(Some("Shall I?"), &[]).unwrap();
        assert_eq!(
            t.action,
            Action::Final {
                answer: "Shall I?".into()
            }
        );
        assert_eq!(
            turn_from_native(None, &[]).unwrap_err().reason,
            ParseFailure::Empty
        );
        let mut second = call.clone();
        second.name = "Other".into();
        assert_eq!(
            turn_from_native(None, &[call.clone(), second])
                .unwrap()
                .action,
            turn_from_native(None, &[call]).unwrap().action,
            "the first call is the step"
        );
    }

    fn arb_input() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(
            "[a-z_]{1,8}",
            prop_oneof![
                "[a-zA-Z0-9 .,/-]{0,20}".prop_map(Value::from),
                any::<i32>().prop_map(Value::from),
                any::<bool>().prop_map(Value::from)
            ],
            0..4,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #[test]
        fn render_then_parse_is_identity(
            thought in "[a-zA-Z0-9][a-zA-Z0-9 ,.']{0,60}",
            tool in "[A-Z][A-Za-z]{1,20}",
            input in arb_input(),
            k in prop::option::of(1usize..20),
        ) {
            let turn = AgentTurn { thought: thought.trim().to_string(), action: Action::Tool { tool, input, call_id: None }, raw: None };
            let mut parsed = parse_turn(&render_turn(&turn, k)).unwrap();
            parsed.raw = None;
            prop_assert_eq!(parsed, turn);
        }

        #[test]
        fn final_answers_round_trip(thought in "[a-zA-Z][a-zA-Z0-9 ,.]{0,40}", answer in "[a-zA-Z][a-zA-Z0-9 ,.?]{0,60}") {
            let turn = AgentTurn { thought: thought.trim().to_string(), action: Action::Final { answer: answer.trim().to_string() }, raw: None };
            let mut parsed = parse_turn(&render_turn(&turn, None)).unwrap();
            parsed.raw = None;
            prop_assert_eq!(parsed, turn);
        }

        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse_turn(&text);
        }
    }
}
