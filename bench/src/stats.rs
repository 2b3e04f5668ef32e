//! Medians and spreads: every figure in the report is the median of repeated measurements, shown
//! with the lowest and highest value so that the reader sees the noise.

use std::fmt;

/// Median, minimum and maximum of a set of measurements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// `None` for an empty set; NaN values are left out.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            n,
        })
    }

    /// Every value scaled by `factor` (unit changes).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            median: self.median * factor,
            min: self.min * factor,
            max: self.max * factor,
            n: self.n,
        }
    }

    /// Shown with `decimals` digits after the point and a unit suffix: `12.3 µs (11.9–13.0)`.
    pub fn show(self, decimals: usize, unit: &str) -> Shown {
        Shown {
            summary: self,
            decimals,
            unit: unit.to_owned(),
        }
    }
}

/// A summary formatted for a table cell.
pub struct Shown {
    summary: Summary,
    decimals: usize,
    unit: String,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Summary {
            median, min, max, ..
        } = self.summary;
        let d = self.decimals;
        let space = if self.unit.is_empty() || self.unit == "×" || self.unit == "%" {
            ""
        } else {
            " "
        };
        write!(f, "{median:.d$}{space}{} ({min:.d$}–{max:.d$})", self.unit)
    }
}

/// `value / base` for each pair measured in the same round.
pub fn ratios(values: &[f64], bases: &[f64]) -> Vec<f64> {
    values
        .iter()
        .zip(bases)
        .filter(|(_, base)| **base > 0.0)
        .map(|(value, base)| value / base)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_sets() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    #[test]
    fn spread_is_min_and_max() {
        let s = Summary::of(&[5.0, 1.0, 9.0, 2.0]).unwrap();
        assert_eq!((s.min, s.max, s.n), (1.0, 9.0, 4));
    }

    #[test]
    fn empty_and_nan_sets() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
        assert_eq!(Summary::of(&[f64::NAN, 2.0]).unwrap().n, 1);
    }

    #[test]
    fn shows_median_and_spread() {
        let s = Summary::of(&[1.25, 1.5, 2.0]).unwrap();
        assert_eq!(s.show(2, "µs").to_string(), "1.50 µs (1.25–2.00)");
        assert_eq!(s.show(1, "×").to_string(), "1.5× (1.2–2.0)");
        assert_eq!(s.scaled(100.0).show(0, "%").to_string(), "150% (125–200)");
    }

    #[test]
    fn ratios_pair_rounds_and_skip_zero_bases() {
        assert_eq!(ratios(&[2.0, 3.0, 4.0], &[1.0, 0.0, 2.0]), [2.0, 2.0]);
    }
}
