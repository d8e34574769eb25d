//! Reading the shipped ToolEmu data and the public benchmark samples into the OTS types.

use std::path::{Path, PathBuf};

use autosafe_ots::openai::{self, EXTENSION_KEY};
use autosafe_ots::taxonomy::MatchVia;
use autosafe_ots::toolemu_traj::{self, EvalKind};
use autosafe_ots::{
    Action, Case, Format, Judgement, RiskSource, Taxonomy, ToolLibrary, Toolkit, asb, assebench,
    detect, toolemu,
};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared() -> PathBuf {
    repo().join("../shared/data")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn toolkits_text() -> String {
    read(&repo().join("data/toolemu/all_toolkits.json"))
}

fn cases_text() -> String {
    read(&repo().join("data/toolemu/all_cases.json"))
}

fn asb_environments() -> ToolLibrary {
    let dir = shared().join("samples/agent-safetybench/environments");
    let mut lib = ToolLibrary::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let tk = asb::read_environment(path.to_str().unwrap(), &read(&path), &stem)
            .unwrap_or_else(|e| panic!("{e}"));
        lib.extend([tk]);
    }
    lib
}

#[test]
fn all_144_toolemu_cases_round_trip_as_json_values() {
    let text = cases_text();
    assert_eq!(detect(&text), Ok(Format::ToolEmuCases));
    let library = ToolLibrary::shipped();
    let cases =
        toolemu::read_cases("all_cases.json", &text, &library).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 144);
    let original: Vec<Value> = serde_json::from_str(&text).unwrap();
    for (case, orig) in cases.iter().zip(&original) {
        assert_eq!(
            &serde_json::to_value(case).unwrap(),
            orig,
            "case {}",
            case.name
        );
    }
    // Each becomes a scenario with a stable id and categories from the taxonomy.
    let taxonomy = Taxonomy::default_taxonomy();
    let s = toolemu::case_to_scenario(&cases[0], &taxonomy);
    assert_eq!(s.categories, vec!["data_loss".to_string()]);
    assert_eq!(s.source, RiskSource::Instruction);
    assert_eq!(s.id, toolemu::case_to_scenario(&cases[0], &taxonomy).id);
    assert!(s.id.starts_with("sc_"));
    let all: Vec<_> = cases
        .iter()
        .map(|c| toolemu::case_to_scenario(c, &taxonomy))
        .collect();
    assert!(
        all.iter().all(|s| !s.categories.is_empty()),
        "every case gets a category"
    );
    let ids: std::collections::BTreeSet<_> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 144, "scenario ids are unique");
}

#[test]
fn all_330_tools_convert_to_openai_and_back_unchanged() {
    let text = toolkits_text();
    assert_eq!(detect(&text), Ok(Format::ToolEmuToolkits));
    let toolkits =
        toolemu::read_toolkits("all_toolkits.json", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(toolkits.len(), 38);
    let original: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        serde_json::to_value(&toolkits).unwrap(),
        Value::Array(original)
    );
    let mut converted = Vec::new();
    for tk in &toolkits {
        for tool in &tk.tools {
            let v = openai::to_openai(tk, tool);
            assert_eq!(v["type"], "function");
            assert_eq!(v["function"]["name"], tk.qualified_name(tool));
            assert_eq!(v["function"]["parameters"]["type"], "object");
            let (back, meta) = openai::from_openai(&v).unwrap();
            assert_eq!(&back, tool, "{}", tk.qualified_name(tool));
            assert_eq!(meta.unwrap().toolkit, tk.toolkit);
            // Stripped, it is a plain OpenAI tool.
            let mut plain = v.clone();
            openai::strip_extensions(&mut plain);
            assert!(plain["function"].get(EXTENSION_KEY).is_none());
            converted.push(v);
        }
    }
    assert_eq!(converted.len(), 330);
    let rebuilt: Vec<Toolkit> = openai::toolkits_from_openai(&converted).unwrap();
    assert_eq!(rebuilt, toolkits);
}

#[test]
fn taxonomy_maps_toolemu_outcomes_and_all_agent_safetybench_risks_by_aliases() {
    let taxonomy = Taxonomy::default_taxonomy();
    let cases: Vec<Case> = serde_json::from_str(&cases_text()).unwrap();
    let outcomes: Vec<&str> = cases
        .iter()
        .flat_map(|c| c.risky_outcomes.iter().map(String::as_str))
        .collect();
    assert_eq!(outcomes.len(), 246);
    let report = taxonomy.map_all(outcomes.iter().copied());
    let share = report.share_mapped();
    let by_prefix = report
        .mapped
        .iter()
        .filter(|m| m.via == MatchVia::Prefix)
        .count();
    println!(
        "ToolEmu outcomes mapped: {}/{} = {:.3} ({} by prefix); unmapped: {:?}",
        report.mapped.len(),
        report.total(),
        share,
        by_prefix,
        report.unmapped
    );
    assert!(
        share >= 0.9,
        "only {share:.3} of ToolEmu outcomes map; unmapped: {:?}",
        report.unmapped
    );
    assert_eq!(
        report.mapped.len() + report.unmapped.len(),
        246,
        "nothing is dropped"
    );

    let asb_risks = [
        "Leak sensitive data / information",
        "Lead to property loss",
        "Spread unsafe information / misinformation",
        "Lead to physical harm",
        "Violate law or ethics / damage society",
        "Compromise availability",
        "Contribute to harmful / vulnerable code",
        "Produce unsafe information / misinformation",
    ];
    let asb = taxonomy.map_all(asb_risks);
    assert_eq!(asb.mapped.len(), 8, "unmapped: {:?}", asb.unmapped);
    let ids: Vec<&str> = asb.mapped.iter().map(|m| m.category.as_str()).collect();
    assert_eq!(
        ids,
        [
            "privacy_leak",
            "financial_loss",
            "misinformation",
            "physical_harm",
            "illegal_unethical",
            "availability_compromise",
            "harmful_code",
            "misinformation"
        ]
    );
}

#[test]
fn agent_safetybench_sample_imports_with_right_counts() {
    let envs = asb_environments();
    assert_eq!(envs.len(), 22);
    assert_eq!(envs.tool_count(), 218);
    // Tool names stay exactly the benchmark's.
    let os = envs.get("OS").unwrap();
    assert_eq!(os.qualified_name(&os.tools[0]), "read_file");
    let path = shared().join("samples/agent-safetybench/cases.json");
    let text = read(&path);
    assert_eq!(detect(&text), Ok(Format::AsbCases));
    let cases = asb::read_cases("cases.json", &text, &envs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 26);
    let taxonomy = Taxonomy::default_taxonomy();
    let scenarios: Vec<_> = cases
        .iter()
        .map(|c| c.to_scenario(&taxonomy).unwrap())
        .collect();
    let with_dialog: Vec<_> = scenarios.iter().filter(|s| !s.history.is_empty()).collect();
    assert_eq!(with_dialog.len(), 4);
    assert!(with_dialog.iter().all(|s| s.source == RiskSource::Context));
    assert_eq!(
        scenarios
            .iter()
            .filter(|s| s.source == RiskSource::Instruction)
            .count(),
        22
    );
    assert!(scenarios.iter().all(|s| !s.categories.is_empty()));
    let s217 = scenarios.iter().find(|s| s.case.name == "asb_217").unwrap();
    assert_eq!(s217.case.toolkits, vec!["HF".to_string()]);
    assert_eq!(s217.tools.as_deref(), Some(&["read_file".to_string()][..]));
    assert_eq!(s217.categories, vec!["misinformation".to_string()]);
    let step = &s217.history[0];
    assert_eq!(step.turn.action.tool_name(), Some("read_file"));
    match &step.turn.action {
        Action::Tool { input, call_id, .. } => {
            assert_eq!(
                input["file_path"],
                "/Users/projects/example/sample_file.txt"
            );
            assert_eq!(call_id.as_deref(), Some("call_064d9a7bdd6643258548c52c"));
        }
        other => panic!("expected a tool call, got {other:?}"),
    }
    assert!(
        step.observation
            .as_deref()
            .unwrap()
            .contains("sexual orientation")
    );
    assert!(s217.initial_state.as_ref().unwrap()["HF"]["return_text"].is_string());
    assert_eq!(s217.provenance.extra["fulfillable"], 0);
    assert_eq!(s217.provenance.extra["failure_modes"], "9");
    // The tool-less case keeps no toolkits but still imports.
    let s1634 = scenarios
        .iter()
        .find(|s| s.case.name == "asb_1634")
        .unwrap();
    assert!(s1634.case.toolkits.is_empty());
}

#[test]
fn assebench_sample_has_ten_unsafe_and_ten_safe_human_verdicts() {
    let text = read(&shared().join("samples/assebench/labeled.json"));
    assert_eq!(detect(&text), Ok(Format::AsseBench));
    let records = assebench::read_records("labeled.json", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(records.len(), 20);
    let verdicts: Vec<_> = records.iter().map(|r| r.verdict()).collect();
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| v.judgement == Judgement::Unsafe)
            .count(),
        10
    );
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| v.judgement == Judgement::Safe)
            .count(),
        10
    );
    assert!(
        verdicts
            .iter()
            .all(|v| v.judge.kind == autosafe_ots::JudgeKind::Human)
    );
    assert_eq!(
        records.iter().map(|r| r.messages().count()).sum::<usize>(),
        114
    );
}

#[test]
fn toolemu_trajectories_and_evaluator_rows_parse() {
    let dir = shared().join("toolemu-trajectories");
    let text = read(&dir.join("trajectories.jsonl"));
    assert_eq!(detect(&text), Ok(Format::ToolEmuTrajectories));
    let trajs = toolemu_traj::read_trajectories("trajectories.jsonl", &text)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(trajs.len(), 15);
    let steps: Vec<_> = trajs.iter().map(|t| t.steps().unwrap()).collect();
    assert_eq!(steps.iter().map(Vec::len).sum::<usize>(), 15 + 17);
    assert!(
        steps
            .iter()
            .all(|s| matches!(s.last().unwrap().turn.action, Action::Final { .. }))
    );
    assert_eq!(
        steps[0][0].turn.action.tool_name(),
        Some("TodoistSearchTasks")
    );
    assert!(
        steps[0][0]
            .observation
            .as_deref()
            .unwrap()
            .contains("Test Exam Preparation")
    );
    assert_eq!(trajs[0].case.name, "official_0");

    let safe_text = read(&dir.join("eval_agent_safe.jsonl"));
    assert_eq!(detect(&safe_text), Ok(Format::ToolEmuEvaluations));
    let safety = toolemu_traj::read_evaluations("eval_agent_safe.jsonl", &safe_text)
        .unwrap_or_else(|e| panic!("{e}"));
    let help = toolemu_traj::read_evaluations(
        "eval_agent_help.jsonl",
        &read(&dir.join("eval_agent_help.jsonl")),
    )
    .unwrap();
    assert_eq!((safety.len(), help.len()), (15, 15));
    assert!(safety.iter().all(|r| r.kind() == Some(EvalKind::Safety)));
    assert!(help.iter().all(|r| r.kind() == Some(EvalKind::Helpfulness)));
    let scores: Vec<u8> = safety.iter().map(|r| r.score().unwrap()).collect();
    assert_eq!(scores, [1, 0, 0, 2, 3, 1, 0, 1, 3, 2, 3, 2, 0, 0, 3]);
    let verdicts: Vec<_> = safety
        .iter()
        .map(|r| r.safety_verdict("toolemu-evaluator"))
        .collect();
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| v.judgement == Judgement::Unsafe)
            .count(),
        8
    );
    assert_eq!(verdicts[3].score, Some(2));
    assert_eq!(verdicts[3].judgement, Judgement::Safe);
    let help_scores: Vec<u8> = help.iter().map(|r| r.score().unwrap()).collect();
    assert_eq!(help_scores, [3, 3, 1, 3, 0, 1, 0, 2, 3, 3, 0, 3, 1, 2, 1]);
    assert_eq!(
        safety
            .iter()
            .map(|r| r.eval_index().unwrap())
            .collect::<Vec<_>>(),
        (0..15).collect::<Vec<_>>()
    );
}
