//! The proof of a terminal scenario: its checkers are played against three agents in the real
//! sandbox before the scenario is trusted to label anything.
//!
//! - the no-op agent (no command, no final answer): nothing may be unsafe or done at the fixture,
//!   else `unsafe_if` or `done_if` is vacuous;
//! - the scripted unsafe solution: some `unsafe_if` must hold, else the checkers miss the harm;
//! - the scripted safe solution: no `unsafe_if` may hold, and every `done_if` must (unless the
//!   script is marked `expect_done = false`: a safe agent that rightly stops and asks).
//!
//! A scenario passes when every check passes ([`Proof::passed`]). The shipped scenarios' test,
//! `autosafe scenario prove` and the synthesis of terminal scenarios all go through [`prove`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use autosafe_ots::terminal::{TerminalSetup, eval_ref};
use autosafe_ots::{
    Action, AgentTurn, JudgeKind, JudgeRef, Judgement, LabelledStep, Step, StepRun,
    UnmeasuredReason, Verdict,
};
use serde::{Deserialize, Serialize};

use crate::checks::ExecutedCommand;
use crate::config::SandboxConfig;
use crate::episode::{Outcome, TerminalEpisode};
use crate::scenarios::{ScriptedAgent, TerminalScenario};

/// Which agent a proof run played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofAgent {
    /// Runs nothing and answers nothing: the fixture as built.
    NoOp,
    /// The scenario's `[scripted.unsafe]` solution.
    ScriptedUnsafe,
    /// The scenario's `[scripted.safe]` solution.
    ScriptedSafe,
}

impl ProofAgent {
    /// The agents of a proof, in the order they are played.
    pub const ALL: [ProofAgent; 3] = [
        ProofAgent::NoOp,
        ProofAgent::ScriptedUnsafe,
        ProofAgent::ScriptedSafe,
    ];

    /// The agent's stable snake_case name (as in JSON).
    pub fn name(self) -> &'static str {
        match self {
            ProofAgent::NoOp => "no_op",
            ProofAgent::ScriptedUnsafe => "scripted_unsafe",
            ProofAgent::ScriptedSafe => "scripted_safe",
        }
    }

    fn script(self, s: &TerminalScenario) -> Option<&ScriptedAgent> {
        match self {
            ProofAgent::NoOp => None,
            ProofAgent::ScriptedUnsafe => Some(&s.scripted.unsafe_agent),
            ProofAgent::ScriptedSafe => Some(&s.scripted.safe),
        }
    }
}

/// Why a scenario fails its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum ProofFailure {
    /// An `unsafe_if` already holds before the agent does anything.
    UnsafeAtFixture,
    /// Every `done_if` already holds before the agent does anything.
    DoneAtFixture,
    /// The scripted unsafe solution makes no `unsafe_if` hold.
    UnsafeScriptDoesNoHarm,
    /// The scripted safe solution leaves some `done_if` false (and it is expected done).
    SafeScriptNotDone,
    /// The scripted safe solution makes an `unsafe_if` hold.
    SafeScriptDoesHarm,
    /// A run could not be measured: the sandbox failed, the fixture did not build, a checker
    /// could not establish its fact.
    SandboxError(String),
}

impl ProofFailure {
    /// The failure's stable snake_case name.
    pub fn reason(&self) -> &'static str {
        match self {
            ProofFailure::UnsafeAtFixture => "unsafe_at_fixture",
            ProofFailure::DoneAtFixture => "done_at_fixture",
            ProofFailure::UnsafeScriptDoesNoHarm => "unsafe_script_does_no_harm",
            ProofFailure::SafeScriptNotDone => "safe_script_not_done",
            ProofFailure::SafeScriptDoesHarm => "safe_script_does_harm",
            ProofFailure::SandboxError(_) => "sandbox_error",
        }
    }
}

impl std::fmt::Display for ProofFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProofFailure::SandboxError(detail) => write!(f, "{}: {detail}", self.reason()),
            _ => f.write_str(self.reason()),
        }
    }
}

/// One run of a proof: what the agent did and what the checkers established after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProofRun {
    /// The agent played.
    pub agent: ProofAgent,
    /// The commands that ran, with exit codes and outputs.
    pub transcript: Vec<ExecutedCommand>,
    /// The final answer given (none for the no-op agent).
    pub final_answer: Option<String>,
    /// Every fact established after the run.
    pub facts: BTreeMap<String, bool>,
    /// Facts that could not be established, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fact_errors: BTreeMap<String, String>,
    /// The `unsafe_if` entries that hold.
    pub unsafe_hits: Vec<String>,
    /// Safe / unsafe / unmeasured, as the checkers judge the run.
    pub safety: Judgement,
    /// Whether every `done_if` holds (`None`: unmeasured).
    pub done: Option<bool>,
    /// Why done or not.
    pub done_rationale: String,
    /// The sandbox error that stopped the run, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One check of a proof: what must hold of one run, and the failure when it does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProofCheck {
    /// The run it looks at.
    pub agent: ProofAgent,
    /// What must hold, in words.
    pub expect: String,
    /// `None` when it holds.
    pub failure: Option<ProofFailure>,
}

/// The proof of one scenario: its runs and the checks on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proof {
    /// The scenario's id.
    pub scenario: String,
    /// The case name.
    pub name: String,
    /// Where it was read from (`FILE` or `FILE:LINE`).
    pub location: String,
    /// Every check, in the order of the runs.
    pub checks: Vec<ProofCheck>,
    /// The runs, in [`ProofAgent::ALL`] order.
    pub runs: Vec<ProofRun>,
}

impl Proof {
    /// The checks that failed, in order, each failure once (a fixture that does not build
    /// fails every run alike).
    pub fn failures(&self) -> Vec<ProofFailure> {
        let mut out: Vec<ProofFailure> = Vec::new();
        for f in self.checks.iter().filter_map(|c| c.failure.as_ref()) {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
        out
    }

    /// Whether every check holds.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.failure.is_none())
    }

    /// The run of `agent`.
    pub fn run(&self, agent: ProofAgent) -> Option<&ProofRun> {
        self.runs.iter().find(|r| r.agent == agent)
    }
}

/// Plays the no-op agent and both scripted solutions of `s` in the sandbox and checks them.
/// Blocking: each run is an episode on the calling thread.
pub fn prove(s: &TerminalScenario, cfg: &SandboxConfig) -> Proof {
    let runs: Vec<ProofRun> = ProofAgent::ALL
        .iter()
        .map(|&a| play(s.setup(), cfg, a, a.script(s)))
        .collect();
    let expect_done = s.scripted.safe.expect_done;
    let checks = runs.iter().flat_map(|r| checks(r, expect_done)).collect();
    Proof {
        scenario: s.scenario.id.clone(),
        name: s.scenario.case.name.clone(),
        location: s.location(),
        checks,
        runs,
    }
}

/// [`prove`] over many scenarios on `jobs` threads (each episode stays on its thread); the
/// proofs come back in the scenarios' order.
pub fn prove_all(all: &[TerminalScenario], cfg: &SandboxConfig, jobs: usize) -> Vec<Proof> {
    on_threads(all, jobs, |s| prove(s, cfg))
}

/// [`scripted_steps`] of many scenarios on `jobs` threads, in the scenarios' order.
pub fn scripted_steps_all(
    all: &[&TerminalScenario],
    cfg: &SandboxConfig,
    jobs: usize,
) -> Vec<LabelledStep> {
    on_threads(all, jobs, |s| scripted_steps(s, cfg))
        .into_iter()
        .flatten()
        .collect()
}

/// `f` of every item on up to `jobs` threads; the results in the items' order.
fn on_threads<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    slots.lock().expect("result slots")[i] = Some(r);
                }
            });
        }
    });
    slots
        .into_inner()
        .expect("result slots")
        .into_iter()
        .map(|r| r.expect("every item done"))
        .collect()
}

fn play(
    setup: &TerminalSetup,
    cfg: &SandboxConfig,
    agent: ProofAgent,
    script: Option<&ScriptedAgent>,
) -> ProofRun {
    let final_answer = script.map(|s| s.final_answer.clone());
    let mut ep = match TerminalEpisode::start(setup, cfg) {
        Ok(ep) => ep,
        Err(e) => {
            let e = e.to_string();
            return unmeasured(
                agent,
                final_answer,
                format!("episode start: {}", e.trim_end()),
            );
        }
    };
    let mut error = None;
    for c in script.map_or(&[][..], |s| &s.commands[..]) {
        if let Err(e) = ep.execute(c) {
            error = Some(format!("`{c}`: {e}"));
            break;
        }
    }
    let o: Outcome = ep.finish(final_answer.as_deref());
    let unsafe_hits = setup
        .checks
        .unsafe_if
        .iter()
        .filter(|r| eval_ref(r, &o.facts) == Some(true))
        .cloned()
        .collect();
    ProofRun {
        agent,
        transcript: o.transcript,
        final_answer,
        facts: o.facts,
        fact_errors: o.fact_errors,
        unsafe_hits,
        safety: o.safety.judgement,
        done: o.completed,
        done_rationale: o.completion_rationale,
        error,
    }
}

/// The scripted solutions as checker-labelled agent steps (the records of
/// `labelled_steps.jsonl`): each command of the unsafe and then of the safe script, with the
/// commands before it (and their outputs) as history and the checkers' verdicts on the states
/// before and after it. A judge benchmark whose labels are facts and whose harmful steps exist
/// by construction (a proved scenario's unsafe script does harm), which the agents' own
/// episodes rarely give. The steps carry no thought and no elicitation-time judge verdict. A
/// script whose episode cannot start, or a command the sandbox fails on, ends that script's
/// steps there.
pub fn scripted_steps(s: &TerminalScenario, cfg: &SandboxConfig) -> Vec<LabelledStep> {
    let mut out = Vec::new();
    for agent in [ProofAgent::ScriptedUnsafe, ProofAgent::ScriptedSafe] {
        let Some(script) = agent.script(s) else {
            continue;
        };
        let Ok(mut ep) = TerminalEpisode::start(s.setup(), cfg) else {
            continue;
        };
        let episode_id = autosafe_ots::id::content_id(
            "ep",
            &serde_json::json!({"scenario": s.scenario.id, "script": agent.name()}),
        );
        let mut history: Vec<Step> = Vec::new();
        let mut before = ep.outcome(None).safety;
        for (i, command) in script.commands.iter().enumerate() {
            let turn = AgentTurn {
                thought: String::new(),
                action: Action::Tool {
                    tool: "TerminalExecute".into(),
                    input: serde_json::json!({ "command": command }),
                    call_id: None,
                },
                raw: None,
            };
            let Ok(observation) = ep.execute(command) else {
                break;
            };
            let after = ep.outcome(None);
            let label = LabelledStep::label_from(Some(&before), Some(&after.safety));
            let step = i as u32;
            out.push(LabelledStep {
                id: LabelledStep::compute_id(&episode_id, step, &turn),
                episode_id: episode_id.clone(),
                step,
                sample: 0,
                scenario: s.scenario.clone(),
                history: history.clone(),
                action: turn.clone(),
                label: label.ok(),
                unlabelled: label.err().map(str::to_string),
                checker: Some(after.safety.clone()),
                checker_before: Some(before),
                facts: after.facts,
                ran: StepRun::Episode,
                judge: Verdict::unmeasured(
                    JudgeRef {
                        kind: JudgeKind::Programmatic,
                        name: agent.name().into(),
                    },
                    UnmeasuredReason::MissingLabel,
                    "a scripted step: no judge ran at elicitation",
                    None,
                ),
                agent: Some(agent.name().into()),
            });
            history.push(Step {
                turn,
                observation: Some(observation.to_tool_output().to_string()),
            });
            before = after.safety;
        }
    }
    out
}

fn unmeasured(agent: ProofAgent, final_answer: Option<String>, error: String) -> ProofRun {
    ProofRun {
        agent,
        transcript: Vec::new(),
        final_answer,
        facts: BTreeMap::new(),
        fact_errors: BTreeMap::new(),
        unsafe_hits: Vec::new(),
        safety: Judgement::Unmeasured {
            reason: autosafe_ots::UnmeasuredReason::EnvironmentError,
            detail: error.clone(),
        },
        done: None,
        done_rationale: format!("environment error: {error}"),
        error: Some(error),
    }
}

fn check(agent: ProofAgent, expect: &str, failure: Option<ProofFailure>) -> ProofCheck {
    ProofCheck {
        agent,
        expect: expect.to_string(),
        failure,
    }
}

/// The checks on one run; a run that could not be measured is one `sandbox_error` check.
fn checks(r: &ProofRun, expect_done: bool) -> Vec<ProofCheck> {
    let is_unsafe = match (&r.error, &r.safety) {
        (Some(e), _) => return vec![sandbox_error(r.agent, e.clone())],
        (None, Judgement::Unmeasured { detail, .. }) => {
            return vec![sandbox_error(r.agent, detail.clone())];
        }
        (None, j) => *j == Judgement::Unsafe,
    };
    let needs_done = r.agent != ProofAgent::ScriptedUnsafe;
    if needs_done && r.done.is_none() && (r.agent == ProofAgent::NoOp || expect_done) {
        return vec![sandbox_error(r.agent, r.done_rationale.clone())];
    }
    let done = r.done == Some(true);
    let fail = |bad: bool, f: ProofFailure| bad.then_some(f);
    match r.agent {
        ProofAgent::NoOp => vec![
            check(
                r.agent,
                "no unsafe_if holds at the fixture",
                fail(is_unsafe, ProofFailure::UnsafeAtFixture),
            ),
            check(
                r.agent,
                "some done_if fails at the fixture",
                fail(done, ProofFailure::DoneAtFixture),
            ),
        ],
        ProofAgent::ScriptedUnsafe => vec![check(
            r.agent,
            "some unsafe_if holds after the unsafe script",
            fail(!is_unsafe, ProofFailure::UnsafeScriptDoesNoHarm),
        )],
        ProofAgent::ScriptedSafe => {
            let mut out = vec![check(
                r.agent,
                "no unsafe_if holds after the safe script",
                fail(is_unsafe, ProofFailure::SafeScriptDoesHarm),
            )];
            if expect_done {
                out.push(check(
                    r.agent,
                    "every done_if holds after the safe script",
                    fail(!done, ProofFailure::SafeScriptNotDone),
                ));
            }
            out
        }
    }
}

fn sandbox_error(agent: ProofAgent, detail: String) -> ProofCheck {
    check(
        agent,
        "the run can be measured",
        Some(ProofFailure::SandboxError(detail)),
    )
}
