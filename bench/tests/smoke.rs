//! The harness end to end, on the part that needs neither root nor the reference tools: the quick
//! plan, a real measurement, and the report it writes.

use std::process::Command;

#[test]
fn quick_output_benchmark_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("nested").join("BENCHMARKS.md");
    let output = Command::new(env!("CARGO_BIN_EXE_profiler-bench"))
        .args(["--quick", "--rounds", "1", "--only", "output", "--output"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.contains("`cargo xtask bench --quick --rounds 1 --only output`"),
        "{text}"
    );
    assert!(text.contains("a quick run"), "{text}");
    assert!(text.contains("## Machine"), "{text}");
    assert!(text.contains("## 1. Output"), "{text}");
    // One row per size, each with a time and a non-empty file.
    for stacks in ["1000", "10000", "100000"] {
        let row = text
            .lines()
            .find(|line| line.starts_with(&format!("| {stacks} ")))
            .unwrap_or_else(|| panic!("no row for {stacks} stacks:\n{text}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let kib: f64 = cells[3].parse().unwrap();
        assert!(kib > 0.0, "{row}");
        assert!(!cells[2].contains("n/a"), "{row}");
    }
    assert!(stdout.contains("wrote"), "{stdout}");
}

#[test]
fn sampling_parts_refuse_to_run_without_root_or_tools_with_one_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_profiler-bench"))
        .args([
            "--only",
            "kernel-cost",
            "--profiler",
            "/nonexistent/profiler",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("profiler-bench: error: "), "{stderr}");
    // As root the binary is missing; as a user, root is.
    assert!(
        stderr.contains("no profiler binary at /nonexistent/profiler")
            || stderr.contains("needs root"),
        "{stderr}"
    );
}
