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
    Endianness, ReadRef,
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
pub fn find_tls_symbol<'data>(
    elf: impl ReadRef<'data>,
    name: &str,
) -> Result<Option<TlsSymbol>, TlsError> {
    let header = FileHeader64::<Endianness>::parse(elf).map_err(TlsError::parse("header"))?;
    let endian = header.endian().map_err(TlsError::parse("endianness"))?;
    let arch = match header.e_machine(endian) {
        elf::EM_X86_64 => Arch::X86_64,
        elf::EM_AARCH64 => Arch::Aarch64,
        other => return Err(TlsError::UnsupportedMachine(other)),
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

type Sections<'data, R> = object::read::elf::SectionTable<'data, FileHeader64<Endianness>, R>;

/// Whether an `ET_DYN` file is a main program: marked `DF_1_PIE` (linkers since 2018), or
/// with an interpreter but no `DT_SONAME` (older PIEs; libraries that run, like libc, have
/// a soname).
fn is_pie<'data, R: ReadRef<'data>>(
    sections: &Sections<'data, R>,
    endian: Endianness,
    elf: R,
    has_interp: bool,
) -> Result<bool, TlsError> {
    let (mut pie_flag, mut soname) = (false, false);
    let dynamic = sections
        .dynamic(endian, elf)
        .map_err(TlsError::parse(".dynamic"))?;
    for entry in dynamic.map(|(entries, _)| entries).unwrap_or_default() {
        match entry.d_tag(endian) {
            elf::DT_FLAGS_1 => pie_flag |= entry.d_val(endian) & u64::from(elf::DF_1_PIE) != 0,
            elf::DT_SONAME => soname = true,
            _ => {}
        }
    }
    Ok(pie_flag || (has_interp && !soname))
}

/// The TLS relocations for the symbol at `dyn_index` of `.dynsym` (`None`: the symbol is only
/// in `.symtab`), and the local ones with symbol 0 that match `value`.
fn tls_relocations<'data, R: ReadRef<'data>>(
    sections: &Sections<'data, R>,
    endian: Endianness,
    elf: R,
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
            let Some(kind) = reloc_kind(arch, rela.r_type(endian, false)) else {
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
pub fn load_bias<'data>(
    elf: impl ReadRef<'data>,
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
mod tests;
