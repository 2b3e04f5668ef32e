//! Where an ELF thread-local variable lives, relative to a thread's thread pointer (TP).
//!
//! glibc places each module's TLS block in one of two ways. Modules present at start-up (the
//! main program, TLS module 1, and the libraries it needs) get *static TLS*: their blocks sit
//! at fixed offsets from every thread's TP. Modules loaded later with `dlopen` may only be
//! reachable through the thread's *DTV* (dynamic thread vector), indexed by module ID.
//!
//! This module reads ELF bytes only; it never touches `/proc`. It finds the variable's symbol,
//! its module's `PT_TLS` segment and the dynamic relocations through which the dynamic linker
//! publishes where the variable ended up ([`find_tls_symbol`]). For the main program the offset
//! follows from the segment alone ([`static_tp_offset_main`]). For a library the caller reads
//! the relocated GOT words from the process's memory and [`resolve_access`] (with
//! [`classify_tlsdesc_argument`]) turns them into a [`TlsAccess`] for the BPF program.
//!
//! The arithmetic is glibc's (`elf/dl-tls.c`, `_dl_determine_tlsoffset`, and
//! `csu/libc-tls.c` for static programs); musl lays blocks out differently and is not handled.

use object::{
    Endianness,
    elf::{self, FileHeader64},
    read::elf::{
        Dyn as _, FileHeader as _, ProgramHeader as _, Rela as _, SectionHeader as _, Sym as _,
    },
};

/// Errors of reading an ELF file's TLS information.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("malformed or unsupported ELF file: {what}")]
    Parse {
        what: &'static str,
        #[source]
        source: object::read::Error,
    },
    #[error("ELF machine {0} is not supported (only x86_64 and aarch64)")]
    UnsupportedMachine(u16),
}

impl TlsError {
    fn parse(what: &'static str) -> impl FnOnce(object::read::Error) -> Self {
        move |source| Self::Parse { what, source }
    }
}

/// The CPU architecture of an ELF file, from `e_machine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// TLS variant II: the blocks lie below the TP, the TCB at the TP.
    X86_64,
    /// TLS variant I: a 16-byte TCB at the TP, the blocks above it.
    Aarch64,
}

impl Arch {
    /// Offset from the TP of the word that holds the thread's DTV pointer (glibc's
    /// `tcbhead_t.dtv`). That pointer addresses DTV entry 0 (the generation counter); entry `m`
    /// (module `m`'s block address, or -1 while unallocated) lies at `dtv + DTV_ENTRY_SIZE * m`.
    pub fn dtv_offset(self) -> i64 {
        match self {
            // tcbhead_t { void *tcb; dtv_t *dtv; ... }
            Arch::X86_64 => 8,
            // tcbhead_t { dtv_t *dtv; void *private; }
            Arch::Aarch64 => 0,
        }
    }
}

/// Size of one DTV entry (glibc's `dtv_t`: a pointer and the pointer to free).
pub const DTV_ENTRY_SIZE: u64 = 16;

/// Size of the TCB that precedes the TLS blocks in variant I (aarch64 `tcbhead_t`).
const AARCH64_TCB_SIZE: u64 = 16;

/// The `PT_TLS` program header: the module's TLS initialization image and block layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsSegment {
    /// `p_vaddr`, before the load bias.
    pub vaddr: u64,
    /// `p_memsz`: the size of the module's TLS block.
    pub memsz: u64,
    /// `p_align`: the alignment of the module's TLS block.
    pub align: u64,
}

/// The kind of a TLS dynamic relocation, common to x86_64 and aarch64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRelocKind {
    /// A two-word descriptor: resolver function, argument (`R_X86_64_TLSDESC`,
    /// `R_AARCH64_TLSDESC`). The argument is a TP offset for static TLS, else a pointer.
    TlsDesc,
    /// One word: the module ID (`R_X86_64_DTPMOD64`, `R_AARCH64_TLS_DTPMOD`).
    DtpMod64,
    /// One word: the offset inside the module's block (`R_X86_64_DTPOFF64`,
    /// `R_AARCH64_TLS_DTPREL`).
    DtpOff64,
    /// One word: the TP offset, static TLS (`R_X86_64_TPOFF64`, `R_AARCH64_TLS_TPREL`).
    TpOff64,
}

/// A dynamic relocation through which the dynamic linker writes where a TLS variable lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsReloc {
    pub kind: TlsRelocKind,
    /// `r_offset`: the virtual address of the GOT slot, before the load bias.
    pub offset: u64,
    /// `r_addend`.
    pub addend: i64,
}

/// A defined thread-local symbol and what is needed to find it in a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSymbol {
    pub arch: Arch,
    /// `st_value`: the variable's offset inside this module's TLS block.
    pub value: u64,
    /// The module's `PT_TLS` segment (absent only in a malformed file).
    pub segment: Option<TlsSegment>,
    /// A main program (TLS module 1): `ET_EXEC`, or `ET_DYN` marked `DF_1_PIE`, or `ET_DYN`
    /// with a `PT_INTERP` and no `DT_SONAME`. A hint from the file alone: a library that can
    /// also be run (like `libc.so.6`) is the main program only when it is `/proc/<pid>/exe`,
    /// so a caller that knows better may overwrite this field.
    pub is_executable: bool,
    /// Dynamic relocations (`SHT_RELA` sections linked to `.dynsym`, which includes
    /// `.rela.plt` where TLSDESC usually lives) that refer to this symbol; plus the local
    /// references, with symbol 0: TLSDESC and TPOFF64 whose addend equals `value`, and
    /// DTPMOD64 (which names this module, whichever of its variables it was emitted for).
    /// In file order.
    pub relocations: Vec<TlsReloc>,
}

impl TlsSymbol {
    /// The first relocation of the given kind.
    pub fn relocation(&self, kind: TlsRelocKind) -> Option<&TlsReloc> {
        self.relocations.iter().find(|reloc| reloc.kind == kind)
    }
}

/// Finds the defined `STT_TLS` symbol `name` in `.dynsym`, falling back to `.symtab`.
///
/// Returns `Ok(None)` when the file has no such symbol, or only an undefined reference to it
/// (the variable lives in another module).
pub fn find_tls_symbol(elf: &[u8], name: &str) -> Result<Option<TlsSymbol>, TlsError> {
    let header = FileHeader64::<Endianness>::parse(elf).map_err(TlsError::parse("header"))?;
    let endian = header.endian().map_err(TlsError::parse("endianness"))?;
    let arch = match header.e_machine(endian) {
        elf::EM_X86_64 => Arch::X86_64,
        elf::EM_AARCH64 => Arch::Aarch64,
        other => return Err(TlsError::UnsupportedMachine(other.0)),
    };
    let sections = header
        .sections(endian, elf)
        .map_err(TlsError::parse("section headers"))?;
    let dynsym = sections
        .symbols(endian, elf, elf::SHT_DYNSYM)
        .map_err(TlsError::parse(".dynsym"))?;

    let is_defined_tls =
        |sym: &elf::Sym64<Endianness>| sym.st_type() == elf::STT_TLS && !sym.is_undefined(endian);
    let by_name = |sym: &elf::Sym64<Endianness>, strings| {
        sym.name(endian, strings)
            .is_ok_and(|n| n == name.as_bytes())
    };

    let dynamic = dynsym
        .enumerate()
        .find(|(_, sym)| is_defined_tls(sym) && by_name(sym, dynsym.strings()));
    let (dyn_index, value) = match dynamic {
        Some((index, sym)) => (Some(index.0), sym.st_value(endian)),
        None => {
            let symtab = sections
                .symbols(endian, elf, elf::SHT_SYMTAB)
                .map_err(TlsError::parse(".symtab"))?;
            match symtab
                .iter()
                .find(|sym| is_defined_tls(sym) && by_name(sym, symtab.strings()))
            {
                Some(sym) => (None, sym.st_value(endian)),
                None => return Ok(None),
            }
        }
    };

    let segments = header
        .program_headers(endian, elf)
        .map_err(TlsError::parse("program headers"))?;
    let segment = segments
        .iter()
        .find(|ph| ph.p_type(endian) == elf::PT_TLS)
        .map(|ph| TlsSegment {
            vaddr: ph.p_vaddr(endian),
            memsz: ph.p_memsz(endian),
            align: ph.p_align(endian),
        });
    let has_interp = segments
        .iter()
        .any(|ph| ph.p_type(endian) == elf::PT_INTERP);
    let is_executable = match header.e_type(endian) {
        elf::ET_EXEC => true,
        elf::ET_DYN => is_pie(&sections, endian, elf, has_interp)?,
        _ => false,
    };
    let relocations = if dynsym.is_empty() {
        Vec::new()
    } else {
        tls_relocations(
            &sections,
            endian,
            elf,
            arch,
            dynsym.section(),
            dyn_index,
            value,
        )?
    };

    Ok(Some(TlsSymbol {
        arch,
        value,
        segment,
        is_executable,
        relocations,
    }))
}

type Sections<'data> = object::read::elf::SectionTable<'data, FileHeader64<Endianness>>;

/// Whether an `ET_DYN` file is a main program: marked `DF_1_PIE` (linkers since 2018), or
/// with an interpreter but no `DT_SONAME` (older PIEs; libraries that run, like libc, have
/// a soname).
fn is_pie(
    sections: &Sections<'_>,
    endian: Endianness,
    elf: &[u8],
    has_interp: bool,
) -> Result<bool, TlsError> {
    let (mut pie_flag, mut soname) = (false, false);
    let dynamic = sections
        .dynamic(endian, elf)
        .map_err(TlsError::parse(".dynamic"))?;
    for entry in dynamic.map(|(entries, _)| entries).unwrap_or_default() {
        match entry.d_tag(endian) {
            elf::DT_FLAGS_1 => pie_flag |= entry.d_val(endian) & elf::DF_1_PIE.0 != 0,
            elf::DT_SONAME => soname = true,
            _ => {}
        }
    }
    Ok(pie_flag || (has_interp && !soname))
}

/// The TLS relocations for the symbol at `dyn_index` of `.dynsym` (`None`: the symbol is only
/// in `.symtab`), and the local ones with symbol 0 that match `value`.
fn tls_relocations(
    sections: &Sections<'_>,
    endian: Endianness,
    elf: &[u8],
    arch: Arch,
    dynsym: object::SectionIndex,
    dyn_index: Option<usize>,
    value: u64,
) -> Result<Vec<TlsReloc>, TlsError> {
    let mut relocations = Vec::new();
    for section in sections.iter() {
        // .rela.dyn and .rela.plt (where TLSDESC usually lives) both link to .dynsym.
        if section.sh_link(endian) as usize != dynsym.0 {
            continue;
        }
        let Some((relas, _)) = section
            .rela(endian, elf)
            .map_err(TlsError::parse("dynamic relocations"))?
        else {
            continue;
        };
        for rela in relas {
            let Some(kind) = reloc_kind(arch, rela.r_type(endian, false).0) else {
                continue;
            };
            let symbol = rela.r_sym(endian, false) as usize;
            let addend = rela.r_addend(endian);
            let wanted = if symbol == 0 {
                match kind {
                    TlsRelocKind::TlsDesc | TlsRelocKind::TpOff64 => addend == value as i64,
                    TlsRelocKind::DtpMod64 => true,
                    TlsRelocKind::DtpOff64 => false,
                }
            } else {
                Some(symbol) == dyn_index
            };
            if wanted {
                relocations.push(TlsReloc {
                    kind,
                    offset: rela.r_offset(endian),
                    addend,
                });
            }
        }
    }
    Ok(relocations)
}

fn reloc_kind(arch: Arch, r_type: u32) -> Option<TlsRelocKind> {
    let r_type = elf::RelocationType(r_type);
    Some(match arch {
        Arch::X86_64 => match r_type {
            elf::R_X86_64_TLSDESC => TlsRelocKind::TlsDesc,
            elf::R_X86_64_DTPMOD64 => TlsRelocKind::DtpMod64,
            elf::R_X86_64_DTPOFF64 => TlsRelocKind::DtpOff64,
            elf::R_X86_64_TPOFF64 => TlsRelocKind::TpOff64,
            _ => return None,
        },
        Arch::Aarch64 => match r_type {
            elf::R_AARCH64_TLSDESC => TlsRelocKind::TlsDesc,
            elf::R_AARCH64_TLS_DTPMOD => TlsRelocKind::DtpMod64,
            elf::R_AARCH64_TLS_DTPREL => TlsRelocKind::DtpOff64,
            elf::R_AARCH64_TLS_TPREL => TlsRelocKind::TpOff64,
            _ => return None,
        },
    })
}

/// TP-relative offset of a variable in the main executable's static TLS block (TLS module 1).
///
/// `value` is the symbol's `st_value`. glibc places module 1 first: on x86_64 (variant II) the
/// block ends just below the TP, on aarch64 (variant I) it starts after the 16-byte TCB, each
/// rounded to the segment's alignment while keeping `p_vaddr mod p_align` (the "first byte"
/// offset, 0 with every linker we know). Garbage in gives garbage out, never a panic.
pub fn static_tp_offset_main(arch: Arch, segment: &TlsSegment, value: u64) -> i64 {
    // p_align 0 or 1 means no constraint (glibc: `align ?: 1`).
    let align = segment.align.max(1);
    let firstbyte = segment.vaddr.wrapping_neg() & (align - 1);
    let block_offset = match arch {
        // off = roundup(blocksize - firstbyte, align) + firstbyte; the block starts at TP - off.
        Arch::X86_64 => round_up(segment.memsz.wrapping_sub(firstbyte), align)
            .wrapping_add(firstbyte)
            .wrapping_neg(),
        // off = roundup(TCB, align), one more align if the gap is short of firstbyte;
        // the block starts at TP + off - firstbyte.
        Arch::Aarch64 => {
            let mut off = round_up(AARCH64_TCB_SIZE, align);
            if off - AARCH64_TCB_SIZE < firstbyte {
                off = off.wrapping_add(align);
            }
            off.wrapping_sub(firstbyte)
        }
    };
    block_offset.wrapping_add(value) as i64
}

fn round_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align).wrapping_mul(align)
}

/// Load bias of a module from one of its mappings (start address, file offset).
///
/// Uses the `PT_LOAD` segment that begins in the mapping's first page, or else the one that
/// covers that file offset (a mapping split by `mprotect`, as RELRO does). Two segments can
/// share a file page, so the mapping with the lowest file offset (normally 0, the one holding
/// the ELF header) gives the unambiguous answer. `Ok(None)` when no segment fits.
pub fn load_bias(
    elf: &[u8],
    map_start: u64,
    map_file_offset: u64,
) -> Result<Option<u64>, TlsError> {
    let header = FileHeader64::<Endianness>::parse(elf).map_err(TlsError::parse("header"))?;
    let endian = header.endian().map_err(TlsError::parse("endianness"))?;
    let loads: Vec<_> = header
        .program_headers(endian, elf)
        .map_err(TlsError::parse("program headers"))?
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .map(|ph| {
            let page = ph.p_align(endian).max(0x1000);
            (
                ph.p_offset(endian),
                ph.p_vaddr(endian),
                ph.p_filesz(endian),
                page,
            )
        })
        .collect();
    // The kernel maps a segment from its offset rounded down to a page; the page size is at
    // most p_align.
    let starts_here = loads
        .iter()
        .filter(|(offset, _, _, page)| {
            *offset >= map_file_offset && offset - map_file_offset < *page
        })
        .min_by_key(|(offset, ..)| *offset);
    let covers = || {
        loads.iter().find(|(offset, _, filesz, _)| {
            *offset <= map_file_offset && map_file_offset - offset < *filesz
        })
    };
    Ok(starts_here.or_else(covers).map(|(offset, vaddr, ..)| {
        // The mapping's start corresponds to vaddr - (offset - map_file_offset).
        map_start
            .wrapping_add(offset.wrapping_sub(map_file_offset))
            .wrapping_sub(*vaddr)
    }))
}

/// The second word of a resolved TLSDESC descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsdescArg {
    /// ld.so resolved it statically (`_dl_tlsdesc_return`): the word is the variable's TP
    /// offset.
    Static { tp_offset: i64 },
    /// Dynamic TLS (`_dl_tlsdesc_dynamic`): the word points to glibc's
    /// `struct tlsdesc_dynamic_arg { tls_index { size_t module; size_t offset; }; size_t
    /// gen_count; }`; read it with [`tlsdesc_dynamic_access`].
    Pointer(u64),
}

/// Static TP offsets are far smaller than this; heap pointers are far larger (aarch64) or
/// positive (x86_64).
const STATIC_TLS_LIMIT: u64 = 1 << 30;

/// Decides from the second word of a TLSDESC descriptor whether ld.so resolved it statically.
///
/// x86_64: a TP offset is negative (the blocks lie below the TP) and small; a pointer is a
/// positive user-space address. aarch64: a TP offset is at least the 16-byte TCB and small
/// (below 1 GiB), a pointer is a heap address above it. A 0 (a descriptor not yet relocated)
/// is reported as `Pointer(0)`, which no read follows.
///
/// Caveat: on aarch64 a non-PIE program's `brk` heap starts right after its data, from 4 MiB
/// up (randomized within 1 GiB), so a dynamic descriptor's pointer can fall below the limit;
/// a caller that sees the value inside one of the process's mappings should treat it as a
/// pointer.
pub fn classify_tlsdesc_argument(arch: Arch, arg: u64) -> TlsdescArg {
    let is_static = match arch {
        Arch::X86_64 => (arg as i64) < 0 && arg.wrapping_neg() < STATIC_TLS_LIMIT,
        Arch::Aarch64 => (AARCH64_TCB_SIZE..STATIC_TLS_LIMIT).contains(&arg),
    };
    if is_static {
        TlsdescArg::Static {
            tp_offset: arg as i64,
        }
    } else {
        TlsdescArg::Pointer(arg)
    }
}

/// How the BPF program reaches a variable from a thread's TP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsAccess {
    /// Static TLS: the variable is at `tp + tp_offset` in every thread.
    Static { tp_offset: i64 },
    /// Dynamic TLS: `dtv = *(tp + arch.dtv_offset())`, `block = *(dtv + DTV_ENTRY_SIZE *
    /// module)`, the variable is at `block + offset`. A block of -1 (or 0) is not allocated
    /// yet in that thread: the thread has not touched the module's TLS.
    Dtv { module: u64, offset: u64 },
}

/// Size of the part of glibc's `struct tlsdesc_dynamic_arg` that [`tlsdesc_dynamic_access`]
/// reads: `tls_index { module, offset }`.
pub const TLSDESC_DYNAMIC_ARG_SIZE: usize = 16;

/// Reads the `tls_index` at the start of glibc's `struct tlsdesc_dynamic_arg` (the target of
/// [`TlsdescArg::Pointer`]), as read from the process's memory (native byte order).
pub fn tlsdesc_dynamic_access(bytes: &[u8; TLSDESC_DYNAMIC_ARG_SIZE]) -> TlsAccess {
    let (module, offset) = bytes.split_at(8);
    TlsAccess::Dtv {
        module: u64::from_ne_bytes(module.try_into().expect("8 bytes")),
        offset: u64::from_ne_bytes(offset.try_into().expect("8 bytes")),
    }
}

/// Why [`resolve_access`] found no way to the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("the module has no PT_TLS segment")]
    NoTlsSegment,
    #[error("the library has no TLSDESC, TPOFF64 or DTPMOD64 relocation for the variable")]
    NoRelocation,
    #[error("reading the process's memory at {0:#x} failed")]
    Unreadable(u64),
    #[error("module ID {0} is not plausible (not relocated yet?)")]
    BadModule(u64),
    #[error("TP offset {0} is not plausible (not relocated yet?)")]
    BadTpOffset(i64),
}

/// Module IDs count loaded modules with TLS; anything this large is garbage.
const MAX_MODULE_ID: u64 = 1 << 20;

/// How to reach the variable in a process, from its module's load bias and a reader of the
/// process's memory (8-byte words, native byte order; `None` when unreadable).
///
/// The main program's offset follows from its `PT_TLS` segment. For a library the relocated
/// GOT words decide, in order of preference: TPOFF64 (a TP offset), TLSDESC (a TP offset, or a
/// pointer to the module ID and offset), DTPMOD64 (the module ID; the offset is `st_value`).
pub fn resolve_access(
    symbol: &TlsSymbol,
    bias: u64,
    mut read_u64: impl FnMut(u64) -> Option<u64>,
) -> Result<TlsAccess, ResolveError> {
    let mut read = |address: u64| read_u64(address).ok_or(ResolveError::Unreadable(address));
    if symbol.is_executable {
        let segment = symbol.segment.as_ref().ok_or(ResolveError::NoTlsSegment)?;
        return Ok(TlsAccess::Static {
            tp_offset: static_tp_offset_main(symbol.arch, segment, symbol.value),
        });
    }
    let slot = |reloc: &TlsReloc| bias.wrapping_add(reloc.offset);
    if let Some(reloc) = symbol.relocation(TlsRelocKind::TpOff64) {
        // The same bounds as a static TLSDESC argument; 0 means not relocated yet.
        let word = read(slot(reloc))?;
        return match classify_tlsdesc_argument(symbol.arch, word) {
            TlsdescArg::Static { tp_offset } => Ok(TlsAccess::Static { tp_offset }),
            TlsdescArg::Pointer(_) => Err(ResolveError::BadTpOffset(word as i64)),
        };
    }
    if let Some(reloc) = symbol.relocation(TlsRelocKind::TlsDesc) {
        let arg = read(slot(reloc).wrapping_add(8))?;
        return match classify_tlsdesc_argument(symbol.arch, arg) {
            TlsdescArg::Static { tp_offset } => Ok(TlsAccess::Static { tp_offset }),
            // A descriptor not relocated yet still holds the file's zeros.
            TlsdescArg::Pointer(0) => Err(ResolveError::Unreadable(0)),
            TlsdescArg::Pointer(pointer) => {
                let module = read(pointer)?;
                let offset = read(pointer.wrapping_add(8))?;
                dtv_access(module, offset)
            }
        };
    }
    if let Some(reloc) = symbol.relocation(TlsRelocKind::DtpMod64) {
        let module = read(slot(reloc))?;
        return dtv_access(module, symbol.value);
    }
    Err(ResolveError::NoRelocation)
}

fn dtv_access(module: u64, offset: u64) -> Result<TlsAccess, ResolveError> {
    if module == 0 || module > MAX_MODULE_ID {
        return Err(ResolveError::BadModule(module));
    }
    Ok(TlsAccess::Dtv { module, offset })
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Write},
        path::{Path, PathBuf},
        process::{Child, ChildStdin, ChildStdout, Command, Stdio},
        sync::OnceLock,
    };

    use super::*;

    // Cross-compiled, committed binaries (see fixtures/README.md for the commands).
    const AARCH64_EXE: &[u8] = include_bytes!("fixtures/aarch64_tls_exe");
    const AARCH64_DESC: &[u8] = include_bytes!("fixtures/aarch64_tls_desc.so");
    const AARCH64_GD: &[u8] = include_bytes!("fixtures/aarch64_tls_gd.so");
    const AARCH64_IE: &[u8] = include_bytes!("fixtures/aarch64_tls_ie.so");

    const NAME: &str = "otel_thread_ctx_v1";

    fn aarch64(elf: &[u8]) -> TlsSymbol {
        find_tls_symbol(elf, NAME).unwrap().expect("symbol present")
    }

    #[test]
    fn x86_64_main_block_ends_below_tp_rounded_to_alignment() {
        // 180 bytes, 64-aligned: the block occupies [tp - 192, tp - 12).
        let segment = TlsSegment {
            vaddr: 0x3d80,
            memsz: 0xb4,
            align: 0x40,
        };
        assert_eq!(static_tp_offset_main(Arch::X86_64, &segment, 0x40), -128);
        assert_eq!(static_tp_offset_main(Arch::X86_64, &segment, 0), -192);
        // Without an alignment constraint the block ends exactly at the TP.
        let packed = TlsSegment {
            vaddr: 0x1000,
            memsz: 24,
            align: 0,
        };
        assert_eq!(static_tp_offset_main(Arch::X86_64, &packed, 16), -8);
    }

    #[test]
    fn aarch64_main_block_follows_the_tcb() {
        let segment = TlsSegment {
            vaddr: 0x1d80,
            memsz: 0xb4,
            align: 0x40,
        };
        assert_eq!(static_tp_offset_main(Arch::Aarch64, &segment, 0x40), 0x80);
        let small = TlsSegment {
            vaddr: 0x1d80,
            memsz: 8,
            align: 8,
        };
        assert_eq!(static_tp_offset_main(Arch::Aarch64, &small, 0), 16);
    }

    #[test]
    fn first_byte_offset_is_kept_like_glibc() {
        // p_vaddr = 0x1008 with p_align 32: the block's first byte must sit at 8 mod 32, so
        // firstbyte = (-8) & 31 = 24.
        let segment = TlsSegment {
            vaddr: 0x1008,
            memsz: 40,
            align: 32,
        };
        // x86_64: off = roundup(40 - 24, 32) + 24 = 56; the block starts at tp - 56, and
        // tp - 56 = tp - 64 + 8 keeps 8 mod 32 for a 32-aligned TP.
        assert_eq!(static_tp_offset_main(Arch::X86_64, &segment, 4), -52);
        // aarch64: off = roundup(16, 32) = 32, the gap 16 is short of 24 so off = 64, and the
        // block starts at tp + 64 - 24 = tp + 40 (8 mod 32).
        assert_eq!(static_tp_offset_main(Arch::Aarch64, &segment, 4), 44);
    }

    #[test]
    fn garbage_segments_do_not_panic() {
        for segment in [
            TlsSegment {
                vaddr: u64::MAX,
                memsz: u64::MAX,
                align: u64::MAX,
            },
            TlsSegment {
                vaddr: 3,
                memsz: u64::MAX,
                align: 1 << 63,
            },
            TlsSegment {
                vaddr: 0,
                memsz: 0,
                align: 3,
            },
        ] {
            static_tp_offset_main(Arch::X86_64, &segment, u64::MAX);
            static_tp_offset_main(Arch::Aarch64, &segment, u64::MAX);
        }
    }

    #[test]
    fn tlsdesc_argument_classification() {
        use TlsdescArg::{Pointer, Static};
        let x86 = |arg: i64| classify_tlsdesc_argument(Arch::X86_64, arg as u64);
        assert_eq!(x86(-128), Static { tp_offset: -128 });
        assert_eq!(
            x86(-(1 << 30) + 1),
            Static {
                tp_offset: -(1 << 30) + 1
            }
        );
        assert_eq!(x86(-(1 << 30)), Pointer((-(1i64 << 30)) as u64));
        assert_eq!(x86(0x5555_5555_a2c0), Pointer(0x5555_5555_a2c0));
        assert_eq!(x86(0), Pointer(0));
        let arm = |arg: u64| classify_tlsdesc_argument(Arch::Aarch64, arg);
        assert_eq!(arm(0x140), Static { tp_offset: 0x140 });
        assert_eq!(arm(16), Static { tp_offset: 16 });
        assert_eq!(arm(0), Pointer(0));
        assert_eq!(arm(8), Pointer(8));
        assert_eq!(arm(0xaaaa_c0de_0010), Pointer(0xaaaa_c0de_0010));
    }

    #[test]
    fn tlsdesc_dynamic_argument_starts_with_tls_index() {
        let mut bytes = [0; TLSDESC_DYNAMIC_ARG_SIZE];
        bytes[..8].copy_from_slice(&3u64.to_ne_bytes());
        bytes[8..].copy_from_slice(&0x40u64.to_ne_bytes());
        assert_eq!(
            tlsdesc_dynamic_access(&bytes),
            TlsAccess::Dtv {
                module: 3,
                offset: 0x40
            }
        );
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(find_tls_symbol(&[], NAME).is_err());
        assert!(find_tls_symbol(b"\x7fELF not really", NAME).is_err());
        assert!(load_bias(&[0; 16], 0, 0).is_err());
        // Every truncation of a real file either fails or finds nothing; none panics.
        for len in (0..AARCH64_DESC.len()).step_by(7) {
            let _ = find_tls_symbol(&AARCH64_DESC[..len], NAME);
            let _ = load_bias(&AARCH64_DESC[..len], 0x1000, 0);
        }
        // 32-bit and other machines.
        let mut other = AARCH64_EXE.to_vec();
        other[18] = 0x28; // e_machine = EM_ARM
        other[19] = 0;
        assert!(matches!(
            find_tls_symbol(&other, NAME),
            Err(TlsError::UnsupportedMachine(0x28))
        ));
        let mut class32 = AARCH64_EXE.to_vec();
        class32[4] = 1; // ELFCLASS32
        assert!(find_tls_symbol(&class32, NAME).is_err());
    }

    #[test]
    fn absent_or_undefined_symbols_are_none() {
        assert_eq!(
            find_tls_symbol(AARCH64_EXE, "no_such_variable").unwrap(),
            None
        );
        // `main` exists but is a function, not a TLS variable.
        assert_eq!(find_tls_symbol(AARCH64_EXE, "main").unwrap(), None);
    }

    /// The aarch64 PIE (`tls_exe.c`): TLS module 1, no relocations for the variable.
    ///
    /// `readelf -lW`: `TLS 0x000d80 0x1d80 0x1d80 0x000008 0x0000b4 R 0x40`; the variable's
    /// `st_value` is 0x40 (after `counter` in `.tdata` and 64-aligned in `.tbss`). Variant I:
    /// the 16-byte TCB at the TP, then module 1's block at roundup(16, 64) = 64 (vaddr 0x1d80
    /// is 64-aligned, so no first-byte shift). The variable is at tp + 64 + 0x40 = tp + 0x80.
    /// The linker agrees: `objdump -d` shows `otel_ctx_addr` as `mrs x0, tpidr_el0; add x0,
    /// x0, #0x0, lsl #12; add x0, x0, #0x80`, the local-exec TP offset 0x80.
    #[test]
    fn aarch64_executable_fixture() {
        let symbol = aarch64(AARCH64_EXE);
        assert_eq!(symbol.arch, Arch::Aarch64);
        assert_eq!(symbol.value, 0x40);
        assert_eq!(
            symbol.segment,
            Some(TlsSegment {
                vaddr: 0x1d80,
                memsz: 0xb4,
                align: 0x40
            })
        );
        assert!(symbol.is_executable);
        assert_eq!(symbol.relocations, []);
        let offset = static_tp_offset_main(Arch::Aarch64, &symbol.segment.unwrap(), symbol.value);
        assert_eq!(offset, 0x80);
        assert_eq!(
            resolve_access(&symbol, 0xaaaa_0000_0000, |_| None),
            Ok(TlsAccess::Static { tp_offset: 0x80 })
        );
    }

    /// The aarch64 libraries (`tls_lib.c`): `pad[40]` in `.tdata`, the variable at 0x40.
    #[test]
    fn aarch64_library_fixtures() {
        let segment = |vaddr| {
            Some(TlsSegment {
                vaddr,
                memsz: 0x48,
                align: 0x40,
            })
        };
        let reloc = |kind, offset| TlsReloc {
            kind,
            offset,
            addend: 0,
        };

        // The TLSDESC descriptor is in .rela.plt (readelf -rW: R_AARCH64_TLSDESC at 0x2000).
        let desc = aarch64(AARCH64_DESC);
        assert_eq!(
            (desc.arch, desc.value, desc.is_executable),
            (Arch::Aarch64, 0x40, false)
        );
        assert_eq!(desc.segment, segment(0x1e80));
        assert_eq!(desc.relocations, [reloc(TlsRelocKind::TlsDesc, 0x2000)]);

        let gd = aarch64(AARCH64_GD);
        assert_eq!(gd.segment, segment(0x1e40));
        assert_eq!(
            gd.relocations,
            [
                reloc(TlsRelocKind::DtpMod64, 0x1fa8),
                reloc(TlsRelocKind::DtpOff64, 0x1fb0)
            ]
        );

        let ie = aarch64(AARCH64_IE);
        assert_eq!(ie.segment, segment(0x1e80));
        assert_eq!(ie.relocations, [reloc(TlsRelocKind::TpOff64, 0x1fa8)]);
    }

    /// What glibc would write for the aarch64 fixtures, followed through `resolve_access`.
    #[test]
    fn aarch64_library_resolution_from_relocated_words() {
        let bias = 0xffff_a000_0000;
        // Loaded at start-up after the executable fixture, whose block spans [64, 244):
        // l_tls_offset = roundup(244, 64) = 256, so the descriptor holds 256 + 0x40.
        let desc = aarch64(AARCH64_DESC);
        let memory = |address| (address == bias + 0x2008).then_some(256 + 0x40);
        assert_eq!(
            resolve_access(&desc, bias, memory),
            Ok(TlsAccess::Static { tp_offset: 0x140 })
        );
        // dlopen'ed without room in static TLS: a pointer to { module 2, offset 0x40 }.
        let heap = 0xaaaa_d000_0010;
        let memory = |address| match address {
            a if a == bias + 0x2008 => Some(heap),
            a if a == heap => Some(2),
            a if a == heap + 8 => Some(0x40),
            _ => None,
        };
        assert_eq!(
            resolve_access(&desc, bias, memory),
            Ok(TlsAccess::Dtv {
                module: 2,
                offset: 0x40
            })
        );
        // Not relocated yet: the descriptor still holds the file's zeros.
        assert_eq!(
            resolve_access(&desc, bias, |_| Some(0)),
            Err(ResolveError::Unreadable(0))
        );

        let gd = aarch64(AARCH64_GD);
        let memory = |address| (address == bias + 0x1fa8).then_some(2);
        assert_eq!(
            resolve_access(&gd, bias, memory),
            Ok(TlsAccess::Dtv {
                module: 2,
                offset: 0x40
            })
        );
        assert_eq!(
            resolve_access(&gd, bias, |_| Some(0)),
            Err(ResolveError::BadModule(0))
        );

        let ie = aarch64(AARCH64_IE);
        let memory = |address| (address == bias + 0x1fa8).then_some(0x140);
        assert_eq!(
            resolve_access(&ie, bias, memory),
            Ok(TlsAccess::Static { tp_offset: 0x140 })
        );
        assert_eq!(
            resolve_access(&ie, bias, |_| None),
            Err(ResolveError::Unreadable(bias + 0x1fa8))
        );
        assert_eq!(
            resolve_access(&ie, bias, |_| Some(0)),
            Err(ResolveError::BadTpOffset(0))
        );
    }

    #[test]
    fn load_bias_from_mappings() {
        // aarch64_tls_exe: LOAD 0x0 -> 0x0 (R E), LOAD 0xd80 -> 0x1d80 (RW).
        let base = 0xaaaa_b000_0000;
        assert_eq!(load_bias(AARCH64_EXE, base, 0).unwrap(), Some(base));
        // With 4 KiB pages both segments start in file page 0; the text comes first, so
        // offset 0 means the text. A RELRO split of the data segment (file 0xd80..0x1068)
        // maps file offset 0x1000 at vaddr 0x2000 on its own: the covering segment decides.
        assert_eq!(
            load_bias(AARCH64_EXE, base + 0x2000, 0x1000).unwrap(),
            Some(base)
        );
        // aarch64_tls_gd.so: the data segment covers file 0xe40..0x1008.
        assert_eq!(
            load_bias(AARCH64_GD, base + 0x2000, 0x1000).unwrap(),
            Some(base)
        );
        // Past every segment.
        assert_eq!(load_bias(AARCH64_GD, base, 0x10_0000).unwrap(), None);
    }

    // --- Live checks on this machine (x86_64): the fixtures are built with gcc at test time
    // and run; each prints its thread pointer, the variable's address and its mappings, then
    // answers memory reads, so that the test can play the profiler.

    const PROBE_H: &str = include_str!("fixtures/tls_probe.h");
    const TLS_EXE_C: &str = include_str!("fixtures/tls_exe.c");
    const TLS_LIB_C: &str = include_str!("fixtures/tls_lib.c");
    const TLS_MAIN_C: &str = include_str!("fixtures/tls_main.c");

    struct Built {
        _dir: tempfile::TempDir,
        path: PathBuf,
        /// Variants that could not be built here (a static libc is optional).
        missing: Vec<String>,
    }

    /// Builds every fixture once; `None` (after saying why) where gcc or x86_64 is missing.
    fn built() -> Option<&'static Built> {
        static BUILT: OnceLock<Option<Built>> = OnceLock::new();
        BUILT.get_or_init(build).as_ref()
    }

    fn build() -> Option<Built> {
        if !cfg!(target_arch = "x86_64") {
            eprintln!("skipping live TLS checks: they run on x86_64 only");
            return None;
        }
        if Command::new("gcc").arg("--version").output().is_err() {
            eprintln!("skipping live TLS checks: gcc is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        for (name, text) in [
            ("tls_probe.h", PROBE_H),
            ("tls_exe.c", TLS_EXE_C),
            ("tls_lib.c", TLS_LIB_C),
            ("tls_main.c", TLS_MAIN_C),
        ] {
            std::fs::write(path.join(name), text).unwrap();
        }
        let export = "-Wl,--export-dynamic-symbol=otel_thread_ctx_v1";
        let required: &[&[&str]] = &[
            &["-fPIE", "-pie", export, "tls_exe.c", "-o", "exe_pie"],
            &[
                "-fno-PIE",
                "-no-pie",
                export,
                "tls_exe.c",
                "-o",
                "exe_nopie",
            ],
            &[
                "-fPIC",
                "-shared",
                "-mtls-dialect=gnu2",
                "tls_lib.c",
                "-o",
                "libotel_desc.so",
            ],
            &[
                "-fPIC",
                "-shared",
                "-mtls-dialect=gnu",
                "tls_lib.c",
                "-o",
                "libotel_gd.so",
            ],
            &[
                "-fPIC",
                "-shared",
                "-ftls-model=initial-exec",
                "tls_lib.c",
                "-o",
                "libotel_ie.so",
            ],
            &[
                "-fPIC",
                "-shared",
                "-mtls-dialect=gnu2",
                "-DBIG_TLS",
                "tls_lib.c",
                "-o",
                "libotel_big.so",
            ],
            &[
                "tls_main.c",
                "-o",
                "main_desc",
                "-L.",
                "-lotel_desc",
                "-Wl,-rpath,$ORIGIN",
            ],
            &[
                "tls_main.c",
                "-o",
                "main_gd",
                "-L.",
                "-lotel_gd",
                "-Wl,-rpath,$ORIGIN",
            ],
            &[
                "tls_main.c",
                "-o",
                "main_ie",
                "-L.",
                "-lotel_ie",
                "-Wl,-rpath,$ORIGIN",
            ],
            &["-DUSE_DLOPEN", "tls_main.c", "-o", "main_dlopen", "-ldl"],
        ];
        for args in required {
            let output = gcc(&path, args);
            assert!(
                output.status.success(),
                "gcc {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut missing = Vec::new();
        for (name, args) in [
            (
                "exe_static",
                &["-static", "tls_exe.c", "-o", "exe_static"][..],
            ),
            (
                "exe_static_pie",
                &["-static-pie", "-fPIE", "tls_exe.c", "-o", "exe_static_pie"],
            ),
        ] {
            if !gcc(&path, args).status.success() {
                missing.push(name.to_string());
            }
        }
        Some(Built {
            _dir: dir,
            path,
            missing,
        })
    }

    fn gcc(dir: &Path, args: &[&str]) -> std::process::Output {
        Command::new("gcc")
            .current_dir(dir)
            .args(["-O2", "-g0", "-Wall"])
            .args(args)
            .output()
            .expect("running gcc")
    }

    struct Mapping {
        start: u64,
        offset: u64,
        path: String,
    }

    /// A running fixture that answers reads of its own memory.
    struct Probe {
        child: Child,
        stdin: Option<ChildStdin>,
        stdout: BufReader<ChildStdout>,
        tp: u64,
        var: u64,
        maps: Vec<Mapping>,
    }

    impl Probe {
        fn start(built: &Built, program: &str, args: &[&str]) -> Probe {
            let mut child = Command::new(built.path.join(program))
                .args(args)
                .current_dir(&built.path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("starting the fixture");
            let stdin = child.stdin.take();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            let mut probe = Probe {
                child,
                stdin,
                stdout,
                tp: 0,
                var: 0,
                maps: Vec::new(),
            };
            loop {
                let line = probe.line();
                let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                match tag {
                    "tp" => probe.tp = hex(rest),
                    "var" => probe.var = hex(rest),
                    "map" => probe.maps.push(mapping(rest)),
                    "ready" => break,
                    _ => panic!("unexpected fixture output {line:?}"),
                }
            }
            probe
        }

        fn line(&mut self) -> String {
            let mut line = String::new();
            let read = self.stdout.read_line(&mut line).unwrap();
            assert!(
                read > 0,
                "the fixture exited early: {:?}",
                self.child.try_wait()
            );
            line.trim_end().to_string()
        }

        fn read_u64(&mut self, address: u64) -> u64 {
            let stdin = self.stdin.as_mut().unwrap();
            writeln!(stdin, "{address:x}").unwrap();
            stdin.flush().unwrap();
            let line = self.line();
            hex(&line)
        }

        /// The load bias of `file`, from its mapping with the lowest file offset.
        fn bias(&self, built: &Built, file: &str) -> u64 {
            let elf = std::fs::read(built.path.join(file)).unwrap();
            let suffix = format!("/{file}");
            let mapping = self
                .maps
                .iter()
                .filter(|m| m.path.ends_with(&suffix))
                .min_by_key(|m| m.offset)
                .unwrap_or_else(|| panic!("{file} is not mapped"));
            load_bias(&elf, mapping.start, mapping.offset)
                .unwrap()
                .expect("a PT_LOAD fits")
        }

        /// Follows a DTV access the way the BPF program will.
        fn dtv_address(&mut self, module: u64, offset: u64) -> u64 {
            let dtv = self.read_u64(self.tp.wrapping_add_signed(Arch::X86_64.dtv_offset()));
            let block = self.read_u64(dtv + DTV_ENTRY_SIZE * module);
            assert!(
                block != 0 && block != u64::MAX,
                "DTV entry {module} is not allocated"
            );
            block + offset
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            // Closing stdin ends the fixture.
            drop(self.stdin.take());
            let _ = self.child.wait();
        }
    }

    fn hex(text: &str) -> u64 {
        u64::from_str_radix(text.trim(), 16).unwrap_or_else(|_| panic!("not hex: {text:?}"))
    }

    fn mapping(line: &str) -> Mapping {
        // start-end perms offset dev inode path
        let mut fields = line.split_whitespace();
        let range = fields.next().unwrap();
        let start = hex(range.split_once('-').unwrap().0);
        let offset = hex(fields.nth(1).unwrap());
        let path = fields.nth(2).unwrap_or("").to_string();
        Mapping {
            start,
            offset,
            path,
        }
    }

    fn symbol_of(built: &Built, file: &str) -> TlsSymbol {
        let elf = std::fs::read(built.path.join(file)).unwrap();
        find_tls_symbol(&elf, NAME)
            .unwrap()
            .expect("the variable is defined")
    }

    /// The main program's TP offset from the ELF file alone equals what the program measures.
    fn check_executable(built: &Built, program: &str) {
        let symbol = symbol_of(built, program);
        assert_eq!(symbol.arch, Arch::X86_64);
        assert!(symbol.is_executable, "{program}");
        assert!(symbol.value != 0, "other TLS data precedes the variable");
        let segment = symbol.segment.expect("PT_TLS");
        assert_eq!(segment.align, 64);
        let computed = static_tp_offset_main(Arch::X86_64, &segment, symbol.value);
        let probe = Probe::start(built, program, &[]);
        let measured = probe.var.wrapping_sub(probe.tp) as i64;
        eprintln!(
            "{program}: value {:#x}, {segment:x?}: measured {measured}, computed {computed}",
            symbol.value
        );
        assert_eq!(computed, measured, "{program}");
        assert_eq!(
            resolve_access(&symbol, 0, |_| None),
            Ok(TlsAccess::Static {
                tp_offset: measured
            })
        );
    }

    #[test]
    fn live_pie_executable() {
        let Some(built) = built() else { return };
        check_executable(built, "exe_pie");
    }

    #[test]
    fn live_non_pie_executable() {
        let Some(built) = built() else { return };
        let elf = std::fs::read(built.path.join("exe_nopie")).unwrap();
        assert_eq!(load_bias(&elf, 0x400000, 0).unwrap(), Some(0));
        check_executable(built, "exe_nopie");
    }

    #[test]
    fn live_static_executables() {
        let Some(built) = built() else { return };
        for program in ["exe_static", "exe_static_pie"] {
            if built.missing.iter().any(|m| m == program) {
                eprintln!("skipping {program}: gcc could not link it here (no static libc?)");
                continue;
            }
            check_executable(built, program);
        }
    }

    #[test]
    fn live_tlsdesc_library_at_startup() {
        let Some(built) = built() else { return };
        let symbol = symbol_of(built, "libotel_desc.so");
        assert!(!symbol.is_executable);
        let reloc = *symbol
            .relocation(TlsRelocKind::TlsDesc)
            .expect("a TLSDESC relocation");
        assert_eq!(reloc.addend, 0);
        // The main program only references the variable.
        let main = std::fs::read(built.path.join("main_desc")).unwrap();
        assert_eq!(find_tls_symbol(&main, NAME).unwrap(), None);

        let mut probe = Probe::start(built, "main_desc", &[]);
        let bias = probe.bias(built, "libotel_desc.so");
        let arg = probe.read_u64(bias + reloc.offset + 8);
        let measured = probe.var.wrapping_sub(probe.tp) as i64;
        eprintln!(
            "libotel_desc.so: descriptor argument {:#x}, measured {measured}",
            arg as i64
        );
        assert_eq!(
            classify_tlsdesc_argument(Arch::X86_64, arg),
            TlsdescArg::Static {
                tp_offset: measured
            }
        );
        let access = resolve_access(&symbol, bias, |address| Some(probe.read_u64(address)));
        assert_eq!(
            access,
            Ok(TlsAccess::Static {
                tp_offset: measured
            })
        );
    }

    #[test]
    fn live_general_dynamic_library_at_startup() {
        let Some(built) = built() else { return };
        let symbol = symbol_of(built, "libotel_gd.so");
        let module_slot = *symbol.relocation(TlsRelocKind::DtpMod64).expect("DTPMOD64");
        let offset_slot = *symbol.relocation(TlsRelocKind::DtpOff64).expect("DTPOFF64");

        let mut probe = Probe::start(built, "main_gd", &[]);
        let bias = probe.bias(built, "libotel_gd.so");
        let module = probe.read_u64(bias + module_slot.offset);
        let offset = probe.read_u64(bias + offset_slot.offset);
        eprintln!("libotel_gd.so: module {module}, offset {offset:#x}");
        // Module 1 is the main program, which has no TLS here, but glibc numbers modules
        // with TLS only, so the library may be 1 as well; anything else is a small number.
        assert!((1..16).contains(&module), "module {module}");
        assert_eq!(offset, symbol.value);
        assert_eq!(probe.dtv_address(module, offset), probe.var);

        let access = resolve_access(&symbol, bias, |address| Some(probe.read_u64(address)));
        assert_eq!(access, Ok(TlsAccess::Dtv { module, offset }));
    }

    #[test]
    fn live_initial_exec_library_at_startup() {
        let Some(built) = built() else { return };
        let symbol = symbol_of(built, "libotel_ie.so");
        let slot = *symbol.relocation(TlsRelocKind::TpOff64).expect("TPOFF64");

        let mut probe = Probe::start(built, "main_ie", &[]);
        let bias = probe.bias(built, "libotel_ie.so");
        let word = probe.read_u64(bias + slot.offset) as i64;
        let measured = probe.var.wrapping_sub(probe.tp) as i64;
        eprintln!("libotel_ie.so: TPOFF64 word {word}, measured {measured}");
        assert_eq!(word, measured);
        let access = resolve_access(&symbol, bias, |address| Some(probe.read_u64(address)));
        assert_eq!(
            access,
            Ok(TlsAccess::Static {
                tp_offset: measured
            })
        );
    }

    #[test]
    fn live_tlsdesc_library_dlopened_with_dynamic_tls() {
        let Some(built) = built() else { return };
        let symbol = symbol_of(built, "libotel_big.so");
        let reloc = *symbol
            .relocation(TlsRelocKind::TlsDesc)
            .expect("a TLSDESC relocation");
        let library = built.path.join("libotel_big.so");

        let mut probe = Probe::start(built, "main_dlopen", &[library.to_str().unwrap()]);
        let bias = probe.bias(built, "libotel_big.so");
        let arg = probe.read_u64(bias + reloc.offset + 8);
        let TlsdescArg::Pointer(pointer) = classify_tlsdesc_argument(Arch::X86_64, arg) else {
            panic!("a 1 MiB TLS block cannot fit in static TLS, yet got {arg:#x}");
        };
        let mut bytes = [0; TLSDESC_DYNAMIC_ARG_SIZE];
        bytes[..8].copy_from_slice(&probe.read_u64(pointer).to_ne_bytes());
        bytes[8..].copy_from_slice(&probe.read_u64(pointer + 8).to_ne_bytes());
        let TlsAccess::Dtv { module, offset } = tlsdesc_dynamic_access(&bytes) else {
            unreachable!()
        };
        eprintln!(
            "libotel_big.so: descriptor -> {pointer:#x}: module {module}, offset {offset:#x}"
        );
        assert!((1..16).contains(&module), "module {module}");
        assert_eq!(offset, symbol.value);
        assert_eq!(probe.dtv_address(module, offset), probe.var);

        let access = resolve_access(&symbol, bias, |address| Some(probe.read_u64(address)));
        assert_eq!(access, Ok(TlsAccess::Dtv { module, offset }));
    }
}
