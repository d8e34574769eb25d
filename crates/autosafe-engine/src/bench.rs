//! Throughput measurement of the engine: prompt processing and generation tokens per second,
//! one sequence alone and several decoded together, plus a runner for llama.cpp's own figures
//! (through `llama-cpp-python`) on the same GGUF, prompt tokens and threads for comparison.

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

/// Prompt `variant` of exactly `n` tokens: its number, then the filler text repeated, cut at `n`.
/// Each request gets its own variant: the engine reuses the KV cells of a prompt prefix it has
/// seen, so the same prompt twice would measure a cache hit, not prompt processing (the first
/// run on the 1.5B reported 6,101 prompt tokens/s that way).
pub fn prompt_tokens(engine: &Engine, n: usize, variant: usize) -> Vec<LlamaToken> {
    let head = engine.tokenize(&format!("Request {variant}. "));
    let one = engine.tokenize(FILLER);
    head.into_iter()
        .chain(one.iter().copied().cycle())
        .take(n)
        .collect()
}

/// A prompt variant not used before in this process (variant 0 is the reference's).
fn fresh() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn params(n_gen: u32) -> SamplingParams {
    SamplingParams::greedy_exact(n_gen)
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
    engine
        .generate(prompt_tokens(engine, n_prompt, fresh()), params(8), None)
        .await?;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let prompt = prompt_tokens(engine, n_prompt, fresh());
        let g = engine.generate(prompt, params(n_gen), None).await?;
        pp.push(g.prompt_tokens as f64 / secs(g.timing.first_token - g.timing.admitted));
        tg.push((g.completion_tokens - 1) as f64 / secs(g.timing.done - g.timing.first_token));
    }
    Ok(Throughput {
        pp_tps: median(pp),
        gen_tps: median(tg),
    })
}

/// `seqs` sequences submitted together, `reps` times: median aggregate rates. Prompt speed is
/// all prompt tokens over the span from the first admission to the last first token. Generation
/// speed is measured once every sequence is generating (as llama.cpp's batched-bench does):
/// tokens sampled after the last sequence's first token and up to the first sequence's end,
/// over that window.
pub async fn concurrent(
    engine: &Engine,
    seqs: usize,
    n_prompt: usize,
    n_gen: u32,
    reps: usize,
) -> Result<Throughput, EngineError> {
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(1) {
        let receivers = (0..seqs)
            .map(|_| {
                engine.submit(
                    prompt_tokens(engine, n_prompt, fresh()),
                    params(n_gen),
                    None,
                )
            })
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
        let first_max = gens
            .iter()
            .map(|g| g.timing.first_token)
            .max()
            .expect("seqs > 0");
        let end_min = gens.iter().map(|g| g.timing.done).min().expect("seqs > 0");
        let prompt_total: u32 = gens.iter().map(|g| g.prompt_tokens).sum();
        let in_window = gens
            .iter()
            .flat_map(|g| &g.token_times)
            .filter(|t| **t > first_max && **t <= end_min)
            .count();
        pp.push(f64::from(prompt_total) / secs(first_max - t0));
        tg.push(in_window as f64 / secs(end_min - first_max));
    }
    Ok(Throughput {
        pp_tps: median(pp),
        gen_tps: median(tg),
    })
}

const REFERENCE_SCRIPT: &str = include_str!("../../../python/bench_llamacpp.py");

/// llama.cpp's figures: one sequence, and `seqs` decoded together (aggregate generated tokens/s).
pub(crate) struct Reference {
    pub(crate) one: Throughput,
    pub(crate) gen_tps_batched: f64,
}

/// Runs llama.cpp through its Python binding (`llama-cpp-python`, `python/bench_llamacpp.py`)
/// on `model` with the same prompt tokens, generation length and threads, and returns
/// llama.cpp's prompt and generation rates (wall-clock of the binding's `eval` calls), one
/// sequence alone and `seqs` in one batch per step.
pub(crate) fn llama_cpp_reference(
    python: &Path,
    model: &Path,
    prompt: &[LlamaToken],
    n_gen: u32,
    threads: usize,
    reps: usize,
    seqs: usize,
) -> Result<Reference, EngineError> {
    let tokens: Vec<i32> = prompt.iter().map(|t| t.0).collect();
    let tokens = serde_json::to_string(&tokens).map_err(|e| EngineError::Llama(e.to_string()))?;
    let out = std::process::Command::new(python)
        .args([
            "-c",
            REFERENCE_SCRIPT,
            &model.display().to_string(),
            &threads.to_string(),
        ])
        .args([&n_gen.to_string(), &reps.max(1).to_string(), &tokens])
        .arg(seqs.to_string())
        .output()
        .map_err(|e| EngineError::Llama(format!("cannot run {}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(EngineError::Llama(format!(
            "llama-cpp-python reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| EngineError::Llama(format!("cannot parse the reference's output: {e}")))?;
    match (v["pp_tps"].as_f64(), v["gen_tps"].as_f64()) {
        (Some(pp_tps), Some(gen_tps)) => Ok(Reference {
            one: Throughput { pp_tps, gen_tps },
            gen_tps_batched: v["gen_tps_batched"].as_f64().unwrap_or(gen_tps),
        }),
        _ => Err(EngineError::Llama(format!(
            "unexpected reference output: {v}"
        ))),
    }
}

/// The command that installs the reference (`python/requirements-llamacpp.txt`).
pub(crate) const REFERENCE_SETUP: &str = "./scripts/setup-python.sh llamacpp";

/// The reference's interpreter: `$AUTOSAFE_HOME/venv/llamacpp/bin/python`.
pub fn default_reference_python() -> std::path::PathBuf {
    crate::paths::autosafe_home().join("venv/llamacpp/bin/python")
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
    /// Repetitions in each round.
    pub reps: usize,
    /// Rounds: ours alone, llama.cpp, ours batched, in turn, so that a slow spell of a shared
    /// machine falls on both sides; the median of the rounds' medians is reported.
    pub rounds: usize,
    /// Python with `llama-cpp-python` installed (the reference).
    pub python: std::path::PathBuf,
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
    /// llama.cpp (via llama-cpp-python, timed `eval` calls): prompt tokens/s.
    pub llamacpp_pp_tps: f64,
    /// llama.cpp (via llama-cpp-python, timed `eval` calls): generated tokens/s.
    pub llamacpp_gen_tps: f64,
    /// `pp_tps / llamacpp_pp_tps`.
    pub ratio_pp: f64,
    /// `gen_tps / llamacpp_gen_tps`.
    pub ratio_gen: f64,
    /// `gen_tps_8seq / gen_tps`.
    pub batch_gain: f64,
    /// llama.cpp, `seqs` sequences in one batch per step (its own batch API through
    /// llama-cpp-python): aggregate generated tokens/s.
    pub llamacpp_gen_tps_8seq: f64,
    /// llama.cpp's own `llamacpp_gen_tps_8seq / llamacpp_gen_tps` on the same machine: what
    /// batching can gain here.
    pub llamacpp_batch_gain: f64,
}

fn median_of(rounds: &[Throughput]) -> Throughput {
    Throughput {
        pp_tps: median(rounds.iter().map(|t| t.pp_tps).collect()),
        gen_tps: median(rounds.iter().map(|t| t.gen_tps).collect()),
    }
}

/// Runs the whole comparison on the same prompt tokens, in interleaved rounds: ours alone,
/// llama.cpp through llama-cpp-python, ours batched.
pub async fn run(engine: &Engine, model: &str, opts: &BenchOptions) -> Result<Report, EngineError> {
    if !opts.python.exists() {
        return Err(EngineError::Llama(format!(
            "{} not found; install the llama.cpp reference with `{REFERENCE_SETUP}`",
            opts.python.display()
        )));
    }
    let prompt = prompt_tokens(engine, opts.n_prompt, 0);
    let (mut ones, mut manys, mut refs, mut ref_batched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..opts.rounds.max(1) {
        ones.push(single(engine, opts.n_prompt, opts.n_gen, opts.reps).await?);
        let r = llama_cpp_reference(
            &opts.python,
            engine.path(),
            &prompt,
            opts.n_gen,
            opts.threads,
            opts.reps,
            opts.seqs,
        )?;
        refs.push(r.one);
        ref_batched.push(r.gen_tps_batched);
        manys.push(concurrent(engine, opts.seqs, opts.n_prompt, opts.n_gen, opts.reps).await?);
    }
    let (one, many, reference) = (median_of(&ones), median_of(&manys), median_of(&refs));
    let reference_batched = median(ref_batched);
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
        llamacpp_gen_tps_8seq: reference_batched,
        llamacpp_batch_gain: reference_batched / reference.gen_tps,
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

/// The bench's own reading of a fence, looser than [`autosafe_llm::text::strip_fence`] (text
/// after the closing fence is dropped, only a `json` tag is removed): kept as it was so the
/// measured parse rate stays comparable with earlier runs.
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
    fn shipped_json_cases_parse() {
        let cases = json_cases().unwrap();
        assert_eq!(cases.len(), 50);
        for c in &cases {
            assert!(jsonschema::validator_for(&c.schema).is_ok(), "{}", c.id);
        }
        assert_eq!(strip_fence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
    }
}
