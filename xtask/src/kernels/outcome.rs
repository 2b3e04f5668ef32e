//! What a boot showed: the `RESULT` line and the profiler's log that `init.sh` prints on the
//! serial console, and the table of all kernels.

use std::{fmt::Write as _, time::Duration};

/// The check's result as `init.sh` printed it.
#[derive(Debug, PartialEq, Eq)]
pub struct Check {
    /// `uname -r` inside the VM.
    pub kernel: String,
    pub btf: bool,
    /// The BPF programs were loaded and attached.
    pub loaded: bool,
    /// Non-empty profiles with samples were written.
    pub sampled: bool,
    pub samples: u64,
    /// Trace A's samples were its thread's and trace B's were B's.
    pub trace_context: bool,
    /// With `--cgroup`, every sample was the inside process's.
    pub cgroup_filter: bool,
    /// Every build of the Go fixture: trace A's samples were its goroutine's function and
    /// trace B's were B's, from the goroutines' pprof labels.
    pub go_labels: bool,
    /// With `--off-cpu`, waits off the CPU were recorded.
    pub off_cpu: bool,
    /// Lines of the profiler's logs that say what this kernel lacks (`degraded: ...`).
    pub degraded: u32,
    /// The verifier's instruction count of the largest program; `None` before Linux 5.16
    /// (no `verified_insns` in fdinfo) or when the programs did not load.
    pub insns: Option<u64>,
    /// The profiler's exit status.
    pub exit: i32,
}

impl Check {
    /// Every check passed; a kernel that lacks a feature passes when the profiler said so
    /// (`degraded`) and turned it off: its check of that feature is not counted.
    pub fn passed(&self) -> bool {
        self.loaded
            && self.sampled
            && self.exit == 0
            && self.off_cpu
            && (self.degraded > 0 || (self.trace_context && self.cgroup_filter && self.go_labels))
    }

    /// "passed", "degraded" or "FAILED".
    pub fn status(&self) -> &'static str {
        match (self.passed(), self.degraded > 0) {
            (false, _) => "FAILED",
            (true, false) => "passed",
            (true, true) => "degraded",
        }
    }
}

/// The last `RESULT key=value...` line of a console log; `None` if there is none (the VM did
/// not get that far) or it lacks a field.
pub fn parse_result(console: &str) -> Option<Check> {
    let line = console
        .lines()
        .rev()
        .find_map(|line| line.trim_end_matches('\r').split_once("RESULT "))?
        .1;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let yes = |name: &str| match field(name)? {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    };
    Some(Check {
        kernel: field("kernel")?.to_owned(),
        btf: yes("btf")?,
        loaded: yes("loaded")?,
        sampled: yes("sampled")?,
        samples: field("samples")?.parse().ok()?,
        trace_context: yes("trace")?,
        cgroup_filter: yes("cgroup")?,
        go_labels: yes("go")?,
        off_cpu: yes("offcpu")?,
        degraded: field("degraded")?.parse().ok()?,
        insns: field("insns").and_then(|count| count.parse().ok()),
        exit: field("exit")?.parse().ok()?,
    })
}

/// The profiler's output between `init.sh`'s markers.
pub fn profiler_log(console: &str) -> Option<String> {
    let (_, rest) = console.split_once("PROFILER-LOG-BEGIN")?;
    let (log, _) = rest.split_once("PROFILER-LOG-END")?;
    Some(log.trim_matches(['\r', '\n']).replace('\r', ""))
}

/// The profiler's notices of what this kernel lacks, `degraded: ...` to the end of the line.
pub fn degraded_notices(log: &str) -> Vec<String> {
    let mut notices: Vec<String> = log
        .lines()
        .filter_map(|line| {
            Some(format!(
                "degraded: {}",
                line.split_once("degraded: ")?.1.trim()
            ))
        })
        .collect();
    notices.dedup();
    notices
}

/// Why a check that printed its result failed, in one line; `None` when it passed. When the
/// profiler ran and wrote profiles, what the check found wrong in them (`check.sh` prints
/// `CHECK-FAILED ...`), else the profiler's error line.
fn failure(check: &Check, console: &str, log: Option<&str>) -> Option<String> {
    if check.passed() {
        return None;
    }
    let found_wrong = (check.exit == 0 && check.loaded && check.sampled)
        .then(|| check_failure(console))
        .flatten();
    Some(
        found_wrong
            .or_else(|| log.and_then(error_line))
            .unwrap_or("the profiler failed without a message")
            .to_owned(),
    )
}

/// The first `CHECK-FAILED` line's text: which check failed and what its profiles showed.
pub fn check_failure(console: &str) -> Option<&str> {
    console.lines().find_map(|line| {
        Some(
            line.trim_end_matches('\r')
                .split_once("CHECK-FAILED ")?
                .1
                .trim(),
        )
    })
}

/// The line that says why the profiler failed: the first `error: ...` (what `main.rs` ends a
/// failed command with; the first is the recording's, reports of what it left come after),
/// else the last log line at level ERROR, else the last line.
pub fn error_line(log: &str) -> Option<&str> {
    let lines = || log.lines().map(str::trim).filter(|line| !line.is_empty());
    lines()
        .find(|line| line.starts_with("error:"))
        .or_else(|| lines().rfind(|line| line.contains(" ERROR ")))
        .or_else(|| lines().next_back())
}

/// One row of the table.
pub struct Row {
    pub series: String,
    pub release: String,
    /// "tcg", "kvm", or "-" when it never booted.
    pub accel: String,
    pub check: Option<Check>,
    pub elapsed: Duration,
    /// Why the row failed, in one line.
    pub note: Option<String>,
    /// What the kernel lacks, as the profiler said it ([`degraded_notices`]).
    pub degraded: Vec<String>,
}

impl Row {
    /// A row without a result: `note` says why.
    pub fn without_result(series: &str, release: &str, accel: &str, note: String) -> Self {
        Self {
            series: series.to_owned(),
            release: release.to_owned(),
            accel: accel.to_owned(),
            check: None,
            elapsed: Duration::ZERO,
            note: Some(note),
            degraded: Vec::new(),
        }
    }

    /// The row of what a check printed (a VM's serial console, the host check's output): its
    /// result, why it failed (the profiler's error line, or `no_result` when it printed none),
    /// what the kernel lacks.
    pub fn of_console(
        series: String,
        release: String,
        accel: &str,
        console: &str,
        elapsed: Duration,
        no_result: impl FnOnce() -> String,
    ) -> Self {
        let check = parse_result(console);
        let log = profiler_log(console);
        let note = match &check {
            Some(check) => failure(check, console, log.as_deref()),
            None => Some(no_result()),
        };
        Self {
            series,
            release,
            accel: accel.to_owned(),
            check,
            elapsed,
            note,
            degraded: log.as_deref().map(degraded_notices).unwrap_or_default(),
        }
    }

    pub fn passed(&self) -> bool {
        self.check.as_ref().is_some_and(Check::passed)
    }

    pub fn status(&self) -> &'static str {
        self.check.as_ref().map_or("FAILED", Check::status)
    }
}

/// The matrix as a plain-text table, then the notes of rows that have one (why a row failed,
/// that KVM did not work, what a degraded kernel lacks).
pub fn table(rows: &[Row]) -> String {
    let header = [
        "kernel",
        "release",
        "accel",
        "status",
        "loaded",
        "sampled",
        "samples",
        "trace ctx",
        "cgroup",
        "go labels",
        "off-CPU",
        "insns",
        "time",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let yes_no = |value: Option<bool>| match value {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            let check = row.check.as_ref();
            vec![
                row.series.clone(),
                row.release.clone(),
                row.accel.clone(),
                row.status().to_owned(),
                yes_no(check.map(|c| c.loaded)).to_owned(),
                yes_no(check.map(|c| c.sampled)).to_owned(),
                check.map_or("-".to_owned(), |c| c.samples.to_string()),
                yes_no(check.map(|c| c.trace_context)).to_owned(),
                yes_no(check.map(|c| c.cgroup_filter)).to_owned(),
                yes_no(check.map(|c| c.go_labels)).to_owned(),
                yes_no(check.map(|c| c.off_cpu)).to_owned(),
                check
                    .and_then(|c| c.insns)
                    .map_or("-".to_owned(), |n| n.to_string()),
                format!("{:.1}s", row.elapsed.as_secs_f64()),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|col| {
            cells
                .iter()
                .map(|row| row[col].len())
                .chain([header[col].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |words: &[&str]| {
        let padded: Vec<String> = words
            .iter()
            .zip(&widths)
            .map(|(word, width)| format!("{word:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&header);
    for row in &cells {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for row in rows {
        let note = match (&row.note, row.passed()) {
            (Some(note), _) => note.as_str(),
            (None, false) => "failed",
            (None, true) => continue,
        };
        let _ = writeln!(out, "{} ({}): {note}", row.series, row.release);
    }
    for row in rows {
        for notice in &row.degraded {
            let _ = writeln!(out, "{} ({}): {notice}", row.series, row.release);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "Booting from ROM..\r\nBOOTED kernel=6.1.0-47-cloud-amd64\r\n\
        PROFILER-LOG-BEGIN\r\nINFO profiler: started\r\n\
        2026-12-06T07:20:45Z ERROR profiler: could not load the BPF program: Permission denied\r\n\
        PROFILER-LOG-END\r\n\
        RESULT kernel=6.1.0-47-cloud-amd64 btf=yes loaded=no sampled=no samples=0 files=0 trace=no cgroup=no go=no offcpu=no degraded=0 insns=- exit=1\r\n\
        [   11.1] reboot: Power down\r\n";

    #[test]
    fn reads_the_result_line() {
        let check = parse_result(CONSOLE).unwrap();
        assert_eq!(
            check,
            Check {
                kernel: "6.1.0-47-cloud-amd64".to_owned(),
                btf: true,
                loaded: false,
                sampled: false,
                samples: 0,
                trace_context: false,
                cgroup_filter: false,
                go_labels: false,
                off_cpu: false,
                degraded: 0,
                insns: None,
                exit: 1,
            }
        );
        assert!(!check.passed());
    }

    #[test]
    fn a_result_with_a_missing_or_bad_field_is_none() {
        assert_eq!(parse_result("RESULT kernel=x btf=yes loaded=yes\n"), None);
        assert_eq!(
            parse_result("RESULT kernel=x btf=yes loaded=maybe sampled=no samples=0 exit=0\n"),
            None
        );
        assert_eq!(parse_result("Kernel panic - not syncing\n"), None);
    }

    #[test]
    fn a_passing_result() {
        let check = parse_result(
            "RESULT kernel=5.10.0-32-cloud-amd64 btf=yes loaded=yes sampled=yes samples=310 files=4 trace=yes cgroup=yes go=yes offcpu=yes degraded=0 insns=1830 exit=0",
        )
        .unwrap();
        assert!(check.passed());
        assert_eq!(check.status(), "passed");
        assert_eq!(check.samples, 310);
        assert_eq!(check.insns, Some(1830));
    }

    #[test]
    fn a_feature_check_fails_unless_the_profiler_said_the_kernel_lacks_it() {
        let line = |trace: &str, go: &str, degraded: u32| {
            parse_result(&format!(
                "RESULT kernel=k btf=yes loaded=yes sampled=yes samples=9 files=1 trace={trace} cgroup=yes go={go} offcpu=yes degraded={degraded} insns=- exit=0"
            ))
            .unwrap()
        };
        assert_eq!(line("no", "yes", 0).status(), "FAILED");
        assert_eq!(line("yes", "no", 0).status(), "FAILED");
        assert_eq!(line("no", "yes", 1).status(), "degraded");
        assert_eq!(line("yes", "yes", 1).status(), "degraded");
        assert_eq!(line("yes", "yes", 0).status(), "passed");
    }

    #[test]
    fn collects_the_degraded_notices() {
        let log = "2026-12-06T07:20:45Z  WARN profiler: degraded: trace contexts off: this kernel lacks bpf_probe_read_user (Linux 5.5 has it)\n\
                   INFO recording\n";
        assert_eq!(
            degraded_notices(log),
            [
                "degraded: trace contexts off: this kernel lacks bpf_probe_read_user (Linux 5.5 has it)"
            ]
        );
        assert!(degraded_notices("INFO recording\n").is_empty());
    }

    #[test]
    fn finds_the_profilers_error_line() {
        let log = profiler_log(CONSOLE).unwrap();
        assert_eq!(
            error_line(&log),
            Some(
                "2026-12-06T07:20:45Z ERROR profiler: could not load the BPF program: Permission denied"
            )
        );
        assert_eq!(error_line("only\nlines\n"), Some("lines"));
        assert_eq!(
            error_line("error: could not attach: Invalid argument\nINFO after\n"),
            Some("error: could not attach: Invalid argument")
        );
        // The recording's error, not that of the report that found nothing afterwards.
        assert_eq!(
            error_line(
                "error: the kernel's verifier refused\n--- reports ---\nerror: no profiles\n"
            ),
            Some("error: the kernel's verifier refused")
        );
    }

    /// The CI run whose note was the profiler's last log line ("recording stopped") while the
    /// Go labels check had failed: the note now says what the profiles showed.
    #[test]
    fn a_check_that_found_wrong_profiles_says_what_it_found() {
        let console = "GO golabels-1.19.8 labels=no trace_a_stacks=3 trace_b_stacks=2\r\n\
            CHECK-FAILED go labels, golabels-1.19.8: trace A has 3 stacks of h and 1 of p\r\n\
            PROFILER-LOG-BEGIN\r\nINFO profiler::recorder: recording stopped reason=Duration\r\n\
            PROFILER-LOG-END\r\n\
            RESULT kernel=6.1 btf=yes loaded=yes sampled=yes samples=629 files=4 trace=yes cgroup=yes go=no offcpu=yes degraded=0 insns=33165 exit=0\r\n";
        let row = Row::of_console(
            "6.1".to_owned(),
            "6.1".to_owned(),
            "tcg",
            console,
            Duration::ZERO,
            String::new,
        );
        assert_eq!(
            row.note.as_deref(),
            Some("go labels, golabels-1.19.8: trace A has 3 stacks of h and 1 of p")
        );
        // A profiler that failed is named by its error, whatever the checks printed after.
        let failed = console.replace("loaded=yes", "loaded=no").replace(
            "INFO profiler::recorder: recording stopped",
            "error: refused",
        );
        let row = Row::of_console(
            "6.1".to_owned(),
            "6.1".to_owned(),
            "tcg",
            &failed,
            Duration::ZERO,
            String::new,
        );
        assert_eq!(row.note.as_deref(), Some("error: refused reason=Duration"));
    }

    #[test]
    fn table_lists_failures_under_it() {
        let rows = [Row {
            series: "6.1".to_owned(),
            release: "6.1.0-47-cloud-amd64".to_owned(),
            accel: "tcg".to_owned(),
            check: parse_result(CONSOLE),
            elapsed: Duration::from_millis(12_340),
            note: Some("could not load".to_owned()),
            degraded: Vec::new(),
        }];
        let text = table(&rows);
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("kernel  release"), "{text}");
        assert!(
            lines[1].contains("tcg    FAILED") && lines[1].ends_with("12.3s"),
            "{text}"
        );
        assert_eq!(lines[2], "6.1 (6.1.0-47-cloud-amd64): could not load");
    }
}
