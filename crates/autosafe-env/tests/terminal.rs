//! The real terminal behind the Environment trait: shipped terminal scenarios (data/terminal/)
//! played with their scripted safe and unsafe commands through `TerminalFactory`, each command
//! really run in a bubblewrap sandbox, with the programmatic verdicts in the episode end.
//! Needs bubblewrap (installed by scripts/setup.sh).

use std::path::PathBuf;

use autosafe_env::{EnvError, EnvironmentFactory, EpisodeEnd, TerminalFactory};
use autosafe_ots::{Action, AgentTurn, Judgement, RiskSource, Step};
use autosafe_sandbox::{SandboxConfig, ScriptedAgent, TerminalScenario, load_dir};
use serde_json::{Value, json};

fn scenarios() -> Vec<TerminalScenario> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/terminal");
    load_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}

/// One scenario of each OTS source (the sandbox crate's own tests play all of them).
fn one_per_source() -> Vec<TerminalScenario> {
    let all = scenarios();
    RiskSource::ALL
        .iter()
        .map(|src| {
            all.iter()
                .find(|s| s.scenario.source == *src)
                .unwrap_or_else(|| panic!("no terminal scenario with source {src}"))
                .clone()
        })
        .collect()
}

/// Plays a scripted agent through the Environment trait, building the history as an agent
/// loop would.
async fn play(
    factory: &TerminalFactory,
    s: &TerminalScenario,
    agent: &ScriptedAgent,
) -> EpisodeEnd {
    let mut env = factory.start(&s.scenario, 0).await.unwrap_or_else(|e| {
        panic!("{}: {e}", s.path.display());
    });
    let mut history: Vec<Step> = Vec::new();
    for c in &agent.commands {
        let input = json!({ "command": c });
        let obs = env
            .execute("TerminalExecute", &input, &history)
            .await
            .unwrap_or_else(|e| panic!("{}: `{c}`: {e}", s.path.display()));
        assert!(!obs.is_error);
        let v: Value = serde_json::from_str(&obs.text).unwrap();
        assert!(
            v["output"].is_string() && v["exit_code"].is_i64(),
            "{}",
            obs.text
        );
        assert_eq!(
            v.as_object().unwrap().len(),
            2,
            "exactly ToolEmu's return fields"
        );
        history.push(Step {
            turn: AgentTurn {
                thought: String::new(),
                action: Action::Tool {
                    tool: "TerminalExecute".into(),
                    input,
                    call_id: None,
                },
                raw: None,
            },
            observation: Some(obs.text),
        });
    }
    env.finish(Some(&agent.final_answer)).await.unwrap()
}

fn transcript_len(end: &EpisodeEnd) -> usize {
    end.facts["transcript"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_agents_get_programmatic_verdicts_through_the_trait() {
    let factory = TerminalFactory::new(SandboxConfig::default());
    assert_eq!(factory.name(), "terminal");
    let picked = one_per_source();
    assert_eq!(picked.len(), 3);
    for s in &picked {
        let name = s.path.display();
        let bad = play(&factory, s, &s.scripted.unsafe_agent).await;
        let verdict = bad.safety.as_ref().expect("a programmatic verdict");
        assert_eq!(
            verdict.judgement,
            Judgement::Unsafe,
            "{name}: {}",
            verdict.rationale
        );
        assert!(verdict.rationale.starts_with("unsafe_if holds"), "{name}");
        assert_eq!(transcript_len(&bad), s.scripted.unsafe_agent.commands.len());
        assert!(
            bad.facts["facts"].is_object() && !bad.facts["facts"].as_object().unwrap().is_empty()
        );

        let good = play(&factory, s, &s.scripted.safe).await;
        let verdict = good.safety.as_ref().expect("a programmatic verdict");
        assert_eq!(
            verdict.judgement,
            Judgement::Safe,
            "{name}: {}",
            verdict.rationale
        );
        if s.scripted.safe.expect_done {
            assert_eq!(
                good.completed,
                Some(true),
                "{name}: {}",
                good.facts["completion_rationale"]
            );
        }
        assert_eq!(transcript_len(&good), s.scripted.safe.commands.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_calls_are_error_observations_and_do_not_run() {
    let factory = TerminalFactory::new(SandboxConfig::default());
    let s = &scenarios()[0];
    let mut env = factory.start(&s.scenario, 0).await.unwrap();
    let unknown = env
        .execute(
            "TerminalDeleteEverything",
            &json!({"command": "rm -rf ~"}),
            &[],
        )
        .await
        .unwrap();
    assert!(unknown.is_error);
    assert!(
        unknown
            .text
            .contains("unknown tool `TerminalDeleteEverything`")
    );
    assert!(unknown.text.contains("available tools: TerminalExecute"));
    let missing = env
        .execute("TerminalExecute", &json!({}), &[])
        .await
        .unwrap();
    assert!(missing.is_error);
    assert!(
        missing
            .text
            .contains("InvalidRequestException: missing required argument `command`")
    );
    let extra = env
        .execute(
            "TerminalExecute",
            &json!({"command": "ls", "sudo": true}),
            &[],
        )
        .await
        .unwrap();
    assert!(extra.is_error && extra.text.contains("unexpected argument `sudo`"));
    // A real command still runs, and state persists between commands of one episode.
    let obs = env
        .execute(
            "TerminalExecute",
            &json!({"command": "echo kept > ~/note.txt"}),
            &[],
        )
        .await
        .unwrap();
    assert!(!obs.is_error);
    let obs = env
        .execute(
            "TerminalExecute",
            &json!({"command": "cat ~/note.txt; exit 3"}),
            &[],
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&obs.text).unwrap();
    assert_eq!(v["output"], "kept\n");
    assert_eq!(v["exit_code"], 3);
    let end = env.finish(None).await.unwrap();
    assert_eq!(transcript_len(&end), 2, "only the valid calls ran");
}

#[tokio::test]
async fn scenarios_without_a_terminal_setup_are_unsupported() {
    let factory = TerminalFactory::new(SandboxConfig::default());
    let mut sc = scenarios()[0].scenario.clone();
    sc.terminal = None;
    match factory.start(&sc, 0).await {
        Err(EnvError::Unsupported { scenario, message }) => {
            assert_eq!(scenario, sc.id);
            assert!(message.contains("Scenario.terminal"), "{message}");
        }
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("expected Unsupported, got an episode"),
    }
}
