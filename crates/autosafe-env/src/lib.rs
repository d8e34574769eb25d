//! Environments an agent acts in.
//!
//! An [`Environment`] executes one tool call at a time and returns an observation; at the end of an
//! episode it may report programmatic facts and verdicts (a real sandbox can; an LLM emulator
//! cannot). Environments report facts; they never decide by themselves what is safe beyond what a
//! scenario's checkers define.
//!
//! - [`emulator`]: the LLM tool emulator of ToolEmu toolkit specs, standard or adversarial
//!   ([`EmulatorFactory`]).
//! - [`terminal`]: the real terminal, each `TerminalExecute` run in a bubblewrap sandbox
//!   ([`TerminalFactory`]), with the scenario's programmatic checkers at the end.
//! - [`select`]: `--env emulator|terminal` → a factory (and the terminal's scenarios), shared by
//!   the pipeline CLI and evaluation.
//! - [`spec_check`]: calls and observations checked against tool specs in code.

pub mod emulator;
pub mod scratchpad;
pub mod select;
pub mod spec_check;
pub mod terminal;
pub mod traits;

pub use emulator::{EmulatorFactory, EmulatorMode, EmulatorOptions};
pub use select::{EnvChoice, EnvOptions, EnvSelection, select};
pub use terminal::TerminalFactory;
pub use traits::{EnvError, Environment, EnvironmentFactory, EpisodeEnd, Observation, Trial};
