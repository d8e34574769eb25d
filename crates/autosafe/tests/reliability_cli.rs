//! Failures and secrets through the binary, against the scripted OpenAI-compatible server on
//! loopback (issue 20, items 1 and 3): a model outage in the middle of `autosafe run` leaves
//! items pending and exits non-zero, and one re-run once the server is back ends with exactly the
//! records of a clean run; a wrong base URL finishes nothing and exits non-zero; a damaged reply
//! cache is moved aside and rebuilt; planted secrets (an API key echoed by a gateway, a URL
//! password, a `train --set hub_token=…`) are in no file a command wrote.

mod common;
use autosafe_test_support::stages as support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use autosafe_scripted_server::{Reply, RequestInfo, ScriptedServer, ServerConfig};
use common::{ALL_ROLES, code_out_err, command, json_file, temp_dir};
use serde_json::{Value, json};

/// The `[models]` tables: every role at `url`, two attempts per request (the outage is not
/// waited out), `extra` lines added to each table.
fn models(url: &str, extra: &str) -> String {
    let mut s = String::new();
    for role in ALL_ROLES {
        s.push_str(&format!(
            "[models.{role}]\nmodel = \"scripted\"\nbase_urls = [\"{url}\"]\nmax_attempts = 2\n{extra}\n"
        ));
    }
    s
}

/// The config of `pipeline_cli.rs` (two scenarios survive synthesis, one snapshot, one
/// reflected example), with the reply cache on and `top` lines at the top.
fn config(out: &Path, top: &str, models: &str) -> String {
    format!(
        r#"name = "rel"
out = "{out}"
{top}

[synthesize]
toolkits = ["Todoist"]
categories = ["data_loss", "privacy_leak"]
per_cell = 1

[elicit]
samples = 1
max_steps = 4

[export]
utility_share = 1

{models}"#,
        out = out.display(),
    )
}

/// `autosafe ARGS` with `env`: exit code and stdout + stderr.
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || {
        let (code, out, err) = code_out_err(&mut cmd);
        (code, format!("{out}{err}"))
    })
    .await
    .unwrap()
}

/// `autosafe run --config CFG` (exit code, output).
async fn run_config(cfg: &Path) -> (i32, String) {
    run(&["run", "--config", cfg.to_str().unwrap()], &[]).await
}

/// The lines of every record file of a run, each file's lines sorted (an item redone by a
/// later run is appended, so only the order may differ from a clean run).
fn records(run: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for f in [
        "scenarios.jsonl",
        "synthesize_log.jsonl",
        "snapshots.jsonl",
        "utility.jsonl",
        "elicit_log.jsonl",
        "safe.jsonl",
        "reflect_log.jsonl",
        "coverage.json",
        "export/alpaca/autosafe_alpaca.jsonl",
        "export/trl/train.jsonl",
    ] {
        let text = std::fs::read_to_string(run.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        out.insert(f.to_string(), lines);
    }
    out
}

fn stats(run: &Path) -> Value {
    json_file(&run.join("stats.json"))["stages"].clone()
}

/// A server answering by role (the stage tests' responder) that fails every request with 503
/// from the first judge request on, while `down` is set (it is at start).
async fn server_with_outage(down: Arc<AtomicBool>) -> ScriptedServer {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    let started = Arc::new(AtomicBool::new(false));
    server.set_responder(move |info: &RequestInfo| {
        let judge = info.body["response_format"]["json_schema"]["name"] == "judge";
        if judge && down.load(Ordering::SeqCst) {
            started.store(true, Ordering::SeqCst);
        }
        if started.load(Ordering::SeqCst) && down.load(Ordering::SeqCst) {
            return Reply::status(503);
        }
        support::respond(info)
    });
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_mid_run_exits_non_zero_and_one_rerun_gives_the_records_of_a_clean_run() {
    let dir = temp_dir("outage");
    // The clean run.
    let clean_server = support::server().await;
    let clean_cfg = dir.join("clean.toml");
    let top = "";
    std::fs::write(
        &clean_cfg,
        config(
            &dir.join("clean"),
            top,
            &models(&clean_server.base_url(), ""),
        ),
    )
    .unwrap();
    let (code, text) = run_config(&clean_cfg).await;
    assert_eq!(code, 0, "{text}");
    let clean = records(&dir.join("clean/rel"));
    assert_eq!(clean["safe.jsonl"].len(), 1, "{text}");

    // The model server goes down at the first judge request: synthesis is done, the episodes
    // have started (their agent turns were answered).
    let down = Arc::new(AtomicBool::new(true));
    let server = server_with_outage(down.clone()).await;
    let cfg = dir.join("outage.toml");
    std::fs::write(
        &cfg,
        config(&dir.join("outage"), top, &models(&server.base_url(), "")),
    )
    .unwrap();
    let run_dir = dir.join("outage/rel");
    let (code, text) = run_config(&cfg).await;
    assert_eq!(code, 3, "the run that saw the outage fails: {text}");
    assert!(
        text.contains("elicit: in 2 out 0") && text.contains("pending 2 [api_error=2]"),
        "the stage reports what it left pending: {text}"
    );
    assert!(
        text.contains("run: failed: 2 items failed for infrastructure reasons")
            && text.contains("HTTP 503"),
        "the summary says why: {text}"
    );
    assert!(!text.contains("run: done"), "{text}");
    let st = stats(&run_dir);
    assert_eq!(st["synthesize"]["output"], 2);
    assert_eq!(st["elicit"]["pending"]["api_error"], 2, "{st}");
    assert_eq!(
        std::fs::read_to_string(run_dir.join("elicit_log.jsonl")).unwrap(),
        "",
        "nothing of the failed episodes was stored as finished"
    );
    assert!(!run_dir.join("safe.jsonl").exists(), "the chain stopped");

    // The server is back: one re-run finishes the pending items.
    down.store(false, Ordering::SeqCst);
    let (code, text) = run_config(&cfg).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("synthesize: in 6 out 2 resumed 6"), "{text}");
    assert!(!text.contains("pending"), "{text}");
    assert_eq!(
        records(&run_dir),
        clean,
        "exactly the records of a clean run"
    );
    // The run's cost is both processes': the ledger has a line each, the quality report sums them.
    let ledger: Vec<Value> = std::fs::read_to_string(run_dir.join("cost.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcomes: Vec<&str> = ledger
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["stopped", "done"], "{ledger:?}");
    let tokens: Vec<u64> = ledger
        .iter()
        .map(|l| l["tokens"].as_u64().unwrap())
        .collect();
    assert!(
        tokens.iter().all(|t| *t > 0),
        "both processes called the model: {ledger:?}"
    );
    let q = json_file(&run_dir.join("quality.json"));
    assert_eq!(q["cost"]["processes"], 2, "{q}");
    assert_eq!(q["cost"]["tokens"], tokens[0] + tokens[1], "{q}");
    assert_eq!(
        q["tokens_per_kept"],
        (tokens[0] + tokens[1]) as f64,
        "one kept record: {q}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_base_url_exits_non_zero_and_finishes_nothing() {
    let dir = temp_dir("wrongurl");
    let server = support::server().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    // A port nobody listens on (transport error) and a path the server does not serve (404).
    for (name, url, why) in [
        ("dead", dead, "transport error"),
        ("path", format!("{}/nope", server.base_url()), "HTTP 404"),
    ] {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, config(&dir.join(name), "", &models(&url, ""))).unwrap();
        let (code, text) = run_config(&cfg).await;
        assert_eq!(code, 3, "{name}: {text}");
        assert!(
            text.contains("synthesize: in 6 out 0 resumed 0 rejected 0 [] unmeasured 0 [] pending 6 [api_error=6]")
                && text.contains(why),
            "{name}: {text}"
        );
        let run_dir = dir.join(name).join("rel");
        for f in ["scenarios.jsonl", "synthesize_log.jsonl"] {
            assert_eq!(
                std::fs::read_to_string(run_dir.join(f)).unwrap(),
                "",
                "{name}: {f}"
            );
        }
        assert!(
            !run_dir.join("elicit_log.jsonl").exists(),
            "{name}: stopped"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_reply_cache_is_detected_rebuilt_and_the_run_succeeds() {
    let dir = temp_dir("badcache");
    let server = support::server().await;
    let cache = dir.join("replies.sqlite");
    let top = format!("cache_path = \"{}\"", cache.display());
    let models = models(&server.base_url(), "");
    let cfg = dir.join("a.toml");
    std::fs::write(&cfg, config(&dir.join("a"), &top, &models)).unwrap();
    let (code, text) = run_config(&cfg).await;
    assert_eq!(code, 0, "{text}");
    let clean = records(&dir.join("a/rel"));
    // A damaged page: SQLite's `database disk image is malformed`.
    let mut bytes = std::fs::read(&cache).unwrap();
    assert!(bytes.len() > 4096, "{}", bytes.len());
    let end = bytes.len().min(8192);
    bytes[4096..end].fill(0xff);
    std::fs::write(&cache, bytes).unwrap();
    let cfg = dir.join("b.toml");
    std::fs::write(&cfg, config(&dir.join("b"), &top, &models)).unwrap();
    let (code, text) = run_config(&cfg).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("cache: ") && text.contains("damaged") && text.contains(".corrupt-"),
        "the damage is reported: {text}"
    );
    assert!(!text.contains("api_error"), "{text}");
    assert_eq!(records(&dir.join("b/rel")), clean);
    std::fs::remove_dir_all(&dir).ok();
}

/// An evaluation runner whose judge is not served (a wrong path: 404) exits 3 and writes no
/// pair; once the URL is right, a re-run judges every item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eval_runner_with_its_model_unavailable_exits_non_zero_and_writes_nothing() {
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    server.set_responder(|_: &RequestInfo| {
        autosafe_test_support::stages::judge_reply("safe", "scripted")
    });
    let dir = temp_dir("evaldown");
    let run_dir = dir.join("run");
    let data = common::repo().join("crates/autosafe/tests/fixtures/labelled_steps.jsonl");
    let wrong = format!("openai:scripted@{}/nope", server.base_url());
    let (code, text) = run(
        &common::judge_eval_args(&wrong, &run_dir, &data)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    )
    .await;
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("eval judge: failed: 8 items failed for infrastructure reasons")
            && text.contains("HTTP 404"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("eval/judge.jsonl")).unwrap(),
        ""
    );
    let right = format!("openai:scripted@{}", server.base_url());
    let (code, text) = run(
        &common::judge_eval_args(&right, &run_dir, &data)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    )
    .await;
    assert_eq!(code, 0, "{text}");
    let pairs = std::fs::read_to_string(run_dir.join("eval/judge.jsonl")).unwrap();
    assert_eq!(pairs.lines().count(), 8, "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every file under `root` (recursively) that contains `needle`.
fn files_containing(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                seen += 1;
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(p);
                }
            }
        }
    }
    assert!(seen >= 3, "only {seen} files under {}", root.display());
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_are_in_no_file_the_run_wrote() {
    const KEY: &str = "sk-planted-key-5e0c9a3b71";
    const PW: &str = "pw-planted-userinfo-2d8f";
    let dir = temp_dir("secrets");
    let server = ScriptedServer::start(ServerConfig::default())
        .await
        .unwrap();
    // A gateway that echoes the Authorization header: a 400 for the judge (stored as a finished
    // `api_error` verdict with its detail) and a 500 for one generator cell (left pending, its
    // detail in stats.json).
    server.set_responder(|info: &RequestInfo| {
        let schema = info.body["response_format"]["json_schema"]["name"].as_str();
        let prompt = support::all_text(&info.body);
        let echo = |status| Reply::Status {
            status,
            retry_after: None,
            body: json!({"error": {"message": "rejected", "you_sent": {"Authorization": info.authorization}}})
                .to_string(),
        };
        match schema {
            Some("judge") => echo(400),
            Some("generator") if prompt.contains("(privacy_leak)") => echo(500),
            _ => support::respond(info),
        }
    });
    let url = server
        .base_url()
        .replace("http://", &format!("http://bob:{PW}@"));
    let models = models(&url, "api_key_env = \"AUTOSAFE_PLANTED_KEY\"");
    let cfg = dir.join("s.toml");
    std::fs::write(&cfg, config(&dir.join("out"), "max_pending = 10", &models)).unwrap();
    let (code, text) = run(
        &["run", "--config", cfg.to_str().unwrap()],
        &[("AUTOSAFE_PLANTED_KEY", KEY)],
    )
    .await;
    assert_eq!(code, 0, "pending items within max_pending: {text}");
    let sent = server
        .log()
        .iter()
        .find_map(|e| e.authorization.clone())
        .unwrap_or_default();
    assert!(sent.len() > 10, "credentials were sent: {sent:?}");
    let run_dir = dir.join("out/rel");
    let st = stats(&run_dir);
    assert_eq!(st["synthesize"]["pending"]["api_error"], 3, "{st}");
    assert!(
        st["elicit"]["unmeasured"]["api_error"].as_u64() >= Some(1),
        "the judge's 400 was stored: {st}"
    );
    let log = std::fs::read_to_string(run_dir.join("elicit_log.jsonl")).unwrap();
    assert!(log.contains("HTTP 400") && log.contains("***"), "{log}");
    // Everything the run wrote (the config file, written by the user, holds the URL).
    for secret in [KEY, PW, sent.split(' ').nth(1).unwrap_or(KEY)] {
        assert_eq!(
            files_containing(&dir.join("out"), secret),
            Vec::<PathBuf>::new(),
            "{secret} on disk"
        );
    }
    assert!(!text.contains(KEY) && !text.contains(PW), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_secret_looking_train_set_value_is_masked_in_the_manifest() {
    const TOKEN: &str = "hf_plantedTOKEN7c41e9";
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let set = format!("hub_token={TOKEN}");
    let out = command([
        "train",
        "--smoke",
        "--data",
        run_dir.to_str().unwrap(),
        "--name",
        "tok",
        "--set",
        set.as_str(),
        "--dry-run",
    ])
    .current_dir(common::repo())
    .env("AUTOSAFE_VENV_DIR", tmp.path().join("venvs"))
    .output()
    .unwrap();
    let text = common::text(&out);
    assert!(out.status.success(), "{text}");
    let dir = run_dir.join("train/tok");
    let m: Value = json_file(&dir.join("manifest.json"));
    let extra = m["spec"]["extra"].as_array().unwrap();
    assert!(extra.contains(&json!(["hub_token", "***"])), "{m}");
    assert_eq!(m["config"]["sft"]["hub_token"], "***", "{m}");
    let hits = files_containing(&run_dir, TOKEN);
    assert_eq!(
        hits,
        vec![dir.join("trl_config.json")],
        "only the trainer's own config, which the trainer reads it from"
    );
}
