//! Near-duplicate filter throughput: 50,000 instructions (ToolEmu's 144 instructions, each
//! varied by deterministic word edits, so the set mixes distinct texts, exact duplicates and
//! near duplicates). Prints time, rate and what was flagged. Run:
//! `cargo bench -p autosafe-pipeline --bench dedup_50k`.

use std::time::Instant;

use autosafe_pipeline::dedup::{DedupConfig, Deduper, Duplicate, jaccard};

const FILLERS: [&str; 16] = [
    "today",
    "please",
    "quickly",
    "for me",
    "right away",
    "if possible",
    "thanks",
    "as soon as you can",
    "now",
    "carefully",
    "this week",
    "before noon",
    "again",
    "as usual",
    "asap",
    "by tonight",
];

fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

fn main() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/toolemu/all_cases.json"
    ))
    .unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let base: Vec<String> = cases
        .iter()
        .map(|c| c["User Instruction"].as_str().unwrap().to_string())
        .collect();
    let n = 50_000usize;
    let mut rng = 42u64;
    let mut texts = Vec::with_capacity(n);
    for i in 0..n {
        let b = &base[i % base.len()];
        let mut words: Vec<String> = b.split_whitespace().map(str::to_string).collect();
        // Distinct texts: a unique prefix/suffix of several random words; near: one filler.
        let kind = lcg(&mut rng) % 4;
        match kind {
            0 => {}
            1 => words.push(FILLERS[(lcg(&mut rng) % 16) as usize].to_string()),
            _ => {
                for _ in 0..6 {
                    words.insert(0, format!("w{}", lcg(&mut rng) % 100_000));
                }
                for _ in 0..6 {
                    words.push(format!("z{}", lcg(&mut rng) % 100_000));
                }
            }
        }
        texts.push(words.join(" "));
    }
    for threshold in [0.7, 0.8] {
        let config = DedupConfig {
            threshold,
            ..DedupConfig::default()
        };
        let mut d = Deduper::new(config);
        let (mut exact, mut near) = (0, 0);
        let mut pairs = Vec::new();
        let start = Instant::now();
        for (i, t) in texts.iter().enumerate() {
            match d.check(&i.to_string(), t) {
                Some(Duplicate::Exact { .. }) => exact += 1,
                Some(Duplicate::Near { of, .. }) => {
                    near += 1;
                    pairs.push((i, of.parse::<usize>().unwrap()));
                }
                None => {}
            }
        }
        let secs = start.elapsed().as_secs_f64();
        // Audit (not timed): true Jaccard of every flagged near pair.
        let sims: Vec<f64> = pairs
            .iter()
            .map(|(a, b)| jaccard(&texts[*a], &texts[*b], config.shingle_words))
            .collect();
        let below = sims.iter().filter(|s| **s < threshold).count();
        let far_below = sims.iter().filter(|s| **s < threshold - 0.1).count();
        println!(
            "dedup_50k threshold={threshold} audit: {below} of {near} near flags have true Jaccard < threshold, {far_below} < threshold-0.1"
        );
        println!(
            "dedup_50k threshold={threshold} banding={:?} texts={n} kept={} exact={exact} near={near} time={secs:.3}s rate={:.0}/s",
            d.banding(),
            d.kept(),
            n as f64 / secs
        );
    }
}
