//! A run config's mistakes stop the command before any work, naming the file, the line and the
//! key (issue #20, item 2): unknown keys in every section (with "did you mean"), a wrong type
//! inside a `[models.*]` table, a config file without `[models]`, numbers that are not finite
//! or out of range; and `train` refuses such hyperparameters before writing a trainer config.

mod common;

use std::path::Path;

use common::{autosafe, command, outcome, repo};

/// A config with `body` after a name and an out directory in `dir`; a model server that is not
/// there (nothing may be sent anyway).
fn write_config(dir: &Path, body: &str) -> String {
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"x\"\nout = \"{}\"\n{body}",
            dir.join("runs").display()
        ),
    )
    .unwrap();
    p.display().to_string()
}

/// Runs the binary with an empty model directory: should a config wrongly fall back to the
/// embedded model, it fails at once instead of running it.
fn no_models_here(dir: &Path, args: &[&str]) -> (bool, String) {
    outcome(command(args).env("AUTOSAFE_HOME", dir.join("home")))
}

const MODELS: &str = "[models]\ndefault = \"openai:m@http://127.0.0.1:9/v1\"\n";

/// `autosafe run --config` with `body`: fails, names `c.toml:LINE` (`c.toml` alone for line 0),
/// and created no run.
fn refused(body: &str, line: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), body);
    let (ok, text) = no_models_here(dir.path(), &["run", "--config", &cfg]);
    assert!(!ok, "{text}");
    let at = match line {
        0 => "c.toml: ".to_string(),
        n => format!("c.toml:{n}: "),
    };
    assert!(text.contains(&at), "want {at}: {text}");
    assert!(!dir.path().join("runs").exists(), "{text}");
    text
}

#[test]
fn unknown_keys_in_every_section_name_file_line_key_and_the_close_known_one() {
    let cases = [
        (
            "[synthesize]\ntoolkit = [\"Todoist\"]\n",
            "synthesize.toolkit: unknown field `toolkit`",
            "did you mean `toolkits`?",
        ),
        (
            "[agent]\ntemprature = 0.2\n",
            "agent.temprature: unknown field `temprature`",
            "did you mean `temperature`?",
        ),
        (
            "[reflect]\nmax_round = 3\n",
            "reflect.max_round: unknown field `max_round`",
            "did you mean `max_rounds`?",
        ),
        (
            "[elicit]\nsample = 3\n",
            "elicit.sample: unknown field `sample`",
            "did you mean `samples`?",
        ),
        (
            "[synthesize.dedup]\nthreshhold = 0.5\n",
            "synthesize.dedup.threshhold: unknown field `threshhold`",
            "did you mean `threshold`?",
        ),
        (
            "[export]\nformat = [\"alpaca\"]\n",
            "export.format: unknown field `format`",
            "did you mean `formats`?",
        ),
        (
            "[sandbox]\ndisk_limt = 1\n",
            "sandbox.disk_limt: unknown field `disk_limt`",
            "did you mean `disk_limit`?",
        ),
        (
            "[models.judge]\nmodel = \"m\"\nbase_url = [\"http://127.0.0.1:9/v1\"]\n",
            "models.judge.base_url: unknown field `base_url`",
            "did you mean `base_urls`?",
        ),
        (
            "[elicit]\nenvironment = \"terminl\"\n",
            "elicit.environment: unknown variant `terminl`",
            "did you mean `terminal`?",
        ),
    ];
    for (section, names, suggestion) in cases {
        // Lines: name, out, [models], default, the section header, then the bad key (the
        // judge's table has `model` first).
        let line = if section.starts_with("[models.judge]") {
            7
        } else {
            6
        };
        let text = refused(&format!("{MODELS}{section}"), line);
        assert!(text.contains(names), "{text}");
        assert!(text.contains(suggestion), "{text}");
    }
}

#[test]
fn a_wrong_type_inside_a_models_table_names_the_field() {
    let text = refused(
        "[models.judge]\nmodel = \"m\"\nbase_urls = [\"http://127.0.0.1:9/v1\"]\nmax_concurrency = \"lots\"\n",
        6,
    );
    assert!(text.contains("models.judge.max_concurrency"), "{text}");
    assert!(!text.contains("untagged enum"), "{text}");
    // A spec that parses but cannot work: the field is named with the role.
    let text = refused(
        "[models.judge]\nmodel = \"m\"\nbase_urls = [\"http://127.0.0.1:9/v1\"]\nrequest_timeout_s = inf\n",
        3,
    );
    assert!(text.contains("models.judge"), "{text}");
    assert!(text.contains("request_timeout_s"), "{text}");
}

#[test]
fn a_config_without_models_is_refused_and_default_asks_for_a_model_by_name() {
    let text = refused("[synthesize]\ntoolkits = [\"Todoist\"]\n", 0);
    assert!(text.contains("no [models]"), "{text}");
    assert!(
        text.contains("default = \"local:qwen2.5-coder-1.5b\""),
        "{text}"
    );

    // Some roles named, one used but missing: `run` stops before creating the run.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[models]\ngenerator = \"openai:m@http://127.0.0.1:9/v1\"\n",
    );
    let (ok, text) = no_models_here(dir.path(), &["run", "--config", &cfg]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("models.agent: no model for this role"),
        "{text}"
    );
    assert!(!dir.path().join("runs").exists(), "{text}");
}

#[test]
fn numbers_must_be_finite_and_in_range() {
    let cases = [
        ("[agent]\ntemperature = nan\n", "agent.temperature = NaN"),
        ("[agent]\ntemperature = -0.5\n", "agent.temperature = -0.5"),
        ("[agent]\nmax_tokens = 0\n", "agent.max_tokens = 0"),
        (
            "[synthesize]\ntemperature = inf\n",
            "synthesize.temperature = inf",
        ),
        (
            "[synthesize]\nmax_tokens = 0\n",
            "synthesize.max_tokens = 0",
        ),
        ("[elicit]\nconcurrency = 0\n", "elicit.concurrency = 0"),
        ("[reflect]\nmax_rounds = 0\n", "reflect.max_rounds = 0"),
        ("[sandbox]\ntimeout_s = inf\n", "sandbox.timeout_s = inf"),
        ("[judge]\nvotes = 0\n", "judge.votes = 0"),
        (
            "[judge]\nunsafe_votes = 4\nvotes = 3\n",
            "judge.unsafe_votes = 4",
        ),
        ("[judge]\ntemperature = 3.0\n", "judge.temperature = 3"),
    ];
    for (section, names) in cases {
        let text = refused(&format!("{MODELS}{section}"), 6);
        assert!(text.contains(names), "{text}");
        assert!(text.contains("must be"), "{text}");
    }
}

#[test]
fn eval_flags_refuse_a_nan_temperature_and_zero_tokens() {
    for flags in [["--temperature", "NaN"], ["--max-tokens", "0"]] {
        let (ok, text) = autosafe(
            [
                "eval",
                "snapshots",
                "--agent",
                "openai:m@http://127.0.0.1:9/v1",
                "--judge",
                "openai:m@http://127.0.0.1:9/v1",
                "none.jsonl",
            ]
            .into_iter()
            .chain(flags),
        );
        assert!(!ok, "{text}");
        assert!(text.contains(flags[0]), "{text}");
    }
}

#[test]
fn eval_judge_refuses_a_vote_threshold_above_its_votes() {
    let (ok, text) = autosafe([
        "eval",
        "judge",
        "--judge",
        "openai:m@http://127.0.0.1:9/v1",
        "--votes",
        "3",
        "--unsafe-votes",
        "5",
        "none.jsonl",
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("judge.unsafe_votes = 5: must be from 1 to judge.votes"),
        "{text}"
    );
}

#[test]
fn train_refuses_a_nan_or_negative_learning_rate_and_zero_epochs() {
    for (flag, field) in [
        ("--lr=NaN", "lr"),
        ("--lr=-1", "lr"),
        ("--epochs=0", "epochs"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let (ok, text) = outcome(
            command(["train", "--smoke", "--dry-run", flag, "--data"])
                .arg(&run)
                .current_dir(repo())
                .env("AUTOSAFE_VENV_DIR", dir.path().join("venvs")),
        );
        assert!(!ok, "{flag}: {text}");
        assert!(text.contains(&format!("train: {field}: ")), "{text}");
        assert!(text.contains("must be"), "{text}");
        assert!(
            !run.join("train/trl-lora/trl_config.json").exists(),
            "{text}"
        );
    }
}
