//! The distributed path run for real (issue #19): a single-node Slurm cluster started on this
//! machine (`scripts/slurm-local.sh`: munged, slurmctld and slurmd on loopback) runs
//! `deploy/slurm-run.sh` — a 2-task array per sharded stage, merges between — against the
//! scripted server, and the merged records equal those of one `autosafe run` process. The
//! Kubernetes manifest is checked against the Kubernetes schema with `kubernetes-validate`
//! (venv `deploy`). Both need what `scripts/test.sh` installs (Debian's Slurm and munge,
//! `scripts/setup-python.sh deploy`) and root (slurmd starts jobs as their user).

use autosafe_test_support::bulk;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    ALL_ROLES, bulk_server, command, outcome, records, repo, runtime, sorted_lines, temp_dir,
};
use serde_json::Value;

/// The record files a run writes and `autosafe merge` joins.
const FILES: &[&str] = &[
    "scenarios.jsonl",
    "synthesize_log.jsonl",
    "snapshots.jsonl",
    "utility.jsonl",
    "elicit_log.jsonl",
    "labelled_steps.jsonl",
    "safe.jsonl",
    "reflect_log.jsonl",
];

const EXPORTS: &[&str] = &[
    "export/alpaca/autosafe_alpaca.jsonl",
    "export/trl/train.jsonl",
];

fn config(url: &str) -> String {
    format!(
        r#"name = "dist"
cache = false

{models}
[synthesize]
toolkits = ["Todoist"]
categories = ["data_loss", "privacy_leak"]
sources = ["instruction"]
per_cell = 5

[elicit]
samples = 1
max_steps = 4

[reflect]
max_rounds = 3

[export]
utility_share = 3
"#,
        models = common::models(url, ALL_ROLES)
    )
}

/// A free loopback port with a free one after it (slurmctld, slurmd).
fn two_free_ports() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < 65535 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two free ports in a row");
}

/// The local cluster; stopped (all three daemons) when dropped, also when the test fails.
struct Cluster {
    state: PathBuf,
    conf: String,
}

impl Cluster {
    fn start(state: &Path) -> Cluster {
        let out = Command::new(repo().join("scripts/slurm-local.sh"))
            .arg("start")
            .arg(state)
            .env("SLURM_LOCAL_PORT", two_free_ports().to_string())
            .output()
            .unwrap();
        let text = common::text(&out);
        assert!(
            out.status.success(),
            "the local Slurm cluster did not start (scripts/test.sh installs slurmctld, slurmd, munge; root is needed): {text}"
        );
        let conf = String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("export SLURM_CONF=")
            .unwrap_or_else(|| panic!("{text}"))
            .to_string();
        Cluster {
            state: state.to_path_buf(),
            conf,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/slurm-local.sh"))
            .arg("stop")
            .arg(&self.state)
            .status();
    }
}

#[test]
fn a_slurm_array_run_merges_to_the_records_of_one_process() {
    let rt = runtime();
    let server = bulk_server(&rt, Duration::from_millis(5));
    server.set_responder(bulk::respond);
    let dir = temp_dir("slurm");
    let cfg = dir.join("dist.toml");
    std::fs::write(&cfg, config(&server.base_url())).unwrap();

    // One process.
    let (ok, text) = outcome(
        command(["run", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(dir.join("one")),
    );
    assert!(ok, "{text}");
    let one = dir.join("one").join("dist");

    // Inside an array task a whole `run` would have every task write the same files: refused.
    let (ok, text) = outcome(
        command(["run", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(dir.join("refused"))
            .env("SLURM_ARRAY_TASK_ID", "1"),
    );
    assert!(!ok && text.contains("SLURM_ARRAY_TASK_ID is set"), "{text}");
    assert!(!dir.join("refused").exists());

    // The same run as Slurm jobs: 2 shards, on the cluster started here.
    let cluster = Cluster::start(&dir.join("slurm"));
    let run = dir.join("sharded");
    let bin = Path::new(env!("CARGO_BIN_EXE_autosafe")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new(repo().join("deploy/slurm-run.sh"))
        .args(["--cpus-per-task=1", "--mem=512M"])
        .current_dir(&dir)
        .env("SLURM_CONF", &cluster.conf)
        .env("PATH", path)
        .env("CONFIG", &cfg)
        .env("RUN", &run)
        .env("SHARDS", "2")
        .env("WAIT", "1")
        .output()
        .unwrap();
    let text = common::text(&out);
    let logs: Vec<String> = std::fs::read_dir(&run)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("slurm-"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    assert!(out.status.success(), "{text}\n{}", logs.join("\n"));
    assert!(text.contains("export "), "{text}");
    // Every sharded stage really ran as two array tasks (one log each, two shard files).
    for stage in ["scenarios", "snapshots", "safe"] {
        for i in 0..2 {
            let f = run.join(format!("{stage}.shard-{i}-of-2.jsonl"));
            assert!(f.exists(), "{}: {text}", f.display());
        }
    }
    assert!(
        logs.len() >= 7,
        "3 × 2 array tasks + merges + export: {}",
        logs.len()
    );

    let reference = records(&one.join("scenarios.jsonl"));
    assert_eq!(reference.len(), 10);
    for f in FILES {
        assert_eq!(records(&run.join(f)), records(&one.join(f)), "{f}");
    }
    assert!(!records(&one.join("safe.jsonl")).is_empty());
    // The same training records; their order follows safe.jsonl's (completion order in one
    // process, id order once merged), so `export/records.jsonl` is compared without line numbers.
    for f in EXPORTS {
        assert_eq!(
            sorted_lines(&run.join(f)),
            sorted_lines(&one.join(f)),
            "{f}"
        );
    }
    let index = |run: &Path| -> BTreeMap<String, Value> {
        let mut m = records(&run.join("export/records.jsonl"));
        for v in m.values_mut() {
            v.as_object_mut().unwrap().remove("line");
        }
        m
    };
    assert_eq!(index(&run), index(&one));
    drop(cluster);
    std::fs::remove_dir_all(&dir).ok();
}

/// `deploy/k8s-indexed-job.yaml` passes the Kubernetes 1.30 schema, strictly (no unknown
/// field); a field misspelled in a copy fails it, so the check is a real one.
#[test]
fn the_kubernetes_manifest_passes_the_kubernetes_schema() {
    let validate = autosafe_train::python::venv_root().join("deploy/bin/kubernetes-validate");
    assert!(
        validate.exists(),
        "{}: run scripts/setup-python.sh deploy",
        validate.display()
    );
    let check = |file: &Path| {
        outcome(
            Command::new(&validate)
                .args(["--strict", "-k", "1.30"])
                .arg(file),
        )
    };
    let manifest = repo().join("deploy/k8s-indexed-job.yaml");
    let (ok, text) = check(&manifest);
    assert!(ok, "{text}");
    for job in ["job/autosafe-shards", "job/autosafe-merge"] {
        assert!(
            text.contains(&format!("passed for resource {job}")),
            "{text}"
        );
    }
    let dir = temp_dir("k8s");
    let bad = dir.join("bad.yaml");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    assert!(yaml.contains("completionMode: Indexed"));
    std::fs::write(
        &bad,
        yaml.replace("completionMode: Indexed", "completionMod: Indexed"),
    )
    .unwrap();
    let (ok, text) = check(&bad);
    assert!(!ok && text.contains("completionMod"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
