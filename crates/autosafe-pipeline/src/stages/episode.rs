//! The episode loop shared by elicitation and the evaluation runners, and the replay that
//! rebuilds an environment's state from a trajectory (shared by reflection and the snapshot
//! evaluation's continuation).
//!
//! [`play`] lets the agent act from a history until a final answer, the step limit, a failure,
//! or a label that stops it. What differs between callers is in [`Hooks`]: who labels an action
//! before it may run (the step judge, the environment's checkers, or nobody), and what is
//! recorded on each step and at the stop. An action labelled unsafe or unmeasured is never
//! executed; the loop reports how the episode ended as a typed [`Ending`], and leaves the
//! environment to the caller (to end it with [`finish`], or to probe it first).

use autosafe_env::{EnvError, Environment, EpisodeEnd};
use autosafe_ots::{
    Action, AgentTurn, Judgement, Scenario, Step, Toolkit, UnmeasuredReason, Verdict,
};

use super::agent::Agent;
use super::common::{StageFailure, seed_for};
use super::judge::StepJudge;

/// Who ended an episode unmeasured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The agent's reply could not be had or used.
    Agent,
    /// The step judge could not judge.
    Judge,
    /// The environment's checkers could not tell.
    Checkers,
    /// The environment failed.
    Environment,
}

impl Party {
    /// `agent`, `judge`, `checkers` or `environment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Agent => "agent",
            Party::Judge => "judge",
            Party::Checkers => "checkers",
            Party::Environment => "environment",
        }
    }
}

/// How an episode ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The agent gave a final answer (labelled safe when a label was asked).
    Final {
        /// The answer.
        answer: String,
    },
    /// An action was labelled unsafe; it was not executed.
    Unsafe {
        /// The label on it.
        verdict: Verdict,
    },
    /// No final answer or stop within the step limit.
    StepLimit,
    /// The agent, a labeller or the environment failed: nothing measured.
    Unmeasured {
        /// Who failed.
        by: Party,
        /// Why (the detail without the party).
        failure: StageFailure,
    },
}

impl Ending {
    /// The environment failed with `e`.
    pub fn environment(e: &EnvError) -> Ending {
        Ending::Unmeasured {
            by: Party::Environment,
            failure: StageFailure {
                reason: UnmeasuredReason::EnvironmentError,
                detail: e.to_string(),
                raw: None,
            },
        }
    }

    /// The environment failed when the episode was ended: that spoils only a final answer (whose
    /// outcome the environment had to establish); an episode stopped before keeps its ending.
    pub fn end_failed(&mut self, e: &EnvError) {
        if matches!(self, Ending::Final { .. }) {
            *self = Ending::environment(e);
        }
    }

    /// The final answer, when the episode ended with one.
    pub fn answer(&self) -> Option<&str> {
        match self {
            Ending::Final { answer } => Some(answer),
            _ => None,
        }
    }
}

/// A label of record on a proposed action, and who gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// Safe: the action runs; unsafe or unmeasured: the episode stops before it.
    pub verdict: Verdict,
    /// The labeller (named in an unmeasured ending).
    pub by: Party,
}

/// An action the agent proposed, where it was proposed.
pub struct Proposed<'a> {
    /// The agent turn's index in this episode (0-based).
    pub turn_no: u32,
    /// The history it was proposed from.
    pub history: &'a [Step],
    /// The action.
    pub turn: &'a AgentTurn,
}

/// What differs between the episodes of elicitation and evaluation. Each step is labelled
/// ([`Hooks::label`]); a safe (or unlabelled) one is seen by [`Hooks::on_step`] before it runs
/// and, when it is a tool call, by [`Hooks::after_step`] after it ran; a step labelled unsafe or
/// unmeasured is seen by [`Hooks::on_stop`] and ends the episode unexecuted.
#[async_trait::async_trait]
pub trait Hooks: Send {
    /// The label of record on a proposed action, before it may run; `None` runs it unlabelled.
    async fn label(&mut self, env: &mut Box<dyn Environment>, at: &Proposed<'_>) -> Option<Label>;

    /// A step that will run (a final answer ends the episode after this).
    fn on_step(&mut self, at: &Proposed<'_>) {
        let _ = at;
    }

    /// A tool call has been executed (or failed to), so `env` is in the state after it.
    async fn after_step(&mut self, env: &mut Box<dyn Environment>, at: &Proposed<'_>) {
        let _ = (env, at);
    }

    /// The label stopped the episode at this step (unsafe or unmeasured).
    fn on_stop(&mut self, at: &Proposed<'_>, label: &Label) {
        let _ = (at, label);
    }
}

/// Where an episode starts and how long it may run.
pub struct Episode<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// The toolkits offered to the agent.
    pub toolkits: &'a [Toolkit],
    /// Seeds the agent: `seed_for(key, agent_role, sample, turn)`.
    pub key: &'a str,
    /// The agent's seed role (`agent` in elicitation, `eval-agent` in evaluation).
    pub agent_role: &'a str,
    /// Which sample.
    pub sample: u32,
    /// Agent turns before the episode ends at the step limit (at least one).
    pub max_steps: u32,
    /// The agent's first turn when already sampled (e.g. a snapshot's sample 0).
    pub first: Option<AgentTurn>,
}

/// What an episode produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Played {
    /// The steps taken in this episode, after the starting history (a final answer is the last
    /// step, without observation).
    pub steps: Vec<Step>,
    /// The starting history followed by the executed steps.
    pub history: Vec<Step>,
    /// How it ended.
    pub ending: Ending,
    /// Agent turns taken.
    pub turns: u32,
}

/// Plays one episode in `env` from `history` (see the module docs).
pub async fn play<H: Hooks>(
    agent: &Agent,
    env: &mut Box<dyn Environment>,
    mut ep: Episode<'_>,
    history: Vec<Step>,
    hooks: &mut H,
) -> Played {
    let mut played = Played {
        steps: Vec::new(),
        history,
        ending: Ending::StepLimit,
        turns: 0,
    };
    for turn_no in 0..ep.max_steps.max(1) {
        let turn = match ep.first.take() {
            Some(t) => t,
            None => {
                let seed = seed_for(ep.key, ep.agent_role, ep.sample, turn_no);
                let proposed = agent
                    .propose(ep.scenario, ep.toolkits, &played.history, seed, None, &[])
                    .await;
                match proposed {
                    Ok(t) => t,
                    Err(failure) => {
                        played.ending = Ending::Unmeasured {
                            by: Party::Agent,
                            failure,
                        };
                        break;
                    }
                }
            }
        };
        played.turns += 1;
        match step(env, &mut played, turn_no, turn, hooks).await {
            Some(ending) => {
                played.ending = ending;
                break;
            }
            None => continue,
        }
    }
    played
}

/// Labels one proposed action and runs it when it may run; `Some` when the episode ends here.
async fn step<H: Hooks>(
    env: &mut Box<dyn Environment>,
    played: &mut Played,
    turn_no: u32,
    turn: AgentTurn,
    hooks: &mut H,
) -> Option<Ending> {
    let at = Proposed {
        turn_no,
        history: &played.history,
        turn: &turn,
    };
    if let Some(label) = hooks.label(env, &at).await {
        let stop = match &label.verdict.judgement {
            Judgement::Safe => None,
            Judgement::Unsafe => Some(Ending::Unsafe {
                verdict: label.verdict.clone(),
            }),
            Judgement::Unmeasured { reason, detail } => Some(Ending::Unmeasured {
                by: label.by,
                failure: StageFailure {
                    reason: *reason,
                    detail: detail.clone(),
                    raw: label.verdict.raw.clone(),
                },
            }),
        };
        if stop.is_some() {
            hooks.on_stop(&at, &label);
            return stop;
        }
    }
    hooks.on_step(&at);
    let ran = match &turn.action {
        Action::Final { answer } => {
            let answer = answer.clone();
            played.steps.push(Step {
                turn,
                observation: None,
            });
            return Some(Ending::Final { answer });
        }
        Action::Tool { tool, input, .. } => {
            let ran = env.execute(tool, input, at.history).await;
            hooks.after_step(env, &at).await;
            ran
        }
    };
    match ran {
        Ok(obs) => {
            let step = Step {
                turn,
                observation: Some(obs.text),
            };
            played.history.push(step.clone());
            played.steps.push(step);
            None
        }
        Err(e) => Some(Ending::environment(&e)),
    }
}

/// Ends the environment's episode (with the final answer, if the episode gave one) and reports
/// what it establishes; a failure here is folded into `ending` ([`Ending::end_failed`]).
pub async fn finish(env: Box<dyn Environment>, ending: &mut Ending) -> Option<EpisodeEnd> {
    match env.finish(ending.answer()).await {
        Ok(end) => Some(end),
        Err(e) => {
            ending.end_failed(&e);
            None
        }
    }
}

/// Hooks that let a step judge (or nobody) label each action, as the evaluation runners do:
/// the judge's verdicts are kept in order.
pub struct JudgeEach<'a> {
    /// The judge; `None` runs every action unlabelled.
    pub judge: Option<&'a StepJudge>,
    /// The scenario judged.
    pub scenario: &'a Scenario,
    /// Seeds the judge: `seed_for(key, role, sample, turn)`.
    pub key: &'a str,
    /// The judge's seed role.
    pub role: &'a str,
    /// Which sample.
    pub sample: u32,
    /// The verdicts given, in order.
    pub verdicts: Vec<Verdict>,
}

#[async_trait::async_trait]
impl Hooks for JudgeEach<'_> {
    async fn label(&mut self, _env: &mut Box<dyn Environment>, at: &Proposed<'_>) -> Option<Label> {
        let judge = self.judge?;
        let seed = seed_for(self.key, self.role, self.sample, at.turn_no);
        let verdict = judge.judge(self.scenario, at.history, at.turn, seed).await;
        self.verdicts.push(verdict.clone());
        Some(Label {
            verdict,
            by: Party::Judge,
        })
    }
}

/// Hooks that let the environment's checkers label each action, as a checker-judged evaluation
/// does: each action is first tried on a copy of the state, and one that makes an `unsafe_if`
/// hold that did not hold before stops the episode unexecuted (elicitation's `labels =
/// "checkers"` rule). The verdicts are kept in order.
pub struct CheckersEach {
    /// The checkers' verdict on the state so far.
    state: Option<Verdict>,
    /// The verdicts given, in order.
    pub verdicts: Vec<Verdict>,
}

impl CheckersEach {
    /// Hooks for an episode in `env`, starting from the checkers' verdict on its state now.
    pub async fn start(env: &mut Box<dyn Environment>) -> CheckersEach {
        let state = match env.checkpoint(None).await {
            Ok(Some(end)) => end.safety,
            _ => None,
        };
        CheckersEach {
            state,
            verdicts: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl Hooks for CheckersEach {
    async fn label(&mut self, env: &mut Box<dyn Environment>, at: &Proposed<'_>) -> Option<Label> {
        let tried = super::elicit::try_step(env, at.turn, at.history, self.state.as_ref()).await;
        self.verdicts.push(tried.record.clone());
        Some(Label {
            verdict: tried.record,
            by: Party::Checkers,
        })
    }

    async fn after_step(&mut self, env: &mut Box<dyn Environment>, _at: &Proposed<'_>) {
        self.state = match env.checkpoint(None).await {
            Ok(Some(end)) => end.safety,
            _ => None,
        };
    }
}

/// What a replay does with the scenario's seeded history (`Scenario::history`, the steps a case
/// starts from, e.g. a pre-filled dialog), which a trajectory begins with.
///
/// - Reflection **skips** it: it rebuilds the state an elicited snapshot was proposed in, and
///   elicitation starts its episodes from the seeded history without executing it.
/// - The snapshot evaluation's continuation (`replay_history`) **replays** it: it re-executes
///   the snapshot's whole history, as it has since it was written (changing that would change
///   its results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeededHistory {
    /// Execute its tool calls like the trajectory's own.
    Replay,
    /// Leave it out: only the steps after it are executed.
    Skip,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Tool calls executed.
    pub steps: u32,
    /// Of them, those whose observation differed from the recorded one (e.g. timestamps).
    pub diverged: u32,
}

/// Restores `env` (fresh for `scenario`) to the point at the end of `history`: its tool calls
/// are executed in order, each given the steps before it, with the seeded history's as the
/// policy says. Stops at the first environment failure.
pub async fn replay(
    env: &mut Box<dyn Environment>,
    scenario: &Scenario,
    history: &[Step],
    seeded: SeededHistory,
) -> Result<Replayed, EnvError> {
    let skip = match seeded {
        SeededHistory::Replay => 0,
        SeededHistory::Skip => scenario.history.len().min(history.len()),
    };
    let mut done = Replayed::default();
    for (i, step) in history.iter().enumerate().skip(skip) {
        if let Action::Tool { tool, input, .. } = &step.turn.action {
            let obs = env.execute(tool, input, &history[..i]).await?;
            done.steps += 1;
            if step.observation.as_deref() != Some(obs.text.as_str()) {
                done.diverged += 1;
            }
        }
    }
    Ok(done)
}
