//! `autosafe run` end to end against the scripted OpenAI-compatible server on loopback (the
//! responder of the pipeline's stage tests answers by role), then `autosafe run` again to show
//! that a finished run resumes without re-doing anything.

mod common;
use autosafe_test_support::stages as support;

use std::path::Path;

use common::{ALL_ROLES, args, autosafe_async, json_file, models, temp_dir};
use serde_json::Value;

fn config(url: &str, out: &Path) -> String {
    format!(
        r#"name = "cli"
out = "{out}"
cache = false

{models}
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
        out = out.display(),
        models = models(url, ALL_ROLES)
    )
}

/// `autosafe run --config CFG` then `extra`, off the async runtime's threads.
async fn run_cli(cfg: &Path, extra: &[&str]) -> (bool, String) {
    let mut a = args(&["run", "--config", cfg.to_str().unwrap()]);
    a.extend(args(extra));
    autosafe_async(a).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autosafe_run_chains_the_stages_from_a_config_and_resumes() {
    let server = support::server().await;
    let dir = temp_dir("run");
    let cfg = dir.join("cli.toml");
    std::fs::write(&cfg, config(&server.base_url(), &dir.join("runs"))).unwrap();
    let (ok, text) = run_cli(&cfg, &[]).await;
    assert!(ok, "{text}");
    let run = dir.join("runs").join("cli");
    assert!(text.contains(&run.display().to_string()), "{text}");
    assert!(
        text.contains("Todoist/data_loss/action"),
        "coverage table printed: {text}"
    );
    let stats: Value = json_file(&run.join("stats.json"));
    let st = &stats["stages"];
    assert_eq!(st["synthesize"]["input"], 6);
    assert_eq!(st["synthesize"]["output"], 2);
    assert_eq!(st["synthesize"]["rejected"]["exact_duplicate"], 1);
    assert_eq!(st["elicit"]["output"], 1);
    assert_eq!(st["elicit"]["unmeasured"]["parse_error"], 1);
    assert_eq!(st["utility"]["output"], 1);
    assert_eq!(st["reflect"]["output"], 1);
    assert_eq!(st["export"]["output"], 2);
    let manifest: Value = json_file(&run.join("manifest.json"));
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
    let (ok, text) = run_cli(&cfg, &[]).await;
    assert!(ok, "{text}");
    assert_eq!(server.request_count(), before, "{text}");
    assert!(text.contains("synthesize: in 6 out 2 resumed 6"), "{text}");
    assert_eq!(std::fs::read(run.join("safe.jsonl")).unwrap(), safe);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_location_is_configurable_and_no_cache_sends_every_request() {
    let server = support::server().await;
    let dir = temp_dir("cacheflags");
    let cfg = dir.join("cli.toml");
    std::fs::write(&cfg, config(&server.base_url(), &dir.join("runs"))).unwrap();
    let cache = dir.join("shared-cache.sqlite");
    let cache_s = cache.display().to_string();
    let out = |name: &str| dir.join(name).display().to_string();
    // First run fills the cache at the chosen path.
    let (ok, text) = run_cli(&cfg, &["--out", &out("a"), "--cache", &cache_s]).await;
    assert!(ok, "{text}");
    assert!(cache.exists(), "cache written where --cache says");
    assert!(!dir.join("a/cli/cache/replies.sqlite").exists());
    let first = server.request_count();
    assert!(first > 0);
    // A fresh run directory with the same cache: every reply comes from the cache.
    let (ok, text) = run_cli(&cfg, &["--out", &out("b"), "--cache", &cache_s]).await;
    assert!(ok, "{text}");
    assert_eq!(server.request_count(), first, "{text}");
    // --no-cache: the same work is sent again, and no cache file appears in the run.
    let (ok, text) = run_cli(&cfg, &["--out", &out("c"), "--no-cache"]).await;
    assert!(ok, "{text}");
    assert_eq!(server.request_count(), 2 * first, "{text}");
    assert!(!dir.join("c/cli/cache/replies.sqlite").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// [`config`] with `prompts_dir = DIR` holding `file` = `text`.
fn config_with_prompt(url: &str, dir: &Path, file: &str, text: &str) -> String {
    let prompts = dir.join("prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::write(prompts.join(file), text).unwrap();
    format!(
        "prompts_dir = \"{}\"\n{}",
        prompts.display(),
        config(url, &dir.join("runs"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_template_fails_the_run_and_the_fixed_rerun_does_the_items() {
    let server = support::server().await;
    let dir = temp_dir("brokenprompt");
    let cfg = dir.join("cli.toml");
    let broken = "Judge {{ current_action }} under {{ no_such_field }}";
    let text = config_with_prompt(&server.base_url(), &dir, "judge_step.j2", broken);
    std::fs::write(&cfg, text).unwrap();
    let (ok, text) = run_cli(&cfg, &[]).await;
    assert!(!ok, "{text}");
    assert!(text.contains("prompt `judge_step.j2`"), "{text}");
    let run = dir.join("runs").join("cli");
    let log = std::fs::read_to_string(run.join("elicit_log.jsonl")).unwrap_or_default();
    assert_eq!(log, "", "nothing is recorded as finished");
    // Fixed: the same run does the items.
    let fixed = std::fs::read_to_string(common::repo().join("prompts/judge_step.j2")).unwrap();
    std::fs::write(dir.join("prompts").join("judge_step.j2"), fixed).unwrap();
    let (ok, text) = run_cli(&cfg, &[]).await;
    assert!(ok, "{text}");
    let stats: Value = json_file(&run.join("stats.json"));
    assert_eq!(stats["stages"]["elicit"]["output"], 1, "{text}");
    assert_eq!(stats["stages"]["elicit"]["unmeasured"]["parse_error"], 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompts_override_of_the_emulator_template_reaches_the_emulator() {
    let server = support::server().await;
    let dir = temp_dir("emuprompt");
    let cfg = dir.join("cli.toml");
    let embedded = std::fs::read_to_string(common::repo().join("prompts/emulator.j2")).unwrap();
    let marked = format!("{embedded}\nOVERRIDDEN-EMULATOR-PROMPT");
    let text = config_with_prompt(&server.base_url(), &dir, "emulator.j2", &marked);
    std::fs::write(&cfg, text).unwrap();
    let (ok, text) = run_cli(&cfg, &[]).await;
    assert!(ok, "{text}");
    let sent = support::sent_with_schema(&server, "tool_emulation");
    assert!(!sent.is_empty(), "the emulator was asked");
    assert!(
        sent.iter()
            .all(|t| t.ends_with("OVERRIDDEN-EMULATOR-PROMPT")),
        "{sent:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
