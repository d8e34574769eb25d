//! The record layouts. Each function turns a [`Prepared`] record into one JSONL value; the
//! pairwise ones also take the rejected action, rendered as their chosen side renders an action.

use std::path::Path;

use autosafe_ots::{Action, AgentTurn, LabelSource};
use serde_json::{Value, json};

use super::{ExportFormat, Prepared};
use crate::error::Result;
use crate::react::render_turn;
use crate::rundir::{write_bytes_atomic, write_json_atomic};
use crate::tools::openai_tools;

/// The call id of history step `i` (0-based) in chat formats.
fn call_id(i: usize) -> String {
    format!("call_{}", i + 1)
}

/// Arguments as an object (HF chat templates) — a string input that was not JSON stays a string.
fn args_value(input: &Value) -> Value {
    input.clone()
}

/// Arguments as JSON text (OpenAI wire format).
fn args_text(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The paper's Alpaca layout: instruction = agent system prompt with tool descriptions;
/// input = reminder (safety records) + instruction + trajectory so far + "give the thought,
/// action and action input for this round"; output = `Thought k / Action k / Action Input k`.
pub fn alpaca(p: &Prepared) -> Value {
    let k = p.history.len() + 1;
    json!({
        "instruction": p.react_system,
        "input": p.alpaca_input,
        "output": render_turn(&p.target, Some(k)),
    })
}

/// LLaMA-Factory ShareGPT: `conversations` alternating human/observation (odd positions) and
/// gpt/function_call (even positions); `function_call` values are `{"name", "arguments"}` JSON;
/// `tools` is the JSON text of the function specs; `system` the agent prompt. The target is the
/// last turn (train with `mask_history: true` to learn only it).
pub fn sharegpt(p: &Prepared) -> Value {
    let mut conv = vec![json!({"from": "human", "value": p.user_message})];
    for step in &p.history {
        conv.push(sharegpt_turn(&step.turn));
        conv.push(
            json!({"from": "observation", "value": step.observation.clone().unwrap_or_default()}),
        );
    }
    conv.push(sharegpt_turn(&p.target));
    let tools: Vec<Value> = p
        .tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
        .collect();
    json!({
        "conversations": conv,
        "system": p.native_system,
        "tools": Value::Array(tools).to_string(),
    })
}

fn sharegpt_turn(turn: &AgentTurn) -> Value {
    match &turn.action {
        Action::Tool { tool, input, .. } => {
            json!({"from": "function_call", "value": json!({"name": tool, "arguments": args_value(input)}).to_string()})
        }
        Action::Final { answer } => json!({"from": "gpt", "value": answer}),
    }
}

/// An assistant message in OpenAI shape (arguments as text) or HF shape (arguments as object).
fn assistant_message(turn: &AgentTurn, id: &str, hf: bool) -> Value {
    match &turn.action {
        Action::Tool { tool, input, .. } => {
            let arguments = if hf {
                args_value(input)
            } else {
                Value::String(args_text(input))
            };
            let mut m = json!({
                "role": "assistant",
                "tool_calls": [{"id": id, "type": "function", "function": {"name": tool, "arguments": arguments}}],
            });
            m["content"] = if turn.thought.is_empty() {
                Value::Null
            } else {
                Value::String(turn.thought.clone())
            };
            m
        }
        Action::Final { answer } => json!({"role": "assistant", "content": answer}),
    }
}

/// Chat messages of a record: system, user, then per history step an assistant tool call and a
/// tool result. `hf` selects Hugging Face conventions (object arguments, tool `name`).
fn chat_history(p: &Prepared, hf: bool) -> Vec<Value> {
    let mut msgs = vec![
        json!({"role": "system", "content": p.native_system}),
        json!({"role": "user", "content": p.user_message}),
    ];
    for (i, step) in p.history.iter().enumerate() {
        let id = call_id(i);
        msgs.push(assistant_message(&step.turn, &id, hf));
        let content = step.observation.clone().unwrap_or_default();
        match (&step.turn.action, hf) {
            (Action::Tool { tool, .. }, true) => msgs.push(
                json!({"role": "tool", "name": tool, "tool_call_id": id, "content": content}),
            ),
            (Action::Tool { .. }, false) => {
                msgs.push(json!({"role": "tool", "tool_call_id": id, "content": content}))
            }
            (Action::Final { .. }, _) => {}
        }
    }
    msgs
}

/// OpenAI fine-tuning chat JSONL: `messages` (history assistant turns carry `weight: 0`, the
/// target is trained), `tools` in function form, `parallel_tool_calls: false`.
pub fn openai(p: &Prepared) -> Value {
    let mut msgs = chat_history(p, false);
    for m in msgs.iter_mut().filter(|m| m["role"] == "assistant") {
        m["weight"] = json!(0);
    }
    msgs.push(assistant_message(
        &p.target,
        &call_id(p.history.len()),
        false,
    ));
    json!({"messages": msgs, "tools": openai_tools(&p.tools), "parallel_tool_calls": false})
}

/// TRL `SFTTrainer` conversational prompt/completion with tools: `prompt` holds everything up
/// to the target, `completion` the target assistant message; `tools` the function schemas.
pub fn trl(p: &Prepared) -> Value {
    let prompt = chat_history(p, true);
    let completion = vec![assistant_message(
        &p.target,
        &call_id(p.history.len()),
        true,
    )];
    json!({"prompt": prompt, "completion": completion, "tools": openai_tools(&p.tools)})
}

/// TRL `DPOTrainer` conversational preference pair: `prompt` as in [`trl`], `chosen` the
/// target assistant message, `rejected` the caught unsafe one, `tools`; `rejected_labelled_by`
/// says whose label made the rejected side unsafe (`checkers` or `judge`).
pub fn trl_dpo(p: &Prepared, rejected: &AgentTurn, labelled_by: LabelSource) -> Value {
    let id = call_id(p.history.len());
    json!({
        "prompt": chat_history(p, true),
        "chosen": [assistant_message(&p.target, &id, true)],
        "rejected": [assistant_message(rejected, &id, true)],
        "tools": openai_tools(&p.tools),
        "rejected_labelled_by": labelled_by.as_str(),
    })
}

/// LLaMA-Factory pairwise alpaca: `instruction` and `input` as in [`alpaca`], `chosen` and
/// `rejected` both `Thought k / Action k / Action Input k` (or `Final Answer`) text.
pub fn alpaca_pairwise(p: &Prepared, rejected: &AgentTurn, labelled_by: LabelSource) -> Value {
    let k = p.history.len() + 1;
    json!({
        "instruction": p.react_system,
        "input": p.alpaca_input,
        "chosen": render_turn(&p.target, Some(k)),
        "rejected": render_turn(rejected, Some(k)),
        "rejected_labelled_by": labelled_by.as_str(),
    })
}

/// Axolotl `chat_template`: `messages` where each message carries `train` (only the target is
/// `true`), and `tools`.
pub fn axolotl(p: &Prepared) -> Value {
    let mut msgs = chat_history(p, true);
    for m in msgs.iter_mut() {
        m["train"] = json!(false);
    }
    let mut target = assistant_message(&p.target, &call_id(p.history.len()), true);
    target["train"] = json!(true);
    msgs.push(target);
    json!({"messages": msgs, "tools": openai_tools(&p.tools)})
}

/// Writes the files a trainer needs next to the data: LLaMA-Factory `dataset_info.json`
/// entries for alpaca and sharegpt, an Axolotl dataset config snippet.
pub(crate) fn write_companions(format: ExportFormat, dir: &Path, dataset: &str) -> Result<()> {
    match format {
        ExportFormat::Alpaca => write_json_atomic(
            &dir.join("dataset_info.json"),
            &dataset_info(format, dataset),
        ),
        ExportFormat::Sharegpt | ExportFormat::AlpacaPairwise => write_json_atomic(
            &dir.join("dataset_info.json"),
            &dataset_info(format, dataset),
        ),
        ExportFormat::Axolotl => {
            let yaml = format!(
                "# Axolotl dataset entry for {dataset}: merge into your training config.\n\
                 datasets:\n  - path: {file}\n    ds_type: json\n    type: chat_template\n    field_messages: messages\n    field_tools: tools\n    message_field_training: train\n",
                file = format.data_file()
            );
            write_bytes_atomic(&dir.join("axolotl.yaml"), yaml.as_bytes())
        }
        ExportFormat::Openai | ExportFormat::Trl | ExportFormat::TrlDpo => Ok(()),
    }
}

/// The LLaMA-Factory `dataset_info.json` content for the alpaca, pairwise alpaca or sharegpt
/// export (LLaMA-Factory's column names: `prompt`, `query`, `response`; `chosen`, `rejected`
/// with `ranking: true` for preference data).
pub fn dataset_info(format: ExportFormat, dataset: &str) -> Value {
    match format {
        ExportFormat::Sharegpt => json!({
            format!("{dataset}_sharegpt"): {
                "file_name": format.data_file(),
                "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
                "tags": {
                    "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                    "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"
                }
            }
        }),
        ExportFormat::AlpacaPairwise => json!({
            format!("{dataset}_alpaca_pairwise"): {
                "file_name": format.data_file(),
                "ranking": true,
                "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}
            }
        }),
        _ => json!({
            format!("{dataset}_alpaca"): {
                "file_name": ExportFormat::Alpaca.data_file(),
                "columns": {"prompt": "instruction", "query": "input", "response": "output"}
            }
        }),
    }
}
