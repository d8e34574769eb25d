//! Paired comparison of two runs on their shared snapshots (e.g. before / after fine-tuning).
//!
//! The paired outcome of a snapshot is its safe@1 outcome (sample 0's verdict). Snapshots are
//! matched by `snapshot_id`; a pair where either side is unmeasured is left out and counted.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::metrics::{Estimate, McNemar, Outcome, Unmeasured, mcnemar, safe_at_k_outcome};
use crate::result_records::SnapshotEval;
use crate::summary::UNKNOWN_GROUP;

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

/// Paired outcomes of a set of shared snapshots and McNemar's test on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Shared snapshots in the set.
    pub shared: u64,
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

#[derive(Default)]
struct PairedBuilder {
    shared: u64,
    unmeasured: Unmeasured,
    table: PairedTable,
}

impl PairedBuilder {
    fn add(&mut self, oa: &Outcome, ob: &Outcome) {
        self.shared += 1;
        let t = &mut self.table;
        match (oa, ob) {
            (Outcome::Unmeasured(r), _) => self.unmeasured.add(&format!("a:{r}")),
            (_, Outcome::Unmeasured(r)) => self.unmeasured.add(&format!("b:{r}")),
            (Outcome::Positive, Outcome::Positive) => t.both_safe += 1,
            (Outcome::Positive, Outcome::Negative) => t.a_safe_b_unsafe += 1,
            (Outcome::Negative, Outcome::Positive) => t.a_unsafe_b_safe += 1,
            (Outcome::Negative, Outcome::Negative) => t.both_unsafe += 1,
        }
    }

    fn finish(self) -> Paired {
        let t = self.table;
        let n = t.both_safe + t.a_safe_b_unsafe + t.a_unsafe_b_safe + t.both_unsafe;
        Paired {
            shared: self.shared,
            unmeasured: self.unmeasured,
            a_safe: Estimate::new(t.both_safe + t.a_safe_b_unsafe, n),
            b_safe: Estimate::new(t.both_safe + t.a_unsafe_b_safe, n),
            mcnemar: mcnemar(t.a_safe_b_unsafe, t.a_unsafe_b_safe),
            table: t,
        }
    }
}

/// The paired comparison of run A with run B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Name of run A (before).
    pub a: String,
    /// Name of run B (after).
    pub b: String,
    /// Snapshots only in A.
    pub only_a: u64,
    /// Snapshots only in B.
    pub only_b: u64,
    /// All shared snapshots.
    #[serde(flatten)]
    pub overall: Paired,
    /// Per risk category of the snapshot in run A (a snapshot counts in each of its
    /// categories; `(unknown)` without one). p-values are per category, not adjusted for
    /// multiple comparisons.
    pub by_category: BTreeMap<String, Paired>,
}

/// Compare run `a` with run `b` on their shared snapshots.
pub fn compare(a_name: &str, a: &[SnapshotEval], b_name: &str, b: &[SnapshotEval]) -> Comparison {
    let b_by_id: HashMap<&str, &SnapshotEval> =
        b.iter().map(|s| (s.snapshot_id.as_str(), s)).collect();
    let mut overall = PairedBuilder::default();
    let mut by_category: BTreeMap<String, PairedBuilder> = BTreeMap::new();
    for sa in a {
        let Some(sb) = b_by_id.get(sa.snapshot_id.as_str()) else {
            continue;
        };
        let oa = safe_at_k_outcome(&sa.judgements(), 1);
        let ob = safe_at_k_outcome(&sb.judgements(), 1);
        overall.add(&oa, &ob);
        let cats = if sa.categories.is_empty() {
            vec![UNKNOWN_GROUP.to_string()]
        } else {
            sa.categories.clone()
        };
        for c in cats {
            by_category.entry(c).or_default().add(&oa, &ob);
        }
    }
    let overall = overall.finish();
    Comparison {
        a: a_name.to_string(),
        b: b_name.to_string(),
        only_a: a.len() as u64 - overall.shared,
        only_b: b.len() as u64 - overall.shared,
        overall,
        by_category: by_category
            .into_iter()
            .map(|(k, v)| (k, v.finish()))
            .collect(),
    }
}

impl Comparison {
    /// A short plain-text rendering for the terminal.
    pub fn to_text(&self) -> String {
        let pct = Estimate::describe;
        let t = &self.overall.table;
        let mut s = format!(
            "paired comparison on shared snapshots (safe@1 = sample 0)\n  A = {}\n  B = {}\n\
             shared {}  (only in A {}, only in B {}, left out as unmeasured {})\n\
             safe@1  A: {}\n        B: {}\n\
             table   safe→safe {}  safe→unsafe {}  unsafe→safe {}  unsafe→unsafe {}\n",
            self.a,
            self.b,
            self.overall.shared,
            self.only_a,
            self.only_b,
            self.overall.unmeasured.total,
            pct(&self.overall.a_safe),
            pct(&self.overall.b_safe),
            t.both_safe,
            t.a_safe_b_unsafe,
            t.a_unsafe_b_safe,
            t.both_unsafe,
        );
        for (r, c) in &self.overall.unmeasured.by_reason {
            s.push_str(&format!("  unmeasured {r}: {c}\n"));
        }
        let m = &self.overall.mcnemar;
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
        if self.by_category.len() > 1 {
            s.push_str("per risk category of A (p not adjusted for multiple comparisons):\n");
            for (cat, p) in &self.by_category {
                s.push_str(&format!(
                    "  {cat}: A {}  B {}  b = {}, c = {}, p = {:.4}\n",
                    pct(&p.a_safe),
                    pct(&p.b_safe),
                    p.mcnemar.b,
                    p.mcnemar.c,
                    p.mcnemar.p_value
                ));
            }
        }
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
        assert_eq!((c.overall.shared, c.only_a, c.only_b), (9, 1, 1));
        assert_eq!(c.overall.unmeasured.by_reason["a:parse_error"], 1);
        assert_eq!(
            c.overall.table,
            PairedTable {
                both_safe: 1,
                a_safe_b_unsafe: 1,
                a_unsafe_b_safe: 5,
                both_unsafe: 1
            }
        );
        // b=1, c=5: exact p = 2 * (C(6,0)+C(6,1)) / 64 = 14/64 = 0.21875.
        assert!((c.overall.mcnemar.p_value - 0.21875).abs() < 1e-12);
        assert_eq!(c.overall.a_safe.unwrap().successes, 2);
        assert_eq!(c.overall.b_safe.unwrap().successes, 6);
        // Per category (categories of run A): only `(unknown)` here, the same as overall.
        assert_eq!(c.by_category[UNKNOWN_GROUP], c.overall);
        let text = c.to_text();
        assert!(text.contains("p = 0.2188"), "{text}");
    }
}
