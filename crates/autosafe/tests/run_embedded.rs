//! `autosafe run --config configs/smollm2.toml`: the whole chain on the embedded engine with the
//! plumbing model (SmolLM2-135M from `$AUTOSAFE_HOME`, fetched by `scripts/setup.sh`; the default
//! run's Qwen2.5-Coder-1.5B is too slow for a debug test build) and small counts, on one engine
//! thread (`AUTOSAFE_ENGINE_THREADS=1`, as the engine tests: spinning llama.cpp threads slow a
//! busy machine down). Whatever the tiny model's quality, the run must complete, write every
//! file, and report counts that add up; the generator schema (outcomes prefixed by a category
//! name, the cell's category first, short lists and texts) makes it produce scenarios.

mod common;

use std::path::Path;

use common::{command, json_file, outcome};
use serde_json::Value;

fn lines(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .count() as u64
}

#[test]
fn run_on_the_embedded_model_completes_and_its_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/smollm2.toml");
    let (ok, text) = outcome(
        command(["run", "--out"])
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .env("AUTOSAFE_ENGINE_THREADS", "1"),
    );
    assert!(ok, "{text}");
    let run = dir.path().join("smollm2");
    for f in [
        "manifest.json",
        "stats.json",
        "coverage.json",
        "scenarios.jsonl",
        "snapshots.jsonl",
        "safe.jsonl",
    ] {
        assert!(run.join(f).is_file(), "{f} missing\n{text}");
    }
    for format in ["alpaca", "sharegpt", "openai", "trl", "axolotl"] {
        assert!(run.join("export").join(format).is_dir(), "export/{format}");
    }
    let stats: Value = json_file(&run.join("stats.json"));
    let st = &stats["stages"];
    let total = |v: &Value| -> u64 {
        v.as_object()
            .map(|m| m.values().map(|n| n.as_u64().unwrap()).sum())
            .unwrap_or(0)
    };
    // Every item in is accounted for: out, rejected (by reason) or unmeasured (by reason).
    for stage in ["synthesize", "elicit", "reflect", "export"] {
        let s = &st[stage];
        let input = s["input"].as_u64().unwrap();
        let output = s["output"].as_u64().unwrap();
        assert_eq!(
            input,
            output + total(&s["rejected"]) + total(&s["unmeasured"]),
            "{stage}: {s}\n{text}"
        );
    }
    // 1 toolkit × 2 categories × 1 source × 1 case.
    assert_eq!(st["synthesize"]["input"], 2, "{text}");
    // The files hold what the counts say, and each stage takes all of the previous one's output.
    let scenarios = lines(&run.join("scenarios.jsonl"));
    assert_eq!(st["synthesize"]["output"].as_u64().unwrap(), scenarios);
    assert!(
        scenarios > 0,
        "the generator schema should let the tiny model write at least one case\n{text}"
    );
    assert_eq!(st["elicit"]["input"].as_u64().unwrap(), scenarios);
    let snapshots = lines(&run.join("snapshots.jsonl"));
    assert_eq!(st["elicit"]["output"].as_u64().unwrap(), snapshots);
    assert_eq!(st["reflect"]["input"].as_u64().unwrap(), snapshots);
    assert_eq!(
        st["reflect"]["output"].as_u64().unwrap(),
        lines(&run.join("safe.jsonl"))
    );
    assert_eq!(
        st["utility"]["output"].as_u64().unwrap(),
        lines(&run.join("utility.jsonl"))
    );
    // The run says where everything went.
    assert!(text.contains("run: done."), "{text}");
}
