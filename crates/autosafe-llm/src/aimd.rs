//! AIMD adaptive concurrency for one endpoint.
//!
//! The limit grows by one per window of successes (`+1/limit` per success) and shrinks
//! multiplicatively on overload: halved on 429/503, cut by 10% when the smoothed latency exceeds
//! `latency_tolerance` × the baseline (servers such as vLLM queue instead of answering 429); while
//! latency stays high the limit does not grow. Only a request sent after the last decrease can cause
//! the next one (as in TCP: one decrease per round trip), so one burst of errors counts once. The
//! limit stays within `[1, max]`. Latencies are normalised by the caller for reply length; the
//! baseline is the lowest normalised latency seen, creeping up by 0.01% of the gap per success so
//! that a server that became slower for good is re-learnt slowly rather than never.

use std::time::{Duration, Instant};

/// Tuning of the limiter.
#[derive(Debug, Clone, Copy)]
pub struct AimdConfig {
    /// Ceiling (the configured `max_concurrency`).
    pub max: f64,
    /// Starting limit (defaults to `max`: optimistic, shrinks on the first signal).
    pub initial: f64,
    /// Factor applied on 429/503.
    pub overload_factor: f64,
    /// Factor applied when latency rises.
    pub latency_factor: f64,
    /// Smoothed latency above `latency_tolerance × baseline` counts as a queueing signal.
    pub latency_tolerance: f64,
}

impl AimdConfig {
    /// Defaults for this ceiling.
    pub fn with_max(max: usize) -> AimdConfig {
        let max = max.max(1) as f64;
        AimdConfig {
            max,
            initial: max,
            overload_factor: 0.5,
            latency_factor: 0.9,
            latency_tolerance: 2.0,
        }
    }
}

/// The state of one endpoint's limiter.
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    cfg: AimdConfig,
    limit: f64,
    ewma_s: Option<f64>,
    baseline_s: Option<f64>,
    last_decrease: Option<Instant>,
}

impl Aimd {
    /// A limiter starting at `cfg.initial`.
    pub fn new(cfg: AimdConfig) -> Aimd {
        Aimd {
            limit: cfg.initial.clamp(1.0, cfg.max),
            cfg,
            ewma_s: None,
            baseline_s: None,
            last_decrease: None,
        }
    }

    /// The current limit (fractional; the number of slots is its floor).
    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// Whole slots available now.
    pub fn slots(&self) -> usize {
        self.limit.floor().max(1.0) as usize
    }

    fn may_decrease(&self, sent_at: Instant) -> bool {
        self.last_decrease.is_none_or(|t| sent_at >= t)
    }

    /// Records a success of a request sent at `sent_at` with this latency (normalised for reply length).
    pub(crate) fn on_success(&mut self, latency: Duration, sent_at: Instant, now: Instant) {
        let l = latency.as_secs_f64();
        let ewma = match self.ewma_s {
            Some(e) => e + 0.1 * (l - e),
            None => l,
        };
        self.ewma_s = Some(ewma);
        let baseline = match self.baseline_s {
            Some(b) if l >= b => b + 0.0001 * (l - b),
            _ => l,
        };
        self.baseline_s = Some(baseline);
        if ewma > baseline * self.cfg.latency_tolerance {
            if self.may_decrease(sent_at) {
                self.limit = (self.limit * self.cfg.latency_factor).max(1.0);
                self.last_decrease = Some(now);
            }
        } else {
            self.limit = (self.limit + 1.0 / self.limit).min(self.cfg.max);
        }
    }

    /// Records an overload answer (429, 503) to a request sent at `sent_at`.
    pub(crate) fn on_overload(&mut self, sent_at: Instant, now: Instant) {
        if self.may_decrease(sent_at) {
            self.limit = (self.limit * self.cfg.overload_factor).max(1.0);
            self.last_decrease = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_once_per_round_trip_and_recovers_additively() {
        let mut a = Aimd::new(AimdConfig::with_max(16));
        let t0 = Instant::now();
        let mut t = t0 + Duration::from_millis(1);
        a.on_overload(t0, t);
        a.on_overload(t0, t); // sent before the decrease: counted once
        assert_eq!(a.slots(), 8);
        for _ in 0..5 {
            let sent = t;
            t += Duration::from_millis(10);
            a.on_overload(sent, t);
        }
        assert_eq!(a.slots(), 1);
        for _ in 0..200 {
            let sent = t;
            t += Duration::from_millis(10);
            a.on_success(Duration::from_millis(10), sent, t);
        }
        assert_eq!(a.slots(), 16);
    }

    #[test]
    fn rising_latency_shrinks_the_limit_and_holds_it() {
        let mut a = Aimd::new(AimdConfig::with_max(64));
        let mut t = Instant::now();
        for _ in 0..20 {
            let sent = t;
            t += Duration::from_millis(10);
            a.on_success(Duration::from_millis(10), sent, t);
        }
        for _ in 0..100 {
            let sent = t;
            t += Duration::from_millis(200);
            a.on_success(Duration::from_millis(200), sent, t);
        }
        assert!(a.limit() < 8.0, "limit {}", a.limit());
    }
}
