//! The unwind tables and the walk over them (profiler-user/src/unwind/, issue 15) on live
//! processes built without frame pointers (tests/fixtures/unwind_chain.c): each mode blocks in
//! libc's `read`; its registers come from /proc/PID/syscall and its stack from /proc/PID/mem,
//! as the BPF walk will have them, and the walk must name every frame of the known chain, cross
//! libc's code (its `read`, `qsort`'s internals, the signal trampoline) by its `.eh_frame`
//! alone, and end at the outermost frame (`_start`, whose return address is undefined) or, past
//! its frame limit, say that it was truncated.
//!
//! Needs no root: the test reads its own child.

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
        layout::{KernelTable, RuleIds},
        mappings::{CodeMapping, code_mappings},
        table::{self, Arch},
        walk::{End, Module, Registers, walk},
    },
};

const FIXTURE: &str = env!("FIXTURE_UNWIND_CHAIN");
const MAX_FRAMES: usize = 127;

/// `/proc/PID/syscall` of a task blocked in `read`: its sp and pc.
fn blocked_registers(pid: u32) -> Result<Option<(u64, u64)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall"))?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    // "running" while it runs; the read syscall's number once blocked.
    if fields.len() != 9 || fields[0] != libc::SYS_read.to_string() {
        return Ok(None);
    }
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16);
    Ok(Some((hex(fields[7])?, hex(fields[8])?)))
}

/// A walk of the fixture's stack in one mode: each frame's function in the fixture (`None`
/// for frames elsewhere: libc, the loader), and how the walk ended.
struct Walked {
    frames: Vec<u64>,
    names: Vec<Option<String>>,
    /// Frames in libc.
    in_libc: Vec<bool>,
    end: End,
}

fn walk_fixture(mode: &str) -> Result<Walked> {
    let mut child = Command::new(FIXTURE)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let walked = walk_child(&mut child);
    child.kill()?;
    child.wait()?;
    walked
}

fn walk_child(child: &mut std::process::Child) -> Result<Walked> {
    let pid = child.id();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready)?;
    assert_eq!(ready.trim(), "ready");
    let (sp, pc) = wait_until(Duration::from_secs(10), "blocked read", || {
        blocked_registers(pid)
    })?;

    let mut ids = RuleIds::default();
    let mut mapped: Vec<(CodeMapping, Option<KernelTable>)> = Vec::new();
    for mapping in code_mappings(pid as i32)? {
        let table = table::build(&ElfFile::new(File::open(&mapping.path)?))
            .ok()
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
    let registers = Registers {
        pc,
        sp,
        fp: None,
        lr: None,
    };
    let arch = if cfg!(target_arch = "aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };
    let (frames, end) = walk(arch, ids.rules(), registers, module_of, read, MAX_FRAMES);

    let fixture = std::fs::canonicalize(FIXTURE)?;
    let relative = fixture.strip_prefix("/")?;
    let (exe, _) = mapping_of(pc)
        .filter(|(m, _)| m.path.ends_with(relative))
        .or_else(|| mapped.iter().find(|(m, _)| m.path.ends_with(relative)))
        .context("the fixture's own mapping")?;
    let data = std::fs::read(FIXTURE)?;
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
    Ok(Walked {
        frames,
        names,
        in_libc,
        end,
    })
}

impl Walked {
    /// The fixture's functions, leaf first, with `libc` for a run of libc frames.
    fn chain(&self) -> Vec<String> {
        let mut chain: Vec<String> = Vec::new();
        for (name, libc) in self.names.iter().zip(&self.in_libc) {
            let word = match (name, libc) {
                (Some(name), _) => name.clone(),
                (None, true) => "libc".to_owned(),
                (None, false) => "?".to_owned(),
            };
            if !(word == "libc" && chain.last().is_some_and(|last| last == "libc")) {
                chain.push(word);
            }
        }
        chain
    }
}

#[test]
fn a_chain_without_frame_pointers_is_walked_to_its_root_through_libc() -> Result<()> {
    let walked = walk_fixture("chain")?;
    let chain = walked.chain();
    assert_eq!(walked.end, End::Root, "{chain:?} {:x?}", walked.frames);
    // libc's read, the chain, main, then libc's start and the executable's `_start`.
    assert_eq!(
        chain,
        [
            "libc",
            "block_in_read",
            "chain_three",
            "chain_two",
            "chain_one",
            "main",
            "libc",
            "_start"
        ],
        "{:x?}",
        walked.frames
    );
    Ok(())
}

#[test]
fn qsort_internals_are_walked_from_libc_tables() -> Result<()> {
    let walked = walk_fixture("qsort")?;
    let chain = walked.chain();
    assert_eq!(walked.end, End::Root, "{chain:?}");
    assert_eq!(
        chain,
        [
            "libc",
            "block_in_read",
            "compare_blocking",
            "libc",
            "sort_numbers",
            "main",
            "libc",
            "_start"
        ],
    );
    Ok(())
}

#[test]
fn a_signal_frame_leads_to_the_interrupted_function() -> Result<()> {
    let walked = walk_fixture("signal")?;
    let chain = walked.chain();
    assert_eq!(walked.end, End::Root, "{chain:?}");
    // The handler's frames, libc's __restore_rt, then the code the signal interrupted.
    assert_eq!(
        chain,
        [
            "libc",
            "block_in_read",
            "signal_leaf",
            "on_alarm",
            "libc",
            "spin_until_signal",
            "main",
            "libc",
            "_start"
        ],
    );
    Ok(())
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
