//! Which failures are retried, how long to wait, and `Retry-After` parsing.

use std::time::{Duration, SystemTime};

/// Why an attempt is retried (the labels used in usage accounting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RetryCause {
    /// HTTP 429.
    RateLimited,
    /// HTTP 503.
    Overloaded,
    /// HTTP 500, 502, 504 and other 5xx.
    ServerError,
    /// HTTP 408 or 409.
    Conflict,
    /// The attempt timed out.
    Timeout,
    /// Connecting failed.
    Connect,
    /// The connection dropped while sending or reading.
    Dropped,
    /// The server answered 200 with a body that is not a chat completion.
    Malformed,
}

impl RetryCause {
    /// Stable label.
    pub fn label(self) -> &'static str {
        match self {
            RetryCause::RateLimited => "429",
            RetryCause::Overloaded => "503",
            RetryCause::ServerError => "5xx",
            RetryCause::Conflict => "408_409",
            RetryCause::Timeout => "timeout",
            RetryCause::Connect => "connect",
            RetryCause::Dropped => "dropped",
            RetryCause::Malformed => "malformed",
        }
    }

    /// The cause for a retryable HTTP status, `None` for statuses that are not retried.
    pub(crate) fn from_status(status: u16) -> Option<RetryCause> {
        match status {
            429 => Some(RetryCause::RateLimited),
            503 => Some(RetryCause::Overloaded),
            408 | 409 => Some(RetryCause::Conflict),
            500..=599 => Some(RetryCause::ServerError),
            _ => None,
        }
    }
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Wait before the first retry (before jitter).
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1-based): `base·2^(attempt-1)` capped at `max`,
    /// then scaled by a random factor in [0.5, 1) ("equal jitter"), and never below `retry_after`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        let jittered = exp.mul_f64(0.5 + 0.5 * fastrand::f64());
        match retry_after {
            Some(ra) => jittered.max(ra),
            None => jittered,
        }
    }
}

/// Parses a `Retry-After` value: delay seconds (fractions accepted) or an HTTP date. Capped at 10 minutes.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Duration::from_secs_f64(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(RetryCause::from_status(429), Some(RetryCause::RateLimited));
        assert_eq!(RetryCause::from_status(502), Some(RetryCause::ServerError));
        assert_eq!(RetryCause::from_status(408), Some(RetryCause::Conflict));
        assert_eq!(RetryCause::from_status(400), None);
        assert_eq!(RetryCause::from_status(401), None);
        assert_eq!(RetryCause::from_status(404), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_respects_retry_after() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 1..10 {
            let d = b.delay(attempt, None);
            let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(1));
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d:?}");
        }
        assert!(b.delay(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
