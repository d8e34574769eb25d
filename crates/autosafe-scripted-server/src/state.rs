//! Shared server state: script, responder, counters and the request log.

use crate::{FaultRates, Reply, RequestInfo, Responder, ServerConfig};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// One received request as the server saw it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// 0-based arrival index.
    pub index: usize,
    /// Arrival time since the server started.
    pub at: Duration,
    /// Requests in flight at arrival, this one included.
    pub in_flight: usize,
    /// How it was answered: `text`, `tool_calls`, `length`, `body`, `status:429`, `malformed`, `drop`, `default`.
    pub outcome: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body, when [`ServerConfig::record_bodies`] is on.
    pub body: Option<serde_json::Value>,
}

pub(crate) struct Shared {
    pub(crate) config: RwLock<ServerConfig>,
    pub(crate) script: Mutex<VecDeque<Reply>>,
    pub(crate) responder: RwLock<Option<Responder>>,
    pub(crate) count: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_in_flight: AtomicUsize,
    pub(crate) log: Mutex<Vec<LogEntry>>,
    pub(crate) queue: Option<Semaphore>,
    rng: Mutex<fastrand::Rng>,
    started: Instant,
    thread_id: OnceLock<u64>,
}

impl Shared {
    pub(crate) fn new(config: ServerConfig) -> Shared {
        Shared {
            queue: config.max_parallel.map(|n| Semaphore::new(n.max(1))),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            config: RwLock::new(config),
            script: Mutex::new(VecDeque::new()),
            responder: RwLock::new(None),
            count: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            started: Instant::now(),
            thread_id: OnceLock::new(),
        }
    }

    pub(crate) fn reset(&self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.count.store(0, Ordering::SeqCst);
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Picks the reply: script, then responder, then random faults, then the default.
    pub(crate) fn decide(&self, info: &RequestInfo) -> (Reply, ServerConfig) {
        let cfg = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(r) = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
            return (r, cfg);
        }
        let responder = self
            .responder
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(f) = responder {
            return (f(info), cfg);
        }
        let reply = self
            .random_fault(&cfg.faults, cfg.retry_after_s)
            .unwrap_or(Reply::Default);
        (reply, cfg)
    }

    fn random_fault(&self, f: &FaultRates, retry_after_s: Option<u32>) -> Option<Reply> {
        if f.total() <= 0.0 {
            return None;
        }
        let x = self.rng.lock().unwrap_or_else(|e| e.into_inner()).f64();
        let mut edge = f.too_many_requests;
        if x < edge {
            let r = Reply::status(429);
            return Some(match retry_after_s {
                Some(s) => r.retry_after(s.to_string()),
                None => r,
            });
        }
        edge += f.internal_error;
        if x < edge {
            return Some(Reply::status(500));
        }
        edge += f.unavailable;
        if x < edge {
            return Some(Reply::status(503));
        }
        edge += f.drop_connection;
        if x < edge {
            return Some(Reply::Drop);
        }
        edge += f.malformed_body;
        if x < edge {
            return Some(Reply::Malformed("{\"choices\": [ this is not json".into()));
        }
        None
    }

    /// Latency ± jitter for a successful reply.
    pub(crate) fn delay(&self, cfg: &ServerConfig) -> Duration {
        if cfg.jitter.is_zero() {
            return cfg.latency;
        }
        let u = self.rng.lock().unwrap_or_else(|e| e.into_inner()).f64() * 2.0 - 1.0;
        let secs = cfg.latency.as_secs_f64() + u * cfg.jitter.as_secs_f64();
        Duration::from_secs_f64(secs.max(0.0))
    }

    pub(crate) fn record(
        &self,
        info: &RequestInfo,
        authorization: Option<String>,
        outcome: String,
    ) {
        let record_bodies = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .record_bodies;
        let entry = LogEntry {
            index: info.index,
            at: self.started.elapsed(),
            in_flight: info.in_flight,
            outcome,
            authorization,
            body: record_bodies.then(|| info.body.clone()),
        };
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    pub(crate) fn set_thread_id(&self, tid: Option<u64>) {
        if let Some(tid) = tid {
            let _ = self.thread_id.set(tid);
        }
    }

    pub(crate) fn thread_cpu_time(&self) -> Option<Duration> {
        let tid = self.thread_id.get()?;
        let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(ns))
    }
}

/// The Linux thread id of the calling thread (from `/proc/thread-self`), if available.
pub(crate) fn current_thread_id() -> Option<u64> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Counts a request in and out of flight.
pub(crate) struct InFlightGuard<'a> {
    shared: &'a Shared,
    pub(crate) index: usize,
    pub(crate) in_flight_at_arrival: usize,
}

impl<'a> InFlightGuard<'a> {
    pub(crate) fn enter(shared: &'a Shared) -> Self {
        let index = shared.count.fetch_add(1, Ordering::SeqCst);
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlightGuard {
            shared,
            index,
            in_flight_at_arrival: now,
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
