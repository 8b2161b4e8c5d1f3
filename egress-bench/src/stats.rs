//! Medians, per-round ratios and the number formats of the report.

use std::fmt;

/// Median of `xs` (NaN if empty); the mean of the two middle values for an even count.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile `p` (0..=1) of `xs` (NaN if empty).
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Below this many samples, the range (smallest to largest) covers the median with less than
/// 95 % probability (1 - 2·0.5^n), so no verdict is drawn from it.
pub const MIN_FOR_CI: usize = 6;

/// Ratios measured side by side (per pair of batches, or per round): their median, a 95 %
/// confidence interval of the median (distribution-free, from order statistics), and the
/// interquartile range.
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    pub median: f64,
    pub ci_lo: f64,
    pub ci_hi: f64,
    pub p25: f64,
    pub p75: f64,
    pub n: usize,
}

impl Ratio {
    pub fn of(ratios: &[f64]) -> Self {
        let mut v: Vec<f64> = ratios.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        // Ranks n/2 ± 1.96·√n/2 (normal approximation of the binomial); for tiny samples
        // the whole range.
        let k = ((n as f64 - 1.96 * (n as f64).sqrt()) / 2.0).floor();
        let (lo, hi) = if n == 0 {
            (f64::NAN, f64::NAN)
        } else if k < 1.0 {
            (v[0], v[n - 1])
        } else {
            let k = k as usize - 1;
            (v[k], v[n - 1 - k])
        };
        Self {
            median: median(&v),
            ci_lo: lo,
            ci_hi: hi,
            p25: percentile(&v, 0.25),
            p75: percentile(&v, 0.75),
            n,
        }
    }

    /// Per-round ratios `num[r] / den[r]`.
    pub fn per_round(num: &[f64], den: &[f64]) -> Self {
        let r: Vec<f64> = num.iter().zip(den).map(|(a, b)| a / b).collect();
        Self::of(&r)
    }

    pub fn one() -> Self {
        Self {
            median: 1.0,
            ci_lo: 1.0,
            ci_hi: 1.0,
            p25: 1.0,
            p75: 1.0,
            n: 0,
        }
    }

    /// `met` if the whole confidence interval reaches `bound`, `missed` if it stays below it;
    /// otherwise which side the median is on, and that noise (or too few samples) leaves it
    /// open.
    pub fn verdict_at_least(&self, bound: f64) -> &'static str {
        let above = self.median >= bound;
        if !self.median.is_finite() {
            "not measured"
        } else if self.n < MIN_FOR_CI {
            if above {
                "met by the median (too few samples for a CI)"
            } else {
                "missed by the median (too few samples for a CI)"
            }
        } else if self.ci_lo >= bound {
            "met"
        } else if self.ci_hi < bound {
            "missed"
        } else if above {
            "met by the median (CI spans it)"
        } else {
            "missed by the median (CI spans it)"
        }
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.median.is_finite() {
            return f.write_str("n/a");
        }
        if self.n < 2 {
            return write!(f, "{:.3}", self.median);
        }
        write!(
            f,
            "{:.3} [{:.3}–{:.3}]",
            self.median, self.ci_lo, self.ci_hi
        )
    }
}

/// `12,345` (rounded).
pub fn int(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let n = x.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A duration given in nanoseconds: `850 ns`, `21.3 µs`, `1.25 ms`.
pub fn dur_ns(ns: f64) -> String {
    if !ns.is_finite() {
        return "n/a".into();
    }
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Bytes per second as `1.23 GB/s` (decimal units) and Gbit/s.
pub fn bytes_per_s(bps: f64) -> String {
    if !bps.is_finite() {
        return "n/a".into();
    }
    format!("{:.2} GB/s ({:.1} Gbit/s)", bps / 1e9, bps * 8.0 / 1e9)
}

/// A spread of ratios: `±x.x %` around their mean (half the range).
pub fn spread(ratios: &[f64]) -> String {
    let v: Vec<f64> = ratios.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "n/a".into();
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!("±{:.1} %", (max - min) / 2.0 / mean * 100.0)
}

/// The half-range of `ratios` relative to their mean, as a fraction.
pub fn half_range(ratios: &[f64]) -> f64 {
    let v: Vec<f64> = ratios.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (max - min) / 2.0 / mean
}

/// `met` / `missed` against an upper bound.
pub fn verdict_at_most(value: f64, target: f64) -> &'static str {
    if !value.is_finite() {
        "not measured"
    } else if value <= target {
        "met"
    } else {
        "missed"
    }
}

/// Order of the configurations in round `round`: rotated by one each round, so that no
/// configuration always runs first (or right after the same neighbour).
pub fn rotation(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|i| (i + round) % n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratios_are_per_round() {
        let r = Ratio::per_round(&[90.0, 200.0, 50.0, 80.0], &[100.0, 200.0, 100.0, 100.0]);
        assert!((r.median - 0.85).abs() < 1e-9);
        assert_eq!(r.p25, 0.5);
        assert_eq!(r.p75, 0.9);
        assert_eq!(r.to_string(), "0.850 [0.500–1.000]");
        assert_eq!(
            r.verdict_at_least(0.97),
            "missed by the median (too few samples for a CI)"
        );
        assert_eq!(
            r.verdict_at_least(0.8),
            "met by the median (too few samples for a CI)"
        );
        let r = Ratio::of(&[0.90, 0.91, 0.92, 0.93, 0.94, 0.95]);
        assert_eq!(r.verdict_at_least(0.97), "missed");
        let r = Ratio::of(&[0.90, 0.91, 0.92, 0.93, 0.94, 0.99]);
        assert_eq!(
            r.verdict_at_least(0.97),
            "missed by the median (CI spans it)"
        );
        assert_eq!(r.verdict_at_least(0.92), "met by the median (CI spans it)");
        let many: Vec<f64> = (0..100).map(|i| 0.90 + f64::from(i) * 0.001).collect();
        let r = Ratio::of(&many);
        assert!(r.ci_lo > 0.938 && r.ci_hi < 0.961, "{r:?}");
        assert_eq!(r.verdict_at_least(0.97), "missed");
        assert_eq!(r.verdict_at_least(0.93), "met");
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
    }

    #[test]
    fn formats() {
        assert_eq!(int(1234567.4), "1,234,567");
        assert_eq!(int(999.0), "999");
        assert_eq!(dur_ns(850.0), "850 ns");
        assert_eq!(dur_ns(21_340.0), "21.3 µs");
        assert_eq!(dur_ns(1_250_000.0), "1.25 ms");
        assert_eq!(spread(&[0.98, 1.0, 1.02]), "±2.0 %");
    }

    #[test]
    fn rotations_cover_every_config() {
        assert_eq!(rotation(3, 0), [0, 1, 2]);
        assert_eq!(rotation(3, 1), [1, 2, 0]);
        assert_eq!(rotation(3, 5), [2, 0, 1]);
    }
}
