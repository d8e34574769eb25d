//! Helpers shared by the CLI tests (`mod common;` in each): running the built `autosafe` binary,
//! scratch directories, reading its output and the files of a run, run configs pointed at the
//! scripted server. Each test binary uses a subset.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use autosafe_scripted_server::{ScriptedServer, ServerConfig};
use serde_json::Value;

/// Every model role of a full `autosafe run`.
pub const ALL_ROLES: &[&str] = &["generator", "agent", "judge", "reflector", "emulator"];

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("autosafe-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The built binary with `args`, to add a working directory or environment to.
pub fn command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(env!("CARGO_BIN_EXE_autosafe"));
    c.args(args);
    c
}

/// stdout, then stderr, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` to its end: whether it succeeded, and its stdout then stderr.
pub fn outcome(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (out.status.success(), text(&out))
}

/// Runs the binary with `args`: whether it succeeded, and its stdout then stderr.
pub fn autosafe<I, S>(args: I) -> (bool, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    outcome(&mut command(args))
}

/// [`autosafe`] off the async runtime's threads (the scripted server runs on them).
pub async fn autosafe_async(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || autosafe(&args))
        .await
        .unwrap()
}

/// Runs `cmd` to its end: its exit code (-1 when killed by a signal), stdout and stderr apart.
pub fn code_out_err(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run autosafe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Owned strings of `list`, for [`autosafe_async`].
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The last line of standard output as JSON. The text is stdout then stderr, and a command's
/// `progress …` lines on stderr come after its JSON line.
pub fn last_json(text: &str) -> Value {
    let line = text
        .trim_end()
        .lines()
        .rev()
        .find(|l| !l.starts_with("progress "))
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {text}"))
}

/// A JSON file (a run's `stats.json`, `manifest.json`, …).
pub fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every line of a JSONL file as JSON.
pub fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A multi-threaded runtime with two workers, for tests that run the binary synchronously.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A scripted server on `rt` that answers after `latency` and keeps no request bodies (bulk
/// runs).
pub fn bulk_server(rt: &tokio::runtime::Runtime, latency: Duration) -> ScriptedServer {
    rt.block_on(ScriptedServer::start(ServerConfig {
        latency,
        record_bodies: false,
        ..Default::default()
    }))
    .unwrap()
}

/// The `[models]` table of a run config: each of `roles` served by the scripted server at `url`.
pub fn models(url: &str, roles: &[&str]) -> String {
    let mut s = String::from("[models]\n");
    for role in roles {
        s.push_str(&format!("{role} = \"openai:scripted@{url}\"\n"));
    }
    s
}

/// `eval judge --json` of `data` by the scripted `model` into `run`, without the reply cache.
pub fn judge_eval_args(model: &str, run: &Path, data: &Path) -> Vec<String> {
    args(&[
        "eval",
        "judge",
        "--judge",
        model,
        "--run",
        run.to_str().unwrap(),
        "--no-cache",
        "--json",
        data.to_str().unwrap(),
    ])
}

/// Reads a JSONL file strictly: every line complete (the file ends with a newline), every line a
/// JSON object with an `id`, no id twice. Returns id → record.
pub fn records(path: &Path) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{}: torn last line",
        path.display()
    );
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}:{}: {e}: {line}", path.display(), i + 1));
        let id = v["id"].as_str().unwrap().to_string();
        assert!(
            out.insert(id.clone(), v).is_none(),
            "{}:{}: duplicate id {id}",
            path.display(),
            i + 1
        );
    }
    out
}

/// The lines of a complete JSONL file, sorted (record sets compared regardless of order).
pub fn sorted_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "{}", path.display());
    let mut l: Vec<String> = text.lines().map(String::from).collect();
    l.sort();
    l
}
