//! The outputs of every shipped config (`configs/*.toml`), run end to end with all roles served by
//! the scripted server on loopback (the bulk responder), digested file by file and compared with
//! `tests/golden/shipped_config_outputs.txt`. A refactor must leave them byte-identical; a change
//! meant to alter outputs re-blesses the file (`AUTOSAFE_BLESS=1`) and the diff shows what moved.

use autosafe_test_support::bulk;
mod common;

use std::path::{Path, PathBuf};

use common::{ALL_ROLES, command, models, outcome, repo, temp_dir};
use sha2::{Digest, Sha256};

const GOLDEN: &str = "tests/golden/shipped_config_outputs.txt";

/// Fields that carry wall-clock times or the revision: removed, where present, before a file is
/// digested (everything else in it must match).
const VOLATILE: &[(&str, &[&str])] = &[
    ("manifest.json", &["created_unix", "git_revision"]),
    ("quality.json", &["cost/seconds", "seconds_per_kept"]),
    ("cost.jsonl", &["seconds"]),
];

/// The bytes a file is digested by: its own with this run's server address and scratch directory
/// written as `URL` and `DIR`, and for a file with volatile fields, its JSON without them.
fn stable_bytes(name: &str, bytes: Vec<u8>, url: &str, dir: &Path) -> Vec<u8> {
    let text = String::from_utf8_lossy(&bytes)
        .replace(url, "URL")
        .replace(&dir.display().to_string(), "DIR");
    let Some((_, fields)) = VOLATILE.iter().find(|(n, _)| *n == name) else {
        return text.into_bytes();
    };
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for field in *fields {
        let (parent, key) = field.rsplit_once('/').map_or(("", *field), |(p, k)| (p, k));
        let parent = if parent.is_empty() {
            String::new()
        } else {
            format!("/{parent}")
        };
        if let Some(o) = v.pointer_mut(&parent).and_then(|p| p.as_object_mut()) {
            o.remove(key);
        }
    }
    serde_json::to_vec(&v).unwrap()
}

/// The shipped config `path` with its models on the scripted server at `url`, its output under
/// `out` and no reply cache (every reply comes from the server).
fn scripted_config(path: &Path, url: &str, out: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut table: toml::Table = text.parse().unwrap();
    table.remove("models");
    table.insert("out".into(), out.display().to_string().into());
    table.insert("cache".into(), false.into());
    format!(
        "{}\n{}",
        toml::to_string(&table).unwrap(),
        models(url, ALL_ROLES)
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One line per file of the run: `CONFIG PATH SHA256`.
fn digest(config: &str, run: &Path, url: &str, dir: &Path) -> Vec<String> {
    files_under(run)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(run).unwrap().display().to_string();
            let name = p.file_name().unwrap().to_str().unwrap();
            let bytes = stable_bytes(name, std::fs::read(&p).unwrap(), url, dir);
            let sum = format!("{:x}", Sha256::digest(bytes));
            format!("{config} {rel} {sum}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_configs_give_the_blessed_outputs_on_the_scripted_server() {
    // The bulk responder writes a case for every cell (the stage tests' one knows only Todoist's).
    let server = autosafe_scripted_server::ScriptedServer::start(Default::default())
        .await
        .unwrap();
    server.set_responder(bulk::respond);
    let dir = temp_dir("shipped");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(repo().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 5, "{configs:?}");
    let mut lines = Vec::new();
    for path in &configs {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let out = dir.join(&stem);
        let cfg = dir.join(format!("{stem}.toml"));
        std::fs::write(&cfg, scripted_config(path, &server.base_url(), &out)).unwrap();
        // From the repository root, where the configs' relative data paths point.
        let (ok, text) = tokio::task::spawn_blocking(move || {
            outcome(command(["run", "--config", cfg.to_str().unwrap()]).current_dir(repo()))
        })
        .await
        .unwrap();
        assert!(ok, "{stem}: {text}");
        let runs: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(runs.len(), 1, "{stem}: one run dir: {runs:?}");
        lines.extend(digest(&stem, &runs[0], &server.base_url(), &dir));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let got = lines.join("\n") + "\n";
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("AUTOSAFE_BLESS").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        got == want,
        "outputs differ from {GOLDEN} (AUTOSAFE_BLESS=1 re-blesses after a deliberate change):\n{}",
        diff(&want, &got)
    );
}

fn diff(want: &str, got: &str) -> String {
    let w: std::collections::BTreeSet<&str> = want.lines().collect();
    let g: std::collections::BTreeSet<&str> = got.lines().collect();
    let mut s = String::new();
    for l in w.difference(&g) {
        s.push_str(&format!("- {l}\n"));
    }
    for l in g.difference(&w) {
        s.push_str(&format!("+ {l}\n"));
    }
    s
}
