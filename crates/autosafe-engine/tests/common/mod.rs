//! Shared helpers: one engine over the packaged model for the whole test binary.

use autosafe_engine::{Engine, EngineOptions};
use std::sync::{Arc, OnceLock};

/// The packaged model (`local:smollm2` from `$AUTOSAFE_HOME`, fetched by `scripts/setup.sh`).
pub fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            // One thread: llama.cpp's threads spin at every graph barrier, so on a busy machine
            // (parallel builds, other test binaries) two of them can slow decoding tenfold.
            let opts = EngineOptions {
                threads: Some(1),
                n_ctx: Some(4096),
                ..EngineOptions::default()
            };
            Engine::shared("local:smollm2", opts).unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}
