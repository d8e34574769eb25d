//! Each kind of bad input yields its `FILE:LINE: field: message` problem.

use std::path::{Path, PathBuf};

use autosafe_ots::scenario_records::{self, Context};
use autosafe_ots::{
    Action, AgentTurn, Problems, RiskSource, Step, Taxonomy, ToolLibrary, asb, assebench, toolemu,
    toolemu_traj,
};

fn fixture(name: &str) -> (String, String) {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    (
        name.to_string(),
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

fn cases_problems(name: &str) -> String {
    let (file, text) = fixture(name);
    let err: Problems = toolemu::read_cases(&file, &text, &ToolLibrary::shipped()).unwrap_err();
    err.to_string()
}

#[test]
fn truncated_file_reports_where_it_ends() {
    assert_eq!(
        cases_problems("truncated_cases.json"),
        "truncated_cases.json:35: $: file is truncated or incomplete (EOF while parsing a string)"
    );
    let (file, text) = fixture("truncated_trajectories.jsonl");
    let err = toolemu_traj::read_trajectories(&file, &text)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "truncated_trajectories.jsonl:2: $: file is truncated or incomplete (EOF while parsing a string)"
    );
}

#[test]
fn unknown_toolkit_is_named_with_its_line() {
    assert_eq!(
        cases_problems("unknown_toolkit_cases.json"),
        "unknown_toolkit_cases.json:31: [1].Toolkits[1]: unknown toolkit `NoSuchToolkit`"
    );
}

#[test]
fn missing_field_points_at_its_object() {
    assert_eq!(
        cases_problems("missing_field_cases.json"),
        "missing_field_cases.json:27: [1].User Instruction: missing required field"
    );
}

#[test]
fn wrong_type_names_the_field() {
    assert_eq!(
        cases_problems("wrong_type_cases.json"),
        "wrong_type_cases.json:29: [1].Toolkits: invalid type: string \"FacebookManager\", expected a sequence"
    );
}

#[test]
fn empty_required_field_is_rejected() {
    assert_eq!(
        cases_problems("empty_field_cases.json"),
        "empty_field_cases.json:32: [1].User Instruction: must not be empty"
    );
}

#[test]
fn unknown_tool_in_an_agent_safetybench_case() {
    let env_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/samples/agent-safetybench/environments/OS.json");
    let os = asb::read_environment("OS.json", &std::fs::read_to_string(env_path).unwrap(), "OS")
        .unwrap();
    let (file, text) = fixture("asb_unknown_tool.json");
    let err = asb::read_cases(&file, &text, &ToolLibrary::from_toolkits([os]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "asb_unknown_tool.json:17: [1].environments[0].tools[1]: unknown tool `format_disk` in environment `OS`"
    );
}

#[test]
fn every_problem_in_a_scenario_record_is_listed() {
    let library = ToolLibrary::shipped();
    let taxonomy = Taxonomy::default_taxonomy();
    let cases: Vec<autosafe_ots::Case> =
        serde_json::from_str(&fixture("unknown_toolkit_cases.json").1).unwrap();
    let mut s = toolemu::case_to_scenario(&cases[0], &taxonomy);
    s.categories.push("space_weather".into());
    s.history.push(Step {
        turn: AgentTurn {
            thought: "t".into(),
            action: Action::Tool {
                tool: "TodoistNuke".into(),
                input: serde_json::json!({}),
                call_id: None,
            },
            raw: None,
        },
        observation: Some("{}".into()),
    });
    s.source = RiskSource::Action;
    s.id = s.compute_id();
    let good = serde_json::to_string(&toolemu::case_to_scenario(&cases[0], &taxonomy)).unwrap();
    let bad = serde_json::to_string(&s).unwrap();
    let text = format!("{good}\n\n{bad}\n");
    let err = scenario_records::read_scenarios(
        "s.jsonl",
        &text,
        Context {
            library: &library,
            taxonomy: &taxonomy,
        },
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "s.jsonl:3: categories[1]: unknown category `space_weather`\ns.jsonl:3: history[0].tool: unknown tool `TodoistNuke`"
    );
}

#[test]
fn assebench_label_must_be_zero_or_one() {
    let text = "[\n {\"id\": 1, \"contents\": [[{\"role\": \"user\", \"content\": \"hi\"}]], \"label\": 1},\n {\"id\": 2,\n  \"contents\": [[{\"role\": \"robot\", \"content\": \"x\"}]],\n  \"label\": 7}\n]";
    let err = assebench::read_records("a.json", text)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "a.json:5: [1].label: expected 0 (safe) or 1 (unsafe), found 7\na.json:4: [1].contents[0][0].role: unknown role `robot` (expected user, agent or environment)"
    );
}

/// A scenario repeated (a concatenated or hand-edited file) and a JSON key given twice are
/// problems at their lines, not silently counted twice or kept last.
#[test]
fn duplicate_ids_and_duplicate_keys_are_reported_at_their_lines() {
    let library = ToolLibrary::shipped();
    let taxonomy = Taxonomy::default_taxonomy();
    let cx = Context {
        library: &library,
        taxonomy: &taxonomy,
    };
    let cases: Vec<autosafe_ots::Case> =
        serde_json::from_str(&fixture("unknown_toolkit_cases.json").1).unwrap();
    let line = serde_json::to_string(&toolemu::case_to_scenario(&cases[0], &taxonomy)).unwrap();
    let text = format!("{line}\n{line}\n");
    let err = scenario_records::read_scenarios("s.jsonl", &text, cx)
        .unwrap_err()
        .to_string();
    let id = toolemu::case_to_scenario(&cases[0], &taxonomy).id;
    assert_eq!(
        err,
        format!("s.jsonl:2: id: duplicate id `{id}` (first at line 1)")
    );

    // `"categories"` twice in the second record: the reader would keep the last one.
    let twice = line.replacen(
        "\"categories\":",
        "\"categories\":[\"data_loss\"],\"categories\":",
        1,
    );
    assert_ne!(twice, line);
    let other = line.replace(&id, "sc_other");
    let text = format!("{other}\n{twice}\n");
    let err = scenario_records::read_scenarios("s.jsonl", &text, cx)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("s.jsonl:2: categories: duplicate key"),
        "{err}"
    );

    // In a JSON array file, the line of the repeated key.
    let err = toolemu::read_cases(
        "c.json",
        "[\n {\"name\": \"a\",\n  \"name\": \"b\"}\n]",
        &library,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("c.json:2: [0].name: duplicate key"),
        "{err}"
    );
}
