//! The engine benchmark without the `autosafe` binary (same code as `autosafe bench engine`):
//! `cargo run --release -p autosafe-engine --example bench_engine -- [--json-rate] [--threads N]`.

use autosafe_engine::bench::{self, BenchOptions};
use autosafe_engine::{Engine, EngineOptions};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = arg("--model").unwrap_or_else(|| "local:smollm2".into());
    let threads = match arg("--threads") {
        Some(t) => t.parse()?,
        None => std::thread::available_parallelism()?.get(),
    };
    let opts = BenchOptions {
        threads,
        n_prompt: arg("--n-prompt")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(256),
        n_gen: arg("--n-gen")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(128),
        seqs: 8,
        reps: arg("--reps").map(|v| v.parse()).transpose()?.unwrap_or(5),
        python: arg("--python")
            .map(Into::into)
            .unwrap_or_else(bench::default_reference_python),
    };
    let n_ctx = (opts.seqs * (opts.n_prompt + opts.n_gen as usize)).max(4096) as u32;
    let engine_opts = EngineOptions {
        threads: Some(threads),
        n_ctx: Some(n_ctx),
        ..Default::default()
    };
    let engine = Engine::shared(&model, engine_opts)?;
    if std::env::args().any(|a| a == "--json-rate") {
        let max_tokens = arg("--max-tokens")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(256);
        let rate = bench::json_rate(engine, &bench::json_cases()?, max_tokens).await?;
        println!("{}", serde_json::to_string(&rate)?);
        return Ok(());
    }
    let r = bench::run(&engine, &model, &opts).await?;
    eprintln!(
        "ours 1 seq: pp {:.1} gen {:.1} | ours {} seqs: pp {:.1} gen {:.1} | llama.cpp: pp {:.1} gen {:.1}",
        r.pp_tps,
        r.gen_tps,
        r.seqs,
        r.pp_tps_8seq,
        r.gen_tps_8seq,
        r.llamacpp_pp_tps,
        r.llamacpp_gen_tps
    );
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
