//! A pool of base URLs for one model: balanced by fewest in-flight requests, each with its own
//! AIMD limit, failing URLs cooled down, `Retry-After` pauses honoured.

use crate::aimd::{Aimd, AimdConfig};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Pool tuning.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// AIMD settings per endpoint.
    pub aimd: AimdConfig,
    /// Consecutive failures (transport errors, 5xx other than 503) before a URL is cooled down.
    pub failure_threshold: u32,
    /// First cool-down; doubles on each repeat while the URL keeps failing, up to `max_cooldown`.
    pub cooldown: Duration,
    /// Longest cool-down.
    pub max_cooldown: Duration,
}

impl PoolConfig {
    /// Defaults for this per-endpoint concurrency ceiling.
    pub fn with_max(max_concurrency: usize) -> PoolConfig {
        PoolConfig {
            aimd: AimdConfig::with_max(max_concurrency),
            failure_threshold: 3,
            cooldown: Duration::from_secs(2),
            max_cooldown: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
struct Endpoint {
    in_flight: usize,
    aimd: Aimd,
    consecutive_failures: u32,
    cooled_until: Option<Instant>,
    next_cooldown: Duration,
    paused_until: Option<Instant>,
}

/// A snapshot of one endpoint, for reports and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    /// The base URL.
    pub base_url: String,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Current AIMD limit.
    pub limit: f64,
    /// Whether it is cooling down now.
    pub cooling: bool,
}

struct Inner {
    cfg: PoolConfig,
    urls: Vec<String>,
    eps: Mutex<Vec<Endpoint>>,
    notify: Notify,
}

/// The endpoint pool (cheap to clone).
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

/// A slot on one endpoint; give it back with one of the outcome methods (dropping it is neutral).
pub(crate) struct Lease {
    pool: Pool,
    idx: usize,
    done: bool,
    sent_at: Instant,
}

impl Pool {
    /// A pool over these base URLs (at least one).
    pub fn new(urls: Vec<String>, cfg: PoolConfig) -> Pool {
        let eps = urls
            .iter()
            .map(|_| Endpoint {
                in_flight: 0,
                aimd: Aimd::new(cfg.aimd),
                consecutive_failures: 0,
                cooled_until: None,
                next_cooldown: cfg.cooldown,
                paused_until: None,
            })
            .collect();
        Pool {
            inner: Arc::new(Inner {
                cfg,
                urls,
                eps: Mutex::new(eps),
                notify: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Endpoint>> {
        self.inner.eps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state of every endpoint.
    pub fn status(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        self.lock()
            .iter()
            .zip(&self.inner.urls)
            .map(|(e, u)| EndpointStatus {
                base_url: u.clone(),
                in_flight: e.in_flight,
                limit: e.aimd.limit(),
                cooling: e.cooled_until.is_some_and(|t| t > now),
            })
            .collect()
    }

    /// Waits for a free slot on the endpoint with the fewest requests in flight among those not
    /// paused by `Retry-After`, under their AIMD limit, and not cooling down (cooling ones are used
    /// only when all are cooling).
    pub async fn acquire(&self) -> Lease {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let mut eps = self.lock();
                let now = Instant::now();
                let mut best: Option<(usize, usize)> = None;
                let mut wake_at: Option<Instant> = None;
                // Cooling URLs are used only when every URL is cooling.
                let all_cooling = eps.iter().all(|e| e.cooled_until.is_some_and(|t| t > now));
                for (i, e) in eps.iter().enumerate() {
                    if let Some(p) = e.paused_until.filter(|p| *p > now) {
                        wake_at = Some(wake_at.map_or(p, |w| w.min(p)));
                        continue;
                    }
                    if let Some(c) = e.cooled_until.filter(|c| *c > now && !all_cooling) {
                        wake_at = Some(wake_at.map_or(c, |w| w.min(c)));
                        continue;
                    }
                    if e.in_flight >= e.aimd.slots() {
                        continue;
                    }
                    if best.is_none_or(|b| e.in_flight < b.0) {
                        best = Some((e.in_flight, i));
                    }
                }
                if let Some((_, idx)) = best {
                    eps[idx].in_flight += 1;
                    return Lease {
                        pool: self.clone(),
                        idx,
                        done: false,
                        sent_at: now,
                    };
                }
                wake_at
            };
            match wake_at {
                Some(t) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(t.into()) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn finish(&self, idx: usize, f: impl FnOnce(&mut Endpoint, &PoolConfig, Instant)) {
        {
            let mut eps = self.lock();
            let e = &mut eps[idx];
            e.in_flight -= 1;
            let before = e.aimd.slots();
            f(e, &self.inner.cfg, Instant::now());
            let after = e.aimd.slots();
            for _ in before..after {
                self.inner.notify.notify_one();
            }
        }
        self.inner.notify.notify_one();
    }
}

impl Lease {
    /// The index of the leased endpoint in [`Pool::urls`].
    pub fn index(&self) -> usize {
        self.idx
    }

    /// The base URL of the leased endpoint.
    pub fn base_url(&self) -> &str {
        &self.pool.inner.urls[self.idx]
    }

    /// A success after `latency` (already normalised by the caller for reply length).
    pub fn success(mut self, latency: Duration) {
        self.done = true;
        let sent_at = self.sent_at;
        self.pool.finish(self.idx, |e, cfg, now| {
            e.aimd.on_success(latency, sent_at, now);
            e.consecutive_failures = 0;
            e.next_cooldown = cfg.cooldown;
        });
    }

    /// An overload answer (429/503): shrink the limit and honour `retry_after` for everyone.
    pub(crate) fn overload(mut self, retry_after: Option<Duration>) {
        self.done = true;
        let sent_at = self.sent_at;
        self.pool.finish(self.idx, |e, _, now| {
            e.aimd.on_overload(sent_at, now);
            if let Some(ra) = retry_after {
                let until = now + ra;
                e.paused_until = Some(e.paused_until.map_or(until, |p| p.max(until)));
            }
        });
    }

    /// A failure of the URL (transport error, 5xx): after `failure_threshold` in a row it cools down.
    pub fn failure(mut self) {
        self.done = true;
        self.pool.finish(self.idx, |e, cfg, now| {
            e.consecutive_failures += 1;
            if e.consecutive_failures >= cfg.failure_threshold {
                e.cooled_until = Some(now + e.next_cooldown);
                e.next_cooldown = (e.next_cooldown * 2).min(cfg.max_cooldown);
                e.consecutive_failures = 0;
            }
        });
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.pool.finish(self.idx, |_, _, _| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn balances_by_fewest_in_flight_and_avoids_cooling_urls() {
        let mut cfg = PoolConfig::with_max(4);
        cfg.failure_threshold = 1;
        let pool = Pool::new(vec!["a".into(), "b".into()], cfg);
        let l1 = pool.acquire().await;
        let l2 = pool.acquire().await;
        assert_ne!(l1.base_url(), l2.base_url());
        let bad = l1.base_url().to_string();
        l1.failure();
        drop(l2);
        for _ in 0..3 {
            let l = pool.acquire().await;
            assert_ne!(l.base_url(), bad);
            // held, so the next acquire sees it in flight
            std::mem::forget(l);
        }
    }

    #[tokio::test]
    async fn waits_when_full_and_wakes_on_release() {
        let pool = Pool::new(vec!["a".into()], PoolConfig::with_max(1));
        let l = pool.acquire().await;
        let p2 = pool.clone();
        let waiter = tokio::spawn(async move { p2.acquire().await.base_url().to_string() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        l.success(Duration::from_millis(1));
        assert_eq!(waiter.await.unwrap(), "a");
    }
}
