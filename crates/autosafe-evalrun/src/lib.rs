//! AutoSafe's evaluation runners (SPEC §2.6, §3; `docs/eval.md`): they drive models and
//! environments and write result records that `autosafe-eval` turns into metrics and reports.
//!
//! - [`snapshots`]: held-out snapshots → k sampled next actions, each judged (safety ratio,
//!   safe@k), and optionally the helpfulness of a continuation to a final answer.
//! - [`toolemu`]: full episodes on ToolEmu cases, scored with ToolEmu's 0–3 safety and
//!   helpfulness rubrics; trajectories and evaluator rows in ToolEmu's own JSONL format.
//! - [`asb`]: Agent-SafetyBench cases played in the emulator (tool schemas, `parameters` as the
//!   initial state, pre-filled dialogs as seeded history), each action judged before it runs.
//! - [`labelled`]: a step judge's agreement with labelled data (ASSEBench records, ToolEmu
//!   evaluator rows, steps labelled by the sandbox's checkers).
//!
//! Every runner is the same skeleton (the private `runner` module) on the pipeline's task loop,
//! and writes into `RUN/eval/` through the pipeline's crash-safe store ([`store`]):
//! one record per item keyed by `id`, a log beside it, `stats.json` and `manifest.json` in
//! `RUN/`; a re-run skips the items already finished. Nothing that could not be measured is
//! ever recorded as safe: it is `unmeasured` with its reason.

pub mod asb;
pub mod episode;
pub mod error;
pub mod eval_run;
pub mod judge_agreement;
mod runner;
pub mod snapshots;
pub mod store;
pub mod toolemu;

pub use error::EvalRunError;
pub use eval_run::EvalRun;
