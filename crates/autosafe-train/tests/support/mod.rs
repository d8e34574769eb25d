//! Shared by the tests that run a real trainer.

use std::path::Path;

use autosafe_train::{Backend, TrainSpec};

/// A merged run of two float32 steps of one record each on `run`'s D_safe alone, with
/// prompts cut at `max_length` tokens: what a CPU test can afford.
pub fn two_cpu_steps(run: &Path, base: &Path, backend: Backend, max_length: u32) -> TrainSpec {
    let mut s = TrainSpec::new(run, &base.display().to_string(), backend);
    s.utility_share = 0;
    s.merge = true;
    let h = &mut s.hyper;
    h.max_steps = Some(2);
    h.batch_size = 1;
    h.grad_accum = 1;
    h.bf16 = false;
    h.logging_steps = 1;
    h.max_length = max_length;
    s
}
