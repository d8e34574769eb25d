//! AutoSafe evaluation (SPEC §2.6, §3): metrics that never count what was not measured, the
//! result records the evaluation runners write (JSON Lines), summaries computed from them,
//! paired comparison of two runs, and self-contained reports (HTML with inline SVG plots,
//! Markdown, JSON).
//!
//! Every metric is defined in `docs/metrics.md`. Unmeasured items (a judge that could not
//! judge, too few samples) are counted apart by reason and never enter a ratio; a ratio over
//! zero measured items is "no data" (`None`), never 0% or 100%.

pub mod compare;
pub mod error;
pub mod gold_labels;
pub mod jsonl;
pub mod metrics;
pub mod quality;
pub mod report;
pub mod result_files;
pub mod result_records;
pub mod summary;

pub use error::EvalError;
