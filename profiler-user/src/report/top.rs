//! Self (flat) and cumulative time per function, with `go tool pprof -top`'s rules: flat goes to
//! the innermost function of the leaf location; cum goes once per sample to every function on
//! the stack (a recursive function is not counted twice); functions are sorted by flat, then
//! name, then cum (by cum, then name, then flat with `--cum`). Values and percentages are
//! formatted as pprof formats them.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    sync::Arc,
};

use super::stacks::{StackSample, ValueKind};

/// One function's share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionStat {
    pub name: Arc<str>,
    pub flat: i64,
    pub cum: i64,
    pub inlined: Inlined,
}

/// Whether a function was inlined into its callers, as pprof tells: `(inline)` when every call
/// to it was, `(partial-inline)` when some were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Inlined {
    #[default]
    No,
    Always,
    Partly,
}

impl Inlined {
    /// The label pprof puts after the name.
    pub fn label(self) -> &'static str {
        match self {
            Inlined::No => "",
            Inlined::Always => " (inline)",
            Inlined::Partly => " (partial-inline)",
        }
    }
}

/// Every function of a selection, sorted.
#[derive(Clone, Debug, Default)]
pub struct Top {
    pub value: ValueKind,
    /// The sum of the value over all samples: what percentages are of.
    pub total: i64,
    /// The count that goes with the value, whatever it is: samples (`samples/count`) for CPU,
    /// switches (`switches/count`) for off-CPU.
    pub count: i64,
    pub functions: Vec<FunctionStat>,
}

/// How the functions are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Flat,
    Cum,
}

/// Adds samples up, profile by profile, without keeping them.
#[derive(Clone, Debug, Default)]
pub struct TopBuilder {
    value: ValueKind,
    stats: HashMap<Arc<str>, (i64, i64)>,
    /// Caller -> callee: whether every call was inlined (pprof's inline edges).
    edges: HashMap<(Arc<str>, Arc<str>), bool>,
    total: i64,
    count: i64,
}

impl TopBuilder {
    pub fn new(value: ValueKind) -> TopBuilder {
        TopBuilder {
            value,
            ..TopBuilder::default()
        }
    }

    pub fn add(&mut self, samples: &[StackSample]) {
        let mut seen: HashSet<&str> = HashSet::new();
        for sample in samples {
            let weight = self.value.of(sample);
            self.count = self.count.saturating_add(self.value.count_of(sample));
            if weight == 0 {
                continue;
            }
            self.total = self.total.saturating_add(weight);
            seen.clear();
            for frame in sample.frames.iter() {
                if seen.insert(&frame.name) {
                    let cum = &mut self.stats.entry(frame.name.clone()).or_default().1;
                    *cum = cum.saturating_add(weight);
                }
            }
            if let Some(leaf) = sample.frames.first() {
                let flat = &mut self.stats.entry(leaf.name.clone()).or_default().0;
                *flat = flat.saturating_add(weight);
            }
            for pair in sample.frames.windows(2) {
                let (callee, caller) = (&pair[0], &pair[1]);
                if callee.name == caller.name {
                    continue;
                }
                self.edges
                    .entry((caller.name.clone(), callee.name.clone()))
                    .and_modify(|all| *all &= callee.inlined)
                    .or_insert(callee.inlined);
            }
        }
    }

    pub fn finish(self, order: Order) -> Top {
        let mut calls: HashMap<&str, (bool, bool)> = HashMap::new();
        for ((_, callee), inlined) in &self.edges {
            let (some_inline, some_not) = calls.entry(callee).or_default();
            *some_inline |= *inlined;
            *some_not |= !*inlined;
        }
        let inlined = |name: &str| match calls.get(name) {
            Some((true, true)) => Inlined::Partly,
            Some((true, false)) => Inlined::Always,
            _ => Inlined::No,
        };
        let mut functions: Vec<FunctionStat> = self
            .stats
            .iter()
            .map(|(name, &(flat, cum))| FunctionStat {
                name: name.clone(),
                flat,
                cum,
                inlined: inlined(name),
            })
            .collect();
        match order {
            Order::Flat => functions.sort_by(|a, b| {
                b.flat
                    .abs()
                    .cmp(&a.flat.abs())
                    .then_with(|| a.name.cmp(&b.name))
                    .then_with(|| b.cum.abs().cmp(&a.cum.abs()))
            }),
            Order::Cum => functions.sort_by(|a, b| {
                b.cum
                    .abs()
                    .cmp(&a.cum.abs())
                    .then_with(|| a.name.cmp(&b.name))
                    .then_with(|| b.flat.abs().cmp(&a.flat.abs()))
            }),
        }
        Top {
            value: self.value,
            total: self.total,
            count: self.count,
            functions,
        }
    }
}

impl Top {
    /// Aggregates `samples` by function.
    pub fn new(samples: &[StackSample], value: ValueKind, order: Order) -> Top {
        let mut builder = TopBuilder::new(value);
        builder.add(samples);
        builder.finish(order)
    }

    /// `value` as a percentage of the total (0 for an empty selection).
    pub fn percent(&self, value: i64) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * value as f64 / self.total as f64
        }
    }

    /// The first `n` functions.
    pub fn head(&self, n: usize) -> &[FunctionStat] {
        &self.functions[..n.min(self.functions.len())]
    }

    /// The function with the most self time.
    pub fn top_function(&self) -> Option<&str> {
        self.functions.first().map(|f| &*f.name)
    }

    /// The table of the first `n` functions, `go tool pprof -top` style, after `header` lines.
    pub fn render(&self, n: usize, header: &[String]) -> String {
        let rows = self.head(n);
        let unit = self.unit(rows);
        let shown = rows.iter().fold(0i64, |sum, r| sum.saturating_add(r.flat));
        let mut text = String::new();
        for line in header {
            let _ = writeln!(text, "{line}");
        }
        let _ = writeln!(text, "Type: {}", self.value.type_name());
        let _ = writeln!(
            text,
            "Showing top {} of {} functions, {} of {} total ({}), {} {}",
            rows.len(),
            self.functions.len(),
            unit.format(shown),
            unit.format(self.total),
            percentage(shown, self.total).trim(),
            self.count,
            self.value.count_kind().noun()
        );
        let _ = writeln!(
            text,
            "{:>10} {:>5}% {:>5}% {:>10} {:>5}%",
            "flat", "flat", "sum", "cum", "cum"
        );
        let mut sum = 0;
        for row in rows {
            sum = row.flat.saturating_add(sum);
            let _ = writeln!(
                text,
                "{:>10} {} {} {:>10} {}  {}{}",
                unit.format(row.flat),
                percentage(row.flat, self.total),
                percentage(sum, self.total),
                unit.format(row.cum),
                percentage(row.cum, self.total),
                row.name,
                row.inlined.label()
            );
        }
        text
    }

    /// One unit for a table, as pprof picks it: that of the smallest value shown, or of a
    /// hundred times it when the total needs a larger unit (so the smallest reads 0.01 or more).
    pub fn unit(&self, rows: &[FunctionStat]) -> Unit {
        if !self.value.is_time() {
            return Unit::Count;
        }
        let smallest = rows
            .iter()
            .map(|r| {
                if r.flat != 0 {
                    r.flat.abs()
                } else {
                    r.cum.abs()
                }
            })
            .filter(|&v| v > 0)
            .min()
            .unwrap_or(self.total.abs());
        let low = Unit::for_nanos(smallest);
        let high = Unit::for_nanos(self.total.abs());
        if low != high && smallest.saturating_mul(100) < self.total.abs() {
            Unit::for_nanos(smallest.saturating_mul(100))
        } else {
            low
        }
    }
}

/// A unit to show values in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// A time unit: its suffix and its length in nanoseconds.
    Time(&'static str, i64),
}

const TIME_UNITS: [(&str, i64); 5] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("hrs", 3_600_000_000_000),
];

impl Unit {
    /// The largest time unit in which `nanos` is at least 1.
    pub fn for_nanos(nanos: i64) -> Unit {
        let (suffix, length) = TIME_UNITS
            .iter()
            .rev()
            .find(|(_, length)| nanos.abs() >= *length)
            .copied()
            .unwrap_or(TIME_UNITS[0]);
        Unit::Time(suffix, length)
    }

    /// `1.25s`, `30ms`, `0`: two decimals, `.00` dropped (pprof's `ScaledLabel`).
    pub fn format(self, value: i64) -> String {
        let (scaled, suffix) = match self {
            Unit::Count => (value as f64, ""),
            Unit::Time(suffix, length) => (value as f64 / length as f64, suffix),
        };
        let text = format!("{scaled:.2}");
        let text = text.strip_suffix(".00").unwrap_or(&text);
        if text == "0" || text == "-0" {
            "0".to_owned()
        } else {
            format!("{text}{suffix}")
        }
    }
}

/// A duration in nanoseconds in its own best unit (`1.25s`).
pub fn format_nanos(nanos: i64) -> String {
    Unit::for_nanos(nanos).format(nanos)
}

/// `value` as a percentage of `total`, as pprof prints it: `42.10%`, `  100%`, and two
/// significant digits under 1% (` 0.52%`, `0.012%`).
pub fn percentage(value: i64, total: i64) -> String {
    let ratio = if total == 0 {
        0.0
    } else {
        (value as f64 / total as f64).abs() * 100.0
    };
    if (99.95..=100.05).contains(&ratio) {
        "  100%".to_owned()
    } else if ratio >= 1.0 {
        format!("{ratio:5.2}%")
    } else {
        format!("{:>5}%", two_significant(ratio))
    }
}

/// Go's `%.2g` for a number below 1: two significant digits, trailing zeros dropped, exponent
/// form under 1e-4.
fn two_significant(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned();
    }
    let exponent = x.log10().floor() as i32;
    // Rounding may carry into the next power of ten (0.0999 -> 0.1).
    let rounded: f64 = format!("{x:.1e}").parse().unwrap_or(x);
    let exponent = if rounded.log10().floor() as i32 > exponent {
        exponent + 1
    } else {
        exponent
    };
    if exponent < -4 {
        let text = format!("{rounded:.1e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (1 - exponent).max(0) as usize;
    let text = format!("{rounded:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::stacks::{
        Stacks,
        tests::{labels, mixed_profile, off_cpu_profile, profile},
    };

    fn top(samples: &[(&str, i64)], order: Order) -> Top {
        let samples: Vec<_> = samples
            .iter()
            .map(|(stack, n)| (*stack, labels(1, 1), *n))
            .collect();
        let stacks = Stacks::from_profile(&profile(&samples));
        Top::new(&stacks.samples, ValueKind::Cpu, order)
    }

    fn row<'a>(top: &'a Top, name: &str) -> &'a FunctionStat {
        top.functions
            .iter()
            .find(|f| &*f.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", top.functions))
    }

    #[test]
    fn values_of_i64_max_saturate_instead_of_wrapping() {
        let mut stacks = Stacks::from_profile(&profile(&[
            ("main;a", labels(1, 1), 1),
            ("main;b", labels(1, 1), 1),
        ]));
        for sample in &mut stacks.samples {
            (sample.cpu_ns, sample.count) = (i64::MAX, i64::MAX);
        }
        let top = Top::new(&stacks.samples, ValueKind::Cpu, Order::Flat);
        assert_eq!((top.total, top.count), (i64::MAX, i64::MAX));
        assert_eq!(row(&top, "main").cum, i64::MAX);
        let text = top.render(10, &[]);
        assert!(!text.contains(" -"), "{text}");
        let mut folded = crate::report::folded::Folded::default();
        folded.add(&stacks.samples, ValueKind::Cpu);
        assert_eq!(folded.total(), 2 * i64::MAX as u64);
        assert_eq!(folded.scaled(1).total(), 2 * i64::MAX as u64);
    }

    #[test]
    fn flat_goes_to_the_innermost_leaf_function_and_cum_counts_recursion_once() {
        let top = top(
            &[
                ("main;fib;fib;fib;leaf", 6),
                ("main;fib", 3),
                ("main;work;inl+hot", 1),
            ],
            Order::Flat,
        );
        let ms = 10_000_000;
        assert_eq!(top.total, 10 * ms);
        assert_eq!(top.count, 10);
        assert_eq!(
            (row(&top, "leaf").flat, row(&top, "leaf").cum),
            (6 * ms, 6 * ms)
        );
        assert_eq!(
            (row(&top, "fib").flat, row(&top, "fib").cum),
            (3 * ms, 9 * ms)
        );
        assert_eq!(
            (row(&top, "main").flat, row(&top, "main").cum),
            (0, 10 * ms)
        );
        assert_eq!((row(&top, "inl").flat, row(&top, "inl").cum), (ms, ms));
        assert_eq!((row(&top, "hot").flat, row(&top, "hot").cum), (0, ms));
        let order: Vec<&str> = top.functions.iter().map(|f| &*f.name).collect();
        assert_eq!(order, ["leaf", "fib", "inl", "hot", "main", "work"]);
        assert_eq!(row(&top, "inl").inlined, Inlined::Always);
        assert_eq!(row(&top, "hot").inlined, Inlined::No);
        let partly = super::tests::top(&[("main;inl+hot", 1), ("main;inl", 1)], Order::Flat);
        assert_eq!(row(&partly, "inl").inlined, Inlined::Partly);
        let text = partly.render(5, &[]);
        assert!(text.contains("  inl (partial-inline)\n"), "{text}");
        assert_eq!(top.top_function(), Some("leaf"));
    }

    #[test]
    fn cum_order_and_ties_by_name() {
        let top = top(&[("main;b", 1), ("main;a", 1)], Order::Cum);
        let order: Vec<&str> = top.functions.iter().map(|f| &*f.name).collect();
        assert_eq!(order, ["main", "a", "b"]);
    }

    #[test]
    fn renders_a_pprof_style_table() {
        let top = top(&[("main;hot", 3), ("main;cold", 1)], Order::Flat);
        let text = top.render(2, &["File: x.pb.gz".to_owned()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "File: x.pb.gz");
        assert_eq!(lines[1], "Type: cpu");
        assert_eq!(
            lines[2],
            "Showing top 2 of 3 functions, 40ms of 40ms total (100%), 4 samples"
        );
        assert_eq!(lines[3], "      flat  flat%   sum%        cum   cum%");
        assert_eq!(lines[4], "      30ms 75.00% 75.00%       30ms 75.00%  hot");
        assert_eq!(lines[5], "      10ms 25.00%   100%       10ms 25.00%  cold");
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn units_and_percentages_as_pprof_prints_them() {
        assert_eq!(
            Unit::for_nanos(1_500_000_000).format(1_500_000_000),
            "1.50s"
        );
        assert_eq!(Unit::for_nanos(10_000_000).format(10_000_000), "10ms");
        assert_eq!(Unit::Time("s", 1_000_000_000).format(10_000_000), "0.01s");
        assert_eq!(Unit::Time("s", 1_000_000_000).format(1_000_000), "0");
        assert_eq!(Unit::Count.format(42), "42");
        assert_eq!(format_nanos(7_200_000_000_000), "2hrs");
        assert_eq!(percentage(1, 2), "50.00%");
        assert_eq!(percentage(1, 1), "  100%");
        assert_eq!(percentage(52, 10_000), " 0.52%");
        assert_eq!(percentage(5, 10_000), " 0.05%");
        assert_eq!(percentage(12, 100_000), "0.012%");
        assert_eq!(percentage(999, 100_000), "    1%");
        assert_eq!(percentage(989, 100_000), " 0.99%");
        assert_eq!(percentage(9_996, 1_000_000), "    1%");
        assert_eq!(percentage(5, 10_000_000), "5e-05%");
        assert_eq!(percentage(0, 10), "    0%");
    }

    #[test]
    fn a_table_mixing_seconds_and_milliseconds_uses_one_unit() {
        // 10 ms beside a 2 s total: pprof shows 0.01s, not 10ms.
        let top = top(&[("main;hot", 199), ("main;cold", 1)], Order::Flat);
        let text = top.render(5, &[]);
        assert!(text.contains("\n     1.99s 99.50%"), "{text}");
        assert!(text.contains("\n     0.01s   0.5%"), "{text}");
    }

    #[test]
    fn off_cpu_tables_weigh_by_time_off_and_count_switches() {
        let p = off_cpu_profile(&[
            ("main;serve;poll;do_poll[k]", labels(1, 1), 40),
            ("main;lock;futex[k]", labels(1, 2), 10),
        ]);
        let stacks = Stacks::from_profile(&p);
        let top = Top::new(&stacks.samples, ValueKind::OffCpu, Order::Flat);
        assert_eq!((top.total, top.count), (500_000_000, 50));
        let text = top.render(3, &[]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Type: off_cpu");
        assert_eq!(
            lines[1],
            "Showing top 3 of 6 functions, 500ms of 500ms total (100%), 50 switches"
        );
        assert_eq!(
            lines[3],
            "     400ms 80.00% 80.00%      400ms 80.00%  do_poll"
        );
        let switches = Top::new(&stacks.samples, ValueKind::Switches, Order::Flat);
        let text = switches.render(1, &[]);
        assert!(
            text.contains("\n        40 80.00% 80.00%         40 80.00%  do_poll\n"),
            "{text}"
        );
        // A CPU table of an off-CPU profile is empty, not wrong.
        assert_eq!(
            Top::new(&stacks.samples, ValueKind::Cpu, Order::Flat).total,
            0
        );
    }

    #[test]
    fn a_mixed_trace_file_splits_into_cpu_and_off_cpu_tables() {
        let p = mixed_profile(
            &[("main;handle;compute", labels(1, 1), 3)],
            &[("main;handle;call_pricing;recv[k]", labels(1, 1), 12)],
        );
        let stacks = Stacks::from_profile(&p);
        let cpu = Top::new(&stacks.samples, ValueKind::Cpu, Order::Flat);
        let off = Top::new(&stacks.samples, ValueKind::OffCpu, Order::Flat);
        assert_eq!((cpu.total, cpu.count), (30_000_000, 3));
        assert_eq!((off.total, off.count), (120_000_000, 12));
        assert_eq!(cpu.top_function(), Some("compute"));
        assert_eq!(off.top_function(), Some("recv"));
        assert!(cpu.functions.iter().all(|f| &*f.name != "recv"));
        assert!(off.functions.iter().all(|f| &*f.name != "compute"));
    }
}
