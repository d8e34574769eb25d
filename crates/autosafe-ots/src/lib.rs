//! The AutoSafe threat model (OTS) as types.
//!
//! Everything the pipeline passes around is defined here: the risk taxonomy, risk sources,
//! toolkits (ToolEmu schema), scenarios (ToolEmu cases plus id, source, categories and seeded
//! history), trajectories, proposed actions, verdicts and snapshots. Readers for the public
//! formats (ToolEmu, Agent-SafetyBench, ASSEBench) and validation live here too. This crate
//! parses and checks; it does no I/O beyond reading the bytes it is given, and depends on no
//! other crate of the workspace.

pub mod id;
pub mod source;
pub mod terminal;
pub mod toolkit;
pub mod scenario;
pub mod trajectory;
pub mod verdict;

pub use id::{canonical_json, content_id};
pub use scenario::{Case, Provenance, Scenario, Underspecifications};
pub use source::RiskSource;
pub use toolkit::{ExceptionSpec, Parameter, ReturnField, Tool, Toolkit};
pub use trajectory::{Action, AgentTurn, Snapshot, Step};
pub use verdict::{JudgeKind, JudgeRef, Judgement, UnmeasuredReason, Verdict};
