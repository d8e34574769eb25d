//! The single-sequence context: a request running alone is decoded there, moves into the batched
//! context when another arrives, and back when it is alone again, without losing its KV cells.
//! In its own test binary so that no other test's requests change the engine's counters.

mod common;

use autosafe_engine::engine::SamplingParams;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams::greedy_exact(max_tokens)
}

#[tokio::test]
async fn a_sequence_moves_between_contexts_and_keeps_its_text() {
    let engine = common::engine();
    let stats = engine.stats();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let prompt = engine.tokenize("<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n");

    // Alone from the start: decoded in the single-sequence context, nothing moved.
    let (solo0, batch0) = (count(&stats.solo_steps), count(&stats.batch_steps));
    let alone = engine
        .generate(prompt.clone(), greedy(96), None)
        .await
        .unwrap();
    assert_eq!(alone.completion_tokens, 96);
    assert!(count(&stats.solo_steps) - solo0 >= 96);
    assert_eq!(count(&stats.batch_steps), batch0);
    assert_eq!(count(&stats.moved_to_batch), 0);
    assert_eq!(count(&stats.moved_to_solo), 0);

    // The same request again; once it has generated some tokens, a second one arrives.
    let solo1 = count(&stats.solo_steps);
    let first = engine.submit(prompt.clone(), greedy(96), None).unwrap();
    while count(&stats.solo_steps) < solo1 + 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = engine
        .generate(engine.tokenize("Name a colour."), greedy(6), None)
        .await
        .unwrap();
    assert_eq!(other.completion_tokens, 6);
    let moved = first.await.unwrap().unwrap();
    assert_eq!(count(&stats.moved_to_batch), 1, "never moved to the batch");
    assert_eq!(
        count(&stats.moved_to_solo),
        1,
        "never moved back when alone"
    );
    assert!(count(&stats.batch_steps) > batch0);
    // Moving copies the KV cells exactly, so greedy decoding goes on as if nothing happened.
    assert_eq!(moved.completion_tokens, 96);
    assert_eq!(moved.text, alone.text);
}
