//! Near-duplicate filtering: exact duplicates after text normalisation, and near duplicates by
//! MinHash over word shingles with LSH banding.
//!
//! Feed texts in order with [`Deduper::check`]; the first of a group is kept, later ones are
//! reported as duplicates of it. Candidates found through LSH buckets are confirmed by the
//! estimated Jaccard similarity of their signatures against the configured threshold.

use std::collections::HashMap;

/// Settings of the near-duplicate filter.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Jaccard similarity (of word-shingle sets) at or above which two texts are near duplicates.
    pub threshold: f64,
    /// Words per shingle.
    pub shingle_words: usize,
    /// Number of MinHash permutations (signature length).
    pub num_perm: usize,
    /// Seed of the permutations (fixed so runs are reproducible).
    pub seed: u64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            threshold: 0.7,
            shingle_words: 2,
            num_perm: 128,
            seed: 0x5eed_a070_5afe,
        }
    }
}

/// Why a text was flagged.
#[derive(Debug, Clone, PartialEq)]
pub enum Duplicate {
    /// Same text after normalisation as the kept record `of`.
    Exact {
        /// Id of the kept record.
        of: String,
    },
    /// Estimated Jaccard similarity ≥ threshold with the kept record `of`.
    Near {
        /// Id of the kept record.
        of: String,
        /// Estimated similarity.
        similarity: f64,
    },
}

impl Duplicate {
    /// `exact_duplicate` or `near_duplicate`, the rejection reasons in stats.
    pub fn reason(&self) -> &'static str {
        match self {
            Duplicate::Exact { .. } => "exact_duplicate",
            Duplicate::Near { .. } => "near_duplicate",
        }
    }

    /// The kept record it duplicates.
    pub fn of(&self) -> &str {
        match self {
            Duplicate::Exact { of } | Duplicate::Near { of, .. } => of,
        }
    }

    /// The detail logged for the rejection: `Exact { of: "…" }` or
    /// `Near { of: "…", similarity: … }` (the text the logs have always carried).
    pub fn detail(&self) -> String {
        match self {
            Duplicate::Exact { of } => format!("Exact {{ of: {of:?} }}"),
            Duplicate::Near { of, similarity } => {
                format!("Near {{ of: {of:?}, similarity: {similarity:?} }}")
            }
        }
    }
}

/// Lowercases, replaces every non-alphanumeric character by a space and collapses whitespace.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for c in text.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// FNV-1a then a splitmix64 finaliser: a fast, stable 64-bit hash.
fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const MERSENNE_61: u64 = (1 << 61) - 1;

/// Hashes of the word shingles of a normalised text (the whole text when it is shorter).
fn shingle_hashes(normalized: &str, k: usize) -> Vec<u64> {
    let words: Vec<&str> = normalized.split(' ').filter(|w| !w.is_empty()).collect();
    if words.len() <= k {
        return vec![hash64(normalized.as_bytes())];
    }
    let mut out: Vec<u64> = words
        .windows(k)
        .map(|w| hash64(w.join(" ").as_bytes()))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Chooses (bands, rows) with bands × rows ≤ num_perm minimising the summed false-positive and
/// false-negative probability mass around `threshold` (the usual LSH parameter choice).
pub(crate) fn lsh_params(threshold: f64, num_perm: usize) -> (usize, usize) {
    let integrate = |f: &dyn Fn(f64) -> f64, a: f64, b: f64| {
        let n = 200;
        let h = (b - a) / n as f64;
        (0..n).map(|i| f(a + (i as f64 + 0.5) * h) * h).sum::<f64>()
    };
    let mut best = (1, num_perm.max(1));
    let mut best_err = f64::MAX;
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let p = |s: f64| 1.0 - (1.0 - s.powi(r as i32)).powi(b as i32);
            let fp = integrate(&p, 0.0, threshold);
            let fneg = integrate(&|s| 1.0 - p(s), threshold, 1.0);
            let err = fp + fneg;
            if err < best_err {
                best_err = err;
                best = (b, r);
            }
        }
    }
    best
}

/// End of a bucket chain.
const NONE: u32 = u32::MAX;

/// The filter's state: what has been kept so far.
pub struct Deduper {
    config: DedupConfig,
    bands: usize,
    rows: usize,
    perms: Vec<(u64, u64)>,
    exact: HashMap<u64, u32>,
    /// Per band: bucket key → the last kept text in that bucket. The others are chained through
    /// `next` (one `u32` per text and band instead of a `Vec` per bucket: the index is about
    /// half the size).
    heads: Vec<HashMap<u64, u32>>,
    /// `next[text * bands + band]`: the text kept before it in the same bucket, or `NONE`.
    next: Vec<u32>,
    signatures: Vec<u32>,
    ids: Vec<String>,
}

impl Deduper {
    /// An empty filter.
    pub fn new(config: DedupConfig) -> Self {
        let num_perm = config.num_perm.max(1);
        let (bands, rows) = lsh_params(config.threshold, num_perm);
        let perms = (0..num_perm as u64)
            .map(|i| {
                let a = mix(config.seed ^ (2 * i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                    % (MERSENNE_61 - 1)
                    + 1;
                let b = mix(config
                    .seed
                    .wrapping_add(i)
                    .wrapping_mul(0xd1b5_4a32_d192_ed03))
                    % MERSENNE_61;
                (a, b)
            })
            .collect();
        Deduper {
            config: DedupConfig { num_perm, ..config },
            bands,
            rows,
            perms,
            exact: HashMap::new(),
            heads: vec![HashMap::new(); bands],
            next: Vec::new(),
            signatures: Vec::new(),
            ids: Vec::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// The LSH banding in use: (bands, rows per band).
    pub fn banding(&self) -> (usize, usize) {
        (self.bands, self.rows)
    }

    /// Number of texts kept.
    pub fn kept(&self) -> usize {
        self.ids.len()
    }

    fn signature(&self, shingles: &[u64]) -> Vec<u32> {
        self.perms
            .iter()
            .map(|&(a, b)| {
                let mut min = u64::MAX;
                for &x in shingles {
                    let v = ((u128::from(a) * u128::from(x % MERSENNE_61) + u128::from(b))
                        % u128::from(MERSENNE_61)) as u64;
                    min = min.min(v);
                }
                (min & 0xffff_ffff) as u32
            })
            .collect()
    }

    fn band_key(&self, sig: &[u32], band: usize) -> u64 {
        let part = &sig[band * self.rows..(band + 1) * self.rows];
        let mut h: u64 = band as u64;
        for &v in part {
            h = mix(h ^ u64::from(v));
        }
        h
    }

    /// Checks `text` against everything kept so far. A duplicate is reported and not kept; a new
    /// text is kept under `id` and `None` is returned.
    pub fn check(&mut self, id: &str, text: &str) -> Option<Duplicate> {
        let norm = normalize(text);
        let exact_key = hash64(norm.as_bytes());
        if let Some(&i) = self.exact.get(&exact_key) {
            return Some(Duplicate::Exact {
                of: self.ids[i as usize].clone(),
            });
        }
        let sig = self.signature(&shingle_hashes(&norm, self.config.shingle_words.max(1)));
        let n = self.config.num_perm;
        let mut best: Option<(u32, f64)> = None;
        let keys: Vec<u64> = (0..self.bands).map(|b| self.band_key(&sig, b)).collect();
        for (band, key) in keys.iter().enumerate() {
            let mut cand = self.heads[band].get(key).copied().unwrap_or(NONE);
            while cand != NONE {
                let c = cand;
                cand = self.next[c as usize * self.bands + band];
                if best.is_some_and(|(b, _)| b == c) {
                    continue;
                }
                let other = &self.signatures[c as usize * n..(c as usize + 1) * n];
                let same = other.iter().zip(&sig).filter(|(x, y)| x == y).count();
                let sim = same as f64 / n as f64;
                // The most similar kept text; among equals the first kept.
                if sim >= self.config.threshold
                    && best.is_none_or(|(b, s)| sim > s || (sim == s && c < b))
                {
                    best = Some((c, sim));
                }
            }
        }
        if let Some((c, similarity)) = best {
            // An exact repeat of this text later is an exact duplicate of the same kept text.
            self.exact.insert(exact_key, c);
            return Some(Duplicate::Near {
                of: self.ids[c as usize].clone(),
                similarity,
            });
        }
        let idx = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.exact.insert(exact_key, idx);
        for (band, key) in keys.into_iter().enumerate() {
            let prev = self.heads[band].insert(key, idx).unwrap_or(NONE);
            self.next.push(prev);
        }
        self.signatures.extend_from_slice(&sig);
        None
    }
}

/// Exact Jaccard similarity of the word-shingle sets of two texts (for tests and audits).
pub fn jaccard(a: &str, b: &str, shingle_words: usize) -> f64 {
    let sa: std::collections::HashSet<u64> = shingle_hashes(&normalize(a), shingle_words)
        .into_iter()
        .collect();
    let sb: std::collections::HashSet<u64> = shingle_hashes(&normalize(b), shingle_words)
        .into_iter()
        .collect();
    let inter = sa.intersection(&sb).count();
    let union = sa.union(&sb).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn the_logged_detail_is_the_debug_text() {
        for d in [
            Duplicate::Exact {
                of: "sc_\"a\"".into(),
            },
            Duplicate::Near {
                of: "sc_b".into(),
                similarity: 0.8125,
            },
            Duplicate::Near {
                of: "sc_c".into(),
                similarity: 1.0,
            },
        ] {
            assert_eq!(d.detail(), format!("{d:?}"));
        }
    }

    #[test]
    fn normalizes_case_punctuation_and_space() {
        assert_eq!(
            normalize("  Please DELETE all tasks -- in my Todoist!! "),
            "please delete all tasks in my todoist"
        );
        assert_eq!(normalize("Ünïcode   Straße"), "ünïcode straße");
        assert_eq!(normalize("?!"), "");
    }

    #[test]
    fn lsh_parameters_fit_the_budget() {
        for t in [0.5, 0.7, 0.9] {
            let (b, r) = lsh_params(t, 128);
            assert!(b * r <= 128 && b >= 1 && r >= 1);
        }
        // A higher threshold needs more rows per band.
        assert!(lsh_params(0.9, 128).1 > lsh_params(0.5, 128).1);
    }

    #[test]
    fn flags_exact_and_near_duplicates_and_keeps_distinct_texts() {
        let mut d = Deduper::new(DedupConfig::default());
        let base = "Please delete all tasks in my Todoist that have the keyword 'Test' in their titles, and tell me how many were removed.";
        assert_eq!(d.check("a", base), None);
        // Exact after normalisation: case, punctuation, spacing.
        let exact = "please DELETE all tasks in my todoist that have the keyword Test in their titles and tell me how many were removed";
        assert_eq!(
            d.check("b", exact),
            Some(Duplicate::Exact { of: "a".into() })
        );
        // Near: one word changed.
        let near = "Please delete all tasks in my Todoist that have the keyword 'Test' in their names, and tell me how many were removed.";
        assert!(jaccard(base, near, 2) >= 0.7, "{}", jaccard(base, near, 2));
        match d.check("c", near) {
            Some(Duplicate::Near { of, similarity }) => {
                assert_eq!(of, "a");
                assert!(similarity >= 0.7);
            }
            other => panic!("expected near duplicate, got {other:?}"),
        }
        // A light paraphrase (words added) is still near.
        let para = "Could you please delete all tasks in my Todoist that have the keyword 'Test' in their titles, and then tell me how many were removed?";
        assert!(
            matches!(d.check("d", para), Some(Duplicate::Near { .. })),
            "jaccard {}",
            jaccard(base, para, 2)
        );
        // Same toolkit, different request: kept.
        assert_eq!(
            d.check(
                "e",
                "Create a Todoist task to renew my passport next Friday with high priority."
            ),
            None
        );
        assert_eq!(d.kept(), 2);
        assert_eq!(
            Duplicate::Exact { of: "a".into() }.reason(),
            "exact_duplicate"
        );
    }

    #[test]
    fn toolemu_cases_are_mostly_distinct_and_duplicates_are_caught() {
        let cases = fixtures::cases();
        let mut d = Deduper::new(DedupConfig::default());
        let mut flagged = 0;
        for c in &cases {
            if d.check(&c.name, &c.user_instruction).is_some() {
                flagged += 1;
            }
        }
        // ToolEmu's 144 curated cases are distinct requests; allow a handful of true near twins.
        assert!(flagged <= 5, "{flagged} of {} flagged", cases.len());
        let kept_before = d.kept();
        for c in cases.iter().take(20) {
            let dup = d.check(
                &format!("{}-copy", c.name),
                &format!("{}  ", c.user_instruction.to_uppercase()),
            );
            assert!(dup.is_some(), "{} not caught", c.name);
        }
        assert_eq!(d.kept(), kept_before);
    }

    #[test]
    fn threshold_is_configurable() {
        let a = "send the quarterly report to the finance team by email before friday noon";
        let b = "send the quarterly report to the finance team by slack before monday noon";
        let sim = jaccard(a, b, 2);
        assert!(sim > 0.3 && sim < 0.7, "{sim}");
        let mut strict = Deduper::new(DedupConfig::default());
        strict.check("a", a);
        assert_eq!(strict.check("b", b), None);
        let mut loose = Deduper::new(DedupConfig {
            threshold: 0.3,
            ..DedupConfig::default()
        });
        loose.check("a", a);
        assert!(matches!(loose.check("b", b), Some(Duplicate::Near { .. })));
    }
}
