//! Medians and spreads over the repeated runs of a case.

/// The median of a set of samples together with its spread (smallest and
/// largest sample).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median; for an even count, the mean of the two middle samples.
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// How many samples went in.
    pub count: usize,
}

impl Summary {
    /// Summarises `samples`, ignoring NaNs; `None` when nothing is left.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(|a, b| a.total_cmp(b));
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            count: n,
        })
    }

    /// Formats the summary as `median (min–max)` with `format` applied to
    /// each number; a single sample is printed alone.
    pub fn display(&self, format: impl Fn(f64) -> String) -> String {
        if self.count == 1 {
            format(self.median)
        } else {
            format!(
                "{} ({}–{})",
                format(self.median),
                format(self.min),
                format(self.max)
            )
        }
    }
}

/// Formats a request rate: `48,213`.
pub fn fmt_rate(v: f64) -> String {
    group_thousands(v.round() as i64)
}

/// Formats a latency given in milliseconds with three significant digits
/// (`0.412`, `3.18`, `27.5`, `1,204`).
pub fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 {
        group_thousands(v.round() as i64)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Formats a size given in KiB as MiB with one decimal.
pub fn fmt_mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

/// Formats a ratio: `0.87×`.
pub fn fmt_ratio(v: f64) -> String {
    format!("{v:.2}×")
}

/// `1234567` → `1,234,567`.
pub fn group_thousands(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_count_is_the_middle_sample() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 3.0);
        assert_eq!(s.count, 3);
    }

    #[test]
    fn median_of_even_count_is_the_mean_of_the_middle_two() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
    }

    #[test]
    fn nans_are_ignored_and_empty_is_none() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
        let s = Summary::of(&[f64::NAN, 5.0]).unwrap();
        assert_eq!((s.median, s.count), (5.0, 1));
    }

    #[test]
    fn display_shows_the_spread() {
        let s = Summary::of(&[10.0, 30.0, 20.0]).unwrap();
        assert_eq!(s.display(|v| format!("{v:.0}")), "20 (10–30)");
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!(one.display(|v| format!("{v:.0}")), "7");
    }

    #[test]
    fn number_formats() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1234567), "1,234,567");
        assert_eq!(group_thousands(-1234), "-1,234");
        assert_eq!(fmt_rate(48213.4), "48,213");
        assert_eq!(fmt_ms(0.41234), "0.412");
        assert_eq!(fmt_ms(3.181), "3.18");
        assert_eq!(fmt_ms(27.54), "27.5");
        assert_eq!(fmt_ms(204.4), "204");
        assert_eq!(fmt_ms(1204.4), "1,204");
        assert_eq!(fmt_mib(2048.0), "2.0");
        assert_eq!(fmt_ratio(0.8712), "0.87×");
    }
}
