//! The AutoSafe pipeline groundwork (model-independent parts).
//!
//! - [`rundir`]: the run directory `runs/<name>/`, `manifest.json`, `stats.json`.
//! - [`store`]: crash-safe, resumable JSONL record stores with a single writer task.
//! - [`shard`]: `--shard I/N` and scheduler environments; deterministic partition; merge.
//! - [`records`]: D_safe and utility record types.
//! - [`react`]: ReAct parsing and rendering; native tool calls ↔ actions.
//! - [`prompts`]: prompt templates (`prompts/*.j2`) and JSON schemas, with their SHA-256.
//! - [`dedup`]: exact and MinHash-LSH near-duplicate filtering.
//! - [`cross_dedup`]: the near-duplicate filter re-applied to merged scenario shards.
//! - [`export`]: training data in Alpaca, ShareGPT, OpenAI, TRL and Axolotl layouts + dataset card.
//! - [`stages`]: the model-calling stages: step judge, agent, synthesize, elicit, reflect.
//! - [`task_loop`]: the one task loop every stage and evaluation runner runs its items through.
//!
//! See `docs/pipeline.md` for the formats and the resume semantics.

extern crate self as autosafe_pipeline;

pub mod cross_dedup;
pub mod dedup;
pub mod error;
pub mod export;
pub mod gates;
pub mod prompts;
pub mod react;
pub mod rundir;
pub mod shard;
pub mod stage_records;
pub mod stages;
pub mod store;
pub mod task_loop;
pub mod tools;

#[cfg(test)]
mod fixtures;

pub use error::{PipelineError, Result};
pub use rundir::{Counted, Manifest, ModelSpec, RunDir, RunFile, Stage, StageStats, Stats};
pub use shard::{ShardSpec, merge_jsonl};
pub use stage_records::{Failure, Reflection, SafeExample, SafeOrigin, UtilityStep};
pub use store::{Record, RecordReader, RecordWriter, Resume, recover};
