//! The real terminal as an environment: ToolEmu's `TerminalExecute` runs each command in a
//! bubblewrap sandbox built from `Scenario::terminal` (crate `autosafe-sandbox`), and the
//! scenario's programmatic checkers give the episode's safety verdict and completion.
//!
//! bubblewrap runs with `--die-with-parent`, which fires when the *thread* that started it
//! exits, and the sandbox API blocks; so every episode lives on one dedicated OS thread for its
//! whole life, fed commands through a channel, and async callers await its answers.

use std::sync::Arc;
use std::sync::mpsc;

use autosafe_ots::{Scenario, Step, ToolLibrary, Toolkit};
use autosafe_sandbox::{Outcome, SandboxConfig, SandboxError, TerminalEpisode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::spec_check::check_call;
use crate::traits::{EnvError, Environment, EnvironmentFactory, EpisodeEnd, Observation, Trial};

enum Request {
    Execute(
        String,
        oneshot::Sender<Result<autosafe_sandbox::Observation, SandboxError>>,
    ),
    Check(Option<String>, oneshot::Sender<Outcome>),
    Trial(
        String,
        oneshot::Sender<(Result<autosafe_sandbox::Observation, SandboxError>, Outcome)>,
    ),
    Finish(Option<String>, oneshot::Sender<Outcome>),
}

/// Starts sandboxed terminal episodes.
pub struct TerminalFactory {
    config: SandboxConfig,
    toolkit: Arc<Toolkit>,
}

impl TerminalFactory {
    /// A factory with these sandbox limits, checking calls against ToolEmu's shipped `Terminal`
    /// toolkit.
    pub fn new(config: SandboxConfig) -> Self {
        let toolkit = ToolLibrary::shipped()
            .get("Terminal")
            .cloned()
            .expect("the shipped toolkits include Terminal");
        TerminalFactory {
            config,
            toolkit: Arc::new(toolkit),
        }
    }
}

impl TerminalFactory {
    /// [`new`](Self::new) after checking that this machine can run the sandbox; when it cannot,
    /// the error carries [`autosafe_sandbox::check`]'s reason and what to install or change
    /// (`autosafe sandbox check` prints the same).
    pub fn checked(config: SandboxConfig) -> Result<Self, EnvError> {
        autosafe_sandbox::check(config.bwrap.as_deref())
            .launcher()
            .map_err(sandbox_error)?;
        Ok(TerminalFactory::new(config))
    }
}

fn sandbox_error(e: impl std::fmt::Display) -> EnvError {
    EnvError::Sandbox(e.to_string())
}

/// The episode thread: starts the sandbox episode, answers requests until finished or dropped.
fn run_episode(
    setup: autosafe_ots::terminal::TerminalSetup,
    config: SandboxConfig,
    started: oneshot::Sender<Result<(), SandboxError>>,
    requests: mpsc::Receiver<Request>,
) {
    let mut episode = match TerminalEpisode::start(&setup, &config) {
        Ok(ep) => {
            if started.send(Ok(())).is_err() {
                return;
            }
            ep
        }
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    while let Ok(req) = requests.recv() {
        match req {
            Request::Execute(command, reply) => {
                let _ = reply.send(episode.execute(&command));
            }
            Request::Trial(command, reply) => {
                let _ = reply.send(episode.trial(&command));
            }
            Request::Check(answer, reply) => {
                let _ = reply.send(episode.outcome(answer.as_deref()));
            }
            Request::Finish(answer, reply) => {
                let _ = reply.send(episode.finish(answer.as_deref()));
                return;
            }
        }
    }
}

#[async_trait::async_trait]
impl EnvironmentFactory for TerminalFactory {
    fn name(&self) -> &str {
        "terminal"
    }

    async fn start(
        &self,
        scenario: &Scenario,
        _sample: u32,
    ) -> Result<Box<dyn Environment>, EnvError> {
        let Some(setup) = scenario.terminal.clone() else {
            return Err(EnvError::Unsupported {
                scenario: scenario.id.clone(),
                message: "no terminal setup (`Scenario.terminal`); the terminal environment \
                          plays only scenarios with a fixture and checkers"
                    .into(),
            });
        };
        let (tx, rx) = mpsc::channel();
        let (started_tx, started_rx) = oneshot::channel();
        let config = self.config.clone();
        std::thread::Builder::new()
            .name(format!("terminal-{}", scenario.id))
            .spawn(move || run_episode(setup, config, started_tx, rx))
            .map_err(|e| sandbox_error(format!("cannot start the episode thread: {e}")))?;
        started_rx
            .await
            .map_err(|_| sandbox_error("the episode thread ended before starting"))?
            .map_err(sandbox_error)?;
        Ok(Box::new(TerminalEnv {
            requests: tx,
            toolkit: self.toolkit.clone(),
            executed: 0,
        }))
    }
}

fn episode_end(outcome: Outcome) -> EpisodeEnd {
    EpisodeEnd {
        safety: Some(outcome.safety),
        completed: outcome.completed,
        facts: json!({
            "facts": outcome.facts,
            "fact_errors": outcome.fact_errors,
            "completion_rationale": outcome.completion_rationale,
            "transcript": outcome.transcript,
        }),
    }
}

/// One live sandboxed terminal episode.
pub(crate) struct TerminalEnv {
    requests: mpsc::Sender<Request>,
    toolkit: Arc<Toolkit>,
    executed: usize,
}

impl TerminalEnv {
    /// The command of a valid `TerminalExecute` call, or the error observation of an invalid one.
    fn command(&self, tool: &str, input: &Value) -> Result<String, Observation> {
        let offered: Vec<_> = self
            .toolkit
            .tools
            .iter()
            .map(|t| (self.toolkit.as_ref(), t))
            .collect();
        check_call(&offered, tool, input)?;
        Ok(input
            .get("command")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }
}

#[async_trait::async_trait]
impl Environment for TerminalEnv {
    async fn execute(
        &mut self,
        tool: &str,
        input: &Value,
        _history: &[Step],
    ) -> Result<Observation, EnvError> {
        let command = match self.command(tool, input) {
            Ok(c) => c,
            Err(obs) => return Ok(obs),
        };
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Execute(command, tx))
            .map_err(|_| sandbox_error("the episode thread has ended"))?;
        let obs = rx
            .await
            .map_err(|_| sandbox_error("the episode thread ended during a command"))?
            .map_err(sandbox_error)?;
        self.executed += 1;
        Ok(Observation {
            text: obs.to_tool_output().to_string(),
            is_error: false,
        })
    }

    async fn trial(
        &mut self,
        tool: &str,
        input: &Value,
        history: &[Step],
    ) -> Result<Option<Trial>, EnvError> {
        let command = match self.command(tool, input) {
            Ok(c) => c,
            // An invalid call runs nothing: the state stays as the checkers last saw it.
            Err(observation) => {
                let end = self.checkpoint(None).await?;
                return Ok(end.map(|end| Trial { observation, end }));
            }
        };
        let _ = history;
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Trial(command, tx))
            .map_err(|_| sandbox_error("the episode thread has ended"))?;
        let (obs, outcome) = rx
            .await
            .map_err(|_| sandbox_error("the episode thread ended during a trial"))?;
        let obs = obs.map_err(sandbox_error)?;
        Ok(Some(Trial {
            observation: Observation {
                text: obs.to_tool_output().to_string(),
                is_error: false,
            },
            end: episode_end(outcome),
        }))
    }

    async fn checkpoint(
        &mut self,
        final_answer: Option<&str>,
    ) -> Result<Option<EpisodeEnd>, EnvError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Check(final_answer.map(str::to_string), tx))
            .map_err(|_| sandbox_error("the episode thread has ended"))?;
        let outcome = rx
            .await
            .map_err(|_| sandbox_error("the episode thread ended while checking"))?;
        Ok(Some(episode_end(outcome)))
    }

    async fn finish(self: Box<Self>, final_answer: Option<&str>) -> Result<EpisodeEnd, EnvError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Finish(final_answer.map(str::to_string), tx))
            .map_err(|_| sandbox_error("the episode thread has ended"))?;
        let outcome = rx
            .await
            .map_err(|_| sandbox_error("the episode thread ended while finishing"))?;
        Ok(episode_end(outcome))
    }
}
