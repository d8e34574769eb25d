//! A third-party OpenAI-compatible server in the loop: llama.cpp's server as llama-cpp-python
//! packages it (pinned in `python/requirements-llamacpp.txt`, `./scripts/setup-python.sh
//! llamacpp`, which scripts/test.sh runs), serving the packaged SmolLM2 on loopback. `autosafe
//! run` in the emulator and in the terminal, and `eval judge`, complete against it with the
//! shipped model file `configs/models/llama-cpp-python.toml`, which says what that server does
//! not honour (docs/model-access.md): the client checks schemas itself and repairs, asks `n`
//! samples one by one, and names the terminal's only tool instead of `tool_choice: "required"`,
//! which that server turns into a call constrained to the tool's parameters.
//!
//! SmolLM2-135M writes little that is usable; what is asserted is that every path reaches the
//! server and every outcome is counted, never what the model says.

mod common;

use common::{json_file, jsonl, repo, temp_dir};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// llama-cpp-python's server, stopped when dropped.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Its log so far, for a failure message.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `GET path` on loopback: the status line and body, or `None` while nothing listens.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    Some(reply)
}

/// Starts the server on a free port with the packaged SmolLM2 and waits until it lists it.
fn llamacpp_server(dir: &Path) -> Server {
    let python = autosafe_train::python::venv_root().join("llamacpp/bin/python");
    assert!(
        python.exists(),
        "{} does not exist: create the environment with `./scripts/setup-python.sh llamacpp`",
        python.display()
    );
    let model = autosafe_engine::paths::resolve_spec("local:smollm2").unwrap();
    assert!(
        model.exists(),
        "{}: run ./scripts/setup.sh",
        model.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join("llamacpp-server.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&model)
        .args(["--model_alias", "smol", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--n_ctx", "4096", "--n_threads", "1", "--seed", "7"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server {
        child,
        base: format!("http://127.0.0.1:{port}/v1"),
        log,
    };
    let start = Instant::now();
    loop {
        if let Some(reply) = get(port, "/v1/models") {
            assert!(reply.contains("\"smol\""), "{reply}");
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("the server exited ({status}):\n{}", server.log());
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the server did not listen in 3 min:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The shipped model file with this server's address.
fn model_table(base: &str) -> String {
    let shipped =
        std::fs::read_to_string(repo().join("configs/models/llama-cpp-python.toml")).unwrap();
    assert!(shipped.contains("\nsupports_tool_choice_required = false\n"));
    shipped.replace("http://127.0.0.1:8000/v1", base)
}

/// A run config with every role on the server (`[models.default]` is the model file's table),
/// one sample of 2 steps, one reflection round, and `rest`.
fn run_config(dir: &Path, base: &str, rest: &str) -> PathBuf {
    let text = format!(
        "name = \"llamacpp\"\nout = \"{}\"\ncache = true\n\n[models.default]\n{}\n{rest}\n{}",
        dir.join("runs").display(),
        model_table(base),
        "[elicit]\nsamples = 1\nmax_steps = 2\n\n[reflect]\nmax_rounds = 1\n"
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_ok(server: &Server, cmd: &mut Command) -> String {
    let (ok, text) = common::outcome(cmd);
    assert!(
        ok,
        "{cmd:?} failed:\n{text}\n--- server log:\n{}",
        server.log()
    );
    text
}

fn count(stage: &Value, key: &str) -> u64 {
    stage[key]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

#[test]
fn runs_and_an_eval_complete_against_llama_cpp_python_server() {
    let dir = temp_dir("llamacpp");
    let server = llamacpp_server(&dir);

    // The emulator: synthesize → elicit → reflect → export with a ReAct agent (the server
    // ignores tools unless one is named, and the emulator offers several).
    let config = run_config(
        &dir,
        &server.base,
        r#"
[agent]
native = false
max_tokens = 96
temperature = 0.0

[synthesize]
toolkits = ["Todoist"]
categories = ["data_loss"]
sources = ["instruction"]
per_cell = 2
examples = 1
max_tokens = 300
"#,
    );
    let text = run_ok(
        &server,
        common::command(["run", "--config"])
            .arg(&config)
            .current_dir(repo()),
    );
    let run = dir.join("runs/llamacpp");
    let stats = json_file(&run.join("stats.json"));
    let synth = &stats["stages"]["synthesize"];
    // Both attempts reached the model and each ended counted: kept, or rejected for a reason.
    assert_eq!(synth["input"], 2, "{stats}");
    assert_eq!(
        synth["output"].as_u64().unwrap() + count(synth, "rejected") + count(synth, "unmeasured"),
        2,
        "{stats}"
    );
    let logs = jsonl(&run.join("synthesize_log.jsonl"));
    assert_eq!(logs.len(), 2);
    // The client checked the schema itself (no `response_format` was sent): a rejected reply
    // carries what the model wrote.
    for l in logs.iter().filter(|l| l["outcome"] == "rejected") {
        assert!(l["reason"].is_string(), "{l}");
    }
    assert!(text.contains("synthesize"), "{text}");

    // The terminal: one shipped scenario, the native agent's calls constrained by the server
    // to TerminalExecute's parameters and really run in the sandbox.
    std::fs::remove_dir_all(&run).unwrap();
    let config = run_config(
        &dir,
        &server.base,
        r#"
[agent]
native = true
require_tool_call = true
max_tokens = 96
temperature = 0.0
"#,
    );
    let scenario = repo().join("data/terminal/i01_free_disk_space_webapp.toml");
    assert!(scenario.exists(), "{}", scenario.display());
    run_ok(
        &server,
        common::command(["run", "--env", "terminal", "--config"])
            .arg(&config)
            .arg("--scenarios")
            .arg(&scenario)
            .current_dir(repo()),
    );
    let stats = json_file(&run.join("stats.json"));
    assert_eq!(stats["stages"]["elicit"]["input"], 1, "{stats}");
    let steps = jsonl(&run.join("labelled_steps.jsonl"));
    assert!(!steps.is_empty(), "no step was played: {stats}");
    for s in &steps {
        // A tool call that came back from the server, run in the sandbox and labelled by the
        // checkers.
        let action = &s["action"]["action"];
        assert_eq!(action["tool"], "TerminalExecute", "{s}");
        assert!(action["input"]["command"].is_string(), "{s}");
        // A native call (the server's own call id), not ReAct text.
        assert!(action["call_id"].is_string(), "{s}");
        assert!(s["label"].is_string() || s["unlabelled"].is_string(), "{s}");
    }

    // An eval runner: the step judge measured against the checkers' labels of those steps.
    let model_file = dir.join("llama-cpp-python.toml");
    std::fs::write(&model_file, model_table(&server.base)).unwrap();
    let eval_run = dir.join("eval");
    let text = run_ok(
        &server,
        common::command(["eval", "judge", "--judge"])
            .arg(&model_file)
            .arg("--run")
            .arg(&eval_run)
            .arg("--json")
            .arg(run.join("labelled_steps.jsonl")),
    );
    let j = common::last_json(&text);
    let n = j["n"].as_u64().unwrap() + j["unmeasured"].as_u64().unwrap();
    assert_eq!(n as usize, steps.len(), "{j}");
    let manifest = json_file(&eval_run.join("manifest.json"));
    assert_eq!(manifest["models"]["judge"]["model"], "smol", "{manifest}");
}

/// A model file with a mistake is refused with its file, line and field.
#[test]
fn a_bad_model_file_names_its_line_and_field() {
    let dir = temp_dir("model-file");
    let file = dir.join("m.toml");
    std::fs::write(
        &file,
        "model = \"m\"\nbase_urls = [\"http://127.0.0.1:9/v1\"]\nsupports_tool_choice = false\n",
    )
    .unwrap();
    let (ok, text) = common::outcome(
        common::command(["eval", "judge", "--judge"])
            .arg(&file)
            .arg("--run")
            .arg(dir.join("run"))
            .arg(repo().join("../shared/data/samples/assebench/labeled.json")),
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("{}:3: supports_tool_choice", file.display())),
        "{text}"
    );
}
