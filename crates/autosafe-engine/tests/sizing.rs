//! Memory sized to need and prefix reuse, on the packaged model. In its own test binary so that
//! no other test's requests change the engine's counters.

use autosafe_engine::engine::{MIN_CTX, SamplingParams};
use autosafe_engine::{Engine, EngineOptions};
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams::greedy_exact(max_tokens)
}

fn options() -> EngineOptions {
    EngineOptions {
        threads: Some(1),
        n_ctx: Some(4096),
        n_seq_max: 4,
        solo_context: false,
        ..EngineOptions::default()
    }
}

fn engine() -> Arc<Engine> {
    Engine::shared("local:smollm2", options()).unwrap_or_else(|e| panic!("{e}"))
}

fn chat(engine: &Engine, text: &str) -> Vec<llama_cpp_2::token::LlamaToken> {
    engine.tokenize(&format!(
        "<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    ))
}

#[tokio::test]
async fn contexts_grow_with_the_work_and_prefixes_are_reused() {
    let engine = engine();
    // Roles naming the same model with the same options share one engine.
    let again = Engine::shared("local:smollm2", options()).unwrap();
    assert!(
        Arc::ptr_eq(&engine, &again),
        "the same model was loaded twice"
    );
    let stats = engine.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);

    // Loaded small: one stream of the smallest context, whatever the limits.
    assert_eq!(load(&stats.ctx_per_stream), u64::from(MIN_CTX));
    assert_eq!(load(&stats.streams), 1);

    // A short request fits as it is.
    let short = engine
        .generate(chat(&engine, "Name a colour."), greedy(8), None)
        .await
        .unwrap();
    assert_eq!(short.completion_tokens, 8);
    assert_eq!(load(&stats.resizes), 0);

    // A request longer than a stream widens the streams (to the need, below the limit).
    let long = engine
        .generate(chat(&engine, "Name a colour."), greedy(1100), None)
        .await
        .unwrap();
    assert_eq!(long.completion_tokens, 1100);
    let per_stream = load(&stats.ctx_per_stream);
    assert!(
        (1100..=4096).contains(&per_stream),
        "stream of {per_stream} tokens"
    );
    assert_eq!(
        load(&stats.streams),
        1,
        "one request at a time needs one stream"
    );

    // Requests that wait for a slot add streams, up to the limit of 4.
    let mut pending = Vec::new();
    for i in 0..6 {
        let p = chat(&engine, &format!("Count to {i}."));
        pending.push(engine.submit(p, greedy(4), None).unwrap());
    }
    for rx in pending {
        assert_eq!(rx.await.unwrap().unwrap().completion_tokens, 4);
    }
    assert_eq!(load(&stats.streams), 4);
    assert!(load(&stats.peak_kv_cells) <= 4 * 4096);

    // Beyond the limit: refused at once, naming the setting.
    let err = engine
        .generate(chat(&engine, "Name a colour."), greedy(5000), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(4096)") && err.contains("AUTOSAFE_ENGINE_CTX"),
        "{err}"
    );

    // Prefix reuse: the same prompt again computes only its last token, and the reply is what
    // the prompt gave on cells computed afresh; a prompt sharing a long prefix with the last
    // one computes only the rest.
    let prefix = "You are a careful assistant. ".repeat(20);
    let b = chat(&engine, &format!("{prefix}Name a fruit."));
    let fresh = engine.generate(b.clone(), greedy(12), None).await.unwrap();
    let reused = engine.generate(b.clone(), greedy(12), None).await.unwrap();
    assert_eq!(reused.reused_tokens as usize, b.len() - 1);
    assert_eq!(reused.text, fresh.text, "reused cells changed the reply");
    let a = chat(&engine, &format!("{prefix}Name a tree."));
    let other = engine.generate(a, greedy(12), None).await.unwrap();
    assert!(
        other.reused_tokens as usize >= prefix.len() / 8,
        "reused {} of {} prompt tokens",
        other.reused_tokens,
        other.prompt_tokens
    );
    assert!(
        load(&stats.prompt_tokens_reused) >= u64::from(reused.reused_tokens + other.reused_tokens)
    );
}
