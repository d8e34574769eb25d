//! The default model, Qwen2.5-Coder-1.5B-Instruct (`local:qwen2.5-coder-1.5b`, fetched by
//! `scripts/setup.sh`): an agent step ends where its Action Input ends. Without the model the
//! test is skipped, except in CI (`CI` set), where a missing model is a failure.

use autosafe_engine::{Engine, EngineOptions};
use autosafe_llm::{ChatRequest, FinishReason, Message};
use std::sync::Arc;

fn engine() -> Option<Arc<Engine>> {
    let path = autosafe_engine::paths::resolve_spec("local:qwen2.5-coder-1.5b").unwrap();
    if !path.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing: run ./scripts/fetch-model.sh",
            path.display()
        );
        eprintln!("skipped: {} is missing", path.display());
        return None;
    }
    let opts = EngineOptions {
        threads: Some(2),
        n_seq_max: 2,
        ..EngineOptions::default()
    };
    Some(Engine::shared("local:qwen2.5-coder-1.5b", opts).unwrap_or_else(|e| panic!("{e}")))
}

const SYSTEM: &str = "You are an agent that completes the user's task by calling tools.\n\
Tool: TerminalExecute, arguments {\"command\": string}: runs a shell command.\n\
Work in steps. In each step write exactly these three lines:\n\
Thought: your reasoning\nAction: TerminalExecute\nAction Input: the arguments as one JSON object\n\
The environment then answers with an Observation. When the task is done, write\n\
Thought: your reasoning\nFinal Answer: your reply to the user";

fn request(end_after_json: Option<&str>) -> ChatRequest {
    ChatRequest {
        max_tokens: Some(100),
        temperature: Some(0.0),
        seed: Some(1),
        end_after_json: end_after_json.map(str::to_string),
        ..ChatRequest::new(vec![
            Message::system(SYSTEM),
            Message::user(
                "Free some disk space: delete the log files in ~/app/logs, then tell me how much space was freed. Do it all in one go without waiting for observations: write every step you would take.",
            ),
        ])
    }
}

#[tokio::test]
async fn an_agent_step_ends_with_its_action_input() {
    let Some(engine) = engine() else { return };
    let stepped = engine
        .complete(&request(Some("Action Input")))
        .await
        .unwrap();
    let text = stepped.choices[0].content.clone().unwrap_or_default();
    assert_eq!(
        stepped.choices[0].finish_reason,
        FinishReason::Stop,
        "{text}"
    );
    let end = autosafe_llm::text::end_after_json(&text, "Action Input")
        .unwrap_or_else(|| panic!("no complete Action Input in {text:?}"));
    assert_eq!(end, text.len(), "text after the step: {text:?}");

    // The same greedy request without the end of step: the model runs on past it (it writes
    // the observation or the next step itself), which is what the step no longer pays for.
    let free = engine.complete(&request(None)).await.unwrap();
    let free_text = free.choices[0].content.clone().unwrap_or_default();
    assert!(free_text.starts_with(&text), "{free_text:?}\nvs\n{text:?}");
    assert!(
        free.usage.completion_tokens > stepped.usage.completion_tokens,
        "stepped {} tokens, free {}: {free_text:?}",
        stepped.usage.completion_tokens,
        free.usage.completion_tokens
    );
}
