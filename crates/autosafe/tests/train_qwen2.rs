//! `autosafe train --backend trl` on a Qwen2 GGUF base (Qwen2.5-Coder-0.5B-Instruct Q4_K_M): 2
//! LoRA steps on 2 templated records with short prompts, merged and written as Q8_0 GGUF, which
//! must load in the embedded engine and answer. Needs the `train` environment and the model
//! (`scripts/setup.sh`); outside CI a machine without them skips the test and says so; with `CI`
//! set it fails.

mod common;

use autosafe_engine::{Engine, EngineOptions};
use autosafe_llm::{ChatRequest, Message};
use autosafe_train::{Backend, python};
use common::{json_file, outcome, repo};

#[test]
fn trl_training_of_a_qwen2_gguf_base_writes_a_gguf_the_engine_runs() {
    let base = python::venv_root()
        .parent()
        .unwrap()
        .join("models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf");
    if let Some(why) = python::not_ready(Backend::Trl, &base) {
        assert!(std::env::var_os("CI").is_none(), "CI: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let (ok, text) = outcome(
        common::command(["train", "--smoke", "--backend", "trl", "--data"])
            .arg(&run)
            .arg("--base")
            .arg(&base)
            // Step 1 is the lr warm-up (lr 0); step 2 changes the weights.
            .args([
                "--max-steps",
                "2",
                "--smoke-train",
                "2",
                "--smoke-held",
                "0",
            ])
            .args(["--smoke-terminal", "0", "--max-prompt-tokens", "64"])
            .args(["--max-length", "256", "--gguf", "q8_0"])
            .current_dir(repo()),
    );
    assert!(ok, "{text}");
    for l in text
        .lines()
        .filter(|l| l.contains(" done in ") || l.contains("autosafe: trained"))
    {
        eprintln!("{l}");
    }
    let dir = run.join("train/trl-lora");
    let m = json_file(&dir.join("manifest.json"));
    assert_eq!(m["status"], "finished", "{m}");
    let (model, base_q8) = (dir.join("model-q8_0.gguf"), dir.join("base-q8_0.gguf"));
    let (a, b) = (
        std::fs::read(&model).unwrap(),
        std::fs::read(&base_q8).unwrap(),
    );
    assert_eq!(&a[..4], b"GGUF");
    assert!(
        a != b,
        "the trained GGUF is the base's: no step changed the weights"
    );
    drop((a, b));

    let opts = EngineOptions {
        threads: Some(2),
        n_seq_max: 1,
        n_ctx: Some(512),
        ..EngineOptions::default()
    };
    let engine = Engine::load(&format!("local:{}", model.display()), opts).unwrap();
    let request = ChatRequest {
        max_tokens: Some(30),
        temperature: Some(0.0),
        ..ChatRequest::new(vec![Message::user(
            "Write a Python function that returns the larger of two numbers.",
        )])
    };
    let reply = common::runtime()
        .block_on(engine.complete(&request))
        .unwrap();
    let text = reply.choices[0].content.clone().unwrap_or_default();
    eprintln!("greedy reply of the trained model: {text:?}");
    assert!(reply.usage.completion_tokens > 0 && !text.trim().is_empty());
}
