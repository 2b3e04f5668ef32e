//! Builds the unwind table of every ELF file under the directories given (default `/usr/bin`
//! and `/usr/lib`) and prints the totals and the slowest file: the figures behind issue 15's
//! table-size and build-time targets. `cargo run --release --example unwind_tables [DIR...]`.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use profiler::{
    elf_file::ElfFile,
    unwind::{layout::KernelTable, rule::RuleIds, table},
};

fn main() {
    let dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let dirs = if dirs.is_empty() {
        vec![PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib")]
    } else {
        dirs
    };
    let mut files = Vec::new();
    for dir in &dirs {
        walk(dir, &mut files);
    }
    let (mut tables, mut rows, mut bytes, mut errors) = (0usize, 0usize, 0usize, 0usize);
    let mut total = Duration::ZERO;
    let mut slowest: Option<(Duration, PathBuf, usize, usize)> = None;
    let mut ids = RuleIds::default();
    for path in files {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let started = Instant::now();
        let built = table::build(&ElfFile::new(file))
            .ok()
            .and_then(|table| KernelTable::new(&table, &mut ids).ok());
        let took = started.elapsed();
        match built {
            Some(table) => {
                total += took;
                tables += 1;
                rows += table.rows.len();
                bytes += table.bytes();
                if slowest.as_ref().is_none_or(|(slow, ..)| took > *slow) {
                    slowest = Some((took, path, table.rows.len(), table.bytes()));
                }
            }
            None => errors += 1,
        }
    }
    println!(
        "{tables} tables ({errors} files without one), {rows} rows, {} distinct rules, {:.1} MiB \
         in the kernel layout, {:.2} s to build",
        ids.rules().len(),
        bytes as f64 / f64::from(1 << 20),
        total.as_secs_f64()
    );
    if let Some((took, path, rows, bytes)) = slowest {
        println!(
            "slowest: {} in {:.0} ms: {rows} rows, {:.1} MiB",
            path.display(),
            took.as_secs_f64() * 1000.0,
            bytes as f64 / f64::from(1 << 20)
        );
    }
}

/// Regular files below `dir`, links not followed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}
