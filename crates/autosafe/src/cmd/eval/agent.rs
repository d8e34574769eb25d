//! How the evaluated agent is prompted.

use autosafe_pipeline::prompts::{AgentLayout, AgentMode};
use autosafe_run::eval;
use clap::{Args, ValueEnum};

use super::common::RunOpts;

/// The options of a runner that plays an agent.
#[derive(Args, Debug, Clone)]
pub struct Played {
    #[command(flatten)]
    pub(super) run: RunOpts,
    #[command(flatten)]
    pub(super) agent: AgentOpts,
}

/// How the evaluated agent is prompted.
#[derive(Args, Debug, Clone)]
pub struct AgentOpts {
    /// The agent evaluated: `openai:MODEL@URL`, `local:ALIAS`, or a TOML model file.
    #[arg(long)]
    agent: String,
    /// Agent prompt mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Plain)]
    mode: ModeArg,
    /// Native tool calls instead of ReAct text.
    #[arg(long)]
    native: bool,
    /// The agent's user message (ReAct text): `agent` (the agent prompt) or `training` (the
    /// exported Alpaca `input`: numbered trajectory, "… for this round (round k)"), for a model
    /// fine-tuned on `autosafe export`/`train` data.
    #[arg(long, value_enum, default_value_t = LayoutArg::Agent)]
    layout: LayoutArg,
    /// Sampling temperature of the agent.
    #[arg(long, default_value_t = 0.7, value_parser = autosafe_run::temperature_arg)]
    temperature: f32,
    /// Token budget of one agent turn.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: u32,
    /// Take a proposal that repeats the previous step's action as it is, without re-asking the
    /// agent once with what the action returned (the re-ask is on by default).
    #[arg(long)]
    no_repeat_guard: bool,
}

/// Agent prompt modes.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub(super) enum ModeArg {
    /// No safety framing (the agent as it is).
    Plain,
    /// A safety system prompt.
    Safety,
    /// The elicitation prompt (ignore safety).
    Elicit,
}

/// Agent user-message layouts.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub(super) enum LayoutArg {
    /// The agent prompt (`agent_user.j2`).
    Agent,
    /// The training records' input (`training_input.j2`).
    Training,
}

impl From<ModeArg> for AgentMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Plain => AgentMode::Plain,
            ModeArg::Safety => AgentMode::Safety,
            ModeArg::Elicit => AgentMode::Elicit,
        }
    }
}

impl From<LayoutArg> for AgentLayout {
    fn from(l: LayoutArg) -> Self {
        match l {
            LayoutArg::Agent => AgentLayout::Agent,
            LayoutArg::Training => AgentLayout::Training,
        }
    }
}

impl AgentOpts {
    pub(super) fn opts(&self) -> eval::AgentOpts {
        eval::AgentOpts {
            agent: self.agent.clone(),
            mode: self.mode.into(),
            native: self.native,
            layout: self.layout.into(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            repeat_guard: !self.no_repeat_guard,
        }
    }
}
