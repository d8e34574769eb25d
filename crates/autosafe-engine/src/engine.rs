//! The engine thread: owns the llama.cpp context and runs continuous batching.
//!
//! Requests arrive through a channel as [`Job`]s (prompt tokens, sampling parameters, an
//! optional constraint) and are answered through oneshot channels. Every step builds one
//! `llama_batch` holding the next token of every generating sequence plus prompt chunks of newly
//! admitted ones (each with its own sequence id in a unified KV cache), decodes it in one
//! forward pass, and samples each sequence on its own (temperature, top-p, seed, stop strings,
//! token budget, JSON-schema mask). Each slot has its own KV stream of `n_ctx_seq` cells (a
//! non-unified cache), so a token attends only to its own sequence's cells rather than to every
//! sequence's; a request whose prompt plus `max_tokens` does not fit one stream is refused, so
//! decoding never runs out of KV cache.
//!
//! A second, single-sequence context serves a sequence that runs alone: llama.cpp decodes one
//! sequence about 6 % faster in a context built for one than in one built for eight (measured:
//! docs/engine.md). A request admitted while nothing else runs starts there; when others arrive,
//! its KV cells are copied into a slot of the batched context (`llama_state_seq_get/set`) and it
//! goes on batched; a sequence left alone for [`SOLO_AFTER_STEPS`] steps moves back.

use crate::error::EngineError;
use crate::kv_move::move_seq;
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
    /// Never stop at end-of-generation tokens (benchmarks: exactly `max_tokens` tokens).
    pub ignore_eos: bool,
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
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-generation token.
    Eos,
    /// A stop string was produced.
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
    /// Tokens sampled (including a final end-of-generation token).
    pub completion_tokens: u32,
    /// Why it ended.
    pub finish: Finish,
    /// When things happened.
    pub timing: Timing,
    /// When each token was sampled.
    pub token_times: Vec<Instant>,
}

/// Context settings of the engine thread.
#[derive(Debug, Clone, Copy)]
pub struct ContextSettings {
    /// Context size of each sequence (tokens); the KV cache holds `n_ctx_seq * n_seq_max`.
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
pub const SOLO_AFTER_STEPS: u32 = 16;

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
}

struct Seq {
    job: Job,
    pending: Vec<LlamaToken>,
    n_past: i32,
    prompt_len: u32,
    text: Vec<u8>,
    n_gen: u32,
    sampler: Option<LlamaSampler>,
    admitted: Instant,
    first_token: Option<Instant>,
    token_times: Vec<Instant>,
    queued: Instant,
    /// Batch index of this sequence's logits in the current step.
    logits_at: Option<i32>,
}

/// Creates the context and runs the loop until every sender is gone. The context creation
/// result is sent through `ready` first.
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
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(
            settings.n_ctx_seq.saturating_mul(settings.n_seq_max),
        ))
        .with_n_batch(settings.n_batch)
        .with_n_ubatch(settings.n_batch)
        .with_n_seq_max(settings.n_seq_max)
        .with_kv_unified(false)
        .with_n_threads(settings.threads)
        .with_n_threads_batch(settings.threads);
    let ctx = match model.new_context(backend, params.clone()) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Llama(format!(
                "cannot create context: {e}"
            ))));
            return;
        }
    };
    let solo = if settings.solo_context && settings.n_seq_max > 1 {
        let params = params
            .with_n_ctx(NonZeroU32::new(settings.n_ctx_seq))
            .with_n_seq_max(1);
        match model.new_context(backend, params) {
            Ok(c) => Some(c),
            Err(e) => {
                let _ = ready.send(Err(EngineError::Llama(format!(
                    "cannot create the single-sequence context: {e}"
                ))));
                return;
            }
        }
    } else {
        None
    };
    let _ = ready.send(Ok(()));
    Looper::new(&model, ctx, solo, settings, stats).run(jobs);
}

struct Looper<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// The single-sequence context, if kept.
    solo: Option<LlamaContext<'m>>,
    /// The slot whose sequence lives in `solo` (its KV cells are there, as sequence 0).
    in_solo: Option<usize>,
    /// Consecutive steps with one sequence in the batched context.
    alone_steps: u32,
    stats: Arc<EngineStats>,
    settings: ContextSettings,
    batch: LlamaBatch<'static>,
    slots: Vec<Option<Seq>>,
    waiting: VecDeque<(Job, Instant)>,
    eog: Vec<LlamaToken>,
}

impl<'m> Looper<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        solo: Option<LlamaContext<'m>>,
        settings: ContextSettings,
        stats: Arc<EngineStats>,
    ) -> Self {
        let vocab = model.vocab();
        let eog = (0..model.n_vocab())
            .map(LlamaToken)
            .filter(|t| vocab.is_eog(*t))
            .collect();
        Looper {
            model,
            ctx,
            solo,
            in_solo: None,
            alone_steps: 0,
            stats,
            settings,
            batch: LlamaBatch::new(settings.n_batch as usize, 1),
            slots: (0..settings.n_seq_max).map(|_| None).collect(),
            waiting: VecDeque::new(),
            eog,
        }
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
            self.admit();
            self.drop_cancelled();
            if self.slots.iter().all(Option::is_none) {
                continue;
            }
            self.place();
            self.step();
        }
    }

    fn admit(&mut self) {
        let n_ctx = self.settings.n_ctx_seq as usize;
        while let Some((job, _)) = self.waiting.front() {
            let need = job.prompt.len() + job.params.max_tokens as usize;
            if job.prompt.is_empty() || need > n_ctx {
                let (job, _) = self.waiting.pop_front().expect("front exists");
                let msg = if job.prompt.is_empty() {
                    "empty prompt".to_string()
                } else {
                    format!(
                        "prompt ({} tokens) plus max_tokens ({}) exceeds the context size of a sequence ({n_ctx})",
                        job.prompt.len(),
                        job.params.max_tokens
                    )
                };
                let _ = job.reply.send(Err(EngineError::BadRequest(msg)));
                continue;
            }
            let Some(slot) = self.slots.iter().position(Option::is_none) else {
                break;
            };
            let (job, queued) = self.waiting.pop_front().expect("front exists");
            let sampler = (job.params.temperature > 0.0).then(|| {
                LlamaSampler::chain_simple([
                    LlamaSampler::temp(job.params.temperature),
                    LlamaSampler::top_p(job.params.top_p, 1),
                    LlamaSampler::dist(job.params.seed),
                ])
            });
            self.slots[slot] = Some(Seq {
                pending: job.prompt.clone(),
                prompt_len: job.prompt.len() as u32,
                job,
                n_past: 0,
                text: Vec::new(),
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
                self.release(slot);
            }
        }
    }

    fn release(&mut self, slot: usize) -> Option<Seq> {
        let seq = self.slots[slot].take()?;
        if self.in_solo == Some(slot) {
            self.in_solo = None;
            if let Some(solo) = self.solo.as_mut() {
                let _ = solo.clear_kv_cache_seq(Some(0), None, None);
            }
        } else {
            let _ = self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
        }
        Some(seq)
    }

    /// Decides where the next step runs: a sequence alone goes to (or stays in) the
    /// single-sequence context; when others are active or waiting, it comes back to its slot.
    fn place(&mut self) {
        let Some(solo) = self.solo.as_mut() else {
            return;
        };
        let active: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .collect();
        let crowded = active.len() > 1 || !self.waiting.is_empty();
        let n_streams = self.settings.n_seq_max;
        let (slot, moved) = match self.in_solo {
            Some(slot) if crowded => {
                self.in_solo = None;
                self.stats.moved_to_batch.fetch_add(1, Ordering::Relaxed);
                (
                    slot,
                    move_seq(solo, (0, 1), &mut self.ctx, (slot as i32, n_streams)),
                )
            }
            None if !crowded => {
                let slot = active[0];
                let fresh = self.slots[slot].as_ref().is_some_and(|s| s.n_past == 0);
                if fresh {
                    self.in_solo = Some(slot);
                } else if self.alone_steps >= SOLO_AFTER_STEPS {
                    self.in_solo = Some(slot);
                    self.stats.moved_to_solo.fetch_add(1, Ordering::Relaxed);
                    let moved = move_seq(&mut self.ctx, (slot as i32, n_streams), solo, (0, 1));
                    return self.fail_move(slot, moved);
                }
                return;
            }
            _ => return,
        };
        self.fail_move(slot, moved);
    }

    /// Ends the sequence in `slot` with the error of a failed KV move (its cells are lost);
    /// both contexts forget it.
    fn fail_move(&mut self, slot: usize, moved: Result<(), String>) {
        let Err(msg) = moved else {
            return;
        };
        self.in_solo = None;
        if let Some(solo) = self.solo.as_mut() {
            let _ = solo.clear_kv_cache_seq(Some(0), None, None);
        }
        if let Some(seq) = self.release(slot) {
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
        let mut budget = self.settings.n_batch as usize;
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
                let _ = self.batch.add(tok, seq.n_past, &[seq_id], last);
                seq.n_past += 1;
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
                &mut self.ctx
            }
        };
        if let Err(e) = ctx.decode(&mut self.batch) {
            let msg = format!("decode failed: {e}");
            for slot in 0..self.slots.len() {
                if let Some(seq) = self.release(slot) {
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
                    let seq = self.release(slot).expect("active");
                    let done = Instant::now();
                    let first = seq.first_token.unwrap_or(done);
                    let text = String::from_utf8_lossy(&seq.text).into_owned();
                    let _ = seq.job.reply.send(Ok(Generation {
                        text,
                        prompt_tokens: seq.prompt_len,
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
                    if let Some(seq) = self.release(slot) {
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
        let model = self.model;
        let eog = &self.eog;
        let seq = self.slots[slot].as_mut().expect("active");
        let ctx = match self.solo.as_ref() {
            Some(solo) if solo_step => solo,
            _ => &self.ctx,
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
        if seq.n_gen >= seq.job.params.max_tokens {
            return Ok(Some(Finish::Length));
        }
        seq.pending.push(token);
        Ok(None)
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
pub fn find_stop(text: &[u8], new_from: usize, stops: &[String]) -> Option<usize> {
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
    use super::{argmax, find_stop};

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
