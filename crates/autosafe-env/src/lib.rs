//! Environments an agent acts in.
//!
//! An [`Environment`] executes one tool call at a time and returns an observation; at the end of an
//! episode it may report programmatic facts and verdicts (a real sandbox can; an LLM emulator
//! cannot). Environments report facts; they never decide by themselves what is safe beyond what a
//! scenario's checkers define.

pub mod traits;

pub use traits::{EnvError, Environment, EnvironmentFactory, EpisodeEnd, Observation};
