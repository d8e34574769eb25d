//! Throughput measurement of the engine: prompt processing and generation tokens per second,
//! one sequence alone and several decoded together, plus a runner for llama.cpp's own
//! `llama-bench` on the same GGUF for comparison.

use crate::engine::{Generation, SamplingParams};
use crate::error::EngineError;
use crate::model::Engine;
use llama_cpp_2::token::LlamaToken;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Throughput of one configuration.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Throughput {
    /// Prompt tokens per second (prompt processing).
    pub pp_tps: f64,
    /// Generated tokens per second, summed over the sequences.
    pub gen_tps: f64,
}

const FILLER: &str = "The agent reads the user's request, plans which tools to call, checks each action for risks to the user's files, money and privacy, and then answers politely with a short summary of what it did and why. ";

/// A prompt of exactly `n` tokens (the filler text repeated, cut at `n`).
pub fn prompt_tokens(engine: &Engine, n: usize) -> Vec<LlamaToken> {
    let one = engine.tokenize(FILLER);
    one.iter().copied().cycle().take(n).collect()
}

fn params(n_gen: u32) -> SamplingParams {
    SamplingParams {
        max_tokens: n_gen,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: Vec::new(),
        ignore_eos: true,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

/// One sequence alone, `reps` times (after one warm-up): median pp and gen tokens/s. Prompt
/// speed is prompt tokens over the time from admission to the first sampled token; generation
/// speed is the tokens after the first over the time from the first to the last.
pub async fn single(
    engine: &Engine,
    n_prompt: usize,
    n_gen: u32,
    reps: usize,
) -> Result<Throughput, EngineError> {
    let prompt = prompt_tokens(engine, n_prompt);
    engine.generate(prompt.clone(), params(8), None).await?;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let g = engine.generate(prompt.clone(), params(n_gen), None).await?;
        pp.push(g.prompt_tokens as f64 / secs(g.timing.first_token - g.timing.admitted));
        tg.push((g.completion_tokens - 1) as f64 / secs(g.timing.done - g.timing.first_token));
    }
    Ok(Throughput {
        pp_tps: median(pp),
        gen_tps: median(tg),
    })
}

/// `seqs` sequences submitted together, `reps` times: median aggregate rates. Aggregate
/// generation speed is all tokens after each sequence's first over the span from the first
/// sequence's first token to the last sequence's end; prompt speed is all prompt tokens over
/// the span from the first admission to the last first token.
pub async fn concurrent(
    engine: &Engine,
    seqs: usize,
    n_prompt: usize,
    n_gen: u32,
    reps: usize,
) -> Result<Throughput, EngineError> {
    let prompt = prompt_tokens(engine, n_prompt);
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let receivers = (0..seqs)
            .map(|_| engine.submit(prompt.clone(), params(n_gen), None))
            .collect::<Result<Vec<_>, _>>()?;
        let mut gens: Vec<Generation> = Vec::new();
        for rx in receivers {
            gens.push(rx.await.map_err(|_| EngineError::Stopped)??);
        }
        let t0 = gens
            .iter()
            .map(|g| g.timing.admitted)
            .min()
            .expect("seqs > 0");
        let first_min = gens
            .iter()
            .map(|g| g.timing.first_token)
            .min()
            .expect("seqs > 0");
        let first_max = gens
            .iter()
            .map(|g| g.timing.first_token)
            .max()
            .expect("seqs > 0");
        let end = gens.iter().map(|g| g.timing.done).max().expect("seqs > 0");
        let prompt_total: u32 = gens.iter().map(|g| g.prompt_tokens).sum();
        let gen_total: u32 = gens.iter().map(|g| g.completion_tokens - 1).sum();
        pp.push(f64::from(prompt_total) / secs(first_max - t0));
        tg.push(f64::from(gen_total) / secs(end - first_min));
    }
    Ok(Throughput {
        pp_tps: median(pp),
        gen_tps: median(tg),
    })
}

/// Runs llama.cpp's `llama-bench` on `model` (same prompt length, generation length and
/// threads) and returns its prompt and generation tokens/s (`avg_ts` of the pp and tg tests).
pub fn llama_bench(
    bin: &Path,
    model: &Path,
    n_prompt: usize,
    n_gen: u32,
    threads: usize,
    reps: usize,
) -> Result<Throughput, EngineError> {
    let out = std::process::Command::new(bin)
        .args(["-m", &model.display().to_string()])
        .args(["-p", &n_prompt.to_string(), "-n", &n_gen.to_string()])
        .args([
            "-t",
            &threads.to_string(),
            "-r",
            &reps.max(1).to_string(),
            "-o",
            "json",
        ])
        .output()
        .map_err(|e| EngineError::Llama(format!("cannot run {}: {e}", bin.display())))?;
    if !out.status.success() {
        return Err(EngineError::Llama(format!(
            "{} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| EngineError::Llama(format!("cannot parse llama-bench output: {e}")))?;
    let rate = |prompt: bool| {
        rows.as_array()
            .into_iter()
            .flatten()
            .find(|r| {
                let p = r["n_prompt"].as_u64().unwrap_or(0);
                let g = r["n_gen"].as_u64().unwrap_or(0);
                if prompt {
                    p > 0 && g == 0
                } else {
                    p == 0 && g > 0
                }
            })
            .and_then(|r| r["avg_ts"].as_f64())
            .ok_or_else(|| EngineError::Llama("llama-bench output has no pp/tg rows".into()))
    };
    Ok(Throughput {
        pp_tps: rate(true)?,
        gen_tps: rate(false)?,
    })
}

/// The `llama-cpp-sys-2` version whose vendored llama.cpp the engine links; the reference
/// `llama-bench` is built from the same source by `scripts/build-llama-bench.sh`.
pub const LLAMA_CPP_SYS_VERSION: &str = "0.1.161";

/// Where `scripts/build-llama-bench.sh` puts `llama-bench`.
pub fn default_llama_bench() -> std::path::PathBuf {
    crate::paths::autosafe_home().join(format!(
        "tools/llama-bench-{LLAMA_CPP_SYS_VERSION}/llama-bench"
    ))
}

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// CPU threads, for ours and llama.cpp's.
    pub threads: usize,
    /// Prompt length in tokens.
    pub n_prompt: usize,
    /// Tokens generated per sequence.
    pub n_gen: u32,
    /// Sequences decoded together in the batched run.
    pub seqs: usize,
    /// Repetitions (medians are reported).
    pub reps: usize,
    /// The `llama-bench` binary.
    pub llama_bench: std::path::PathBuf,
}

/// What `autosafe bench engine` reports; its JSON is the last line of the output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Model spec.
    pub model: String,
    /// Threads.
    pub threads: usize,
    /// Prompt tokens.
    pub n_prompt: usize,
    /// Generated tokens per sequence.
    pub n_gen: u32,
    /// Sequences in the batched run.
    pub seqs: usize,
    /// Ours, one sequence: prompt tokens/s.
    pub pp_tps: f64,
    /// Ours, one sequence: generated tokens/s.
    pub gen_tps: f64,
    /// Ours, `seqs` sequences: aggregate prompt tokens/s.
    pub pp_tps_8seq: f64,
    /// Ours, `seqs` sequences: aggregate generated tokens/s.
    pub gen_tps_8seq: f64,
    /// llama.cpp's `llama-bench`: prompt tokens/s.
    pub llamacpp_pp_tps: f64,
    /// llama.cpp's `llama-bench`: generated tokens/s.
    pub llamacpp_gen_tps: f64,
    /// `pp_tps / llamacpp_pp_tps`.
    pub ratio_pp: f64,
    /// `gen_tps / llamacpp_gen_tps`.
    pub ratio_gen: f64,
    /// `gen_tps_8seq / gen_tps`.
    pub batch_gain: f64,
}

/// Runs the whole comparison: ours alone, ours batched, then `llama-bench`.
pub async fn run(engine: &Engine, model: &str, opts: &BenchOptions) -> Result<Report, EngineError> {
    let one = single(engine, opts.n_prompt, opts.n_gen, opts.reps).await?;
    let many = concurrent(engine, opts.seqs, opts.n_prompt, opts.n_gen, opts.reps).await?;
    if !opts.llama_bench.exists() {
        return Err(EngineError::Llama(format!(
            "{} not found; build it from the same vendored llama.cpp with ./scripts/build-llama-bench.sh",
            opts.llama_bench.display()
        )));
    }
    let reference = llama_bench(
        &opts.llama_bench,
        engine.path(),
        opts.n_prompt,
        opts.n_gen,
        opts.threads,
        opts.reps.max(3),
    )?;
    Ok(Report {
        model: model.to_string(),
        threads: opts.threads,
        n_prompt: opts.n_prompt,
        n_gen: opts.n_gen,
        seqs: opts.seqs,
        pp_tps: one.pp_tps,
        gen_tps: one.gen_tps,
        pp_tps_8seq: many.pp_tps,
        gen_tps_8seq: many.gen_tps,
        llamacpp_pp_tps: reference.pp_tps,
        llamacpp_gen_tps: reference.gen_tps,
        ratio_pp: one.pp_tps / reference.pp_tps,
        ratio_gen: one.gen_tps / reference.gen_tps,
        batch_gain: many.gen_tps / one.gen_tps,
    })
}

/// One case of the valid-JSON measurement.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct JsonCase {
    /// Case id.
    pub id: String,
    /// The user prompt (it shows the schema).
    pub prompt: String,
    /// The schema the reply must satisfy.
    pub schema: serde_json::Value,
}

/// The 50 shipped cases (`data/json_rate.jsonl`: 10 schemas × 5 topics).
pub fn json_cases() -> Result<Vec<JsonCase>, EngineError> {
    include_str!("../data/json_rate.jsonl")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                EngineError::BadRequest(format!("data/json_rate.jsonl line {}: {e}", i + 1))
            })
        })
        .collect()
}

/// Valid-JSON rates over the cases, without and with the schema constraint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JsonRate {
    /// Cases.
    pub cases: usize,
    /// Unconstrained replies that parse as JSON (the whole reply, or inside one ``` fence).
    pub unconstrained_parse: usize,
    /// Unconstrained replies that parse and validate against the schema.
    pub unconstrained_valid: usize,
    /// Constrained replies that ended normally, parse and validate.
    pub constrained_valid: usize,
    /// Constrained replies cut by the token budget (counted as failures).
    pub constrained_cut: usize,
}

fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        if let Some(end) = rest.rfind("```") {
            return rest[..end].trim();
        }
    }
    t
}

/// Measures the valid-JSON rate: every case once greedy without constraint and once with
/// the schema as `response_format`, all submitted at once (the engine batches them).
pub async fn json_rate(
    engine: Arc<Engine>,
    cases: &[JsonCase],
    max_tokens: u32,
) -> Result<JsonRate, EngineError> {
    use autosafe_llm::{ChatRequest, FinishReason, JsonSchemaFormat, Message, ResponseFormat};
    let request = |c: &JsonCase, constrained: bool| ChatRequest {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        response_format: constrained.then(|| {
            ResponseFormat::JsonSchema(JsonSchemaFormat {
                name: c.id.clone(),
                schema: c.schema.clone(),
                strict: true,
            })
        }),
        ..ChatRequest::new(vec![Message::user(c.prompt.clone())])
    };
    let mut tasks = Vec::new();
    for c in cases {
        for constrained in [false, true] {
            let engine = Arc::clone(&engine);
            let req = request(c, constrained);
            tasks.push(tokio::spawn(async move { engine.complete(&req).await }));
        }
    }
    let mut rate = JsonRate {
        cases: cases.len(),
        unconstrained_parse: 0,
        unconstrained_valid: 0,
        constrained_valid: 0,
        constrained_cut: 0,
    };
    let mut tasks = tasks.into_iter();
    for c in cases {
        let validator = jsonschema::validator_for(&c.schema)
            .map_err(|e| EngineError::Schema(format!("case {}: {e}", c.id)))?;
        let free = tasks
            .next()
            .expect("two tasks per case")
            .await
            .map_err(|e| EngineError::Llama(e.to_string()))??;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(strip_fence(free.text())) {
            rate.unconstrained_parse += 1;
            rate.unconstrained_valid += usize::from(validator.is_valid(&v));
        }
        let forced = tasks
            .next()
            .expect("two tasks per case")
            .await
            .map_err(|e| EngineError::Llama(e.to_string()))??;
        if forced.choices[0].finish_reason == FinishReason::Length {
            rate.constrained_cut += 1;
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(forced.text()) {
            rate.constrained_valid += usize::from(validator.is_valid(&v));
        }
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_sys_version_matches_the_lockfile() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .unwrap();
        let entry = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"llama-cpp-sys-2\""))
            .unwrap();
        assert!(
            entry.contains(&format!("version = \"{LLAMA_CPP_SYS_VERSION}\"")),
            "{entry}"
        );
    }

    #[test]
    fn shipped_json_cases_parse() {
        let cases = json_cases().unwrap();
        assert_eq!(cases.len(), 50);
        for c in &cases {
            assert!(jsonschema::validator_for(&c.schema).is_ok(), "{}", c.id);
        }
        assert_eq!(strip_fence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
    }
}
