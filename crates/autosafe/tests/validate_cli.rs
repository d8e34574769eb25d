//! `autosafe validate` and `autosafe taxonomy` run as a real binary on shipped data and bad files.

mod common;

use std::path::PathBuf;

use common::{last_json, repo};

fn shared() -> PathBuf {
    repo().join("../shared/data")
}

fn autosafe(args: &[&str]) -> (i32, String, String) {
    common::code_out_err(common::command(args).current_dir(repo()))
}

#[test]
fn validates_the_shipped_toolemu_data() {
    let (code, out, err) = autosafe(&[
        "validate",
        "data/toolemu/all_toolkits.json",
        "data/toolemu/all_cases.json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("data/toolemu/all_toolkits.json: ToolEmu toolkits: toolkits 38, tools 330"),
        "{out}"
    );
    assert!(
        out.contains("data/toolemu/all_cases.json: ToolEmu cases: cases 144"),
        "{out}"
    );
    assert!(
        out.contains("total: toolkits 38, tools 330, cases 144"),
        "{out}"
    );
    assert!(
        out.contains("taxonomy: 246 of 246 outcomes mapped (100.0%), 0 unmapped"),
        "{out}"
    );
    assert!(
        out.contains("valid (toolkit library: given, 38 toolkits)"),
        "{out}"
    );
}

#[test]
fn cases_alone_are_checked_against_the_shipped_toolkits_and_json_is_last() {
    let (code, out, err) = autosafe(&["validate", "--json", "data/toolemu/all_cases.json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("valid (toolkit library: shipped, 38 toolkits)"),
        "{out}"
    );
    let v = last_json(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(v["total"]["cases"], 144);
    assert_eq!(v["taxonomy"]["outcomes"], 246);
    assert_eq!(v["taxonomy"]["mapped"], 246);
    assert_eq!(v["files"][0]["format"], "toolemu_cases");
}

#[test]
fn validates_every_public_sample() {
    let s = shared();
    let files = [
        s.join("toolemu-trajectories/trajectories.jsonl"),
        s.join("toolemu-trajectories/eval_agent_safe.jsonl"),
        s.join("toolemu-trajectories/eval_agent_help.jsonl"),
        s.join("samples/agent-safetybench/cases.json"),
        s.join("samples/assebench/labeled.json"),
    ];
    let mut args = vec!["validate", "--json"];
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let (code, out, err) = autosafe(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ToolEmu trajectories: trajectories 15, steps 32"),
        "{out}"
    );
    assert!(out.contains("ToolEmu evaluator rows: evaluator rows 15, safety 15, helpfulness 0, unsafe 8, unmeasured 0"), "{out}");
    assert!(
        out.contains("ToolEmu evaluator rows: evaluator rows 15, safety 0, helpfulness 15"),
        "{out}"
    );
    assert!(
        out.contains("Agent-SafetyBench cases: cases 26, with dialog 4, environments used 22"),
        "{out}"
    );
    assert!(
        out.contains("ASSEBench records: records 20, unsafe 10, safe 10"),
        "{out}"
    );
    let v = last_json(&out);
    assert_eq!(v["valid"], true);
    // 15 trajectory cases' outcomes + 26 Agent-SafetyBench risks.
    assert_eq!(v["taxonomy"]["unmapped"], serde_json::json!([]));
}

#[test]
fn bad_files_list_every_problem_and_exit_1() {
    let fx = "crates/autosafe-ots/tests/fixtures";
    let files: Vec<String> = [
        "truncated_cases.json",
        "unknown_toolkit_cases.json",
        "missing_field_cases.json",
        "wrong_type_cases.json",
        "empty_field_cases.json",
    ]
    .iter()
    .map(|f| format!("{fx}/{f}"))
    .collect();
    let mut args = vec!["validate", "--json"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = autosafe(&args);
    assert_eq!(code, 1, "{out}{err}");
    for line in [
        format!(
            "{fx}/truncated_cases.json:35: $: file is truncated or incomplete (EOF while parsing a string)"
        ),
        format!(
            "{fx}/unknown_toolkit_cases.json:31: [1].Toolkits[1]: unknown toolkit `NoSuchToolkit`"
        ),
        format!("{fx}/missing_field_cases.json:27: [1].User Instruction: missing required field"),
        format!(
            "{fx}/wrong_type_cases.json:29: [1].Toolkits: invalid type: string \"FacebookManager\", expected a sequence"
        ),
        format!("{fx}/empty_field_cases.json:32: [1].User Instruction: must not be empty"),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing `{line}` in:\n{out}"
        );
    }
    assert!(out.contains("invalid: 5 problems"), "{out}");
    let v = last_json(&out);
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"].as_array().unwrap().len(), 5);
}

#[test]
fn unknown_tool_and_unknown_format_are_problems() {
    let env = shared()
        .join("samples/agent-safetybench/environments/OS.json")
        .display()
        .to_string();
    let fx = "crates/autosafe-ots/tests/fixtures/asb_unknown_tool.json";
    let (code, out, _) = autosafe(&["validate", "--toolkits", &env, fx]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "{fx}:17: [1].environments[0].tools[1]: unknown tool `format_disk` in environment `OS`"
        )),
        "{out}"
    );

    let dir = std::env::temp_dir().join(format!("autosafe-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let odd = dir.join("odd.json");
    std::fs::write(&odd, "[{\"hello\": 1}]").unwrap();
    let (code, out, _) = autosafe(&["validate", odd.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "{}:1: $: unknown format (first record has keys: hello)",
            odd.display()
        )),
        "{out}"
    );
    let odd_lines = dir.join("odd.jsonl");
    std::fs::write(&odd_lines, "\n{\"hello\": 1}\n{\"hello\": 2}\n").unwrap();
    let (code, out, _) = autosafe(&["validate", odd_lines.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "{}:2: $: unknown format (first record has keys: hello)",
            odd_lines.display()
        )),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let (code, _, err) = autosafe(&["validate", "no/such/file.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read no/such/file.json"), "{err}");
    let (code, _, err) = autosafe(&["validate"]);
    assert_eq!(code, 2);
    assert!(err.contains("required"), "{err}");
}

#[test]
fn taxonomy_lists_categories_and_maps_files() {
    let (code, out, err) = autosafe(&["taxonomy"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("13 categories:"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("privacy_leak") && l.contains("severe")),
        "{out}"
    );
    let asb = shared()
        .join("samples/agent-safetybench/cases.json")
        .display()
        .to_string();
    let (code, out, err) = autosafe(&["taxonomy", "data/toolemu/all_cases.json", &asb]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "data/toolemu/all_cases.json: 246 of 246 outcomes mapped (100.0%), 0 unmapped"
        ),
        "{out}"
    );
    assert!(
        out.contains("cases.json: 26 of 26 outcomes mapped (100.0%), 0 unmapped"),
        "{out}"
    );
}

#[test]
fn a_bad_taxonomy_file_is_reported_with_its_line() {
    let dir = std::env::temp_dir().join(format!("autosafe-taxonomy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = dir.join("t.toml");
    std::fs::write(&t, "[[category]]\nid = \"ok\"\nname = \"Ok\"\ndescription = \"d\"\nseverity = \"mild\"\n\n[[category]]\nid = \"Not OK\"\nname = \"N\"\ndescription = \"d\"\nseverity = \"mild\"\n").unwrap();
    let (code, out, _) = autosafe(&["taxonomy", "--taxonomy", t.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "{}:7: category[1].id: `Not OK` is not a snake_case id",
            t.display()
        )),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An endless input stops at the line cap, a big file at the size cap, each naming the file
/// (`validate /dev/zero` grew to 4.5 GB before the caps); both caps are flags.
#[test]
fn oversized_inputs_stop_at_the_caps_with_the_file_named() {
    let started = std::time::Instant::now();
    let (code, _, err) = autosafe(&["validate", "/dev/zero"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/dev/zero:1: line longer than"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));

    let (code, _, err) = autosafe(&["validate", "--max-line-size", "100000", "/dev/zero"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line longer than 100000 bytes"), "{err}");

    let cases = "data/toolemu/all_cases.json";
    let (code, _, err) = autosafe(&["validate", "--max-file-size", "1000", cases]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{cases}: larger than 1000 bytes")),
        "{err}"
    );
}

/// A scenario line repeated is a problem at its line, not a count of one more.
#[test]
fn a_repeated_record_is_reported_by_id_and_line() {
    let dir = tempfile::tempdir().unwrap();
    // One scenario record made from a shipped case.
    let cases: Vec<autosafe_ots::Case> = serde_json::from_str(
        &std::fs::read_to_string(repo().join("data/toolemu/all_cases.json")).unwrap(),
    )
    .unwrap();
    let taxonomy = autosafe_ots::Taxonomy::default_taxonomy();
    let sc = autosafe_ots::toolemu::case_to_scenario(&cases[0], &taxonomy);
    let line = serde_json::to_string(&sc).unwrap();
    let file = dir.path().join("scenarios.jsonl");
    std::fs::write(&file, format!("{line}\n{line}\n")).unwrap();
    let f = file.to_str().unwrap();
    let (code, out, _) = autosafe(&["validate", f]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "{f}:2: id: duplicate id `{}` (first at line 1)",
            sc.id
        )),
        "{out}"
    );
}
