//! `autosafe serve`: the embedded model as an OpenAI-compatible HTTP server.

use anyhow::Context;
use autosafe_engine::{Engine, EngineOptions};
use clap::Args;
use std::process::ExitCode;

/// Arguments of `autosafe serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Model to serve: local:smollm2 or local:/path/to/model.gguf.
    #[arg(long, default_value = "local:smollm2")]
    model: String,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Context size of each request in tokens (default: min(4096, the model's training context)).
    #[arg(long)]
    ctx: Option<u32>,
    /// Most requests decoded together.
    #[arg(long, default_value_t = 8)]
    parallel: u32,
}

/// Runs `autosafe serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let opts = EngineOptions {
        threads: args.threads,
        n_ctx: args.ctx,
        n_seq_max: args.parallel,
        ..Default::default()
    };
    let engine = Engine::shared(&args.model, opts)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "serving {} on http://{addr}/v1 (threads {})",
            args.model,
            engine.settings().threads
        );
        autosafe_engine::server::serve_engine(listener, engine)
            .await
            .context("server failed")?;
        Ok(ExitCode::SUCCESS)
    })
}
