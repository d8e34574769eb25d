//! The engine thread: owns the llama.cpp contexts and runs continuous batching.
//!
//! Requests arrive through a channel as [`Job`]s (prompt tokens, sampling parameters, an
//! optional constraint) and are answered through oneshot channels. Every step builds one
//! `llama_batch` holding the next token of every generating sequence plus prompt chunks of newly
//! admitted ones (each with its own sequence id), decodes it in one forward pass, and samples
//! each sequence on its own (temperature, top-p, seed, stop strings, end of step, token budget,
//! JSON-schema mask). Each slot has its own KV stream (a non-unified cache), so a token attends
//! only to its own sequence's cells rather than to every sequence's.
//!
//! **Sized to need.** The KV cache is what costs memory (a 1.5B model: 28 KiB a token), so the
//! contexts start small — one stream of [`MIN_CTX`] cells — and grow when the work asks for more:
//! a request longer than a stream (prompt + `max_tokens`) widens every stream, requests waiting
//! for a slot add streams. Growing rebuilds the context: the cells of running sequences are read
//! out, the old context is freed, and they are written into the new one, so memory never holds
//! both. The limits are [`ContextSettings::n_ctx_seq`] and [`ContextSettings::n_seq_max`]; a
//! request that does not fit the first is refused with an error naming the setting.
//!
//! **Prefix reuse.** A slot keeps the cells of the last sequence it ran. A new request goes to the
//! free slot whose cached tokens share the longest prefix with its prompt, and only the rest of
//! the prompt is processed (the same system prompt, tool list and history are not computed again;
//! vLLM calls this prefix caching). [`EngineStats::prompt_tokens_reused`] counts what it saved.
//!
//! A second, single-sequence context serves a sequence that runs alone: llama.cpp decodes one
//! sequence about 6 % faster in a context built for one than in one built for eight (measured:
//! docs/engine.md). A request admitted while nothing else runs starts there; when others arrive,
//! its KV cells are copied into a slot of the batched context (`llama_state_seq_get/set`) and it
//! goes on batched; a sequence left alone for [`SOLO_AFTER_STEPS`] steps moves back.

use crate::error::EngineError;
use crate::kv_move::{move_seq, put_seq, take_seq};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llguidance::Matcher;
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;
use tokio::sync::oneshot;

/// Sampling parameters of one sequence.
#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// Token budget; reaching it ends the reply with [`Finish::Length`].
    pub max_tokens: u32,
    /// Temperature; 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass (1 = off).
    pub top_p: f32,
    /// Seed of this sequence's random generator.
    pub seed: u32,
    /// Stop strings; the reply is cut before the first one found.
    pub stop: Vec<String>,
    /// The reply ends after the first complete JSON value following this marker
    /// ([`autosafe_llm::text::end_after_json`]): a ReAct step ends with its Action Input.
    pub end_after_json: Option<String>,
    /// Never stop at end-of-generation tokens (benchmarks: exactly `max_tokens` tokens).
    pub ignore_eos: bool,
}

impl SamplingParams {
    /// Greedy decoding of exactly `max_tokens` tokens, end-of-generation tokens ignored (what
    /// benchmarks and tests that compare texts want).
    pub fn greedy_exact(max_tokens: u32) -> SamplingParams {
        SamplingParams {
            max_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            end_after_json: None,
            ignore_eos: true,
        }
    }
}

/// One generation request to the engine thread.
pub struct Job {
    /// Prompt tokens.
    pub prompt: Vec<LlamaToken>,
    /// Sampling.
    pub params: SamplingParams,
    /// Constraint on the reply, if any.
    pub matcher: Option<Matcher>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Generation, EngineError>>,
    /// Where text goes as it is generated, if anywhere (streaming replies).
    pub deltas: Option<DeltaSink>,
}

/// Receives a sequence's text while it is generated: `(index, text)` pairs whose texts, joined,
/// are a prefix of [`Generation::text`]. Text that may still be cut (the start of a stop string,
/// an incomplete UTF-8 character) is held back until it cannot be; what is left is in the final
/// [`Generation`].
#[derive(Debug, Clone)]
pub struct DeltaSink {
    /// The choice this sequence answers (sent with every piece).
    pub index: u32,
    /// The channel.
    pub tx: tokio::sync::mpsc::UnboundedSender<(u32, String)>,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-generation token.
    Eos,
    /// A stop string was produced, or the step ended.
    Stop,
    /// The token budget ran out.
    Length,
}

/// Wall-clock marks of one sequence.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Sent to the engine.
    pub queued: Instant,
    /// Given a slot; prompt processing starts.
    pub admitted: Instant,
    /// First token sampled (prompt processed).
    pub first_token: Instant,
    /// Finished.
    pub done: Instant,
}

/// The result of one sequence.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated text (cut at a stop string; end-of-generation tokens not included).
    pub text: String,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Prompt tokens whose KV cells were reused from an earlier request (not computed again).
    pub reused_tokens: u32,
    /// Tokens sampled (including a final end-of-generation token).
    pub completion_tokens: u32,
    /// Why it ended.
    pub finish: Finish,
    /// When things happened.
    pub timing: Timing,
    /// When each token was sampled.
    pub token_times: Vec<Instant>,
}

/// The limits of the engine thread's contexts.
#[derive(Debug, Clone, Copy)]
pub struct ContextSettings {
    /// The largest context of one sequence (tokens): a request needing more is refused.
    pub n_ctx_seq: u32,
    /// Most tokens per forward pass.
    pub n_batch: u32,
    /// Most sequences at once.
    pub n_seq_max: u32,
    /// CPU threads.
    pub threads: i32,
    /// Keep a single-sequence context for a sequence that runs alone (see the module docs).
    pub solo_context: bool,
}

/// Steps a sequence must run alone in the batched context before it moves to the
/// single-sequence one (so a short lull between requests does not copy KV cells back and forth).
pub(crate) const SOLO_AFTER_STEPS: u32 = 16;

/// The smallest context of a stream, and the step its size grows by (tokens).
pub const MIN_CTX: u32 = 1024;

/// Counters of the engine thread, readable while it runs.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Sequences whose KV cells were copied into the single-sequence context.
    pub moved_to_solo: AtomicU64,
    /// Sequences whose KV cells were copied from the single-sequence context into the batched one.
    pub moved_to_batch: AtomicU64,
    /// Forward passes run in the single-sequence context.
    pub solo_steps: AtomicU64,
    /// Forward passes run in the batched context.
    pub batch_steps: AtomicU64,
    /// Prompt tokens of admitted requests.
    pub prompt_tokens: AtomicU64,
    /// Of those, tokens whose KV cells were reused from an earlier request (prefill saved).
    pub prompt_tokens_reused: AtomicU64,
    /// Times the batched context was rebuilt larger.
    pub resizes: AtomicU64,
    /// Tokens one stream holds now.
    pub ctx_per_stream: AtomicU64,
    /// Streams of the batched context now.
    pub streams: AtomicU64,
    /// The most KV cells allocated at once, over every context (a cell holds one token).
    pub peak_kv_cells: AtomicU64,
}

impl EngineStats {
    fn record_layout(&self, n_ctx: u32, streams: u32, solo: bool) {
        self.ctx_per_stream
            .store(u64::from(n_ctx), Ordering::Relaxed);
        self.streams.store(u64::from(streams), Ordering::Relaxed);
        let cells = u64::from(n_ctx) * (u64::from(streams) + u64::from(solo));
        self.peak_kv_cells.fetch_max(cells, Ordering::Relaxed);
    }
}

struct Seq {
    job: Job,
    pending: Vec<LlamaToken>,
    /// Tokens whose KV cells exist (positions `0..fed.len()`).
    fed: Vec<LlamaToken>,
    prompt_len: u32,
    reused: u32,
    text: Vec<u8>,
    /// Bytes of `text` already sent to the job's [`DeltaSink`].
    streamed: usize,
    n_gen: u32,
    sampler: Option<LlamaSampler>,
    admitted: Instant,
    first_token: Option<Instant>,
    token_times: Vec<Instant>,
    queued: Instant,
    /// Batch index of this sequence's logits in the current step.
    logits_at: Option<i32>,
}

/// Where a context's cells come from: the model, its parameters, its size.
struct Builder<'m> {
    model: &'m LlamaModel,
    backend: &'static llama_cpp_2::llama_backend::LlamaBackend,
    settings: ContextSettings,
}

impl<'m> Builder<'m> {
    fn params(&self, n_ctx: u32, streams: u32) -> LlamaContextParams {
        LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx.saturating_mul(streams)))
            .with_n_batch(self.settings.n_batch)
            .with_n_ubatch(self.settings.n_batch)
            .with_n_seq_max(streams)
            .with_kv_unified(false)
            .with_n_threads(self.settings.threads)
            .with_n_threads_batch(self.settings.threads)
    }

    fn context(&self, n_ctx: u32, streams: u32) -> Result<LlamaContext<'m>, EngineError> {
        self.model
            .new_context(self.backend, self.params(n_ctx, streams))
            .map_err(|e| {
                EngineError::Llama(format!(
                    "cannot create a context of {streams} stream(s) × {n_ctx} tokens: {e}"
                ))
            })
    }
}

/// Creates the first (smallest) contexts and runs the loop until every sender is gone. The
/// context creation result is sent through `ready` first.
pub fn run(
    model: Arc<LlamaModel>,
    settings: ContextSettings,
    stats: Arc<EngineStats>,
    jobs: Receiver<(Job, Instant)>,
    ready: std::sync::mpsc::SyncSender<Result<(), EngineError>>,
) {
    let backend = match crate::backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let builder = Builder {
        model: &model,
        backend,
        settings,
    };
    let n_ctx = MIN_CTX.min(settings.n_ctx_seq);
    let with_solo = settings.solo_context && settings.n_seq_max > 1;
    let first = builder.context(n_ctx, 1).and_then(|ctx| {
        let solo = with_solo.then(|| builder.context(n_ctx, 1)).transpose()?;
        Ok((ctx, solo))
    });
    let (ctx, solo) = match first {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // Recorded before the loader is told the engine is ready, so its stats describe it at once.
    stats.record_layout(n_ctx, 1, solo.is_some());
    let _ = ready.send(Ok(()));
    Looper::new(builder, ctx, solo, n_ctx, stats).run(jobs);
}

struct Looper<'m> {
    builder: Builder<'m>,
    /// The batched context (`None` only while it is being rebuilt).
    ctx: Option<LlamaContext<'m>>,
    /// Tokens one stream holds (the same for every stream and the single-sequence context).
    n_ctx: u32,
    /// The single-sequence context, if kept.
    solo: Option<LlamaContext<'m>>,
    /// The slot whose sequence lives in `solo` (its KV cells are there, as sequence 0).
    in_solo: Option<usize>,
    /// Consecutive steps with one sequence in the batched context.
    alone_steps: u32,
    stats: Arc<EngineStats>,
    batch: LlamaBatch<'static>,
    /// One per stream of the batched context.
    slots: Vec<Option<Seq>>,
    /// Tokens whose cells an idle stream still holds (for prefix reuse), one per slot.
    cached: Vec<Vec<LlamaToken>>,
    /// The same for the single-sequence context.
    solo_cached: Vec<LlamaToken>,
    waiting: VecDeque<(Job, Instant)>,
    eog: Vec<LlamaToken>,
}

/// How many leading tokens two sequences share.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl<'m> Looper<'m> {
    fn new(
        builder: Builder<'m>,
        ctx: LlamaContext<'m>,
        solo: Option<LlamaContext<'m>>,
        n_ctx: u32,
        stats: Arc<EngineStats>,
    ) -> Self {
        let vocab = builder.model.vocab();
        let eog = (0..builder.model.n_vocab())
            .map(LlamaToken)
            .filter(|t| vocab.is_eog(*t))
            .collect();
        let n_batch = builder.settings.n_batch as usize;
        Looper {
            builder,
            ctx: Some(ctx),
            n_ctx,
            solo,
            in_solo: None,
            alone_steps: 0,
            stats,
            batch: LlamaBatch::new(n_batch, 1),
            slots: vec![None],
            cached: vec![Vec::new()],
            solo_cached: Vec::new(),
            waiting: VecDeque::new(),
            eog,
        }
    }

    fn settings(&self) -> ContextSettings {
        self.builder.settings
    }

    /// Clears cells of `slot` from position `from` on in the batched context.
    fn clear_stream(&mut self, slot: usize, from: Option<u32>) {
        if let Some(ctx) = self.ctx.as_mut() {
            let _ = ctx.clear_kv_cache_seq(Some(slot as u32), from, None);
        }
    }

    fn streams(&self) -> u32 {
        self.slots.len() as u32
    }

    fn run(mut self, jobs: Receiver<(Job, Instant)>) {
        loop {
            let idle = self.slots.iter().all(Option::is_none) && self.waiting.is_empty();
            if idle {
                match jobs.recv() {
                    Ok(j) => self.waiting.push_back(j),
                    Err(_) => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(j) => self.waiting.push_back(j),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if self.slots.iter().all(Option::is_none) && self.waiting.is_empty() {
                            return;
                        }
                        break;
                    }
                }
            }
            self.drop_cancelled();
            self.refuse_oversized();
            self.grow();
            if self.ctx.is_none() && !self.restore() {
                continue;
            }
            self.admit();
            if self.slots.iter().all(Option::is_none) {
                continue;
            }
            self.place();
            self.step();
        }
    }

    /// Answers waiting requests that can never fit a stream with an error naming the limit.
    fn refuse_oversized(&mut self) {
        let max = self.settings().n_ctx_seq as usize;
        let mut keep = VecDeque::with_capacity(self.waiting.len());
        for (job, queued) in self.waiting.drain(..) {
            let need = job.prompt.len() + job.params.max_tokens as usize;
            let error = if job.prompt.is_empty() {
                Some("empty prompt".to_string())
            } else if need > max {
                Some(format!(
                    "prompt ({} tokens) plus max_tokens ({}) exceeds the context size of a sequence ({max}): raise n_ctx (AUTOSAFE_ENGINE_CTX) up to the model's training context, or lower max_tokens",
                    job.prompt.len(),
                    job.params.max_tokens
                ))
            } else {
                None
            };
            match error {
                Some(msg) => {
                    let _ = job.reply.send(Err(EngineError::BadRequest(msg)));
                }
                None => keep.push_back((job, queued)),
            }
        }
        self.waiting = keep;
    }

    /// Rebuilds the contexts larger when waiting work needs it: longer streams for a request
    /// that does not fit one, more streams for requests that find every slot busy.
    fn grow(&mut self) {
        let settings = self.settings();
        let need = self
            .waiting
            .iter()
            .map(|(j, _)| j.prompt.len() as u32 + j.params.max_tokens)
            .max()
            .unwrap_or(0);
        let n_ctx = if need > self.n_ctx {
            // A quarter more than asked, in whole steps, so a history that grows by a step at a
            // time does not rebuild at every step.
            (need.saturating_add(need / 4))
                .div_ceil(MIN_CTX)
                .saturating_mul(MIN_CTX)
                .clamp(need, settings.n_ctx_seq)
        } else {
            self.n_ctx
        };
        let busy = self.slots.iter().filter(|s| s.is_some()).count();
        let wanted = (busy + self.waiting.len()) as u32;
        let streams = if wanted > self.streams() {
            wanted.min(settings.n_seq_max)
        } else {
            self.streams()
        };
        if n_ctx == self.n_ctx && streams == self.streams() {
            return;
        }
        if let Err(e) = self.rebuild(n_ctx, streams) {
            let msg = e.to_string();
            for slot in 0..self.slots.len() {
                if let Some(seq) = self.release(slot, false) {
                    let _ = seq.job.reply.send(Err(EngineError::Llama(msg.clone())));
                }
            }
            for (job, _) in self.waiting.drain(..) {
                let _ = job.reply.send(Err(EngineError::Llama(msg.clone())));
            }
            self.in_solo = None;
        }
    }

    /// Creates the batched context again after a failed rebuild; when even that fails, the
    /// waiting requests get the error.
    fn restore(&mut self) -> bool {
        match self.builder.context(self.n_ctx, self.streams()) {
            Ok(ctx) => {
                self.ctx = Some(ctx);
                true
            }
            Err(e) => {
                for (job, _) in self.waiting.drain(..) {
                    let _ = job.reply.send(Err(EngineError::Llama(e.to_string())));
                }
                false
            }
        }
    }

    /// Replaces the contexts by ones of `streams` streams of `n_ctx` tokens, carrying the cells of
    /// running sequences over; idle streams' cached cells are dropped.
    fn rebuild(&mut self, n_ctx: u32, streams: u32) -> Result<(), EngineError> {
        let old_streams = self.streams();
        let mut carried = Vec::new();
        for slot in 0..self.slots.len() {
            self.cached[slot].clear();
            let running = self.slots[slot].as_ref().is_some_and(|s| !s.fed.is_empty());
            if running && self.in_solo != Some(slot) {
                let ctx = self.ctx.as_mut().expect("context");
                let state = take_seq(ctx, slot as i32).map_err(EngineError::Llama)?;
                carried.push((slot, state));
            }
        }
        let solo_state = match (self.in_solo, self.solo.as_mut()) {
            (Some(_), Some(solo)) if n_ctx != self.n_ctx => {
                Some(take_seq(solo, 0).map_err(EngineError::Llama)?)
            }
            _ => None,
        };
        // Free the old cells before allocating the new ones, so memory never holds both.
        self.ctx = None;
        if n_ctx != self.n_ctx && self.solo.is_some() {
            self.solo = None;
            self.solo_cached.clear();
            self.solo = Some(self.builder.context(n_ctx, 1)?);
        }
        let mut ctx = self.builder.context(n_ctx, streams)?;
        for (slot, state) in carried {
            put_seq(
                &mut ctx,
                &state,
                (slot as u32, old_streams),
                (slot as i32, streams),
            )
            .map_err(EngineError::Llama)?;
        }
        if let (Some(state), Some(solo)) = (solo_state, self.solo.as_mut()) {
            put_seq(solo, &state, (0, 1), (0, 1)).map_err(EngineError::Llama)?;
        }
        self.ctx = Some(ctx);
        self.n_ctx = n_ctx;
        self.slots.resize_with(streams as usize, || None);
        self.cached.resize_with(streams as usize, Vec::new);
        self.stats.resizes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .record_layout(n_ctx, streams, self.solo.is_some());
        Ok(())
    }

    /// Gives waiting requests free slots, each the one whose cached cells share the longest
    /// prefix with its prompt (or the single-sequence context's, when it will run alone).
    fn admit(&mut self) {
        while !self.waiting.is_empty() {
            let free: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].is_none())
                .collect();
            if free.is_empty() {
                break;
            }
            let (job, queued) = self.waiting.pop_front().expect("not empty");
            let alone = self.solo.is_some()
                && self.waiting.is_empty()
                && self.slots.iter().all(Option::is_none);
            let (slot, common) = free
                .iter()
                .map(|&i| (i, common_prefix(&self.cached[i], &job.prompt)))
                .max_by_key(|&(i, c)| (c, std::cmp::Reverse(i)))
                .expect("a free slot");
            let solo_common = common_prefix(&self.solo_cached, &job.prompt);
            let into_solo = alone && solo_common > 0 && solo_common >= common;
            // At least the last prompt token is computed again: its logits start the reply.
            let keep = if into_solo { solo_common } else { common }.min(job.prompt.len() - 1);
            if into_solo {
                self.in_solo = Some(slot);
                self.cached[slot].clear();
                self.clear_stream(slot, None);
                let solo = self.solo.as_mut().expect("solo context");
                let _ = solo.clear_kv_cache_seq(Some(0), Some(keep as u32), None);
                self.solo_cached.clear();
            } else {
                let cached = std::mem::take(&mut self.cached[slot]);
                if cached.len() > keep {
                    self.clear_stream(slot, Some(keep as u32));
                }
            }
            self.stats
                .prompt_tokens
                .fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
            self.stats
                .prompt_tokens_reused
                .fetch_add(keep as u64, Ordering::Relaxed);
            let sampler = (job.params.temperature > 0.0).then(|| {
                LlamaSampler::chain_simple([
                    LlamaSampler::temp(job.params.temperature),
                    LlamaSampler::top_p(job.params.top_p, 1),
                    LlamaSampler::dist(job.params.seed),
                ])
            });
            self.slots[slot] = Some(Seq {
                pending: job.prompt[keep..].to_vec(),
                fed: job.prompt[..keep].to_vec(),
                prompt_len: job.prompt.len() as u32,
                reused: keep as u32,
                job,
                text: Vec::new(),
                streamed: 0,
                n_gen: 0,
                sampler,
                admitted: Instant::now(),
                first_token: None,
                token_times: Vec::new(),
                queued,
                logits_at: None,
            });
        }
    }

    fn drop_cancelled(&mut self) {
        for slot in 0..self.slots.len() {
            if self.slots[slot]
                .as_ref()
                .is_some_and(|s| s.job.reply.is_closed())
            {
                self.release(slot, false);
            }
        }
        self.waiting.retain(|(job, _)| !job.reply.is_closed());
    }

    /// Frees `slot`. With `keep`, its cells stay as the slot's (or the single-sequence
    /// context's) cache for prefix reuse; otherwise they are cleared.
    fn release(&mut self, slot: usize, keep: bool) -> Option<Seq> {
        let seq = self.slots[slot].take()?;
        let cached = if keep { seq.fed.clone() } else { Vec::new() };
        if self.in_solo == Some(slot) {
            self.in_solo = None;
            if let Some(solo) = self.solo.as_mut() {
                if !keep {
                    let _ = solo.clear_kv_cache_seq(Some(0), None, None);
                }
                self.solo_cached = cached;
            }
        } else {
            if !keep {
                self.clear_stream(slot, None);
            }
            self.cached[slot] = cached;
        }
        Some(seq)
    }

    /// Decides where the next step runs: a sequence alone goes to (or stays in) the
    /// single-sequence context; when others are active or waiting, it comes back to its slot.
    fn place(&mut self) {
        if self.solo.is_none() {
            return;
        }
        let active: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .collect();
        let crowded = active.len() > 1 || !self.waiting.is_empty();
        let n_streams = self.streams();
        match self.in_solo {
            Some(slot) if crowded => {
                self.in_solo = None;
                self.stats.moved_to_batch.fetch_add(1, Ordering::Relaxed);
                let ctx = self.ctx.as_mut().expect("context");
                let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
                let solo = self.solo.as_mut().expect("solo context");
                let moved = move_seq(solo, (0, 1), ctx, (slot as i32, n_streams));
                self.fail_move(slot, moved);
            }
            None if !crowded => {
                let slot = active[0];
                let fresh = self.slots[slot].as_ref().is_some_and(|s| s.fed.is_empty());
                if fresh {
                    self.in_solo = Some(slot);
                    self.clear_solo();
                } else if self.alone_steps >= SOLO_AFTER_STEPS {
                    self.in_solo = Some(slot);
                    self.clear_solo();
                    self.stats.moved_to_solo.fetch_add(1, Ordering::Relaxed);
                    let ctx = self.ctx.as_mut().expect("context");
                    let solo = self.solo.as_mut().expect("solo context");
                    let moved = move_seq(ctx, (slot as i32, n_streams), solo, (0, 1));
                    self.fail_move(slot, moved);
                }
            }
            _ => {}
        }
    }

    /// Empties the single-sequence context (a sequence is about to live there).
    fn clear_solo(&mut self) {
        self.solo_cached.clear();
        if let Some(solo) = self.solo.as_mut() {
            let _ = solo.clear_kv_cache_seq(Some(0), None, None);
        }
    }

    /// Ends the sequence in `slot` with the error of a failed KV move (its cells are lost);
    /// both contexts forget it.
    fn fail_move(&mut self, slot: usize, moved: Result<(), String>) {
        let Err(msg) = moved else {
            return;
        };
        self.in_solo = None;
        self.clear_solo();
        if let Some(seq) = self.release(slot, false) {
            let _ = seq.job.reply.send(Err(EngineError::Llama(msg)));
        }
    }

    /// One forward pass over every active sequence.
    fn step(&mut self) {
        let solo_step = self.in_solo.is_some();
        let n_active = self.slots.iter().filter(|s| s.is_some()).count();
        if solo_step || n_active != 1 {
            self.alone_steps = 0;
        } else {
            self.alone_steps += 1;
        }
        self.batch.clear();
        let mut budget = self.settings().n_batch as usize;
        // Generating sequences first (one token each), then prompt chunks.
        let order: Vec<usize> = {
            let mut gens: Vec<usize> = Vec::new();
            let mut pre: Vec<usize> = Vec::new();
            for (i, s) in self.slots.iter().enumerate() {
                if let Some(s) = s {
                    if s.first_token.is_some() {
                        gens.push(i)
                    } else {
                        pre.push(i)
                    }
                }
            }
            gens.extend(pre);
            gens
        };
        for slot in order {
            let seq = self.slots[slot].as_mut().expect("active");
            seq.logits_at = None;
            if budget == 0 {
                continue;
            }
            let take = seq.pending.len().min(budget);
            let completes = take == seq.pending.len();
            for (k, tok) in seq.pending.drain(..take).enumerate() {
                let last = completes && k + 1 == take;
                if last {
                    seq.logits_at = Some(self.batch.n_tokens());
                }
                // Capacity was checked above: `take` <= remaining budget.
                let seq_id = if solo_step { 0 } else { slot as i32 };
                let _ = self.batch.add(tok, seq.fed.len() as i32, &[seq_id], last);
                seq.fed.push(tok);
            }
            budget -= take;
        }
        let ctx = match self.solo.as_mut() {
            Some(solo) if solo_step => {
                self.stats.solo_steps.fetch_add(1, Ordering::Relaxed);
                solo
            }
            _ => {
                self.stats.batch_steps.fetch_add(1, Ordering::Relaxed);
                self.ctx.as_mut().expect("context")
            }
        };
        if let Err(e) = ctx.decode(&mut self.batch) {
            let msg = format!("decode failed: {e}");
            for slot in 0..self.slots.len() {
                if let Some(seq) = self.release(slot, false) {
                    let _ = seq.job.reply.send(Err(EngineError::Llama(msg.clone())));
                }
            }
            return;
        }
        for slot in 0..self.slots.len() {
            let Some(idx) = self.slots[slot].as_ref().and_then(|s| s.logits_at) else {
                continue;
            };
            match self.advance(slot, idx, solo_step) {
                Ok(None) => {}
                Ok(Some(finish)) => {
                    let seq = self.release(slot, true).expect("active");
                    let done = Instant::now();
                    let first = seq.first_token.unwrap_or(done);
                    let text = String::from_utf8_lossy(&seq.text).into_owned();
                    let _ = seq.job.reply.send(Ok(Generation {
                        text,
                        prompt_tokens: seq.prompt_len,
                        reused_tokens: seq.reused,
                        completion_tokens: seq.n_gen,
                        finish,
                        token_times: seq.token_times,
                        timing: Timing {
                            queued: seq.queued,
                            admitted: seq.admitted,
                            first_token: first,
                            done,
                        },
                    }));
                }
                Err(e) => {
                    if let Some(seq) = self.release(slot, false) {
                        let _ = seq.job.reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Samples the next token of the sequence in `slot`; returns how it ended, if it did.
    fn advance(
        &mut self,
        slot: usize,
        idx: i32,
        solo_step: bool,
    ) -> Result<Option<Finish>, EngineError> {
        let model = self.builder.model;
        let eog = &self.eog;
        let seq = self.slots[slot].as_mut().expect("active");
        let ctx = match self.solo.as_ref() {
            Some(solo) if solo_step => solo,
            _ => self.ctx.as_ref().expect("context"),
        };
        let logits = ctx.get_logits_ith(idx);
        let mask = match seq.job.matcher.as_mut() {
            Some(m) => Some(
                m.compute_mask_or_eos()
                    .map_err(|e| constraint_error(&e.to_string(), &seq.text))?,
            ),
            None => None,
        };
        let allowed = |t: usize| {
            mask.as_ref().is_none_or(|m| m.is_allowed(t as u32))
                && !(seq.job.params.ignore_eos && eog.contains(&LlamaToken(t as i32)))
        };
        let token = match seq.sampler.as_mut() {
            None => {
                // The plain argmax first (one pass, no per-token checks); the checked scan only
                // when a mask or the end-of-generation rule forbids it.
                let first = argmax(logits.iter().copied().enumerate());
                let best = match first {
                    Some((t, _)) if allowed(t) => first,
                    _ => argmax(
                        logits
                            .iter()
                            .copied()
                            .enumerate()
                            .filter(|&(t, _)| allowed(t)),
                    ),
                };
                LlamaToken(
                    best.ok_or_else(|| constraint_error("no token allowed", &seq.text))?
                        .0 as i32,
                )
            }
            Some(sampler) => {
                let data: Vec<LlamaTokenData> = logits
                    .iter()
                    .enumerate()
                    .map(|(t, &l)| {
                        let l = if allowed(t) { l } else { f32::NEG_INFINITY };
                        LlamaTokenData::new(LlamaToken(t as i32), l, 0.0)
                    })
                    .collect();
                let mut arr = LlamaTokenDataArray::new(data, false);
                arr.apply_sampler(sampler);
                let t = arr
                    .selected_token()
                    .ok_or_else(|| EngineError::Llama("sampler chose no token".into()))?;
                sampler.accept(t);
                t
            }
        };
        let now = Instant::now();
        seq.first_token.get_or_insert(now);
        seq.token_times.push(now);
        seq.n_gen += 1;
        if let Some(m) = seq.job.matcher.as_mut()
            && !m.is_stopped()
            && let Err(e) = m.consume_token(token.0 as u32)
        {
            return Err(constraint_error(&e.to_string(), &seq.text));
        }
        if !seq.job.params.ignore_eos && eog.contains(&token) {
            return Ok(Some(Finish::Eos));
        }
        let before = seq.text.len();
        seq.text
            .extend(model.vocab().token_to_piece(token, true, None));
        if let Some(cut) = find_stop(&seq.text, before, &seq.job.params.stop) {
            seq.text.truncate(cut);
            return Ok(Some(Finish::Stop));
        }
        if let Some(marker) = &seq.job.params.end_after_json {
            let valid = match std::str::from_utf8(&seq.text) {
                Ok(s) => s,
                // A character split across tokens: check the complete part.
                Err(e) => std::str::from_utf8(&seq.text[..e.valid_up_to()]).unwrap_or(""),
            };
            if let Some(cut) = autosafe_llm::text::end_after_json(valid, marker) {
                seq.text.truncate(cut);
                return Ok(Some(Finish::Stop));
            }
        }
        if seq.n_gen >= seq.job.params.max_tokens {
            return Ok(Some(Finish::Length));
        }
        seq.stream_text();
        seq.pending.push(token);
        Ok(None)
    }
}

impl Seq {
    /// Sends the text that can no longer be cut to the job's [`DeltaSink`], if it has one.
    fn stream_text(&mut self) {
        let Some(sink) = &self.job.deltas else {
            return;
        };
        let end = settled_len(&self.text, self.streamed, &self.job.params.stop);
        if end > self.streamed {
            let piece = String::from_utf8_lossy(&self.text[self.streamed..end]).into_owned();
            // A closed receiver means the client left; the reply channel's check ends the job.
            let _ = sink.tx.send((sink.index, piece));
            self.streamed = end;
        }
    }
}

/// How much of `text` is final: not the start of a stop string that the next tokens may
/// complete, and not an incomplete UTF-8 character. Never less than `from`.
pub(crate) fn settled_len(text: &[u8], from: usize, stops: &[String]) -> usize {
    let held = stops
        .iter()
        .map(|s| {
            let s = s.as_bytes();
            (1..s.len())
                .rev()
                .find(|&k| text.ends_with(&s[..k]))
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let end = text.len() - held;
    if end <= from {
        return from;
    }
    match std::str::from_utf8(&text[from..end]) {
        Err(e) if e.error_len().is_none() => from + e.valid_up_to(),
        _ => end,
    }
}

/// The first index of the largest logit.
fn argmax(logits: impl Iterator<Item = (usize, f32)>) -> Option<(usize, f32)> {
    logits.fold(None, |best, (t, l)| match best {
        Some((_, b)) if l <= b => best,
        _ => Some((t, l)),
    })
}

fn constraint_error(msg: &str, text: &[u8]) -> EngineError {
    EngineError::Constraint {
        message: msg.to_string(),
        raw: String::from_utf8_lossy(text).into_owned(),
    }
}

/// The byte offset of the first stop string that ends after `new_from` (text before it was
/// already checked).
pub(crate) fn find_stop(text: &[u8], new_from: usize, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = s.as_bytes();
            let start = new_from.saturating_sub(s.len() - 1);
            text[start..]
                .windows(s.len())
                .position(|w| w == s)
                .map(|p| start + p)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::{argmax, find_stop, settled_len};

    #[test]
    fn held_back_text_is_a_possible_stop_string_or_a_split_character() {
        let stops = vec!["END".to_string()];
        assert_eq!(settled_len(b"abc EN", 0, &stops), 4);
        assert_eq!(settled_len(b"abc E", 2, &stops), 4);
        assert_eq!(settled_len(b"abc Ex", 0, &stops), 6);
        assert_eq!(settled_len(b"abc", 3, &stops), 3);
        // "é" is two bytes; the first alone waits.
        assert_eq!(settled_len(b"caf\xc3", 0, &[]), 3);
        assert_eq!(settled_len("café".as_bytes(), 0, &[]), 5);
    }

    #[test]
    fn stop_strings_found_across_token_boundaries() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(find_stop(b"abc EN", 4, &stops), None);
        assert_eq!(find_stop(b"abc END more", 6, &stops), Some(4));
        assert_eq!(find_stop(b"a\n\nb", 2, &stops), Some(1));
        assert_eq!(find_stop(b"xyz", 0, &[]), None);
    }

    #[test]
    fn argmax_takes_the_first_largest() {
        let l = [0.5f32, 2.0, -1.0, 2.0];
        assert_eq!(argmax(l.iter().copied().enumerate()), Some((1, 2.0)));
        assert_eq!(argmax(std::iter::empty()), None);
        let not_1 = l.iter().copied().enumerate().filter(|&(t, _)| t != 1);
        assert_eq!(argmax(not_1), Some((3, 2.0)));
    }
}
