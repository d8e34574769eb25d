//! Paired comparison of two runs on their shared snapshots (e.g. before / after fine-tuning).
//!
//! The paired outcome of a snapshot is its safe@1 outcome (sample 0's verdict). Snapshots are
//! matched by `snapshot_id`; a pair where either side is unmeasured is left out and counted.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{Estimate, McNemar, Outcome, Unmeasured, mcnemar, safe_at_k_outcome};
use crate::records::SnapshotEval;

/// The 2×2 table of paired outcomes over measured shared snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairedTable {
    /// Safe in A and in B.
    pub both_safe: u64,
    /// Safe in A, unsafe in B.
    pub a_safe_b_unsafe: u64,
    /// Unsafe in A, safe in B.
    pub a_unsafe_b_safe: u64,
    /// Unsafe in A and in B.
    pub both_unsafe: u64,
}

/// The paired comparison of run A with run B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Name of run A (before).
    pub a: String,
    /// Name of run B (after).
    pub b: String,
    /// Snapshots present in both runs.
    pub shared: u64,
    /// Snapshots only in A.
    pub only_a: u64,
    /// Snapshots only in B.
    pub only_b: u64,
    /// Shared snapshots left out because a side was unmeasured; reasons prefixed `a:` / `b:`.
    pub unmeasured: Unmeasured,
    /// Paired outcomes over the measured shared snapshots.
    pub table: PairedTable,
    /// Safe@1 of A on the measured shared snapshots.
    pub a_safe: Option<Estimate>,
    /// Safe@1 of B on the measured shared snapshots.
    pub b_safe: Option<Estimate>,
    /// McNemar's test on the discordant pairs (b = safe→unsafe, c = unsafe→safe).
    pub mcnemar: McNemar,
}

/// Compare run `a` with run `b` on their shared snapshots.
pub fn compare(a_name: &str, a: &[SnapshotEval], b_name: &str, b: &[SnapshotEval]) -> Comparison {
    let b_by_id: HashMap<&str, &SnapshotEval> =
        b.iter().map(|s| (s.snapshot_id.as_str(), s)).collect();
    let mut shared = 0;
    let mut t = PairedTable::default();
    let mut unmeasured = Unmeasured::default();
    for sa in a {
        let Some(sb) = b_by_id.get(sa.snapshot_id.as_str()) else {
            continue;
        };
        shared += 1;
        let oa = safe_at_k_outcome(&sa.judgements(), 1);
        let ob = safe_at_k_outcome(&sb.judgements(), 1);
        match (oa, ob) {
            (Outcome::Unmeasured(r), _) => unmeasured.add(&format!("a:{r}")),
            (_, Outcome::Unmeasured(r)) => unmeasured.add(&format!("b:{r}")),
            (Outcome::Positive, Outcome::Positive) => t.both_safe += 1,
            (Outcome::Positive, Outcome::Negative) => t.a_safe_b_unsafe += 1,
            (Outcome::Negative, Outcome::Positive) => t.a_unsafe_b_safe += 1,
            (Outcome::Negative, Outcome::Negative) => t.both_unsafe += 1,
        }
    }
    let n = t.both_safe + t.a_safe_b_unsafe + t.a_unsafe_b_safe + t.both_unsafe;
    Comparison {
        a: a_name.to_string(),
        b: b_name.to_string(),
        shared,
        only_a: a.len() as u64 - shared,
        only_b: b.len() as u64 - shared,
        unmeasured,
        a_safe: Estimate::new(t.both_safe + t.a_safe_b_unsafe, n),
        b_safe: Estimate::new(t.both_safe + t.a_unsafe_b_safe, n),
        mcnemar: mcnemar(t.a_safe_b_unsafe, t.a_unsafe_b_safe),
        table: t,
    }
}

impl Comparison {
    /// A short plain-text rendering for the terminal.
    pub fn to_text(&self) -> String {
        let pct = |e: &Option<Estimate>| match e {
            Some(e) => format!(
                "{:.1}% [{:.1}, {:.1}] ({}/{})",
                100.0 * e.value,
                100.0 * e.ci95.lo,
                100.0 * e.ci95.hi,
                e.successes,
                e.n
            ),
            None => "no data".to_string(),
        };
        let t = &self.table;
        let mut s = format!(
            "paired comparison on shared snapshots (safe@1 = sample 0)\n  A = {}\n  B = {}\n\
             shared {}  (only in A {}, only in B {}, left out as unmeasured {})\n\
             safe@1  A: {}\n        B: {}\n\
             table   safe→safe {}  safe→unsafe {}  unsafe→safe {}  unsafe→unsafe {}\n",
            self.a,
            self.b,
            self.shared,
            self.only_a,
            self.only_b,
            self.unmeasured.total,
            pct(&self.a_safe),
            pct(&self.b_safe),
            t.both_safe,
            t.a_safe_b_unsafe,
            t.a_unsafe_b_safe,
            t.both_unsafe,
        );
        for (r, c) in &self.unmeasured.by_reason {
            s.push_str(&format!("  unmeasured {r}: {c}\n"));
        }
        let m = &self.mcnemar;
        let method = match m.method {
            crate::metrics::McNemarMethod::NoDiscordant => "no discordant pairs".to_string(),
            crate::metrics::McNemarMethod::ExactBinomial => "exact binomial".to_string(),
            crate::metrics::McNemarMethod::ChiSquareCorrected => {
                format!(
                    "chi-square, continuity-corrected, χ² = {:.3}",
                    m.statistic.unwrap_or(f64::NAN)
                )
            }
        };
        s.push_str(&format!(
            "McNemar ({method}): b = {}, c = {}, p = {:.4}\n",
            m.b, m.c, m.p_value
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autosafe_ots::{JudgeKind, JudgeRef, Judgement, UnmeasuredReason, Verdict};

    fn snap(id: &str, j: Judgement) -> SnapshotEval {
        SnapshotEval {
            snapshot_id: id.into(),
            scenario_id: "sc".into(),
            categories: vec![],
            source: None,
            toolkits: vec![],
            samples: vec![Verdict {
                judgement: j,
                rationale: String::new(),
                score: None,
                judge: JudgeRef {
                    kind: JudgeKind::Llm,
                    name: "j".into(),
                },
                raw: None,
            }],
            helpfulness: None,
            agent: None,
        }
    }

    #[test]
    fn paired_table_and_test_by_hand() {
        const S: Judgement = Judgement::Safe;
        const U: Judgement = Judgement::Unsafe;
        let pe = Judgement::Unmeasured {
            reason: UnmeasuredReason::ParseError,
            detail: String::new(),
        };
        // before: 10 snapshots, after: the same ids plus one new. Pairs:
        // 0: S,S  1: U,S  2: U,S  3: U,S  4: U,S  5: U,S  6: S,U  7: U,U  8: pe,S  9: S,(missing)
        let before: Vec<_> = [S, U, U, U, U, U, S, U, pe.clone(), S]
            .into_iter()
            .enumerate()
            .map(|(i, j)| snap(&i.to_string(), j))
            .collect();
        let mut after: Vec<_> = [S, S, S, S, S, S, U, U, S]
            .into_iter()
            .enumerate()
            .map(|(i, j)| snap(&i.to_string(), j))
            .collect();
        after.push(snap("new", S));
        let c = compare("before", &before, "after", &after);
        assert_eq!((c.shared, c.only_a, c.only_b), (9, 1, 1));
        assert_eq!(c.unmeasured.by_reason["a:parse_error"], 1);
        assert_eq!(
            c.table,
            PairedTable {
                both_safe: 1,
                a_safe_b_unsafe: 1,
                a_unsafe_b_safe: 5,
                both_unsafe: 1
            }
        );
        // b=1, c=5: exact p = 2 * (C(6,0)+C(6,1)) / 64 = 14/64 = 0.21875.
        assert!((c.mcnemar.p_value - 0.21875).abs() < 1e-12);
        assert_eq!(c.a_safe.unwrap().successes, 2);
        assert_eq!(c.b_safe.unwrap().successes, 6);
        let text = c.to_text();
        assert!(text.contains("p = 0.2188"), "{text}");
    }
}
