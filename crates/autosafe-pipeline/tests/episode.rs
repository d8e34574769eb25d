//! The shared episode loop and replay (`stages::episode`) against the scripted server on
//! loopback (agent and judge) and an environment that records every call it gets: the hooks see
//! each step in order, a stopping label ends the episode before its action runs, and the replay
//! executes the scenario's seeded history or skips it as its policy says.

use autosafe_test_support::stages as support;

#[path = "../src/fixtures.rs"]
mod fixtures;

use std::sync::{Arc, Mutex};

use autosafe_env::{EnvError, Environment, EpisodeEnd, Observation};
use autosafe_ots::{
    Action, AgentTurn, Judgement, Scenario, Step, Toolkit, UnmeasuredReason, Verdict,
};
use autosafe_pipeline::prompts::Prompts;
use autosafe_pipeline::stages::agent::AgentOptions;
use autosafe_pipeline::stages::episode::{
    self, Ending, Episode, Hooks, JudgeEach, Label, Party, Played, Proposed, Replayed,
    SeededHistory,
};
use autosafe_pipeline::stages::{Agent, StageFailure, StepJudge};
use autosafe_scripted_server::ScriptedServer;
use serde_json::{Value, json};

/// An environment that answers every call with `ok` and records it.
struct Recording(Calls);

#[async_trait::async_trait]
impl Environment for Recording {
    async fn execute(
        &mut self,
        tool: &str,
        _input: &Value,
        history: &[Step],
    ) -> Result<Observation, EnvError> {
        let mut calls = self.0.lock().unwrap();
        calls.push(format!("execute {tool} after {}", history.len()));
        Ok(Observation {
            text: "ok".into(),
            is_error: false,
        })
    }

    async fn finish(self: Box<Self>, final_answer: Option<&str>) -> Result<EpisodeEnd, EnvError> {
        self.0
            .lock()
            .unwrap()
            .push(format!("finish {final_answer:?}"));
        Ok(EpisodeEnd::default())
    }
}

type Calls = Arc<Mutex<Vec<String>>>;

fn recording() -> (Box<dyn Environment>, Calls) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    (Box::new(Recording(calls.clone())), calls)
}

fn calls(c: &Calls) -> Vec<String> {
    c.lock().unwrap().clone()
}

fn tool_of(turn: &AgentTurn) -> &str {
    match &turn.action {
        Action::Tool { tool, .. } => tool,
        Action::Final { .. } => "final",
    }
}

/// Hooks that label by a rule (a delete gets `stop_with`, anything else is safe) and log every
/// call they get.
struct Seen {
    stop_with: Judgement,
    by: Party,
    events: Vec<String>,
}

#[async_trait::async_trait]
impl Hooks for Seen {
    async fn label(&mut self, _env: &mut Box<dyn Environment>, at: &Proposed<'_>) -> Option<Label> {
        let tool = tool_of(at.turn);
        self.events.push(format!("label {} {tool}", at.turn_no));
        let judgement = match tool {
            "TodoistDeleteTask" => self.stop_with.clone(),
            _ => Judgement::Safe,
        };
        Some(Label {
            verdict: fixtures::verdict(judgement, "by rule"),
            by: self.by,
        })
    }

    fn on_step(&mut self, at: &Proposed<'_>) {
        self.events.push(format!("step {}", at.turn_no));
    }

    async fn after_step(&mut self, _env: &mut Box<dyn Environment>, at: &Proposed<'_>) {
        self.events
            .push(format!("after {} from {}", at.turn_no, at.history.len()));
    }

    fn on_stop(&mut self, at: &Proposed<'_>, label: &Label) {
        let safe = label.verdict.judgement.is_safe();
        self.events.push(format!("stop {} {safe:?}", at.turn_no));
    }
}

/// The scripted server, the agent on it and ToolEmu's `official_0` to play.
struct Setup {
    server: ScriptedServer,
    agent: Agent,
    sc: Scenario,
    toolkits: Vec<Toolkit>,
}

impl Setup {
    async fn new() -> Setup {
        let server = support::server().await;
        let agent = Agent::new(
            support::model(&server, "agent-m"),
            Arc::new(Prompts::embedded()),
            // The scripted agent repeats actions on purpose (step limits, hand-counted
            // samples); the repeat guard has its own test in `stages::agent`.
            AgentOptions {
                repeat_guard: false,
                ..AgentOptions::default()
            },
        );
        let sc = fixtures::scenario();
        let toolkits = fixtures::toolkits_of(&sc);
        Setup {
            server,
            agent,
            sc,
            toolkits,
        }
    }

    /// Plays up to `max_steps` turns in a recording environment; returns what was played, the
    /// live environment and its calls.
    async fn play<H: Hooks>(
        &self,
        max_steps: u32,
        hooks: &mut H,
    ) -> (Played, Box<dyn Environment>, Calls) {
        let (mut env, log) = recording();
        let ep = Episode {
            scenario: &self.sc,
            toolkits: &self.toolkits,
            key: "ep-test",
            agent_role: "agent",
            sample: 0,
            max_steps,
            first: None,
        };
        let played = episode::play(&self.agent, &mut env, ep, Vec::new(), hooks).await;
        (played, env, log)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_see_each_step_and_an_unsafe_label_stops_before_the_action_runs() {
    let s = Setup::new().await;
    let mut seen = Seen {
        stop_with: Judgement::Unsafe,
        by: Party::Judge,
        events: Vec::new(),
    };
    let (played, env, log) = s.play(5, &mut seen).await;
    // The agent searches (safe: it runs), then deletes (unsafe: the episode stops there).
    assert_eq!(
        seen.events,
        [
            "label 0 TodoistSearchTasks",
            "step 0",
            "after 0 from 0",
            "label 1 TodoistDeleteTask",
            "stop 1 Some(false)",
        ]
    );
    assert!(matches!(&played.ending, Ending::Unsafe { verdict } if verdict.rationale == "by rule"));
    assert_eq!(played.turns, 2);
    assert_eq!(played.steps.len(), 1);
    assert_eq!(played.history, played.steps);
    assert_eq!(calls(&log), ["execute TodoistSearchTasks after 0"]);
    let mut ending = played.ending;
    assert!(episode::finish(env, &mut ending).await.is_some());
    assert_eq!(calls(&log)[1], "finish None");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmeasured_label_ends_the_episode_unmeasured_by_its_labeller() {
    let s = Setup::new().await;
    let failure = StageFailure {
        reason: UnmeasuredReason::EnvironmentError,
        detail: "facts unknown".into(),
        raw: None,
    };
    let mut seen = Seen {
        stop_with: Judgement::Unmeasured {
            reason: failure.reason,
            detail: failure.detail.clone(),
        },
        by: Party::Checkers,
        events: Vec::new(),
    };
    let (played, _env, log) = s.play(5, &mut seen).await;
    assert_eq!(seen.events.last().unwrap(), "stop 1 None");
    let by = Party::Checkers;
    assert_eq!(played.ending, Ending::Unmeasured { by, failure });
    assert_eq!(calls(&log), ["execute TodoistSearchTasks after 0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_judge_labels_every_action_and_without_one_the_step_limit_ends_it() {
    let s = Setup::new().await;
    let judge = StepJudge::new(
        support::model(&s.server, "judge-m"),
        Arc::new(Prompts::embedded()),
    );
    // Judged: the search is safe and runs, the delete is unsafe and does not.
    let mut hooks = JudgeEach {
        judge: Some(&judge),
        scenario: &s.sc,
        key: "ep-test",
        role: "judge",
        sample: 0,
        verdicts: Vec::new(),
    };
    let (played, _env, log) = s.play(5, &mut hooks).await;
    let labels: Vec<_> = hooks.verdicts.iter().map(|v| v.judgement.clone()).collect();
    assert_eq!(labels, [Judgement::Safe, Judgement::Unsafe]);
    let verdict = hooks.verdicts[1].clone();
    assert_eq!(played.ending, Ending::Unsafe { verdict });
    assert_eq!(calls(&log), ["execute TodoistSearchTasks after 0"]);

    // Unjudged: every action runs until the step limit.
    let mut hooks = JudgeEach {
        judge: None,
        verdicts: Vec::new(),
        ..hooks
    };
    let (played, _env, log) = s.play(3, &mut hooks).await;
    assert_eq!(played.ending, Ending::StepLimit);
    assert!(hooks.verdicts.is_empty());
    assert_eq!(
        calls(&log),
        [
            "execute TodoistSearchTasks after 0",
            "execute TodoistDeleteTask after 1",
            "execute TodoistDeleteTask after 2",
        ]
    );
}

#[test]
fn an_environment_failure_at_the_end_spoils_only_a_final_answer() {
    let e = EnvError::Sandbox("gone".into());
    let mut answered = Ending::Final {
        answer: "done".into(),
    };
    answered.end_failed(&e);
    assert_eq!(answered, Ending::environment(&e));
    let verdict: Verdict = fixtures::verdict(Judgement::Unsafe, "x");
    let mut stopped = Ending::Unsafe {
        verdict: verdict.clone(),
    };
    stopped.end_failed(&e);
    assert_eq!(stopped, Ending::Unsafe { verdict });
}

fn step(tool: &str, observation: &str) -> Step {
    Step {
        turn: AgentTurn {
            thought: String::new(),
            action: Action::Tool {
                tool: tool.into(),
                input: json!({}),
                call_id: None,
            },
            raw: None,
        },
        observation: Some(observation.into()),
    }
}

#[tokio::test]
async fn replay_executes_or_skips_the_seeded_history_as_its_policy_says() {
    let mut sc = fixtures::scenario();
    // Seeded: a search whose recorded observation differs from what the environment returns.
    sc.history = vec![step("TodoistSearchTasks", "recorded elsewhere")];
    let mut trajectory = sc.history.clone();
    trajectory.push(step("TodoistDeleteTask", "ok"));
    trajectory.push(Step {
        turn: fixtures::safe_turn(),
        observation: None,
    });

    let (mut env, log) = recording();
    let done = episode::replay(&mut env, &sc, &trajectory, SeededHistory::Replay)
        .await
        .unwrap();
    assert_eq!(
        calls(&log),
        [
            "execute TodoistSearchTasks after 0",
            "execute TodoistDeleteTask after 1",
        ]
    );
    assert_eq!(
        done,
        Replayed {
            steps: 2,
            diverged: 1
        }
    );

    let (mut env, log) = recording();
    let done = episode::replay(&mut env, &sc, &trajectory, SeededHistory::Skip)
        .await
        .unwrap();
    // Only the trajectory's own step runs, given the seeded history before it.
    assert_eq!(calls(&log), ["execute TodoistDeleteTask after 1"]);
    assert_eq!(
        done,
        Replayed {
            steps: 1,
            diverged: 0
        }
    );

    // A trajectory that is all seeded history leaves nothing to run when skipped.
    let (mut env, log) = recording();
    let done = episode::replay(&mut env, &sc, &sc.history, SeededHistory::Skip)
        .await
        .unwrap();
    assert!(calls(&log).is_empty());
    assert_eq!(done, Replayed::default());
}
