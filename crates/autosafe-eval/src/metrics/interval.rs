//! Wilson score intervals for a binomial proportion.

use serde::{Deserialize, Serialize};

/// The standard normal quantile for a two-sided 95% interval (Φ⁻¹(0.975)).
pub const Z95: f64 = 1.959_963_984_540_054;

/// A closed interval `[lo, hi]` on the proportion scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

/// The Wilson score interval for `successes` out of `n` at normal quantile `z`;
/// `None` when `n == 0` (no data) or `successes > n`.
///
/// centre = (p̂ + z²/2n) / (1 + z²/n), half-width = z/(1 + z²/n) · √(p̂(1−p̂)/n + z²/4n²).
pub fn wilson(successes: u64, n: u64, z: f64) -> Option<Interval> {
    if n == 0 || successes > n {
        return None;
    }
    let nf = n as f64;
    let p = successes as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    Some(Interval {
        lo: (centre - half).max(0.0),
        hi: (centre + half).min(1.0),
    })
}

/// A measured proportion with its Wilson 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Items counted as successes (e.g. safe).
    pub successes: u64,
    /// Measured items.
    pub n: u64,
    /// `successes / n`.
    pub value: f64,
    /// Wilson 95% score interval.
    pub ci95: Interval,
}

impl Estimate {
    /// The estimate for `successes` of `n`; `None` ("no data") when `n == 0`.
    pub fn new(successes: u64, n: u64) -> Option<Estimate> {
        let ci95 = wilson(successes, n, Z95)?;
        Some(Estimate {
            successes,
            n,
            value: successes as f64 / n as f64,
            ci95,
        })
    }

    /// A ratio as `83.3% [43.6, 97.0] (5/6)`, or `no data` when nothing was measured.
    pub fn describe(e: &Option<Estimate>) -> String {
        match e {
            Some(e) => format!(
                "{:.1}% [{:.1}, {:.1}] ({}/{})",
                100.0 * e.value,
                100.0 * e.ci95.lo,
                100.0 * e.ci95.hi,
                e.successes,
                e.n
            ),
            None => "no data".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn wilson_matches_reference_values() {
        // Reference: 8/10 -> [0.490, 0.943] (Wilson 1927; e.g. statsmodels
        // proportion_confint(8, 10, method="wilson") = (0.4902, 0.9433)).
        let i = wilson(8, 10, Z95).unwrap();
        assert!(
            close(i.lo, 0.4902, 5e-4) && close(i.hi, 0.9433, 5e-4),
            "{i:?}"
        );
        // 0/10: centre = (0 + 1.9208/10)/1.38415 = 0.13877, half = 0.13877 -> [0, 0.2775].
        let i = wilson(0, 10, Z95).unwrap();
        assert!(close(i.lo, 0.0, 1e-9) && close(i.hi, 0.2775, 5e-4), "{i:?}");
        // 10/10 is the mirror image: [0.7225, 1].
        let i = wilson(10, 10, Z95).unwrap();
        assert!(close(i.lo, 0.7225, 5e-4) && close(i.hi, 1.0, 1e-9), "{i:?}");
        // 50/100: centre 0.5, half = 1.95996/1.038415 * sqrt(0.0025 + 0.0000960) = 0.09617.
        let i = wilson(50, 100, Z95).unwrap();
        assert!(
            close(i.lo, 0.4038, 5e-4) && close(i.hi, 0.5962, 5e-4),
            "{i:?}"
        );
    }

    #[test]
    fn no_data_is_none_not_zero_or_one() {
        assert_eq!(wilson(0, 0, Z95), None);
        assert_eq!(Estimate::new(0, 0), None);
        assert_eq!(wilson(3, 2, Z95), None);
        let e = Estimate::new(3, 4).unwrap();
        assert_eq!(e.value, 0.75);
    }
}
