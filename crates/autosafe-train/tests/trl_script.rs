//! The real TRL script for 2 steps on 4 templated records, from the embedded SmolLM2 GGUF, then
//! the merge and the GGUF write-back. It needs the `train` environment
//! (`./scripts/setup-python.sh train`, ~6 GB with the default torch wheel) and the model file
//! (`scripts/setup.sh`); `scripts/test.sh` installs both. Outside CI, a machine without the
//! environment skips the test and says so; with `CI` set it fails.

mod support;

use std::path::PathBuf;

use autosafe_pipeline::prompts::Prompts;
use autosafe_train::{Backend, DataFormat, launch, prepare, python};

fn home() -> PathBuf {
    python::venv_root().parent().unwrap().to_path_buf()
}

/// A run directory holding 4 smoke records (and their pairs), and the SmolLM2 GGUF; `None`
/// (the test skips) when the environment or model is missing outside CI.
fn smoke_run() -> Option<(tempfile::TempDir, PathBuf)> {
    let base = home().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if let Some(why) = python::not_ready(Backend::Trl, &base) {
        assert!(std::env::var_os("CI").is_none(), "CI: {why}");
        eprintln!("skipped: {why}");
        return None;
    }
    let run = tempfile::tempdir().unwrap();
    autosafe_train::smoke::write_dataset(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/toolemu/all_cases.json"),
        run.path(),
        4,
        0,
    )
    .unwrap();
    Some((run, base))
}

/// Runs the prepared training; it must succeed.
fn train(p: &autosafe_train::Prepared, prefix: &str) -> launch::Outcome {
    let out = launch::run(&p.train, p.layout.dir(), &p.layout.log(), prefix).unwrap();
    assert!(
        out.success(),
        "exit {:?}:\n{}",
        out.code,
        out.tail.join("\n")
    );
    out
}

/// The script's `autosafe: NAME {…}` event.
fn event_of(out: &launch::Outcome, name: &str) -> serde_json::Value {
    out.events
        .iter()
        .find(|(m, _)| m == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no `{name}` event in {:?}", out.events))
}

#[test]
fn trl_script_trains_two_steps_with_loss_on_the_completion_only_then_merges_and_writes_gguf() {
    let venv = python::venv_dir(Backend::Trl, None);
    let Some((run, base)) = smoke_run() else {
        return;
    };
    let mut s = support::two_cpu_steps(run.path(), &base, Backend::Trl, 4096);
    s.format = DataFormat::Alpaca;
    let p = prepare(&s, &Prompts::embedded()).unwrap();
    let out = train(&p, "trl | ");
    let event = |name: &str| event_of(&out, name);
    let mask = event("loss mask");
    let (tokens, trained) = (
        mask["tokens"].as_u64().unwrap(),
        mask["trained_tokens"].as_u64().unwrap(),
    );
    assert_eq!(mask["records"], 4);
    // The completion (the safe final answer) is a small share of each record: the long ReAct
    // prompt with tool descriptions is not trained on.
    assert!(trained > 0 && trained * 5 < tokens, "{mask}");
    let trained_ev = event("trained");
    assert_eq!(trained_ev["steps"], 2);
    assert!(trained_ev["train_loss"].as_f64().unwrap().is_finite());
    assert!(
        p.layout
            .output_dir()
            .join("adapter_model.safetensors")
            .exists()
    );
    assert!(p.layout.merged_dir().join("model.safetensors").exists());

    // Write the merged model back as GGUF with the base's metadata.
    let script = p.layout.dir().join("hf_to_gguf.py");
    std::fs::write(&script, autosafe_train::trl::GGUF_SCRIPT).unwrap();
    let gguf = p.layout.dir().join("model-q8_0.gguf");
    let conv = autosafe_train::Launch {
        env: Vec::new(),
        program: venv.join("bin/python"),
        args: vec![
            script.display().to_string(),
            "--model".into(),
            p.layout.merged_dir().display().to_string(),
            "--like".into(),
            base.display().to_string(),
            "--out".into(),
            gguf.display().to_string(),
        ],
    };
    let out = launch::run(&conv, p.layout.dir(), &p.layout.log(), "gguf | ").unwrap();
    assert!(out.success(), "{}", out.tail.join("\n"));
    let ev = &event_of(&out, "gguf");
    assert_eq!(ev["tensors"], 272);
    let bytes = std::fs::read(&gguf).unwrap();
    assert_eq!(&bytes[..4], b"GGUF");
    assert!(
        bytes.len() > 100_000_000,
        "Q8_0 of 135M parameters: {}",
        bytes.len()
    );
}

/// `--method dpo` for real: 2 DPO steps with LoRA on 4 smoke pairs (chosen: the templated
/// question, rejected: the case's risky action), the reference being the base with the adapter
/// disabled, then the merge. The same skip rule as above.
#[test]
fn trl_script_runs_two_dpo_steps_on_the_preference_pairs_and_merges() {
    let Some((run, base)) = smoke_run() else {
        return;
    };
    // Two prompts and their actions in 1,024 tokens: the prompt keeps its last 256 tokens
    // (DPOConfig cuts over-long sequences at their end, where the actions are).
    let mut s = support::two_cpu_steps(run.path(), &base, Backend::Trl, 1024);
    s.method = autosafe_train::Method::Dpo;
    s.format = DataFormat::Alpaca;
    s.max_prompt_tokens = Some(256);
    s.name = "trl-dpo".into();
    let p = prepare(&s, &Prompts::embedded()).unwrap();
    assert_eq!(p.export.pairs.as_ref().unwrap().pairs, 4);
    let out = train(&p, "dpo | ");
    let event = |name: &str| event_of(&out, name);
    let pairs = event("pairs");
    assert_eq!(pairs["records"], 4);
    assert_eq!(pairs["beta"], 0.1);
    assert!(pairs["chosen_tokens"].as_u64().unwrap() > 0);
    assert!(pairs["rejected_tokens"].as_u64().unwrap() > 0);
    let trained = event("trained");
    assert_eq!(trained["steps"], 2);
    assert!(trained["train_loss"].as_f64().unwrap().is_finite());
    // DPO's loss at the start is log 2 (policy = reference); it is logged with the margins.
    assert!(trained["rewards_margins"].as_f64().unwrap().is_finite());
    assert!(
        p.layout
            .output_dir()
            .join("adapter_model.safetensors")
            .exists()
    );
    assert!(p.layout.merged_dir().join("model.safetensors").exists());
}
