//! Seeds derived for the samples of an `n > 1` request.

/// The seed of sample `i` of a request whose seed is `base` (`None` counts as 0): a SplitMix64 step,
/// so samples differ from each other and a re-run derives the same seeds.
pub fn derive_seed(base: Option<u64>, i: u32) -> u64 {
    let mut z = base.unwrap_or(0) ^ (u64::from(i) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::derive_seed;

    #[test]
    fn derived_seeds_are_stable_and_distinct() {
        let s: Vec<u64> = (0..8).map(|i| derive_seed(Some(42), i)).collect();
        let mut d = s.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 8);
        assert_eq!(s[3], derive_seed(Some(42), 3));
        assert_ne!(derive_seed(None, 0), derive_seed(Some(1), 0));
    }
}
