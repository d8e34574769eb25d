//! The offline loop of `scripts/smoke-train.sh`, end to end, at cut sizes: templated data → 30
//! LoRA steps with TRL on SmolLM2 → merge → GGUF → `eval snapshots` of base and fine-tuned (3
//! held-apart ToolEmu start states, 1 terminal start state continued for 1 step in the sandbox)
//! → `compare` → `report`.
//!
//! It needs the `train` environment, which `scripts/test.sh` installs
//! (`./scripts/setup-python.sh train`). Outside CI a machine without it skips the test and says
//! so; with `CI` set a missing environment fails it.

mod common;

use std::path::Path;
use std::process::Command;

use autosafe_train::{Backend, python};
use common::{json_file, jsonl, outcome, repo};

/// Sampled actions that reached the judge (not `unmeasured`) in an eval run's records.
fn measured(eval_run: &Path) -> usize {
    jsonl(&eval_run.join("eval/snapshots.jsonl"))
        .iter()
        .flat_map(|r| r["samples"].as_array().unwrap().clone())
        .filter(|s| s["label"] != "unmeasured")
        .count()
}

#[test]
fn smoke_loop_trains_merges_and_measures_base_against_fine_tuned() {
    let home = python::venv_root().parent().unwrap().to_path_buf();
    if let Some(why) = python::not_ready(
        Backend::Trl,
        &home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    ) {
        assert!(std::env::var_os("CI").is_none(), "CI: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("smoke");
    let (ok, text) = outcome(
        Command::new("bash")
            .arg(repo().join("scripts/smoke-train.sh"))
            .arg(&run)
            .current_dir(repo())
            .env("AUTOSAFE_BIN", env!("CARGO_BIN_EXE_autosafe"))
            .env("SMOKE_LIMIT", "3")
            .env("SMOKE_TERMINAL_LIMIT", "1")
            .env("SMOKE_TERMINAL_STEPS", "1"),
    );
    assert!(ok, "smoke-train.sh failed:\n{text}");

    // Held apart, checked twice: by `autosafe train --smoke` and against the exported file.
    assert!(
        text.contains(
            "share no scenario id, case name or instruction with the 32 training records"
        ),
        "{text}"
    );
    assert!(text.contains("0 of their instructions found in the training data (all 32 training instructions are found there)"), "{text}");

    // Training finished, with the merged model written back as GGUF next to the base.
    let train = run.join("train/trl-lora");
    let manifest = json_file(&train.join("manifest.json"));
    assert_eq!(manifest["status"], "finished", "{manifest:#}");
    for gguf in ["model-q8_0.gguf", "base-q8_0.gguf"] {
        let len = std::fs::metadata(train.join(gguf)).unwrap().len();
        assert!(len > 100_000_000, "{gguf}: {len} bytes");
    }

    // Both models evaluated on the same held-apart start states, one record per snapshot.
    let eval = run.join("eval");
    for (name, n) in [
        ("base", 3),
        ("model", 3),
        ("base-terminal", 1),
        ("model-terminal", 1),
    ] {
        let records = jsonl(&eval.join(name).join("eval/snapshots.jsonl"));
        assert_eq!(records.len(), n, "{name}");
        if name.ends_with("terminal") {
            assert!(
                records[0]["helpfulness"].is_object(),
                "{name}: {:#}",
                records[0]
            );
        }
    }
    // The fine-tuned model answers in the trained layout, so its replies reach the judge; the
    // base model's (printed for the log) mostly run past the token budget.
    let (base, model) = (measured(&eval.join("base")), measured(&eval.join("model")));
    eprintln!("measured samples: base {base} of 3, fine-tuned {model} of 3");
    assert!(model >= 1, "no fine-tuned reply was measured:\n{text}");

    // Before/after: compare printed, reports written.
    assert!(text.contains("McNemar"), "{text}");
    for report in ["report.html", "report-terminal.html"] {
        let html = std::fs::read_to_string(run.join(report)).unwrap();
        assert!(html.contains("<svg"), "{report}");
    }
    let times = std::fs::read_to_string(run.join("smoke_times.tsv")).unwrap();
    for phase in [
        "setup",
        "train",
        "eval-base",
        "eval-model-terminal",
        "report",
    ] {
        assert!(
            times.lines().any(|l| l.split('\t').next() == Some(phase)),
            "{phase} missing in {times}"
        );
    }
}
