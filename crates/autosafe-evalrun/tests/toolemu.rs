//! `eval toolemu` against the scripted server: full episodes on four shipped ToolEmu cases,
//! scored by a scripted evaluator; the trajectories and evaluator rows written in ToolEmu's
//! format are read back by `autosafe-ots`'s readers and give the same scores.

use autosafe_test_support::runners as support;

use std::sync::Arc;

use autosafe_env::{EmulatorFactory, EmulatorMode, EmulatorOptions};
use autosafe_eval::gold_labels::toolemu_episodes;
use autosafe_eval::result_records::RubricOutcome;
use autosafe_evalrun::EvalRun;
use autosafe_evalrun::toolemu::{
    EVAL_HELP_FILE, EVAL_SAFE_FILE, IndexedCase, STEP_LIMIT_OUTPUT, TRAJECTORIES_FILE,
    ToolEmuConfig, ToolEmuParts, eval_toolemu,
};
use autosafe_ots::toolemu_traj::{read_evaluations, read_trajectories};
use autosafe_ots::{Action, Taxonomy, ToolLibrary, UnmeasuredReason};
use autosafe_pipeline::prompts::Prompts;
use autosafe_pipeline::stages::agent::AgentOptions;
use autosafe_pipeline::stages::{Agent, StepJudge};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn episodes_are_scored_and_written_in_toolemu_format() {
    let server = server().await;
    server.set_responder(toolemu_reply);
    let library = ToolLibrary::shipped();
    let taxonomy = Taxonomy::default_taxonomy();
    let text = std::fs::read_to_string(repo().join("data/toolemu/all_cases.json")).unwrap();
    let cases: Vec<IndexedCase> =
        autosafe_ots::toolemu::read_cases("all_cases.json", &text, &library)
            .unwrap()
            .into_iter()
            .take(4)
            .enumerate()
            .map(|(i, case)| IndexedCase {
                idx: i as u32,
                case,
            })
            .collect();
    let prompts = Arc::new(Prompts::embedded());
    let agent = Agent::new(
        model(&server, "agent-m"),
        prompts.clone(),
        AgentOptions::default(),
    );
    let evaluator = StepJudge::new(model(&server, "evaluator-m"), prompts).labelled("evaluator");
    let env = EmulatorFactory::new(
        model(&server, "emulator-m"),
        EmulatorMode::Adversarial,
        Arc::new(library.clone()),
        EmulatorOptions::default(),
    );
    let parts = ToolEmuParts {
        agent: &agent,
        evaluator: &evaluator,
        env: &env,
        library: &library,
        taxonomy: &taxonomy,
    };
    let cfg = ToolEmuConfig {
        max_steps: 3,
        concurrency: 4,
    };
    let dir = tempfile::tempdir().unwrap();
    let run = EvalRun::at(dir.path().join("run")).unwrap();
    let rep = eval_toolemu(&run, &cases, &parts, &cfg).await.unwrap();

    // The scripted scores (see support::toolemu_reply): safety 1, 3, 2, and official_3's
    // inconsistent label/score unmeasured; helpfulness 3, 0, step_limit, 2.
    let s: Vec<_> = rep.records.iter().map(|r| r.safety.clone()).collect();
    assert_eq!(s[0], RubricOutcome::Score(1));
    assert_eq!(s[1], RubricOutcome::Score(3));
    assert_eq!(s[2], RubricOutcome::Score(2));
    assert!(
        matches!(&s[3], RubricOutcome::Unmeasured { reason: UnmeasuredReason::ParseError, detail } if detail.contains("means score 3 but the reply says Some(2)")),
        "{:?}",
        s[3]
    );
    let h: Vec<_> = rep
        .records
        .iter()
        .map(|r| r.helpfulness.clone().unwrap())
        .collect();
    assert_eq!(h[0], RubricOutcome::Score(3));
    assert_eq!(h[1], RubricOutcome::Score(0));
    assert!(matches!(
        h[2],
        RubricOutcome::Unmeasured {
            reason: UnmeasuredReason::StepLimit,
            ..
        }
    ));
    assert_eq!(h[3], RubricOutcome::Score(2));
    // Summary by hand: safety scores 1, 3, 2 → mean 2, distribution 0/1/1/1, failure 1/3.
    let t = &rep.summary;
    assert_eq!(t.episodes, 4);
    assert_eq!(t.safety.n, 3);
    assert_eq!(t.safety.mean, Some(2.0));
    assert_eq!(t.safety.distribution, [0, 1, 1, 1]);
    assert_eq!(t.safety.failure_incidence.unwrap().successes, 1);
    assert_eq!(t.safety.unmeasured.by_reason["parse_error"], 1);
    // helpfulness 3, 0, 2 → mean 5/3, distribution 1/0/1/1, failure 1/3; 1 step_limit apart.
    assert!((t.helpfulness.mean.unwrap() - 5.0 / 3.0).abs() < 1e-12);
    assert_eq!(t.helpfulness.distribution, [1, 0, 1, 1]);
    assert_eq!(t.helpfulness.unmeasured.by_reason["step_limit"], 1);

    // The trajectories parse with the ToolEmu reader, in case order.
    let traj_text = std::fs::read_to_string(run.eval_file(TRAJECTORIES_FILE)).unwrap();
    let trajs = read_trajectories(TRAJECTORIES_FILE, &traj_text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(trajs.len(), 4);
    assert_eq!(trajs[0].case.name, "official_0");
    assert_eq!(trajs[0].case_idx, Some(0));
    assert_eq!(trajs[0].input, cases[0].case.user_instruction);
    let steps = trajs[0].steps().unwrap();
    let tools: Vec<Option<&str>> = steps.iter().map(|s| s.turn.action.tool_name()).collect();
    assert_eq!(
        tools,
        [Some("TodoistSearchTasks"), Some("TodoistDeleteTask"), None]
    );
    assert_eq!(steps[0].turn.thought, "I search first.");
    assert!(steps[0].observation.as_deref().unwrap().contains("tasks"));
    assert_eq!(
        trajs[0].output,
        "I deleted the task with 'Test' in its title."
    );
    assert!(
        trajs[0].extra["risky_outcome"]
            .as_str()
            .unwrap()
            .starts_with("\n* ")
    );
    let limited = trajs[2].steps().unwrap();
    assert_eq!(
        limited.len(),
        4,
        "three lock checks, then the step-limit finish"
    );
    assert!(
        matches!(&limited[3].turn.action, Action::Final { answer } if answer == STEP_LIMIT_OUTPUT)
    );

    // The evaluator rows parse with the ToolEmu reader and aggregate to the same scores.
    let mut rows = Vec::new();
    for f in [EVAL_SAFE_FILE, EVAL_HELP_FILE] {
        let text = std::fs::read_to_string(run.eval_file(f)).unwrap();
        rows.extend(read_evaluations(f, &text).unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(rows.len(), 3 + 3);
    assert_eq!(rows[0].qualitative_label, "Likely Mild Risk (1)");
    let back = toolemu_episodes(&rows, |i| {
        let t = trajs.get(i)?;
        Some((t.case.name.clone(), t.case.toolkits.clone()))
    });
    assert_eq!(back.len(), 3);
    for e in &back {
        let ours = rep.records.iter().find(|r| r.case_id == e.case_id).unwrap();
        assert_eq!(e.safety, ours.safety, "{}", e.case_id);
        if let Some(RubricOutcome::Score(_)) = ours.helpfulness {
            assert_eq!(e.helpfulness, ours.helpfulness, "{}", e.case_id);
        }
    }

    // Resume: nothing is sent again and the summary is the same.
    let sent = server.request_count();
    let again = eval_toolemu(&run, &cases, &parts, &cfg).await.unwrap();
    assert_eq!(server.request_count(), sent);
    assert_eq!(again.stats.resumed, 4);
    assert_eq!(again.summary, rep.summary);
    let loaded = autosafe_eval::result_files::RunResults::load(run.path()).unwrap();
    assert_eq!(loaded.toolemu, rep.records);
}
