//! [`Engine`]: one loaded GGUF model, its chat template, its constraint factory and the
//! thread that decodes for it; implements [`ChatModel`].

use crate::constraint::{ConstraintFactory, reply_schema};
use crate::engine::{
    self, ContextSettings, DeltaSink, EngineStats, Finish, Generation, Job, SamplingParams,
};
use crate::error::EngineError;
use crate::paths;
use crate::template::ChatTemplate;
use crate::toolcall::parse_tool_calls;
use autosafe_llm::{
    CallContext, ChatModel, ChatReply, ChatRequest, Choice, FinishReason, LlmError, ToolChoice,
    Usage,
};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

const DEFAULT_TEMPLATE: &str = include_str!("../prompts/chatml_default.j2");

/// How to run a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EngineOptions {
    /// CPU threads (default: the machine's cores).
    pub threads: Option<usize>,
    /// The largest context of one sequence (default: the model's training context, at most
    /// 32768). The KV cache is sized to need: it starts small and grows to the longest request
    /// seen, up to this; a request needing more is refused with an error naming this setting.
    pub n_ctx: Option<u32>,
    /// Most sequences decoded together (default 8); streams are added as requests wait for
    /// them, up to this.
    pub n_seq_max: u32,
    /// Most tokens per forward pass (default 512).
    pub n_batch: u32,
    /// `max_tokens` when a request gives none (default 512).
    pub default_max_tokens: u32,
    /// Keep a second, single-sequence context for a sequence that runs alone (default true;
    /// one sequence decodes faster there; costs one more sequence's KV cache).
    pub solo_context: bool,
}

impl EngineOptions {
    /// The defaults with what the environment sets: `AUTOSAFE_ENGINE_THREADS`,
    /// `AUTOSAFE_ENGINE_CTX` (the largest context of a sequence) and `AUTOSAFE_ENGINE_SEQS` (most
    /// sequences at once). A value that is not a positive number is an error naming the variable.
    pub fn from_env() -> Result<EngineOptions, EngineError> {
        let read = |name: &str| -> Result<Option<u32>, EngineError> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(v) if v.trim().is_empty() => Ok(None),
                Ok(v) => v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or_else(|| {
                        EngineError::BadRequest(format!(
                            "{name}={v:?} is not a positive whole number"
                        ))
                    }),
            }
        };
        let mut opts = EngineOptions {
            threads: read("AUTOSAFE_ENGINE_THREADS")?.map(|t| t as usize),
            n_ctx: read("AUTOSAFE_ENGINE_CTX")?,
            ..EngineOptions::default()
        };
        if let Some(seqs) = read("AUTOSAFE_ENGINE_SEQS")? {
            opts.n_seq_max = seqs;
        }
        Ok(opts)
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: None,
            n_ctx: None,
            n_seq_max: 8,
            n_batch: 512,
            default_max_tokens: 512,
            solo_context: true,
        }
    }
}

/// A loaded model served by its own engine thread. Cheap to share through `Arc`; use
/// [`Engine::shared`] so a process loads each model once.
pub struct Engine {
    name: String,
    path: PathBuf,
    model: Arc<LlamaModel>,
    template: ChatTemplate,
    constraints: ConstraintFactory,
    jobs: Sender<(Job, Instant)>,
    settings: ContextSettings,
    stats: Arc<EngineStats>,
    default_max_tokens: u32,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("settings", &self.settings)
            .finish()
    }
}

type Registry = Mutex<HashMap<(PathBuf, EngineOptions), Weak<Engine>>>;

fn registry() -> &'static Registry {
    static REG: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REG.get_or_init(Default::default)
}

impl Engine {
    /// The engine for `spec` (`local:smollm2`, `local:/path/x.gguf`), loading it unless this
    /// process already has it loaded with the same options.
    pub fn shared(spec: &str, opts: EngineOptions) -> Result<Arc<Engine>, EngineError> {
        let path = paths::resolve_spec(spec)?;
        let k = (path.clone(), opts);
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = reg.get(&k).and_then(Weak::upgrade) {
            return Ok(e);
        }
        let engine = Arc::new(Engine::load(spec, opts)?);
        reg.insert(k, Arc::downgrade(&engine));
        Ok(engine)
    }

    /// The engines this process has loaded through [`Engine::shared`] and still uses.
    pub fn loaded() -> Vec<Arc<Engine>> {
        let reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.values().filter_map(Weak::upgrade).collect()
    }

    /// One line on what the engine did: prompt tokens, how many were reused from earlier
    /// requests (prefill saved), and the largest KV cache it needed.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (prompt, reused) = (load(&s.prompt_tokens), load(&s.prompt_tokens_reused));
        format!(
            "engine {}: prompt tokens {prompt}, reused from earlier requests {reused} ({:.0}%), KV cache at most {} tokens ({} stream(s) × {} now, {} resize(s))",
            self.name,
            if prompt == 0 {
                0.0
            } else {
                100.0 * reused as f64 / prompt as f64
            },
            load(&s.peak_kv_cells),
            load(&s.streams),
            load(&s.ctx_per_stream),
            load(&s.resizes),
        )
    }

    /// Loads the model named by `spec` and starts its engine thread.
    pub fn load(spec: &str, opts: EngineOptions) -> Result<Engine, EngineError> {
        let path = paths::resolve_spec(spec)?;
        let name = if spec.starts_with("local:") {
            spec.to_string()
        } else {
            format!("local:{spec}")
        };
        Self::load_path(&path, name, opts)
    }

    /// Loads the GGUF at `path`, naming the model `name`.
    pub fn load_path(
        path: &Path,
        name: String,
        opts: EngineOptions,
    ) -> Result<Engine, EngineError> {
        paths::check_model_file(path)?;
        let backend = crate::backend()?;
        // Read, not mapped: llama.cpp repacks most weights into its own buffers for faster
        // kernels, and with a mapping the file's pages stayed resident beside those copies
        // (measured with the 1.5B: 1.1 GB file-backed + 1.1 GB anonymous RSS).
        let params = LlamaModelParams::default().with_use_mmap(false);
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
            EngineError::ModelCorrupt {
                path: path.to_path_buf(),
                reason: format!("llama.cpp cannot load it: {e}"),
            }
        })?;
        let model = Arc::new(model);
        let vocab = model.vocab();
        let piece = |t: LlamaToken| {
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        };
        let bos = if vocab.bos().0 >= 0 {
            piece(vocab.bos())
        } else {
            String::new()
        };
        let eos = if vocab.eos().0 >= 0 {
            piece(vocab.eos())
        } else {
            String::new()
        };
        let source = model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok())
            .unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
        let template = ChatTemplate::new(&source, &bos, &eos)?;
        let constraints = ConstraintFactory::new(
            llama_cpp_2::sampling::LlamaSampler::llguidance_tok_env(&model),
        )?;
        let threads = opts
            .threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1);
        let n_ctx = opts
            .n_ctx
            .unwrap_or_else(|| model.n_ctx_train().min(32768))
            .max(64);
        let settings = ContextSettings {
            n_ctx_seq: n_ctx,
            n_batch: opts.n_batch.max(1),
            n_seq_max: opts.n_seq_max.max(1),
            threads: threads as i32,
            solo_context: opts.solo_context,
        };
        let stats = Arc::new(EngineStats::default());
        let thread_stats = Arc::clone(&stats);
        let (jobs, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_model = Arc::clone(&model);
        std::thread::Builder::new()
            .name("autosafe-engine".into())
            .spawn(move || engine::run(thread_model, settings, thread_stats, rx, ready_tx))
            .map_err(|e| EngineError::Llama(format!("cannot start engine thread: {e}")))?;
        ready_rx.recv().map_err(|_| EngineError::Stopped)??;
        Ok(Engine {
            name,
            path: path.to_path_buf(),
            model,
            template,
            constraints,
            jobs,
            settings,
            stats,
            default_max_tokens: opts.default_max_tokens,
        })
    }

    /// The GGUF file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters of the engine thread (forward passes per context, sequences moved between them).
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Context, batch and thread settings in effect.
    pub fn settings(&self) -> ContextSettings {
        self.settings
    }

    /// The chat template in use.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Tokenizes `text`, parsing special tokens (as a rendered chat prompt needs).
    pub fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), false, true)
    }

    /// Renders a request's conversation into the prompt text.
    pub fn render(&self, request: &ChatRequest) -> Result<String, EngineError> {
        let tools = if matches!(request.tool_choice, Some(ToolChoice::None)) {
            &[][..]
        } else {
            &request.tools[..]
        };
        self.template.render(&request.messages, tools)
    }

    /// A matcher for this JSON schema (compact JSON).
    pub(crate) fn json_matcher(&self, schema: &serde_json::Value) -> Result<Matcher, EngineError> {
        self.constraints.json_schema(schema)
    }

    /// Queues a generation on the engine thread now; the receiver gets the result.
    pub fn submit(
        &self,
        prompt: Vec<LlamaToken>,
        params: SamplingParams,
        matcher: Option<Matcher>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Generation, EngineError>>, EngineError> {
        self.submit_job(prompt, params, matcher, None)
    }

    fn submit_job(
        &self,
        prompt: Vec<LlamaToken>,
        params: SamplingParams,
        matcher: Option<Matcher>,
        deltas: Option<DeltaSink>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Generation, EngineError>>, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send((
                Job {
                    prompt,
                    params,
                    matcher,
                    reply: tx,
                    deltas,
                },
                Instant::now(),
            ))
            .map_err(|_| EngineError::Stopped)?;
        Ok(rx)
    }

    /// Generates from prompt tokens on the engine thread.
    pub async fn generate(
        &self,
        prompt: Vec<LlamaToken>,
        params: SamplingParams,
        matcher: Option<Matcher>,
    ) -> Result<Generation, EngineError> {
        self.submit(prompt, params, matcher)?
            .await
            .map_err(|_| EngineError::Stopped)?
    }

    fn sampling(&self, request: &ChatRequest, index: u32) -> SamplingParams {
        let seed = match request.seed {
            Some(s) => (s as u32) ^ ((s >> 32) as u32),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        };
        SamplingParams {
            max_tokens: request.max_tokens.unwrap_or(self.default_max_tokens).max(1),
            temperature: request.temperature.unwrap_or(1.0).max(0.0),
            top_p: request.top_p.unwrap_or(1.0).clamp(0.0, 1.0),
            seed: seed.wrapping_add(index),
            stop: request.stop.clone(),
            end_after_json: request.end_after_json.clone().or_else(|| {
                // One tool call per reply: stop after the first complete call.
                (request.parallel_tool_calls == Some(false)
                    && !request.tools.is_empty()
                    && !matches!(request.tool_choice, Some(ToolChoice::None)))
                .then(|| "<tool_call>".to_string())
            }),
            ignore_eos: false,
        }
    }

    /// Answers a request (the work behind [`ChatModel::chat`]).
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatReply, EngineError> {
        self.start(request, None)?.finish().await
    }

    /// Checks a request and queues its choices now; [`PendingReply::finish`] waits for them.
    /// With `deltas`, each choice's text is sent there as it is generated (`(choice index,
    /// text)`; see [`DeltaSink`]). A request that cannot be served fails here, before any
    /// token is generated.
    pub fn start(
        &self,
        request: &ChatRequest,
        deltas: Option<&tokio::sync::mpsc::UnboundedSender<(u32, String)>>,
    ) -> Result<PendingReply, EngineError> {
        let prompt = self.render(request)?;
        let tokens = self.tokenize(&prompt);
        let schema = reply_schema(
            &request.tools,
            request.tool_choice.as_ref(),
            request.response_format.as_ref(),
        )?;
        let n = request.n.unwrap_or(1).max(1);
        let mut pending = Vec::new();
        for i in 0..n {
            let matcher = schema.as_ref().map(|s| self.json_matcher(s)).transpose()?;
            let sink = deltas.map(|tx| DeltaSink {
                index: i,
                tx: tx.clone(),
            });
            pending.push(self.submit_job(
                tokens.clone(),
                self.sampling(request, i),
                matcher,
                sink,
            )?);
        }
        Ok(PendingReply {
            model: self.name.clone(),
            pending,
            prompt_tokens: tokens.len() as u64,
            use_tools: uses_tools(request),
            names: request.tools.iter().map(|t| t.name.clone()).collect(),
        })
    }
}

/// Whether a reply to `request` may be a tool call (tools offered and not switched off).
pub fn uses_tools(request: &ChatRequest) -> bool {
    !request.tools.is_empty() && !matches!(request.tool_choice, Some(ToolChoice::None))
}

/// The choices of a request queued by [`Engine::start`]. Dropping it cancels them.
#[derive(Debug)]
pub struct PendingReply {
    model: String,
    pending: Vec<tokio::sync::oneshot::Receiver<Result<Generation, EngineError>>>,
    prompt_tokens: u64,
    use_tools: bool,
    names: Vec<String>,
}

impl PendingReply {
    /// Waits for every choice; the reply, tool calls parsed.
    pub async fn finish(self) -> Result<ChatReply, EngineError> {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let mut choices = Vec::new();
        let mut usage = Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: 0,
        };
        for rx in self.pending {
            let g = rx.await.map_err(|_| EngineError::Stopped)??;
            usage.completion_tokens += u64::from(g.completion_tokens);
            choices.push(to_choice(g, self.use_tools, &names));
        }
        Ok(ChatReply {
            model: self.model,
            choices,
            usage,
            cached: false,
        })
    }
}

fn to_choice(g: Generation, use_tools: bool, names: &[&str]) -> Choice {
    if g.finish == Finish::Length {
        return Choice {
            content: Some(g.text),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Length,
        };
    }
    if use_tools {
        let (content, calls) = parse_tool_calls(&g.text, names);
        if !calls.is_empty() {
            return Choice {
                content,
                tool_calls: calls,
                finish_reason: FinishReason::ToolCalls,
            };
        }
    }
    Choice {
        content: Some(g.text),
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Stop,
    }
}

#[async_trait::async_trait]
impl ChatModel for Engine {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: &ChatRequest, _ctx: &CallContext) -> Result<ChatReply, LlmError> {
        self.complete(request).await.map_err(LlmError::from)
    }
}
