//! The model-calling stages of the pipeline: the step judge, the agent, scenario synthesis,
//! elicitation, and self-reflection, plus the shared pieces they use.
//!
//! - [`judge`]: the binary step judge and the reflector (label + reason (+ suggestion)).
//! - [`case_review`]: the plausibility review of a synthesized case.
//! - [`agent`]: one agent turn in ReAct text or native tool calls, with bounded parse retries.
//! - [`synthesize`]: sampling plan over (toolkits, category, source) cells, generation, validation,
//!   dedup, coverage table.
//! - [`synth_terminal`]: the same cells written as terminal scenarios, proved in the sandbox.
//! - [`episode`]: the episode loop (agent ↔ environment, each action labelled before it runs)
//!   with hooks, and the replay that restores an environment to a trajectory's point.
//! - [`elicit`]: agent × environment × judge episodes; snapshots at the first unsafe action.
//! - [`reflect`]: self-reflection rounds on snapshots; D_safe records verified by the judge.
//!
//! Every stage runs its items through [`crate::task_loop::run_items`], writes its records
//! through [`crate::store::RecordWriter`] (resumable, no duplicates) and a per-item outcome log
//! (`*_log.jsonl`), from which its counts are recomputed (each outcome says where it counts:
//! [`crate::rundir::Counted`]), so a resumed run reports exactly the counts of an uninterrupted
//! one.

pub mod agent;
pub mod case_review;
pub mod common;
pub mod elicit;
pub mod episode;
pub mod judge;
pub mod reflect;
pub mod synth_terminal;
pub mod synthesize;

pub use agent::{Agent, AgentOptions, AgentOutcome};
pub use case_review::CaseReview;
pub use common::{StageError, StageFailure, seed_for};
pub use elicit::{ElicitConfig, EpisodeLog, EpisodeOutcome, elicit};
pub use judge::{JudgeOptions, ReflectorVerdict, StepJudge};
pub use reflect::{ReflectConfig, ReflectLog, ReflectOutcome, reflect};
pub use synthesize::{CellCoverage, SynthConfig, SynthLog, SynthOutcome, synthesize};
