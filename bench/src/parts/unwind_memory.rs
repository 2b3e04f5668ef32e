//! Part of 3: what unwinding holds, in the process and in BPF maps, with every ELF file under
//! /usr/bin and /usr/lib mapped by running processes (issue 15's memory target): ours with
//! unwind tables beside ours with `--no-dwarf-unwinding`, whole host, over one window; the
//! difference of their peak RSS plus the difference of their maps.

use std::{
    collections::HashSet,
    fs::{self, File},
    io::{BufRead, BufReader, Read},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, ensure};

use super::Bench;
use crate::{
    report::Target,
    tools::{Invocation, Running, Tool},
    workload::Workers,
};

/// The limit for unwinding's memory, MiB.
const GOAL_MIB: f64 = 64.0;
/// Files mapped per process: within the 128 code ranges a process keeps, with its own code,
/// libc, ld.so and the vDSO.
const FILES_PER_PROCESS: usize = 120;
const MIB: f64 = (1 << 20) as f64;

/// Measures over `window`; the note the report shows and the target.
pub fn measure(bench: &Bench, map_code: &Path, window: Duration) -> Result<(String, Target)> {
    let files = elf_files(&[Path::new("/usr/bin"), Path::new("/usr/lib")]);
    ensure!(!files.is_empty(), "no ELF file under /usr/bin and /usr/lib");
    bench.progress(&format!(
        "unwind memory: mapping {} ELF files in {} processes",
        files.len(),
        files.len().div_ceil(FILES_PER_PROCESS)
    ));
    let mappers = start_mappers(map_code, &files)?;
    let rate = 19;
    let tables = Running::start(
        &Invocation::new(Tool::Ours, rate),
        &bench.profiler,
        &bench.scratch("unwind-memory"),
    )?;
    let frame_pointers = Running::start(
        &Invocation::new(Tool::OursFramePointers, rate),
        &bench.profiler,
        &bench.scratch("unwind-memory-fp"),
    )?;
    bench.progress(&format!(
        "unwind memory: ours with and without unwind tables for {window:?}"
    ));
    thread::sleep(window);
    let maps = [tables.pid(), frame_pointers.pid()]
        .map(|pid| profiler::bpf::map_memory::held_bytes_by(&pid.to_string()) as f64 / MIB);
    let log = tables.log_path();
    let usage = [tables.stop()?, frame_pointers.stop()?];
    drop(mappers);
    let held = end_of_run(&fs::read_to_string(&log).unwrap_or_default());
    let rss = usage.map(|u| u.max_rss_mib);
    let unwinding = (rss[0] - rss[1]) + (maps[0] - maps[1]);
    let note = format!(
        "Unwinding's memory: {} ELF files of /usr/bin and /usr/lib mapped (their executable \
         segments) by {} processes, whole host at {rate} Hz for {} s, ours with unwind tables \
         (default `--unwind-memory-mb 64`) beside ours with `--no-dwarf-unwinding`: peak RSS \
         {:.1} against {:.1} MiB, BPF maps {:.1} against {:.1} MiB: {unwinding:.1} MiB for \
         unwinding; at the end it held {}.",
        files.len(),
        files.len().div_ceil(FILES_PER_PROCESS),
        window.as_secs(),
        rss[0],
        rss[1],
        maps[0],
        maps[1],
        held.as_deref().unwrap_or("(no end-of-run line in the log)")
    );
    let target = Target {
        goal: format!(
            "Unwinding's memory (process and BPF maps) under {GOAL_MIB:.0} MiB, every binary of \
             /usr/bin and /usr/lib mapped"
        ),
        measured: format!("{unwinding:.1} MiB"),
        met: unwinding < GOAL_MIB && held.is_some(),
    };
    Ok((note, target))
}

/// The loader's state from our log's `unwind tables at the end` line: "N tables (B MiB) for
/// P processes, F files without a table".
fn end_of_run(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find(|line| line.contains("unwind tables at the end"))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse::<u64>().ok())
    };
    Some(format!(
        "{} tables ({:.1} MiB) for {} processes, {} files without a table",
        field("tables")?,
        field("table_bytes")? as f64 / MIB,
        field("processes")?,
        field("files_without_table")?
    ))
}

/// Every 64-bit ELF file under `roots` (symbolic links not followed, each file once).
fn elf_files(roots: &[&Path]) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = roots.iter().map(|root| root.to_path_buf()).collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let path = entry.path();
            if metadata.is_dir() {
                dirs.push(path);
            } else if metadata.is_file()
                && seen.insert((metadata.dev(), metadata.ino()))
                && is_elf64(&path)
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn is_elf64(path: &Path) -> bool {
    let mut magic = [0u8; 5];
    File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF\x02"
}

/// Starts the processes that map the files, 120 each; they are killed when dropped.
fn start_mappers(map_code: &Path, files: &[PathBuf]) -> Result<Workers> {
    let mut mappers = Workers::default();
    for chunk in files.chunks(FILES_PER_PROCESS) {
        let mut child = Command::new(map_code)
            .args(chunk)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", map_code.display()))?;
        let stdout = child.stdout.take().context("the mapper's stdout")?;
        mappers.push(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        ensure!(line.starts_with("ready"), "the mapper said {line:?}");
    }
    Ok(mappers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_run_line_reads_as_a_sentence() {
        let log = "2026-12-06T23:00:00Z  INFO profiler::recorder: unwind tables at the end \
                   processes=31 tables=640 table_bytes=23068672 files_without_table=12 \
                   load_failures=0";
        assert_eq!(
            end_of_run(log).as_deref(),
            Some("640 tables (22.0 MiB) for 31 processes, 12 files without a table")
        );
        assert_eq!(end_of_run("INFO recording stopped"), None);
    }

    #[test]
    fn elf_files_are_found_once_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        fs::copy("/bin/true", dir.path().join("a")).unwrap();
        fs::write(dir.path().join("text"), "not ELF").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("sub/b")).unwrap();
        assert_eq!(elf_files(&[dir.path()]).len(), 1);
    }
}
