//! Optional requests-per-minute and tokens-per-minute budgets (GCRA via `governor`).

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

/// Per-model rate budgets shared by all endpoints of the model.
pub(crate) struct Budget {
    rpm: Option<DefaultDirectRateLimiter>,
    tpm: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
}

impl Budget {
    /// A budget; `None` (or 0) disables that limit.
    pub fn new(rpm: Option<u32>, tpm: Option<u32>) -> Budget {
        Budget {
            rpm: rpm
                .and_then(NonZeroU32::new)
                .map(|r| RateLimiter::direct(Quota::per_minute(r))),
            tpm: tpm
                .and_then(NonZeroU32::new)
                .map(|t| (RateLimiter::direct(Quota::per_minute(t)), t)),
        }
    }

    /// True when no limit is set.
    pub(crate) fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    /// Waits until one more request of about `tokens` tokens fits in the budget. A request larger
    /// than the whole per-minute token budget waits for a full budget.
    pub async fn wait(&self, tokens: u64) {
        if let Some(r) = &self.rpm {
            r.until_ready().await;
        }
        if let Some((t, cap)) = &self.tpm {
            let n = NonZeroU32::new(tokens.clamp(1, u64::from(cap.get())) as u32)
                .unwrap_or(NonZeroU32::MIN);
            // n <= burst size, so this cannot fail; ignore the impossible error.
            let _ = t.until_n_ready(n).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn rpm_budget_spaces_requests_after_the_burst() {
        // 1200/min = one every 50 ms once the burst of 1200 is spent.
        let b = Budget::new(Some(1200), None);
        for _ in 0..1200 {
            b.wait(1).await;
        }
        let t1 = Instant::now();
        b.wait(1).await;
        b.wait(1).await;
        assert!(
            t1.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t1.elapsed()
        );
        assert!(Budget::new(None, None).is_unlimited());
    }
}
