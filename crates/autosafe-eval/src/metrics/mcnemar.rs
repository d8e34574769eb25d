//! McNemar's test for paired binary outcomes (the same snapshots judged in two runs).

use serde::{Deserialize, Serialize};

/// Below this many discordant pairs the exact binomial test is used, at or above it the
/// chi-square test with continuity correction.
pub(crate) const EXACT_BELOW: u64 = 25;

/// Which form of the test produced the p-value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McNemarMethod {
    /// No discordant pairs: the runs do not differ on any shared snapshot; p = 1.
    NoDiscordant,
    /// Exact two-sided binomial test on the discordant pairs (b + c < 25).
    ExactBinomial,
    /// Chi-square with 1 degree of freedom and Edwards' continuity correction (b + c ≥ 25).
    ChiSquareCorrected,
}

/// The result of McNemar's test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// Pairs positive in A and negative in B (e.g. safe before, unsafe after).
    pub b: u64,
    /// Pairs negative in A and positive in B (e.g. unsafe before, safe after).
    pub c: u64,
    /// The form of the test used.
    pub method: McNemarMethod,
    /// The chi-square statistic (|b − c| − 1)² / (b + c), for the chi-square form.
    pub statistic: Option<f64>,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// McNemar's test on the discordant counts `b` and `c`.
///
/// Exact form: p = min(1, 2 · P(X ≤ min(b, c))) with X ~ Binomial(b + c, ½).
/// Chi-square form: χ² = (|b − c| − 1)² / (b + c), p = P(χ²₁ ≥ χ²) = erfc(√(χ²/2)).
pub fn mcnemar(b: u64, c: u64) -> McNemar {
    let n = b + c;
    if n == 0 {
        return McNemar {
            b,
            c,
            method: McNemarMethod::NoDiscordant,
            statistic: None,
            p_value: 1.0,
        };
    }
    if n < EXACT_BELOW {
        // n ≤ 24: binomial coefficients and 2^n fit in u64 exactly.
        let tail: u64 = (0..=b.min(c)).map(|i| binomial(n, i)).sum();
        let p = (2.0 * tail as f64 / (1u64 << n) as f64).min(1.0);
        return McNemar {
            b,
            c,
            method: McNemarMethod::ExactBinomial,
            statistic: None,
            p_value: p,
        };
    }
    let d = (b as f64 - c as f64).abs() - 1.0;
    let stat = d.max(0.0).powi(2) / n as f64;
    let p = libm::erfc((stat / 2.0).sqrt()).min(1.0);
    McNemar {
        b,
        c,
        method: McNemarMethod::ChiSquareCorrected,
        statistic: Some(stat),
        p_value: p,
    }
}

/// C(n, k) for small n, exactly.
fn binomial(n: u64, k: u64) -> u64 {
    let k = k.min(n - k);
    (0..k).fold(1u64, |acc, i| acc * (n - i) / (i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_form_matches_hand_values() {
        // b=2, c=8: 2 * (C(10,0)+C(10,1)+C(10,2)) / 2^10 = 2 * 56 / 1024 = 0.109375.
        let m = mcnemar(2, 8);
        assert_eq!(m.method, McNemarMethod::ExactBinomial);
        assert!((m.p_value - 0.109375).abs() < 1e-12);
        // Symmetric in b and c.
        assert_eq!(mcnemar(8, 2).p_value, m.p_value);
        // b=0, c=5: 2 / 32 = 0.0625.
        assert!((mcnemar(0, 5).p_value - 0.0625).abs() < 1e-12);
        // b=5, c=5: 2 * 638/1024 > 1 -> capped at 1.
        assert_eq!(mcnemar(5, 5).p_value, 1.0);
        // b=7, c=17 (n=24, still exact): Python
        // `2*sum(math.comb(24,i) for i in range(8))/2**24` = 0.06391465663909912.
        let m = mcnemar(7, 17);
        assert_eq!(m.method, McNemarMethod::ExactBinomial);
        assert!((m.p_value - 0.063_914_656_639_099_12).abs() < 1e-12);
    }

    #[test]
    fn chi_square_form_matches_reference() {
        // b=30, c=15: χ² = 14²/45 = 4.3556; Python `math.erfc(math.sqrt(s/2))` = 0.036888425707
        // (= scipy.stats.chi2.sf(4.3556, 1)).
        let m = mcnemar(30, 15);
        assert_eq!(m.method, McNemarMethod::ChiSquareCorrected);
        assert!((m.statistic.unwrap() - 196.0 / 45.0).abs() < 1e-12);
        assert!((m.p_value - 0.036_888_425_707_049_85).abs() < 1e-9);
        // b=40, c=20: χ² = 19²/60 = 6.0167, p = 0.014171388254.
        let m = mcnemar(40, 20);
        assert!((m.p_value - 0.014_171_388_254_012_33).abs() < 1e-9);
    }

    #[test]
    fn no_discordant_pairs() {
        let m = mcnemar(0, 0);
        assert_eq!(m.method, McNemarMethod::NoDiscordant);
        assert_eq!(m.p_value, 1.0);
    }
}
