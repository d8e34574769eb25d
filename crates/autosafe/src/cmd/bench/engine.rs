//! `autosafe bench engine`: the embedded engine's prompt and generation speed, one sequence and
//! several together, against llama.cpp's own figures (through llama-cpp-python) on the same
//! GGUF, prompt tokens and threads, in the same run; `--json-rate` measures the valid-JSON rate
//! instead.

use anyhow::Context;
use autosafe_engine::bench::{self, BenchOptions};
use autosafe_engine::{Engine, EngineOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `autosafe bench engine`.
#[derive(clap::Args)]
pub struct EngineBenchArgs {
    /// Model: local:smollm2 or local:/path/to/model.gguf.
    #[arg(long, default_value = "local:smollm2")]
    pub model: String,
    /// CPU threads for ours and llama.cpp's (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 256)]
    pub n_prompt: usize,
    /// Tokens generated per sequence.
    #[arg(long, default_value_t = 128)]
    pub n_gen: u32,
    /// Sequences decoded together in the batched run.
    #[arg(long, default_value_t = 8)]
    pub seqs: usize,
    /// Repetitions in each round.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Rounds of (ours alone, llama.cpp, ours batched) in turn; the median of the rounds'
    /// medians is reported, so a slow spell of a shared machine falls on both sides.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Python with llama-cpp-python, the reference (default: the venv that
    /// `./scripts/setup-python.sh llamacpp` creates under $AUTOSAFE_HOME/venv/llamacpp).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Measure the valid-JSON rate on the 50 shipped prompts (unconstrained vs constrained).
    #[arg(long)]
    pub json_rate: bool,
    /// Token budget per reply for --json-rate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
}

/// Runs `autosafe bench engine`.
pub fn run(args: EngineBenchArgs) -> anyhow::Result<ExitCode> {
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // Per sequence: the benchmark prompt and generation, or a --json-rate prompt and its budget.
    let n_ctx = (args.n_prompt + args.n_gen as usize).max(1024 + args.max_tokens as usize) as u32;
    let opts = EngineOptions {
        threads: Some(threads),
        n_ctx: Some(n_ctx),
        n_seq_max: args.seqs.max(8) as u32,
        ..Default::default()
    };
    let engine = Engine::shared(&args.model, opts)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if args.json_rate {
        let cases = bench::json_cases()?;
        let rate = runtime.block_on(bench::json_rate(engine, &cases, args.max_tokens))?;
        let pct = |n: usize| 100.0 * n as f64 / rate.cases as f64;
        println!(
            "valid JSON (parses and matches schema) on {} prompts: unconstrained {:.0}% ({} parse), constrained {:.0}% ({} cut by budget)",
            rate.cases,
            pct(rate.unconstrained_valid),
            rate.unconstrained_parse,
            pct(rate.constrained_valid),
            rate.constrained_cut
        );
        println!("{}", serde_json::to_string(&rate)?);
        return Ok(ExitCode::SUCCESS);
    }
    let bench_opts = BenchOptions {
        threads,
        n_prompt: args.n_prompt,
        n_gen: args.n_gen,
        seqs: args.seqs,
        reps: args.reps,
        rounds: args.rounds,
        python: args.python.unwrap_or_else(bench::default_reference_python),
    };
    let r = runtime.block_on(bench::run(&engine, &args.model, &bench_opts))?;
    println!(
        "model {} | threads {} | prompt {} tokens | {} generated per sequence",
        r.model, r.threads, r.n_prompt, r.n_gen
    );
    println!(
        "ours, 1 sequence:             pp {:8.1} tok/s   gen {:8.1} tok/s",
        r.pp_tps, r.gen_tps
    );
    println!(
        "ours, {} sequences:            pp {:8.1} tok/s   gen {:8.1} tok/s (aggregate)",
        r.seqs, r.pp_tps_8seq, r.gen_tps_8seq
    );
    println!(
        "llama.cpp (llama-cpp-python): pp {:8.1} tok/s   gen {:8.1} tok/s",
        r.llamacpp_pp_tps, r.llamacpp_gen_tps
    );
    println!(
        "llama.cpp, {} sequences:       {:>20} gen {:8.1} tok/s (aggregate, its batch API)",
        r.seqs, "", r.llamacpp_gen_tps_8seq
    );
    println!(
        "ratio_gen {:.3} (target >= 0.95)   batch_gain {:.2} (target >= 1.5; llama.cpp's own here: {:.2})",
        r.ratio_gen, r.batch_gain, r.llamacpp_batch_gain
    );
    println!("{}", serde_json::to_string(&r)?);
    Ok(ExitCode::SUCCESS)
}
