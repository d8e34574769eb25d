//! One episode: the agent acts in an environment from a history until a final answer, the step
//! limit, a failure, or — when a step judge watches — the first action judged unsafe (which is
//! then never executed). Shared by the snapshot continuation, ToolEmu and Agent-SafetyBench.
//!
//! The loop is the pipeline's ([`autosafe_pipeline::stages::episode`], which elicitation plays
//! too); this module starts the environment, replays the starting history when asked, lets the
//! step judge (if any) label each action ([`JudgeEach`]) and keeps the records' own [`Ending`],
//! whose unmeasured details name who failed (`agent:`, `judge:`, `environment:`).

use autosafe_env::{EnvError, EnvironmentFactory};
use autosafe_ots::{AgentTurn, Scenario, Step, Toolkit, UnmeasuredReason, Verdict};
use autosafe_pipeline::stages::episode::{self, CheckersEach, Episode, JudgeEach, SeededHistory};
use autosafe_pipeline::stages::{Agent, StepJudge};
use serde::{Deserialize, Serialize};

/// How an episode ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ended", rename_all = "snake_case")]
pub enum Ending {
    /// The agent gave a final answer (judged safe when a judge watched).
    Final {
        /// The answer.
        answer: String,
    },
    /// The step judge labelled an action unsafe; it was not executed.
    Unsafe {
        /// The verdict on it.
        verdict: Verdict,
    },
    /// No final answer within the step limit.
    StepLimit,
    /// The agent, the judge or the environment failed: nothing measured.
    Unmeasured {
        /// Why.
        reason: UnmeasuredReason,
        /// Details (prefixed with `agent:`, `judge:` or `environment:`).
        detail: String,
        /// Raw model text that could not be used.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw: Option<String>,
    },
}

impl Ending {
    fn env(e: &EnvError) -> Ending {
        episode::Ending::environment(e).into()
    }

    /// A short name: `final`, `unsafe`, `step_limit`, or the unmeasured reason.
    pub fn name(&self) -> &str {
        match self {
            Ending::Final { .. } => "final",
            Ending::Unsafe { .. } => "unsafe",
            Ending::StepLimit => "step_limit",
            Ending::Unmeasured { reason, .. } => reason.as_str(),
        }
    }
}

/// The shared loop's ending as recorded here: an unmeasured detail names who failed.
impl From<episode::Ending> for Ending {
    fn from(e: episode::Ending) -> Ending {
        match e {
            episode::Ending::Final { answer } => Ending::Final { answer },
            episode::Ending::Unsafe { verdict } => Ending::Unsafe { verdict },
            episode::Ending::StepLimit => Ending::StepLimit,
            episode::Ending::Unmeasured { by, failure: f } => Ending::Unmeasured {
                reason: f.reason,
                detail: format!("{}: {}", by.as_str(), f.detail),
                raw: f.raw,
            },
        }
    }
}

/// What an episode produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Played {
    /// Steps taken in this episode, after the starting history (a final answer is the last
    /// step, without observation).
    pub steps: Vec<Step>,
    /// How it ended.
    #[serde(flatten)]
    pub ending: Ending,
    /// Agent turns taken.
    pub turns: u32,
    /// The labels given (the step judge's or the checkers'), in order (empty without labels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
    /// What the environment established at the end (programmatic verdict, completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_end: Option<autosafe_env::EpisodeEnd>,
}

/// Settings of one episode.
#[derive(Debug, Clone, Copy)]
pub struct PlayOptions {
    /// Agent turns before the episode ends as `step_limit`.
    pub max_steps: u32,
    /// Re-execute the starting history's tool calls in the fresh environment first (a real
    /// environment, whose state comes from executing them; the emulator reads the history),
    /// the scenario's seeded history included ([`SeededHistory::Replay`]).
    pub replay_history: bool,
}

/// The parts of an episode.
pub struct Players<'a> {
    /// The agent.
    pub agent: &'a Agent,
    /// The environment.
    pub env: &'a dyn EnvironmentFactory,
    /// Who labels every action before it runs.
    pub labels: Labels<'a>,
}

/// Who labels the actions of an episode.
#[derive(Clone, Copy)]
pub enum Labels<'a> {
    /// Nobody: every action runs.
    None,
    /// A step judge.
    Judge(&'a StepJudge),
    /// The environment's checkers: each action is tried on a copy of the state first
    /// ([`CheckersEach`]); environments without checkers leave every step unmeasured.
    Checkers,
}

/// Where an episode starts.
pub struct Start<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// The toolkits offered to the agent.
    pub toolkits: &'a [Toolkit],
    /// The history the agent starts from.
    pub history: &'a [Step],
    /// Seeds the agent and judge calls: `seed_for(key, "eval-agent", sample, turn)`.
    pub key: &'a str,
    /// Which sample (also the environment's sample).
    pub sample: u32,
    /// The agent's first turn when already sampled (e.g. a snapshot's sample 0).
    pub first: Option<AgentTurn>,
}

/// Plays one episode (see the module docs) on the pipeline's episode loop.
pub async fn play(p: &Players<'_>, start: Start<'_>, opts: PlayOptions) -> Played {
    let Start {
        scenario,
        toolkits,
        history,
        key,
        sample,
        first,
    } = start;
    let ended = |ending: Ending| Played {
        steps: Vec::new(),
        ending,
        turns: 0,
        verdicts: Vec::new(),
        env_end: None,
    };
    let mut env = match p.env.start(scenario, sample).await {
        Ok(e) => e,
        Err(e) => return ended(Ending::env(&e)),
    };
    if opts.replay_history
        && let Err(e) = episode::replay(&mut env, scenario, history, SeededHistory::Replay).await
    {
        let _ = env.finish(None).await;
        return ended(Ending::env(&e));
    }
    let ep = Episode {
        scenario,
        toolkits,
        key,
        agent_role: "eval-agent",
        sample,
        max_steps: opts.max_steps,
        first,
    };
    let history = history.to_vec();
    let (mut played, verdicts) = match p.labels {
        Labels::Checkers => {
            let mut hooks = CheckersEach::start(&mut env).await;
            let played = episode::play(p.agent, &mut env, ep, history, &mut hooks).await;
            (played, hooks.verdicts)
        }
        Labels::None | Labels::Judge(_) => {
            let mut hooks = JudgeEach {
                judge: match p.labels {
                    Labels::Judge(j) => Some(j),
                    _ => None,
                },
                scenario,
                key,
                role: "eval-judge",
                sample,
                verdicts: Vec::new(),
            };
            let played = episode::play(p.agent, &mut env, ep, history, &mut hooks).await;
            (played, hooks.verdicts)
        }
    };
    let env_end = episode::finish(env, &mut played.ending).await;
    Played {
        steps: played.steps,
        ending: played.ending.into(),
        turns: played.turns,
        verdicts,
        env_end,
    }
}
