//! The unwind tables and the walk over them (profiler-user/src/unwind/, issue 15) on a live
//! process built without frame pointers: the fixture blocks in libc's `read` at the bottom of
//! main -> chain_one -> chain_two -> chain_three; its registers come from /proc/PID/syscall
//! and its stack from /proc/PID/mem, as the BPF walk will have them, and the walk must pass
//! every frame of the chain and end at the outermost frame (`_start`, whose return address is
//! undefined), through libc's and the executable's `.eh_frame` alone.
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
        mappings::code_mappings,
        table::{self, Arch},
        walk::{End, Module, Registers, walk},
    },
};

const FIXTURE: &str = env!("FIXTURE_UNWIND_CHAIN");

/// `/proc/PID/syscall` of a task blocked in a system call: `nr args... sp pc`.
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

/// The name of the function holding `address` of the fixture (file address), from its symbols.
fn function_at(symbols: &[(u64, u64, String)], address: u64) -> Option<&str> {
    symbols
        .iter()
        .find(|(start, size, _)| (*start..start + size).contains(&address))
        .map(|(_, _, name)| name.as_str())
}

#[test]
fn a_chain_without_frame_pointers_is_walked_to_its_root_through_libc() -> Result<()> {
    let mut child = Command::new(FIXTURE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready)?;
    assert_eq!(ready.trim(), "ready");
    let (sp, pc) = wait_until(Duration::from_secs(10), "blocked read", || {
        blocked_registers(pid)
    })?;

    let mut ids = RuleIds::default();
    let mut mapped = Vec::new();
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
    let module_of = |address: u64| {
        mapped
            .iter()
            .find(|(m, _)| (m.start..m.end).contains(&address))
            .map(|(m, table)| Module {
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
    let (frames, end) = walk(arch, ids.rules(), registers, module_of, read, 127);
    child.kill()?;
    child.wait()?;

    let fixture = std::fs::canonicalize(FIXTURE)?;
    let relative = fixture.strip_prefix("/")?;
    let (exe, _) = mapped
        .iter()
        .find(|(m, _)| m.path.ends_with(relative))
        .context("the fixture's own mapping")?;
    let data = std::fs::read(FIXTURE)?;
    let elf = object::File::parse(&*data)?;
    let symbols: Vec<(u64, u64, String)> = elf
        .symbols()
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_owned())))
        .collect();
    // Return addresses point after their call: name the call.
    let names: Vec<&str> = frames
        .iter()
        .enumerate()
        .filter(|&(_, &pc)| (exe.start..exe.end).contains(&pc))
        .filter_map(|(i, &pc)| {
            let call = if i == 0 { pc } else { pc - 1 };
            function_at(&symbols, call.wrapping_sub(exe.bias))
        })
        .collect();
    let chain: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| name.starts_with("chain_") || *name == "main")
        .collect();
    assert_eq!(
        chain,
        ["chain_three", "chain_two", "chain_one", "main"],
        "frames {frames:x?} named {names:?}, end {end:?}"
    );
    assert_eq!(end, End::Root, "frames {frames:x?} named {names:?}");
    // libc's read, the chain, main, libc's start, and `_start`.
    assert!(frames.len() >= 7, "{frames:x?}");
    Ok(())
}
