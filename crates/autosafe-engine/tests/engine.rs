//! The embedded engine on the packaged model: loads, answers, is deterministic per seed, and
//! names the path and the fetch command when the model file is bad.

mod common;

use autosafe_engine::{Engine, EngineOptions};
use autosafe_llm::{CallContext, ChatModel, ChatRequest, FinishReason, Message};

fn ask(text: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..ChatRequest::new(vec![Message::user(text)])
    }
}

#[tokio::test]
async fn packaged_model_answers_a_chat_request() {
    let engine = common::engine();
    let reply = engine
        .chat(
            &ask("What is the capital of France?", 24),
            &CallContext::stage("test"),
        )
        .await
        .unwrap();
    assert_eq!(reply.model, "local:smollm2");
    assert_eq!(reply.choices.len(), 1);
    let choice = &reply.choices[0];
    assert!(!reply.text().trim().is_empty(), "empty reply");
    assert!(matches!(
        choice.finish_reason,
        FinishReason::Stop | FinishReason::Length
    ));
    // SmolLM2's template adds its default system prompt: 37 prompt tokens for this question.
    assert!(reply.usage.prompt_tokens > 30, "{:?}", reply.usage);
    assert!(
        reply.usage.completion_tokens >= 1 && reply.usage.completion_tokens <= 24,
        "{:?}",
        reply.usage
    );
    if choice.finish_reason == FinishReason::Length {
        assert_eq!(reply.usage.completion_tokens, 24);
    }
}

#[tokio::test]
async fn stop_strings_and_budget_end_replies() {
    let engine = common::engine();
    let mut req = ask("Count from 1 to 20, separated by commas.", 16);
    let full = engine.complete(&req).await.unwrap();
    let text = full.text().to_string();
    // Stop at the second character of the reply: the reply must end right before it.
    let stop: String = text.chars().skip(1).take(1).collect();
    req.stop = vec![stop.clone()];
    let cut = engine.complete(&req).await.unwrap();
    assert_eq!(cut.choices[0].finish_reason, FinishReason::Stop);
    assert!(
        text.starts_with(cut.text()) && !cut.text().contains(&stop),
        "{text:?} vs {:?}",
        cut.text()
    );
    let short = engine
        .complete(&ask("Tell me a long story about dragons.", 3))
        .await
        .unwrap();
    assert_eq!(short.choices[0].finish_reason, FinishReason::Length);
    assert_eq!(short.usage.completion_tokens, 3);
}

#[tokio::test]
async fn concurrent_requests_share_the_engine() {
    let engine = common::engine();
    let prompts = [
        "Name a fruit.",
        "Name a colour.",
        "Name a city.",
        "Name an animal.",
    ];
    let solo: Vec<String> = {
        let mut v = Vec::new();
        for p in prompts {
            v.push(
                engine
                    .complete(&ask(p, 12))
                    .await
                    .unwrap()
                    .text()
                    .to_string(),
            );
        }
        v
    };
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let e = engine.clone();
            let req = ask(p, 12);
            tokio::spawn(async move { e.complete(&req).await })
        })
        .collect();
    for (h, alone) in handles.into_iter().zip(solo) {
        let reply = h.await.unwrap().unwrap();
        assert!(!reply.text().is_empty());
        // Batched decoding may change the last bits of the logits, so greedy replies usually,
        // but not always, match the solo ones; the first token must.
        let first = |s: &str| s.split_whitespace().next().map(str::to_string);
        assert_eq!(first(reply.text()), first(&alone));
    }
}

#[test]
fn missing_model_names_path_and_fetch_command() {
    let path = std::env::temp_dir().join("autosafe-engine-test-absent/none.gguf");
    let err = Engine::load(
        &format!("local:{}", path.display()),
        EngineOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("./scripts/fetch-model.sh"), "{err}");
}

#[test]
fn corrupt_model_names_path_and_fetch_command() {
    let dir = std::env::temp_dir().join(format!(
        "autosafe-engine-test-corrupt-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // A valid GGUF header followed by garbage: passes the magic check, llama.cpp must reject it.
    let path = dir.join("truncated.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&[0xAB; 64]);
    std::fs::write(&path, bytes).unwrap();
    let err = Engine::load(
        &format!("local:{}", path.display()),
        EngineOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("corrupt") && err.contains("./scripts/fetch-model.sh"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn request_larger_than_a_sequence_context_is_refused_at_once() {
    // The test engine gives each sequence a 4096-token KV stream; a budget beyond it can never
    // fit, so the engine refuses it before decoding instead of running out of cache midway.
    let engine = common::engine();
    let err = engine
        .complete(&ask("Name a fruit.", 5000))
        .await
        .expect_err("a request beyond the per-sequence context must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains("context size of a sequence (4096)") && msg.contains("5000"),
        "{msg}"
    );
    // The engine still serves requests that fit.
    let ok = engine.complete(&ask("Name a fruit.", 4)).await.unwrap();
    assert!(ok.usage.completion_tokens >= 1);
}
