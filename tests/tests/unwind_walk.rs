//! The unwind tables and the walk over them (profiler-user/src/unwind/, issue 15) on live
//! processes built without frame pointers (tests/fixtures/unwind_chain.c, unwind_rust.rs,
//! unwind_cpp.cc): each blocks in libc's `read`, is stopped, and its registers and stack are
//! read as the BPF walk will have them (ptrace, /proc/PID/mem), and the walk must name every frame of the known chain, cross
//! libc's code (its `read`, `qsort`'s internals, the signal trampoline) by its `.eh_frame`
//! alone, and end at the outermost frame (`_start`, whose return address is undefined) or, past
//! its frame limit, say that it was truncated.
//!
//! Needs no root: the test stops and reads its own child (ptrace). x86_64: the registers are read
//! with `PTRACE_GETREGS`.
#![cfg(target_arch = "x86_64")]

use std::{
    fs::File,
    io::{BufRead, BufReader},
    os::unix::fs::FileExt,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};
use integration_tests::wait_until;
use object::{Object, ObjectSymbol};
use profiler::{
    elf_file::ElfFile,
    unwind::{
        layout::KernelTable,
        mappings::{CodeMapping, code_mappings},
        rule::RuleIds,
        table::{self, Arch},
        walk::{End, Module, Registers, walk},
    },
};

const FIXTURE: &str = env!("FIXTURE_UNWIND_CHAIN");
const RUST: &str = env!("FIXTURE_UNWIND_RUST");
const PLUGIN: &str = env!("FIXTURE_UNWIND_PLUGIN");
const CPP: &str = env!("FIXTURE_UNWIND_CPP");
const MAX_FRAMES: usize = 127;

/// Whether the task is blocked in `read` (`/proc/PID/syscall` starts with its number).
fn blocked_in_read(pid: u32) -> Result<Option<()>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall"))?;
    Ok(text
        .split_whitespace()
        .next()
        .is_some_and(|nr| nr == libc::SYS_read.to_string())
        .then_some(()))
}

/// The user registers of the task, stopped with ptrace (`PTRACE_SEIZE`, `PTRACE_INTERRUPT`):
/// what the BPF program reads from the perf event's context, rbp included.
fn stopped_registers(pid: u32) -> Result<Registers> {
    let pid = pid as libc::pid_t;
    // SAFETY: ptrace on our own child, with a zeroed struct of the kernel's layout for GETREGS.
    unsafe {
        anyhow::ensure!(
            libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) == 0,
            "PTRACE_SEIZE: {}",
            std::io::Error::last_os_error()
        );
        anyhow::ensure!(
            libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0) == 0,
            "PTRACE_INTERRUPT: {}",
            std::io::Error::last_os_error()
        );
        let mut status = 0;
        anyhow::ensure!(libc::waitpid(pid, &mut status, 0) == pid, "waitpid");
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        anyhow::ensure!(
            libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs) == 0,
            "PTRACE_GETREGS: {}",
            std::io::Error::last_os_error()
        );
        Ok(Registers {
            pc: regs.rip,
            sp: regs.rsp,
            fp: Some(regs.rbp),
            lr: None,
        })
    }
}

/// A walk of the fixture's stack in one mode: each frame's function in the fixture (`None`
/// for frames elsewhere: libc, the loader), and how the walk ended.
struct Walked {
    frames: Vec<u64>,
    names: Vec<Option<String>>,
    /// Frames in libc.
    in_libc: Vec<bool>,
    /// Frames in the dlopen'ed plugin.
    in_plugin: Vec<bool>,
    end: End,
}

fn walk_fixture(mode: &str) -> Result<Walked> {
    walk_program(FIXTURE, &[mode])
}

fn walk_program(program: &str, args: &[&str]) -> Result<Walked> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let walked = walk_child(program, &mut child);
    child.kill()?;
    child.wait()?;
    walked
}

fn walk_child(program: &str, child: &mut std::process::Child) -> Result<Walked> {
    let pid = child.id();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready)?;
    assert_eq!(ready.trim(), "ready");
    wait_until(Duration::from_secs(10), "blocked read", || {
        blocked_in_read(pid)
    })?;
    let registers = stopped_registers(pid)?;
    let pc = registers.pc;

    let mut ids = RuleIds::default();
    let mut mapped: Vec<(CodeMapping, Option<KernelTable>)> = Vec::new();
    for mapping in code_mappings(pid as i32)? {
        // The vDSO is a range of no file: no table, frame pointers.
        let table = File::open(&mapping.path)
            .ok()
            .and_then(|file| table::build(&ElfFile::new(file)).ok())
            .map(|table| KernelTable::new(&table, &mut ids))
            .transpose()?;
        mapped.push((mapping, table));
    }
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let read = |address: u64| {
        let mut word = [0u8; 8];
        mem.read_exact_at(&mut word, address)
            .ok()
            .map(|()| u64::from_ne_bytes(word))
    };
    let mapping_of = |address: u64| {
        mapped
            .iter()
            .find(|(m, _)| (m.start..m.end).contains(&address))
    };
    let module_of = |address: u64| {
        mapping_of(address).map(|(m, table)| Module {
            table: table.as_ref(),
            bias: m.bias,
        })
    };
    let (frames, end) = walk(
        Arch::X86_64,
        ids.rules(),
        registers,
        module_of,
        read,
        MAX_FRAMES,
    );

    let fixture = std::fs::canonicalize(program)?;
    let relative = fixture.strip_prefix("/")?;
    let (exe, _) = mapping_of(pc)
        .filter(|(m, _)| m.path.ends_with(relative))
        .or_else(|| mapped.iter().find(|(m, _)| m.path.ends_with(relative)))
        .context("the fixture's own mapping")?;
    let data = std::fs::read(program)?;
    let elf = object::File::parse(&*data)?;
    let symbols: Vec<(u64, u64, String)> = elf
        .symbols()
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_owned())))
        .collect();
    let names = frames
        .iter()
        .enumerate()
        .map(|(i, &pc)| {
            if !(exe.start..exe.end).contains(&pc) {
                return None;
            }
            // Return addresses point after their call: name the call.
            let call = if i == 0 { pc } else { pc - 1 }.wrapping_sub(exe.bias);
            symbols
                .iter()
                .find(|(start, size, _)| (*start..start + size).contains(&call))
                .map(|(_, _, name)| name.clone())
        })
        .collect();
    let in_libc = frames
        .iter()
        .map(|&pc| {
            mapping_of(pc).is_some_and(|(m, _)| m.path.to_string_lossy().contains("/libc.so"))
        })
        .collect();
    let in_plugin = frames
        .iter()
        .map(|&pc| {
            mapping_of(pc).is_some_and(|(m, _)| m.path.ends_with("libfixture_unwind_plugin.so"))
        })
        .collect();
    Ok(Walked {
        frames,
        names,
        in_libc,
        in_plugin,
        end,
    })
}

impl Walked {
    /// Whether the fixture's frames include, leaf first, functions whose (mangled) names
    /// contain each of `wanted` in order.
    fn passes_through(&self, wanted: &[&str]) -> bool {
        let mut wanted = wanted.iter().peekable();
        for name in self.names.iter().flatten() {
            if wanted.peek().is_some_and(|w| name.contains(*w)) {
                wanted.next();
            }
        }
        wanted.peek().is_none()
    }

    /// The fixture's functions, leaf first, with `libc` for a run of libc frames.
    fn chain(&self) -> Vec<String> {
        let mut chain: Vec<String> = Vec::new();
        for ((name, libc), plugin) in self.names.iter().zip(&self.in_libc).zip(&self.in_plugin) {
            let word = match (name, libc, plugin) {
                (Some(name), _, _) => name.clone(),
                (None, true, _) => "libc".to_owned(),
                (None, false, true) => "plugin".to_owned(),
                (None, false, false) => "?".to_owned(),
            };
            if !(word == "libc" && chain.last().is_some_and(|last| last == "libc")) {
                chain.push(word);
            }
        }
        chain
    }
}

/// Walks the fixture in `mode` (with `args` after it) and checks the whole chain: libc's
/// `read`, `middle` (the fixture's frames, with `libc` for a run of libc's), `main`, libc's
/// start, `_start`.
fn walks_to_root(mode: &[&str], middle: &[&str]) -> Result<()> {
    let walked = walk_program(FIXTURE, mode)?;
    let chain = walked.chain();
    let expected: Vec<&str> = ["libc", "block_in_read"]
        .into_iter()
        .chain(middle.iter().copied())
        .chain(["main", "libc", "_start"])
        .collect();
    assert_eq!(chain, expected, "{:x?}", walked.frames);
    assert_eq!(walked.end, End::Root, "{chain:?}");
    Ok(())
}

#[test]
fn a_chain_without_frame_pointers_is_walked_to_its_root_through_libc() -> Result<()> {
    walks_to_root(&["chain"], &["chain_three", "chain_two", "chain_one"])
}

#[test]
fn qsort_internals_are_walked_from_libc_tables() -> Result<()> {
    walks_to_root(&["qsort"], &["compare_blocking", "libc", "sort_numbers"])
}

#[test]
fn a_signal_frame_leads_to_the_interrupted_function() -> Result<()> {
    // The handler's frames, libc's __restore_rt, then the code the signal interrupted.
    walks_to_root(
        &["signal"],
        &["signal_leaf", "on_alarm", "libc", "spin_until_signal"],
    )
}

#[test]
fn a_library_opened_after_start_is_walked_by_its_own_tables() -> Result<()> {
    walks_to_root(
        &["dlopen", PLUGIN],
        &["plugin_callback", "plugin", "run_plugin"],
    )
}

#[test]
fn a_stack_deeper_than_the_limit_is_truncated_not_cut_silently() -> Result<()> {
    let walked = walk_fixture("deep")?;
    assert_eq!(walked.end, End::Truncated);
    assert_eq!(walked.frames.len(), MAX_FRAMES);
    let chain = walked.chain();
    assert_eq!(&chain[..2], ["libc", "block_in_read"]);
    assert!(chain[2..].iter().all(|name| name == "recurse"), "{chain:?}");
    Ok(())
}

/// Walks `program` and checks that it passes, leaf first, through functions named like
/// `wanted`, and reaches its root.
fn passes_through_to_root(program: &str, wanted: &[&str]) -> Result<()> {
    let walked = walk_program(program, &[])?;
    assert!(
        walked.passes_through(wanted),
        "{:?} ({:?})",
        walked.names,
        walked.end
    );
    assert_eq!(walked.end, End::Root, "{:?}", walked.chain());
    Ok(())
}

#[test]
fn a_rust_release_build_is_walked_through_std_to_its_root() -> Result<()> {
    passes_through_to_root(
        RUST,
        &[
            "chain_c",
            "chain_b",
            "chain_a",
            "unwind_rust4main",
            "lang_start",
        ],
    )
}

#[test]
fn cpp_with_exceptions_and_inlined_calls_is_walked_to_its_root() -> Result<()> {
    // The inlined helper has no frame of its own: its caller's frame holds it.
    passes_through_to_root(CPP, &["Worker5block", "Worker3run", "run_guarded", "main"])
}
