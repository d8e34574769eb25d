//! Helpers shared by the tests and benches of several crates (a dev-dependency only): model
//! stacks pointed at the scripted OpenAI-compatible server on loopback and readers of the
//! requests it got ([`scripted`]), the stage tests' responder that answers by role ([`stages`]),
//! a responder for bulk runs ([`bulk`]) and the evaluation runners' helpers ([`runners`]).
//! One crate instead of `#[path]` includes, so each helper is compiled and linted once.

pub mod bulk;
pub mod runners;
pub mod scripted;
pub mod stages;
