//! `autosafe train` through the binary, without Python: `--smoke --dry-run` writes the templated
//! dataset and the TRL config; `--dry-run` prints the right command lines for 1 and N GPUs on both
//! backends and records a `prepared` manifest; a missing environment fails with the install
//! command.

mod common;

use std::path::Path;
use std::process::Output;

use common::{command, json_file, repo, text};

use serde_json::Value;

fn autosafe(args: &[&str], venv_root: &Path) -> Output {
    command(args)
        .current_dir(repo())
        .env("AUTOSAFE_VENV_DIR", venv_root)
        .output()
        .expect("autosafe runs")
}

fn command_line(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.strip_prefix("train: command: "))
        .unwrap_or_else(|| panic!("no command line in:\n{out}"))
}

#[test]
fn dry_runs_print_the_launcher_command_lines_for_one_and_several_gpus() {
    let tmp = tempfile::tempdir().unwrap();
    let venvs = tmp.path().join("venvs");
    let run = tmp.path().join("run");
    let run_s = run.to_str().unwrap();

    // --smoke --dry-run: the templated data, the TRL config, a prepared manifest; no Python.
    let o = autosafe(&["train", "--smoke", "--data", run_s, "--dry-run"], &venvs);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("smoke: 32 training records"), "{t}");
    let dir = run.join("train/trl-lora");
    let cfg = dir.join("trl_config.json");
    assert_eq!(
        command_line(&t),
        format!(
            "{}/train/bin/python {}/train_trl.py --config {}",
            venvs.display(),
            dir.display(),
            cfg.display()
        )
    );
    assert!(
        t.contains("gguf command: ") && t.contains("--type q8_0"),
        "{t}"
    );
    let m: Value = json_file(&dir.join("manifest.json"));
    assert_eq!(m["status"], "prepared");
    assert_eq!(m["data"]["records"], 32);
    assert_eq!(m["spec"]["backend"], "trl");
    assert_eq!(m["config"]["sft"]["max_steps"], 30);
    assert!(
        m["outputs"]["gguf"]
            .as_str()
            .unwrap()
            .ends_with("model-q8_0.gguf")
    );
    assert_eq!(m["trainer_versions"], serde_json::json!({}));

    // TRL on 4 GPUs: accelerate launch.
    let o = autosafe(
        &[
            "train",
            "--data",
            run_s,
            "--base",
            "Qwen/Qwen2.5-7B-Instruct",
            "--backend",
            "trl",
            "--gpus",
            "4",
            "--name",
            "trl4",
            "--dry-run",
        ],
        &venvs,
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let d4 = run.join("train/trl4");
    assert_eq!(
        command_line(&t),
        format!(
            "{}/train/bin/accelerate launch --multi_gpu --num_machines 1 --num_processes 4 {}/train_trl.py --config {}/trl_config.json",
            venvs.display(),
            d4.display(),
            d4.display()
        )
    );

    // LLaMA-Factory on 1 and 8 GPUs.
    for (gpus, env) in [
        ("1", ""),
        ("8", "FORCE_TORCHRUN=1 NNODES=1 NPROC_PER_NODE=8 "),
    ] {
        let name = format!("lf{gpus}");
        let o = autosafe(
            &[
                "train",
                "--data",
                run_s,
                "--base",
                "meta-llama/Llama-3.1-8B-Instruct",
                "--backend",
                "llamafactory",
                "--gpus",
                gpus,
                "--name",
                &name,
                "--merge",
                "--set",
                "cutoff_len=2048",
                "--dry-run",
            ],
            &venvs,
        );
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        let d = run.join("train").join(&name);
        assert_eq!(
            command_line(&t),
            format!(
                "{env}{}/llamafactory/bin/llamafactory-cli train {}/llamafactory.yaml",
                venvs.display(),
                d.display()
            )
        );
        assert!(
            t.contains(&format!(
                "train: merge command: {}/llamafactory/bin/llamafactory-cli export {}/llamafactory_merge.yaml",
                venvs.display(),
                d.display()
            )),
            "{t}"
        );
        let yaml = std::fs::read_to_string(d.join("llamafactory.yaml")).unwrap();
        assert!(yaml.contains("cutoff_len: 2048\n"), "{yaml}");
        assert!(yaml.contains("template: \"llama3\"\n"), "{yaml}");
        let m: Value = json_file(&d.join("manifest.json"));
        assert_eq!(m["config"].as_str(), Some(yaml.as_str()));
        assert!(
            m["commands"]["merge"]
                .as_str()
                .unwrap()
                .ends_with("llamafactory_merge.yaml")
        );
    }
}

#[test]
fn a_missing_environment_fails_before_training_and_names_the_install_command() {
    let tmp = tempfile::tempdir().unwrap();
    let venvs = tmp.path().join("no-venvs");
    let run = tmp.path().join("run");
    let o = autosafe(
        &["train", "--smoke", "--data", run.to_str().unwrap()],
        &venvs,
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("install it with: ./scripts/setup-python.sh train"),
        "{t}"
    );
    assert!(
        t.contains("no-venvs/train/bin/python does not exist"),
        "{t}"
    );
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("train/trl-lora/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["status"], "prepared", "nothing ran");

    // A training recorded as finished with the same config and data is not run again, so no
    // environment is needed for it.
    let mpath = run.join("train/trl-lora/manifest.json");
    let mut done = m.clone();
    done["status"] = "finished".into();
    std::fs::write(&mpath, serde_json::to_string(&done).unwrap()).unwrap();
    let o = autosafe(
        &["train", "--smoke", "--data", run.to_str().unwrap()],
        &venvs,
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("already finished"), "{t}");
    // Another config (more steps) is a different training: it needs the environment again.
    let o = autosafe(
        &[
            "train",
            "--smoke",
            "--data",
            run.to_str().unwrap(),
            "--max-steps",
            "31",
        ],
        &venvs,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let o = autosafe(
        &[
            "train",
            "--data",
            run.to_str().unwrap(),
            "--base",
            "Qwen/Qwen2.5-7B-Instruct",
            "--backend",
            "llamafactory",
        ],
        &venvs,
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("./scripts/setup-python.sh llamafactory"), "{t}");
}

/// A stand-in trainer environment: a `python` that answers the package probe and a
/// `llamafactory-cli` whose `train` makes its output directory and whose `export` (the merge)
/// fails with exit code 3 until `merge_ok` exists in the training directory; each call is
/// appended to `calls.txt` there.
#[cfg(unix)]
fn fake_llamafactory(venv: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let bin = venv.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, script) in [
        (
            "python",
            "#!/bin/sh\necho '{\"python\": \"3.0\", \"versions\": {\"llamafactory\": \"0.0\"}, \"missing\": []}'\n",
        ),
        (
            "llamafactory-cli",
            "#!/bin/sh\necho \"$1\" >> calls.txt\necho \"fake $1\"\n\
             if [ \"$1\" = train ]; then mkdir -p output; exit 0; fi\n\
             if [ -e merge_ok ]; then mkdir -p merged; exit 0; fi\nexit 3\n",
        ),
    ] {
        let p = bin.join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn a_failed_step_is_recorded_and_the_steps_before_it_are_not_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let venvs = tmp.path().join("venvs");
    let fake = tmp.path().join("fake");
    fake_llamafactory(&fake);
    let run = tmp.path().join("run");
    let run_s = run.to_str().unwrap();
    let o = autosafe(&["train", "--smoke", "--data", run_s, "--dry-run"], &venvs);
    assert!(o.status.success(), "{}", text(&o));
    let mut args = vec!["train", "--data", run_s, "--venv", fake.to_str().unwrap()];
    args.extend(
        "--base meta-llama/Llama-3.1-8B-Instruct --backend llamafactory --merge --name lf"
            .split(' '),
    );
    let dir = run.join("train/lf");
    let calls = || std::fs::read_to_string(dir.join("calls.txt")).unwrap();

    let o = autosafe(&args, &venvs);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("train | fake train\n"), "{t}");
    assert!(t.contains("merge failed (exit code 3)"), "{t}");
    let m: Value = json_file(&dir.join("manifest.json"));
    assert_eq!(m["status"], "failed");
    assert_eq!(m["error"], "merge: Some(3)");
    assert_eq!(m["trainer_versions"]["llamafactory"], "0.0");
    assert_eq!(calls(), "train\nexport\n");

    // Again, the merge now succeeding: the training is not run again.
    std::fs::write(dir.join("merge_ok"), "").unwrap();
    let o = autosafe(&args, &venvs);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("train: train: done before with the same config, data and command"),
        "{t}"
    );
    assert!(t.contains("train: merge done in "), "{t}");
    let m: Value = json_file(&dir.join("manifest.json"));
    assert_eq!(m["status"], "finished");
    assert!(m.get("error").is_none(), "{m:#}");
    assert!(m["seconds"]["train"].is_number() && m["seconds"]["merge"].is_number());
    assert_eq!(calls(), "train\nexport\nexport\n");

    // Finished with the same config, data and commands: nothing runs.
    let o = autosafe(&args, &venvs);
    assert!(text(&o).contains("train: already finished"), "{}", text(&o));
    assert_eq!(calls(), "train\nexport\nexport\n");
}
