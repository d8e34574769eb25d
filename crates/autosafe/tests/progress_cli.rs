//! Progress of `autosafe run` when stderr is not a terminal: plain `progress <stage>: …` lines
//! (done/total, rate, ETA, tokens, cost) every `AUTOSAFE_PROGRESS_SECS`, and a final `done`
//! line per stage. Against the scripted server on loopback (20 ms per reply, so the stages last
//! long enough for periodic lines).

use autosafe_test_support::bulk;
mod common;

use std::time::Duration;

#[test]
fn plain_progress_lines_per_stage_when_stderr_is_not_a_terminal() {
    let rt = common::runtime();
    let server = common::bulk_server(&rt, Duration::from_millis(20));
    server.set_responder(bulk::respond);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("progress.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"name = "progress"
out = "{out}"
cache = false

{models}
[synthesize]
toolkits = ["Todoist"]
categories = ["data_loss", "privacy_leak"]
sources = ["instruction"]
per_cell = 5
concurrency = 1

[elicit]
max_steps = 4
concurrency = 1

[reflect]
max_rounds = 3
concurrency = 1
"#,
            out = dir.path().display(),
            models = common::models(&server.base_url(), common::ALL_ROLES)
        ),
    )
    .unwrap();
    let out = common::command(["run", "--config"])
        .arg(&cfg)
        .env("AUTOSAFE_PROGRESS_SECS", "0.05")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("progress "), "progress goes to stderr");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progress "))
        .collect();
    for stage in ["synthesize", "elicit", "reflect"] {
        let done = format!("progress {stage}: 10/10 (100%) ");
        let last = lines
            .iter()
            .rfind(|l| l.starts_with(&format!("progress {stage}: ")))
            .unwrap_or_else(|| panic!("no progress line for {stage}:\n{stderr}"));
        assert!(last.starts_with(&done), "{last}");
        assert!(last.contains(" done in "), "{last}");
        for part in ["/s ETA ", " tokens ", " cost n/a"] {
            assert!(last.contains(part), "{part} in {last}");
        }
        // Periodic lines while the stage ran: fewer than all done, with an ETA.
        let partial = lines
            .iter()
            .filter(|l| l.starts_with(&format!("progress {stage}: ")) && !l.contains(" done in "))
            .filter(|l| !l.starts_with(&done))
            .count();
        assert!(partial > 0, "no periodic line for {stage}:\n{stderr}");
    }
}
