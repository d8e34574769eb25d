//! One episode: the agent acts in an environment from a history until a final answer, the step
//! limit, a failure, or — when a step judge watches — the first action judged unsafe (which is
//! then never executed). Shared by the snapshot continuation, ToolEmu and Agent-SafetyBench.

use autosafe_env::{EnvError, EnvironmentFactory};
use autosafe_ots::{
    Action, AgentTurn, Judgement, Scenario, Step, Toolkit, UnmeasuredReason, Verdict,
};
use autosafe_pipeline::stages::{Agent, StageFailure, StepJudge, seed_for};
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
    fn failed(who: &str, f: StageFailure) -> Ending {
        Ending::Unmeasured {
            reason: f.reason,
            detail: format!("{who}: {}", f.detail),
            raw: f.raw,
        }
    }

    fn env(e: EnvError) -> Ending {
        Ending::Unmeasured {
            reason: UnmeasuredReason::EnvironmentError,
            detail: format!("environment: {e}"),
            raw: None,
        }
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
    /// The step judge's verdicts, in order (empty without a judge).
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
    /// environment, whose state comes from executing them; the emulator reads the history).
    pub replay_history: bool,
}

/// The parts of an episode.
pub struct Players<'a> {
    /// The agent.
    pub agent: &'a Agent,
    /// The environment.
    pub env: &'a dyn EnvironmentFactory,
    /// A step judge that labels every action before it runs, or none.
    pub judge: Option<&'a StepJudge>,
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

/// Plays one episode (see the module docs).
pub async fn play(p: &Players<'_>, start: Start<'_>, opts: PlayOptions) -> Played {
    let Start {
        scenario,
        toolkits,
        history,
        key,
        sample,
        mut first,
    } = start;
    let mut played = Played {
        steps: Vec::new(),
        ending: Ending::StepLimit,
        turns: 0,
        verdicts: Vec::new(),
        env_end: None,
    };
    let mut env = match p.env.start(scenario, sample).await {
        Ok(e) => e,
        Err(e) => {
            played.ending = Ending::env(e);
            return played;
        }
    };
    let mut all: Vec<Step> = Vec::with_capacity(history.len() + opts.max_steps as usize);
    if opts.replay_history {
        for step in history {
            if let Action::Tool { tool, input, .. } = &step.turn.action
                && let Err(e) = env.execute(tool, input, &all).await
            {
                played.ending = Ending::env(e);
                let _ = env.finish(None).await;
                return played;
            }
            all.push(step.clone());
        }
    } else {
        all.extend_from_slice(history);
    }
    let mut final_answer: Option<String> = None;
    let mut ended = false;
    for turn_no in 0..opts.max_steps.max(1) {
        let turn = match first.take() {
            Some(t) => t,
            None => match p
                .agent
                .propose(
                    scenario,
                    toolkits,
                    &all,
                    seed_for(key, "eval-agent", sample, turn_no),
                    None,
                )
                .await
            {
                Ok(t) => t,
                Err(f) => {
                    played.ending = Ending::failed("agent", f);
                    ended = true;
                    break;
                }
            },
        };
        played.turns += 1;
        if let Some(judge) = p.judge {
            let v = judge
                .judge(
                    scenario,
                    &all,
                    &turn,
                    seed_for(key, "eval-judge", sample, turn_no),
                )
                .await;
            match &v.judgement {
                Judgement::Safe => played.verdicts.push(v),
                Judgement::Unsafe => {
                    played.verdicts.push(v.clone());
                    played.ending = Ending::Unsafe { verdict: v };
                    ended = true;
                    break;
                }
                Judgement::Unmeasured { reason, detail } => {
                    played.ending = Ending::Unmeasured {
                        reason: *reason,
                        detail: format!("judge: {detail}"),
                        raw: v.raw.clone(),
                    };
                    played.verdicts.push(v);
                    ended = true;
                    break;
                }
            }
        }
        match &turn.action {
            Action::Final { answer } => {
                final_answer = Some(answer.clone());
                played.ending = Ending::Final {
                    answer: answer.clone(),
                };
                played.steps.push(Step {
                    turn,
                    observation: None,
                });
                ended = true;
                break;
            }
            Action::Tool { tool, input, .. } => match env.execute(tool, input, &all).await {
                Ok(obs) => {
                    let step = Step {
                        turn: turn.clone(),
                        observation: Some(obs.text),
                    };
                    all.push(step.clone());
                    played.steps.push(step);
                }
                Err(e) => {
                    played.ending = Ending::env(e);
                    ended = true;
                    break;
                }
            },
        }
    }
    if !ended {
        played.ending = Ending::StepLimit;
    }
    match env.finish(final_answer.as_deref()).await {
        Ok(end) => played.env_end = Some(end),
        Err(e) => {
            if matches!(played.ending, Ending::Final { .. }) {
                played.ending = Ending::env(e);
            }
        }
    }
    played
}
