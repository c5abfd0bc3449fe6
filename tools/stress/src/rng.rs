//! A small seeded PRNG (SplitMix64): every random choice of a run (payload
//! sizes and contents, sources, which refreshes are killed and when) comes
//! from it, so `--seed` reproduces the plan of a run. The timing of the
//! processes, and therefore where exactly a kill lands, is not reproducible.

/// SplitMix64 state.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// An independent stream for `index` (a writer), derived from `seed`.
    pub fn stream(seed: u64, index: u64) -> Self {
        let mut mixer = SplitMix64::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        SplitMix64::new(mixer.next_u64() ^ index)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (0 when `n == 0`), multiply-shift reduction.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (clamped to `[0, 1]`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p.clamp(0.0, 1.0)
    }

    /// Log-uniform integer in `[lo, hi]`: every doubling of the size is as
    /// likely as any other, so small and large payloads both occur often.
    pub fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let lo = lo.max(1);
        if hi <= lo {
            return lo;
        }
        let (a, b) = ((lo as f64).ln(), (hi as f64 + 1.0).ln());
        let value = (a + self.unit() * (b - a)).exp() as u64;
        value.clamp(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let a: Vec<u64> = (0..8)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..8)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        let s0 = SplitMix64::stream(7, 0).next_u64();
        let s1 = SplitMix64::stream(7, 1).next_u64();
        assert_ne!(s0, s1);
    }

    #[test]
    fn ranges_are_respected() {
        let mut r = SplitMix64::new(1);
        for _ in 0..10_000 {
            let v = r.log_uniform(1024, 8 << 20);
            assert!((1024..=8 << 20).contains(&v), "{v}");
            assert!(r.below(10) < 10);
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
    }

    #[test]
    fn log_uniform_covers_small_and_large_sizes() {
        let mut r = SplitMix64::new(3);
        let sizes: Vec<u64> = (0..2000).map(|_| r.log_uniform(1024, 8 << 20)).collect();
        assert!(sizes.iter().any(|&s| s < 8 * 1024));
        assert!(sizes.iter().any(|&s| s > 4 << 20));
    }
}
