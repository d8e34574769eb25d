//! The AutoSafe threat model (OTS) as types.
//!
//! Everything the pipeline passes around is defined here: the risk taxonomy, risk sources,
//! toolkits (ToolEmu schema), scenarios (ToolEmu cases plus id, source, categories and seeded
//! history), trajectories, proposed actions, verdicts, snapshots and checker-labelled steps. Readers for the public
//! formats (ToolEmu, Agent-SafetyBench, ASSEBench) and validation live here too. This crate
//! parses and checks; it does no I/O beyond reading the bytes it is given, and depends on no
//! other crate of the workspace.
//!
//! Every reader takes a file name (for messages) and the file's text, and returns either the
//! parsed records or [`Problems`]: every problem found, each shown as `FILE:LINE: field: message`.

pub mod asb;
pub mod assebench;
pub mod detect;
pub mod error;
pub mod id;
pub mod labelled_step;
pub mod library;
pub mod locate;
pub mod openai;
pub mod read;
pub mod scenario;
pub mod scenario_records;
pub mod source;
pub mod taxonomy;
pub mod terminal;
pub mod toolemu;
pub mod toolemu_traj;
pub mod toolkit;
pub mod trajectory;
pub mod verdict;

pub use detect::{Format, detect};
pub use error::{FormatError, Problems};
pub use id::{canonical_json, content_id};
pub use labelled_step::{CheckerLabel, LabelledStep, StepRun};
pub use library::ToolLibrary;
pub use scenario::{Case, Provenance, Scenario, Underspecifications};
pub use source::RiskSource;
pub use taxonomy::{Category, MappingReport, Severity, Taxonomy};
pub use toolkit::{ExceptionSpec, Parameter, ReturnField, Tool, Toolkit};
pub use trajectory::{Action, AgentTurn, Snapshot, Step};
pub use verdict::{JudgeKind, JudgeRef, Judgement, LabelSource, UnmeasuredReason, Verdict};
