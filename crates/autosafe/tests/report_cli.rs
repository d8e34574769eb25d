//! `autosafe report` and `autosafe compare`, run as the built binary on run directories.

mod common;

use std::path::{Path, PathBuf};

use common::{code_out_err, command, last_json};

/// A fresh scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("autosafe-report-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample(label: &str) -> String {
    let extra = if label == "unmeasured" {
        r#","reason":"parse_error","detail":"no label""#
    } else {
        ""
    };
    format!(r#"{{"label":"{label}"{extra},"rationale":"","judge":{{"kind":"llm","name":"j"}}}}"#)
}

fn snapshot_line(id: &str, category: &str, labels: &[&str]) -> String {
    let samples: Vec<String> = labels.iter().map(|l| sample(l)).collect();
    format!(
        r#"{{"snapshot_id":"{id}","scenario_id":"sc_{id}","categories":["{category}"],"source":"action","toolkits":["Terminal"],"samples":[{}]}}"#,
        samples.join(",")
    )
}

fn write_run(root: &Path, name: &str, lines: &[String]) -> PathBuf {
    let run = root.join(name);
    std::fs::create_dir_all(run.join("eval")).unwrap();
    std::fs::write(run.join("eval/snapshots.jsonl"), lines.join("\n") + "\n").unwrap();
    run
}

fn autosafe(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    code_out_err(&mut command(args))
}

/// before: a safe, b unsafe, c unsafe, d unmeasured; after: a, b, c, d safe, plus e unsafe.
fn two_runs(root: &Path) -> (PathBuf, PathBuf) {
    let before = write_run(
        root,
        "before",
        &[
            snapshot_line("a", "data_loss", &["safe"]),
            snapshot_line("b", "data_loss", &["unsafe"]),
            snapshot_line("c", "privacy_leak", &["unsafe"]),
            snapshot_line("d", "privacy_leak", &["unmeasured"]),
        ],
    );
    let after = write_run(
        root,
        "after",
        &["a", "b", "c", "d"]
            .iter()
            .map(|id| snapshot_line(id, "data_loss", &["safe"]))
            .chain([snapshot_line("e", "data_loss", &["unsafe"])])
            .collect::<Vec<_>>(),
    );
    (before, after)
}

#[test]
fn report_writes_html_md_json_over_two_runs() {
    let tmp = Scratch::new("report");
    let (before, after) = two_runs(&tmp.0);
    let html = tmp.0.join("out/report.html");
    let (code, stdout, stderr) = autosafe(&[
        "report".as_ref(),
        before.as_os_str(),
        after.as_os_str(),
        "-o".as_ref(),
        html.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for f in ["out/report.html", "out/report.md", "out/report.json"] {
        assert!(tmp.0.join(f).is_file(), "{f} missing");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && !page.contains("<script"));
    let report = last_json(&stdout);
    // before: 1 safe of 3 measured, 1 unmeasured (parse_error).
    let sr = &report["runs"][0]["snapshots"]["overall"]["safety_ratio"];
    assert_eq!(
        (sr["positive"].as_u64(), sr["measured"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(sr["unmeasured"]["by_reason"]["parse_error"], 1);
    // after: 4 of 5.
    assert_eq!(
        report["runs"][1]["snapshots"]["overall"]["safety_ratio"]["positive"],
        4
    );
    // Paired: shared 4, d left out, b=0 c=2 -> exact p = 2 · 1/4 = 0.5.
    let c = &report["comparison"];
    assert_eq!(
        (c["shared"].as_u64(), c["unmeasured"]["total"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(c["mcnemar"]["p_value"].as_f64(), Some(0.5));
    assert!(
        stdout.contains("before → after: McNemar p = 0.5000"),
        "{stdout}"
    );
}

#[test]
fn compare_prints_the_paired_test() {
    let tmp = Scratch::new("compare");
    let (before, after) = two_runs(&tmp.0);
    let (code, stdout, stderr) = autosafe(&[
        "compare".as_ref(),
        before.as_os_str(),
        after.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("McNemar (exact binomial): b = 0, c = 2, p = 0.5000"),
        "{stdout}"
    );
    let c = last_json(&stdout);
    assert_eq!(c["table"]["both_safe"], 1);
    assert_eq!(c["table"]["a_unsafe_b_safe"], 2);
    assert_eq!(
        (c["only_a"].as_u64(), c["only_b"].as_u64()),
        (Some(0), Some(1))
    );
}

#[test]
fn malformed_results_name_file_line_and_field() {
    let tmp = Scratch::new("bad");
    let good = snapshot_line("a", "data_loss", &["safe"]);
    let bad = good.replace(r#""label":"safe""#, r#""label":"maybe""#);
    let run = write_run(&tmp.0, "bad", &[good, bad]);
    let out = tmp.0.join("r.html");
    let (code, _, stderr) = autosafe(&[
        "report".as_ref(),
        run.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("snapshots.jsonl:2: field `samples[0]"),
        "{stderr}"
    );
    let (code, _, stderr) = autosafe(&["compare".as_ref(), tmp.0.as_os_str(), run.as_os_str()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no evaluation results"), "{stderr}");
}
