//! A scripted OpenAI-compatible chat-completions server on loopback, for tests and benchmarks.
//!
//! It is the only stand-in for a remote provider in this project: tests and benches start it
//! in-process, point a real HTTP client at [`ScriptedServer::base_url`], and assert on what the
//! server saw ([`ScriptedServer::request_count`], [`ScriptedServer::log`]).
//!
//! How a request to `POST /v1/chat/completions` is answered, in this order:
//! 1. the next [`Reply`] pushed with [`ScriptedServer::push`] (a FIFO script), else
//! 2. the responder closure set with [`ScriptedServer::set_responder`] (a function of the request), else
//! 3. a random fault drawn from [`FaultRates`] (429 with `Retry-After`, 500, 503, dropped connection,
//!    malformed JSON body), else
//! 4. the default reply: one choice per requested `n` whose content is `echo: <last user message>`.
//!
//! Successful replies wait [`ServerConfig::latency`] ± [`ServerConfig::jitter`]; faults answer at once.
//! In queueing mode ([`ServerConfig::max_parallel`]) at most that many requests are served at a time
//! and the rest wait in line, so latency grows with load instead of the server answering 429 (what
//! vLLM does).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use autosafe_scripted_server::{Reply, ScriptedServer, ServerConfig};
//! let server = ScriptedServer::start(ServerConfig::default()).await?;
//! server.push(Reply::status(429).retry_after("1"));
//! server.push(Reply::text("hello"));
//! let url = server.base_url(); // http://127.0.0.1:PORT/v1
//! # let _ = url; Ok(()) }
//! ```

mod reply;
mod state;

pub use reply::Reply;
pub use state::LogEntry;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use state::{InFlightGuard, Shared};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Probabilities (0..=1) of random faults for requests not answered by the script or responder.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// 429 Too Many Requests with `Retry-After: ServerConfig::retry_after_s`.
    pub too_many_requests: f64,
    /// 500 Internal Server Error.
    pub internal_error: f64,
    /// 503 Service Unavailable.
    pub unavailable: f64,
    /// The connection is dropped before the reply body completes.
    pub drop_connection: f64,
    /// 200 with a body that is not JSON.
    pub malformed_body: f64,
}

impl FaultRates {
    /// The sum of all rates.
    pub fn total(&self) -> f64 {
        self.too_many_requests
            + self.internal_error
            + self.unavailable
            + self.drop_connection
            + self.malformed_body
    }
}

/// A function of the request that decides the reply.
pub type Responder = Arc<dyn Fn(&RequestInfo) -> Reply + Send + Sync>;

/// What a [`Responder`] sees of a request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// 0-based arrival index.
    pub index: usize,
    /// The parsed JSON body (`Value::Null` when it was not JSON).
    pub body: Value,
    /// Requests in flight at arrival, this one included.
    pub in_flight: usize,
    /// The `Authorization` header, if any (a responder can echo it, as some gateways do in
    /// their error bodies).
    pub authorization: Option<String>,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Fixed latency of successful replies.
    pub latency: Duration,
    /// Uniform jitter added to or subtracted from `latency`.
    pub jitter: Duration,
    /// Random fault rates.
    pub faults: FaultRates,
    /// `Retry-After` value (seconds) sent with random 429s; `None` sends no header.
    pub retry_after_s: Option<u32>,
    /// Queueing mode: serve at most this many requests at once, queue the rest.
    pub max_parallel: Option<usize>,
    /// Keep request bodies in the log (costs memory in long benches).
    pub record_bodies: bool,
    /// Honour `n` in the default reply (llama.cpp's server does not: it answers one choice).
    pub supports_n: bool,
    /// Seed of the fault and jitter generator.
    pub seed: u64,
    /// Model name put in replies.
    pub model: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            faults: FaultRates::default(),
            retry_after_s: Some(1),
            max_parallel: None,
            record_bodies: true,
            supports_n: true,
            seed: 7,
            model: "scripted".to_string(),
        }
    }
}

/// A running scripted server. Dropping it stops the server.
pub struct ScriptedServer {
    shared: Arc<Shared>,
    base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedServer {
    /// Starts the server on `127.0.0.1:0` inside the current tokio runtime.
    pub async fn start(config: ServerConfig) -> io::Result<ScriptedServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (tx, rx) = oneshot::channel();
        tokio::spawn(serve(listener, shared.clone(), rx));
        Ok(ScriptedServer {
            shared,
            base_url: format!("http://{addr}/v1"),
            shutdown: Some(tx),
            thread: None,
        })
    }

    /// Starts the server on its own OS thread with a single-threaded runtime, so that its CPU time
    /// can be told apart from the caller's ([`ScriptedServer::server_cpu_time`]).
    pub fn start_on_thread(config: ServerConfig) -> io::Result<ScriptedServer> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (tx, rx) = oneshot::channel();
        let thread_shared = shared.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("scripted-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                thread_shared.set_thread_id(state::current_thread_id());
                rt.block_on(async move {
                    match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(listener) => {
                            let _ = ready_tx.send(Ok(()));
                            serve(listener, thread_shared, rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("scripted server thread died"))??;
        Ok(ScriptedServer {
            shared,
            base_url: format!("http://{addr}/v1"),
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The OpenAI-style base URL, e.g. `http://127.0.0.1:40123/v1`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Queues a scripted reply (first in, first out).
    pub fn push(&self, reply: Reply) {
        self.shared
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(reply);
    }

    /// Queues several scripted replies.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(replies);
    }

    /// Sets the function that answers requests the script does not.
    pub fn set_responder(&self, f: impl Fn(&RequestInfo) -> Reply + Send + Sync + 'static) {
        *self
            .shared
            .responder
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
    }

    /// Removes the responder.
    pub fn clear_responder(&self) {
        *self
            .shared
            .responder
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Replaces the random fault rates.
    pub fn set_faults(&self, faults: FaultRates) {
        self.shared
            .config
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .faults = faults;
    }

    /// Chat-completion requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Highest number of requests in flight at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.shared
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A copy of the request log, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Clears the log, the request counter and the in-flight peak.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// CPU time used by the server thread, for servers started with
    /// [`ScriptedServer::start_on_thread`] on Linux; `None` otherwise.
    pub fn server_cpu_time(&self) -> Option<Duration> {
        self.shared.thread_cpu_time()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
) {
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .with_state(shared);
    let server = axum::serve(listener, app);
    tokio::select! {
        _ = server => {}
        _ = stop => {}
    }
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let model = shared
        .config
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .model
        .clone();
    reply::json_response(
        200,
        &json!({"object": "list", "data": [{"id": model, "object": "model"}]}),
    )
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let guard = InFlightGuard::enter(&shared);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let info = RequestInfo {
        index: guard.index,
        body,
        in_flight: guard.in_flight_at_arrival,
        authorization,
    };
    let (reply, faults_cfg) = shared.decide(&info);
    shared.record(&info, info.authorization.clone(), reply.kind());
    let response = match reply {
        Reply::Status { .. } | Reply::Malformed(_) | Reply::Drop => {
            reply::render(reply, &info, &faults_cfg)
        }
        other => {
            let _permit = match &shared.queue {
                Some(sem) => Some(sem.acquire().await),
                None => None,
            };
            let delay = shared.delay(&faults_cfg);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            reply::render(other, &info, &faults_cfg)
        }
    };
    drop(guard);
    response
}
