//! `autosafe serve` driven by real clients over loopback: the official `openai` Python client
//! (python/client_check.py: plain, streamed, tool-call, structured, `n`/`seed`/`stop`, a refused
//! parameter) and an Inspect AI eval through its `openai-api` provider. The clients live in the
//! `clients` environment (`./scripts/setup-python.sh clients`, which scripts/test.sh runs); the
//! model is the packaged SmolLM2 (`scripts/setup.sh`).

mod common;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `autosafe serve`, stopped when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `autosafe serve` on a free loopback port and waits for its address line.
fn serve() -> Served {
    let mut child = common::command([
        "serve",
        "--port",
        "0",
        "--threads",
        "1",
        "--ctx",
        "4096",
        "--parallel",
        "2",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("autosafe serve exited before serving"))
            .unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep reading stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Served { child, base }
}

/// The `clients` environment's python, or a failure naming the command that makes it.
fn clients_python() -> PathBuf {
    let venv = autosafe_train::python::venv_root().join("clients");
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} does not exist: create the client environment with `./scripts/setup-python.sh clients`",
        python.display()
    );
    python
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = common::text(&out);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_official_openai_client_gets_plain_streamed_tool_and_structured_replies() {
    let python = clients_python();
    let served = serve();
    let script = common::repo().join("python/client_check.py");
    let stdout = run(Command::new(&python)
        .arg(&script)
        .arg(&served.base)
        .arg("local:smollm2"));
    let out: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("client_check.py printed no JSON ({e}):\n{stdout}"));

    let plain = &out["plain"];
    let streamed = &out["streamed"];
    assert_eq!(streamed["first_role"], "assistant", "{streamed}");
    // Real streaming: the story arrives in many pieces, and they add up to the plain reply.
    let pieces = streamed["content_chunks"].as_u64().unwrap();
    let completion = plain["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion > 8, "{plain}");
    assert!(
        pieces > 1,
        "one content chunk for {completion} tokens: {streamed}"
    );
    assert_eq!(streamed["content"], plain["content"], "{out}");
    assert_eq!(streamed["finish_reason"], plain["finish_reason"]);
    assert_eq!(streamed["last_has_choices"], false, "{streamed}");
    assert_eq!(streamed["usage"], plain["usage"], "{out}");

    let tool = &out["tool_call"];
    assert_eq!(tool["finish_reason"], "tool_calls", "{tool}");
    assert_eq!(tool["name"], "get_weather");
    assert!(tool["arguments"]["city"].is_string(), "{tool}");
    assert_eq!(tool["streamed_finish_reason"], "tool_calls", "{tool}");
    assert_eq!(tool["streamed_name"], "get_weather");
    assert_eq!(tool["streamed_arguments"], tool["arguments"], "{tool}");

    let parsed = &out["structured"]["parsed"];
    assert!(parsed["ok"].is_boolean(), "{out}");
    assert!(parsed["reason"].is_string(), "{out}");

    let sampling = &out["sampling"];
    assert_eq!(sampling["n"], 2, "{sampling}");
    assert_eq!(sampling["same_seed_same_text"], true, "{sampling}");
    let stopped = sampling["stopped"].as_str().unwrap();
    assert!(
        !stopped.contains('.') && !stopped.contains(" the"),
        "{sampling}"
    );
    assert_eq!(sampling["stop_finish_reason"], "stop", "{sampling}");

    assert_eq!(out["refused"]["status"], 400, "{out}");
    assert_eq!(out["refused"]["param"], "logprobs", "{out}");
}

/// The eval log of `inspect eval` in `dir` (the only `.json` file there).
fn eval_log(dir: &Path) -> Value {
    let logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    serde_json::from_slice(&std::fs::read(&logs[0]).unwrap()).unwrap()
}

#[test]
fn an_inspect_ai_eval_runs_against_autosafe_serve_plain_and_streamed() {
    let python = clients_python();
    let inspect = python.with_file_name("inspect");
    let served = serve();
    for stream in ["false", "true"] {
        let logs = common::temp_dir("inspect");
        // Inspect takes the task file relative to the working directory.
        run(Command::new(&inspect)
            .current_dir(common::repo().join("python"))
            .args(["eval", "inspect_serve_task.py"])
            .args(["--model", "openai-api/autosafe/smollm2"])
            .args(["-M", &format!("stream={stream}")])
            .args(["--max-tokens", "24", "--temperature", "0"])
            .args(["--log-format", "json", "--display", "none"])
            .arg("--log-dir")
            .arg(&logs)
            .env("AUTOSAFE_BASE_URL", &served.base)
            .env("AUTOSAFE_API_KEY", "unused")
            .env("INSPECT_LOG_DIR", &logs));
        let log = eval_log(&logs);
        assert_eq!(
            log["status"], "success",
            "stream={stream}: {}",
            log["error"]
        );
        let results = &log["results"];
        assert_eq!(results["total_samples"], 2, "{results}");
        assert_eq!(results["completed_samples"], 2, "{results}");
        let samples = log["samples"].as_array().unwrap();
        for s in samples {
            let answer = s["output"]["completion"].as_str().unwrap_or("");
            assert!(!answer.is_empty(), "stream={stream}: empty completion {s}");
        }
        let _ = std::fs::remove_dir_all(&logs);
    }
}
