//! The report: sections of tables, the targets, the machine, written as BENCHMARKS.md.

use std::fmt::Write as _;

use crate::machine::Machine;

/// A table with a header row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len(), "row width");
        self.rows.push(cells);
    }

    /// GitHub markdown, columns padded so that the source reads as a table too.
    pub fn markdown(&self) -> String {
        let columns = self.header.len();
        let width = |i: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .filter_map(|row| row.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..columns)
                .map(|i| {
                    let cell = cells.get(i).map_or("", String::as_str).replace('|', "\\|");
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    format!("{cell}{}", " ".repeat(pad))
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&self.header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// One benchmark's results.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub title: String,
    /// What was measured and how, one paragraph.
    pub method: String,
    /// The commands that ran, exactly (with placeholders for temporary paths).
    pub commands: Vec<String>,
    pub table: Table,
    pub notes: Vec<String>,
}

/// A goal of the issue and how this run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

/// Everything one run of the harness produced.
#[derive(Clone, Debug)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub quick: bool,
    pub elapsed_s: f64,
    pub machine: Machine,
    pub sections: Vec<Section>,
    pub targets: Vec<Target>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmarks\n");
        let kind = if self.quick {
            "a quick run (`--quick`: fewer rounds, shorter windows; indicative only)"
        } else {
            "a full run"
        };
        let _ = writeln!(
            out,
            "Written by `{}` on {}: {kind}, {:.0} s in all. Every figure is the median of the rounds, \
             with the lowest and highest value in parentheses; variants were interleaved round by \
             round, and every ratio compares measurements of the same round.\n",
            self.command, self.date, self.elapsed_s
        );
        let _ = writeln!(out, "## Machine\n\n{}", self.machine.markdown());
        let _ = writeln!(out, "## Targets\n");
        let mut targets = Table::new(&["Goal", "Measured", "Met"]);
        for t in &self.targets {
            let met = if t.met { "yes" } else { "**no**" };
            targets.row(vec![t.goal.clone(), t.measured.clone(), met.to_owned()]);
        }
        let _ = writeln!(out, "{}", targets.markdown());
        for (i, section) in self.sections.iter().enumerate() {
            let _ = writeln!(
                out,
                "## {}. {}\n\n{}\n",
                i + 1,
                section.title,
                section.method
            );
            let _ = writeln!(out, "{}", section.table.markdown());
            for note in &section.notes {
                let _ = writeln!(out, "- {note}");
            }
            if !section.notes.is_empty() {
                out.push('\n');
            }
            if !section.commands.is_empty() {
                let _ = writeln!(out, "Commands:\n\n```sh");
                for command in &section.commands {
                    let _ = writeln!(out, "{command}");
                }
                let _ = writeln!(out, "```\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_and_escapes_pipes() {
        let mut t = Table::new(&["Variant", "µs"]);
        t.row(vec!["ours".into(), "1.5".into()]);
        t.row(vec!["a|b".into(), "10.25".into()]);
        assert_eq!(
            t.markdown(),
            "| Variant | µs    |\n\
             |---------|-------|\n\
             | ours    | 1.5   |\n\
             | a\\|b    | 10.25 |\n"
        );
    }

    #[test]
    fn report_has_machine_targets_and_sections() {
        let mut table = Table::new(&["Stacks", "Time"]);
        table.row(vec!["1000".into(), "2.0 ms (1.9–2.1)".into()]);
        let report = Report {
            date: "2026-12-02".into(),
            command: "cargo xtask bench --quick".into(),
            quick: true,
            elapsed_s: 12.0,
            machine: Machine::for_tests(),
            sections: vec![Section {
                title: "Output".into(),
                method: "Builds profiles.".into(),
                commands: vec!["profiler-bench --only output".into()],
                table,
                notes: vec!["a note".into()],
            }],
            targets: vec![Target {
                goal: "fast".into(),
                measured: "2 ms".into(),
                met: false,
            }],
        };
        let md = report.markdown();
        assert!(md.starts_with("# Benchmarks\n"));
        assert!(md.contains("`cargo xtask bench --quick` on 2026-12-02: a quick run"));
        assert!(md.contains("## Machine"));
        assert!(md.contains("| fast | 2 ms     | **no** |"));
        assert!(md.contains("## 1. Output\n\nBuilds profiles.\n"));
        assert!(md.contains("| 1000   | 2.0 ms (1.9–2.1) |"));
        assert!(md.contains("- a note\n"));
        assert!(md.contains("```sh\nprofiler-bench --only output\n```"));
    }
}
