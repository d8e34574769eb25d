//! `autosafe run` end to end against the scripted OpenAI-compatible server on loopback (the
//! responder of the pipeline's stage tests answers by role), then `autosafe run` again to show
//! that a finished run resumes without re-doing anything.

#[path = "../../autosafe-pipeline/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("autosafe-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(url: &str, out: &Path) -> String {
    let m = format!("\"openai:scripted@{url}\"");
    format!(
        r#"name = "cli"
out = "{out}"
cache = false

[models]
generator = {m}
agent = {m}
judge = {m}
reflector = {m}
emulator = {m}

[synthesize]
toolkits = ["Todoist"]
categories = ["data_loss", "privacy_leak"]
per_cell = 1

[elicit]
samples = 1
max_steps = 4

[export]
utility_share = 1
"#,
        out = out.display()
    )
}

fn run_cli(cfg: &Path) -> (bool, String) {
    run_cli_with(cfg, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autosafe_run_chains_the_stages_from_a_config_and_resumes() {
    let server = support::server().await;
    let dir = temp_dir("run");
    let cfg = dir.join("cli.toml");
    std::fs::write(&cfg, config(&server.base_url(), &dir.join("runs"))).unwrap();
    let cfg2 = cfg.clone();
    let (ok, text) = tokio::task::spawn_blocking(move || run_cli(&cfg2))
        .await
        .unwrap();
    assert!(ok, "{text}");
    let run = dir.join("runs").join("cli");
    assert!(text.contains(&run.display().to_string()), "{text}");
    assert!(
        text.contains("Todoist/data_loss/action"),
        "coverage table printed: {text}"
    );
    let stats: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("stats.json")).unwrap()).unwrap();
    let st = &stats["stages"];
    assert_eq!(st["synthesize"]["input"], 6);
    assert_eq!(st["synthesize"]["output"], 2);
    assert_eq!(st["synthesize"]["rejected"]["exact_duplicate"], 1);
    assert_eq!(st["elicit"]["output"], 1);
    assert_eq!(st["elicit"]["unmeasured"]["parse_error"], 1);
    assert_eq!(st["utility"]["output"], 1);
    assert_eq!(st["reflect"]["output"], 1);
    assert_eq!(st["export"]["output"], 2);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["models"]["judge"]["model"], "scripted");
    assert!(
        manifest["prompt_hashes"]["judge_step.j2"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );
    for f in [
        "scenarios.jsonl",
        "snapshots.jsonl",
        "utility.jsonl",
        "safe.jsonl",
        "coverage.json",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    for f in [
        "alpaca/autosafe_alpaca.jsonl",
        "sharegpt/autosafe_sharegpt.jsonl",
        "openai/train.jsonl",
        "trl/train.jsonl",
        "axolotl/train.jsonl",
    ] {
        let text = std::fs::read_to_string(run.join("export").join(f)).unwrap();
        assert_eq!(text.lines().count(), 2, "{f}");
    }

    // Run again: everything is resumed, no model request is sent, the records are unchanged.
    let before = server.request_count();
    let safe = std::fs::read(run.join("safe.jsonl")).unwrap();
    let (ok, text) = tokio::task::spawn_blocking(move || run_cli(&cfg))
        .await
        .unwrap();
    assert!(ok, "{text}");
    assert_eq!(server.request_count(), before, "{text}");
    assert!(text.contains("synthesize: in 6 out 2 resumed 6"), "{text}");
    assert_eq!(std::fs::read(run.join("safe.jsonl")).unwrap(), safe);
    std::fs::remove_dir_all(&dir).ok();
}

fn run_cli_with(cfg: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_autosafe"))
        .args(["run", "--config"])
        .arg(cfg)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_location_is_configurable_and_no_cache_sends_every_request() {
    let server = support::server().await;
    let dir = temp_dir("cacheflags");
    let cfg = dir.join("cli.toml");
    std::fs::write(&cfg, config(&server.base_url(), &dir.join("runs"))).unwrap();
    let cache = dir.join("shared-cache.sqlite");
    let run_in = |out: &str, extra: Vec<String>| {
        let cfg = cfg.clone();
        let out = dir.join(out);
        async move {
            tokio::task::spawn_blocking(move || {
                let mut args = vec!["--out".to_string(), out.display().to_string()];
                args.extend(extra);
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                run_cli_with(&cfg, &refs)
            })
            .await
            .unwrap()
        }
    };
    // First run fills the cache at the chosen path.
    let (ok, text) = run_in("a", vec!["--cache".into(), cache.display().to_string()]).await;
    assert!(ok, "{text}");
    assert!(cache.exists(), "cache written where --cache says");
    assert!(!dir.join("a/cli/cache/replies.sqlite").exists());
    let first = server.request_count();
    assert!(first > 0);
    // A fresh run directory with the same cache: every reply comes from the cache.
    let (ok, text) = run_in("b", vec!["--cache".into(), cache.display().to_string()]).await;
    assert!(ok, "{text}");
    assert_eq!(server.request_count(), first, "{text}");
    // --no-cache: the same work is sent again, and no cache file appears in the run.
    let (ok, text) = run_in("c", vec!["--no-cache".into()]).await;
    assert!(ok, "{text}");
    assert_eq!(server.request_count(), 2 * first, "{text}");
    assert!(!dir.join("c/cli/cache/replies.sqlite").exists());
    std::fs::remove_dir_all(&dir).ok();
}
