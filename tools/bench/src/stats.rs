//! Latency samples and their order statistics.

use std::time::Duration;

/// A set of latency samples of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<Duration>,
}

impl Samples {
    /// An empty sample set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record one sample.
    pub fn push(&mut self, d: Duration) {
        self.values.push(d);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Nearest-rank percentile `p` in `[0, 100]`; zero for an empty set.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.values.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.values.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// Median (nearest-rank p50).
    pub fn median(&self) -> Duration {
        self.percentile(50.0)
    }

    /// 90th percentile.
    pub fn p90(&self) -> Duration {
        self.percentile(90.0)
    }

    /// 99th percentile.
    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }
}

/// Milliseconds as a float, for reports and ratios.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Human-friendly duration: µs below 1 ms, ms below 10 s.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us < 10_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Human-friendly byte size using binary units.
pub fn fmt_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    if n >= KIB * KIB * KIB && n.is_multiple_of(KIB * KIB * KIB) {
        format!("{} GiB", n / (KIB * KIB * KIB))
    } else if n >= KIB * KIB {
        let v = n as f64 / (KIB * KIB) as f64;
        if n.is_multiple_of(KIB * KIB) {
            format!("{v:.0} MiB")
        } else {
            format!("{v:.1} MiB")
        }
    } else if n >= KIB {
        format!("{:.0} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s = Samples::new();
        for i in 1..=100 {
            s.push(Duration::from_millis(i));
        }
        assert_eq!(s.median(), Duration::from_millis(50));
        assert_eq!(s.p90(), Duration::from_millis(90));
        assert_eq!(s.p99(), Duration::from_millis(99));
        assert_eq!(s.percentile(100.0), Duration::from_millis(100));
        assert_eq!(Samples::new().median(), Duration::ZERO);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_bytes(64 * 1024), "64 KiB");
        assert_eq!(fmt_bytes(8 * 1024 * 1024), "8 MiB");
        assert_eq!(fmt_duration(Duration::from_micros(250)), "250 µs");
        assert_eq!(fmt_duration(Duration::from_micros(2_500)), "2.50 ms");
    }
}
