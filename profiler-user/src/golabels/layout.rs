//! Where the BPF program finds the running goroutine's labels in a Go executable: the `g`
//! pointer's place relative to the thread pointer, the offsets of `g.m`, `m.curg` and
//! `g.labels`, and how the label set is laid out in that release. Offsets come from the
//! binary's DWARF when it has it (`runtime.g`, `runtime.m`), else from [`RELEASES`], a table
//! derived from each release's DWARF (the unit tests check it against every fixture toolchain).
//! A release in neither is unknown: its processes are sampled without labels. Where the
//! garbage collector's generation is (`runtime.mheap_.sweepgen`) needs the symbol table and
//! DWARF both; a binary without either has labels all the same, read in full at every sample.

use std::borrow::Cow;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, ReadRef, elf};
use profiler_common::{GO_LABELS_MAP, GO_LABELS_SLICE, GoTarget};

use super::buildinfo::GoVersion;
use crate::tracectx::elf_tls::{find_tls_symbol, static_tp_offset_main};

/// Offsets of the runtime's structures that the BPF program follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeOffsets {
    /// `runtime.g.m`
    pub g_m: u32,
    /// `runtime.m.curg`
    pub m_curg: u32,
    /// `runtime.g.labels`
    pub g_labels: u32,
}

/// What the binary's DWARF says: the runtime's offsets, and `runtime.mheap.sweepgen`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DwarfLayout {
    pub offsets: RuntimeOffsets,
    /// `runtime.mheap.sweepgen`, when the DWARF describes it.
    pub sweepgen: Option<u32>,
}

/// The structure members the DWARF is searched for, as (structure, member).
const MEMBERS: [(&str, &str); 4] = [
    ("runtime.g", "m"),
    ("runtime.m", "curg"),
    ("runtime.g", "labels"),
    ("runtime.mheap", "sweepgen"),
];

/// Per release (minor version of Go 1), read from the DWARF of the fixture built with it
/// (tests/fixtures/go/toolchains.txt). Go 1.20 is missing: no toolchain of it is at hand to
/// derive it from, so a stripped 1.20 binary is unknown (with DWARF it works).
const RELEASES: [(u32, RuntimeOffsets); 8] = [
    (19, offsets(48, 192, 360)),
    (21, offsets(48, 192, 344)),
    (22, offsets(48, 192, 344)),
    (23, offsets(48, 192, 352)),
    (24, offsets(48, 192, 352)),
    (25, offsets(48, 184, 344)),
    (26, offsets(48, 184, 352)),
    (27, offsets(48, 184, 352)),
];

const fn offsets(g_m: u32, m_curg: u32, g_labels: u32) -> RuntimeOffsets {
    RuntimeOffsets {
        g_m,
        m_curg,
        g_labels,
    }
}

/// The x86_64 place of `g` in a Go executable linked by Go's own linker, which has no `PT_TLS`
/// and no `runtime.tlsg` symbol: the runtime points the thread pointer 8 bytes past `m.tls[0]`
/// (`runtime·settls`) and the code reads `g` from `-8(FS)`.
const INTERNAL_LINK_TLS_OFFSET: i64 = -8;

/// Bytes of DWARF decompressed at most (Go binaries of 100+ MiB have about 40 MiB of
/// `.debug_info`).
const MAX_DWARF_BYTES: u64 = 64 << 20;

/// Why a Go binary cannot be handled; logged once per file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("{0}: no label layout known for this Go release")]
    UnknownRelease(GoVersion),
    #[error("neither an x86_64 nor an aarch64 executable (machine {0})")]
    Machine(u16),
    #[error("where the runtime keeps g is unknown (external linking without runtime.tlsg)")]
    UnknownTls,
    #[error("malformed ELF file")]
    Elf,
}

/// Everything the BPF program needs for one Go executable of release `version`.
pub fn go_target<'data>(
    elf: impl ReadRef<'data>,
    version: GoVersion,
) -> Result<GoTarget, LayoutError> {
    let labels_kind = labels_kind(version).ok_or(LayoutError::UnknownRelease(version))?;
    let g_place = g_place(elf)?;
    // Unreadable DWARF falls back on the table, like none.
    let dwarf = dwarf_offsets(elf).ok().flatten();
    let offsets = match dwarf {
        Some(dwarf) => dwarf.offsets,
        None => table_offsets(version).ok_or(LayoutError::UnknownRelease(version))?,
    };
    let gc_generation = dwarf
        .and_then(|dwarf| dwarf.sweepgen)
        .and_then(|sweepgen| gc_generation(elf, sweepgen))
        .unwrap_or(0);
    let (tls_offset, g_register) = match g_place {
        GPlace::Tls(offset) => (offset, 0),
        GPlace::Register => (0, 1),
    };
    let (readonly_start, readonly_end) = readonly_data(elf).unwrap_or((0, 0));
    Ok(GoTarget {
        tls_offset,
        g_m: offsets.g_m,
        m_curg: offsets.m_curg,
        g_labels: offsets.g_labels,
        labels_kind,
        g_register,
        _pad: 0,
        readonly_start,
        readonly_end,
        gc_generation,
    })
}

/// The address of `runtime.mheap_.sweepgen`, `sweepgen` bytes into the symbol, in a
/// position-dependent executable (the same address in every process of the file); `None` for
/// a position-independent one or without the symbol (stripped).
pub fn gc_generation<'data>(elf: impl ReadRef<'data>, sweepgen: u32) -> Option<u64> {
    let object::File::Elf64(file) = object::File::parse(elf).ok()? else {
        return None;
    };
    if file.elf_header().e_type.get(file.endian()) != elf::ET_EXEC {
        return None;
    }
    let heap = file
        .symbols()
        .find(|symbol| symbol.name_bytes() == Ok(b"runtime.mheap_"))?;
    heap.address().checked_add(u64::from(sweepgen))
}

/// The read-only, not executable load segment of a position-dependent executable (Go's
/// default build mode), where its string literals are: the same addresses in every process of
/// the file. `None` for a position-independent one (its addresses depend on the process).
pub fn readonly_data<'data>(elf: impl ReadRef<'data>) -> Option<(u64, u64)> {
    let object::File::Elf64(file) = object::File::parse(elf).ok()? else {
        return None;
    };
    let endian = file.endian();
    if file.elf_header().e_type.get(endian) != elf::ET_EXEC {
        return None;
    }
    file.elf_program_headers()
        .iter()
        .find(|ph| ph.p_type.get(endian) == elf::PT_LOAD && ph.p_flags.get(endian) == elf::PF_R)
        .map(|ph| {
            let start = ph.p_vaddr.get(endian);
            (start, start.saturating_add(ph.p_memsz.get(endian)))
        })
}

/// Where the running code keeps the current `g`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GPlace {
    /// x86_64: at this offset from the thread pointer.
    Tls(i64),
    /// aarch64: register `x28` (`g` in Go's assembly), in every build mode.
    Register,
}

/// Where the running code of this executable keeps `g`.
pub fn g_place<'data>(elf: impl ReadRef<'data>) -> Result<GPlace, LayoutError> {
    let file = object::File::parse(elf).map_err(|_| LayoutError::Elf)?;
    if file.architecture() == object::Architecture::Aarch64 {
        return Ok(GPlace::Register);
    }
    tls_offset(elf).map(GPlace::Tls)
}

/// The label set's layout: `runtime/pprof.labelMap` was a `map[string]string` up to Go 1.23
/// and is a struct holding a `[]label` slice (`LabelSet`, `label.Set` from 1.26) since 1.24.
/// The Go 1 releases before 1.19 are not supported; a Go 2 is not known.
pub fn labels_kind(version: GoVersion) -> Option<u32> {
    match (version.major, version.minor) {
        (1, 19..=23) => Some(GO_LABELS_MAP),
        (1, 24..=27) => Some(GO_LABELS_SLICE),
        _ => None,
    }
}

/// The offsets [`RELEASES`] has for `version`.
pub fn table_offsets(version: GoVersion) -> Option<RuntimeOffsets> {
    if version.major != 1 {
        return None;
    }
    RELEASES
        .iter()
        .find(|(minor, _)| *minor == version.minor)
        .map(|(_, offsets)| *offsets)
}

/// Where `g` is relative to the thread pointer: from `runtime.tlsg` in the executable's static
/// TLS when the binary was linked externally (cgo), else Go's own linker's fixed -8.
pub fn tls_offset<'data>(elf: impl ReadRef<'data>) -> Result<i64, LayoutError> {
    let file = object::File::parse(elf).map_err(|_| LayoutError::Elf)?;
    if file.architecture() != object::Architecture::X86_64 {
        let machine = match file.architecture() {
            object::Architecture::Aarch64 => elf::EM_AARCH64,
            _ => 0,
        };
        return Err(LayoutError::Machine(machine));
    }
    let has_tls_segment = match &file {
        object::File::Elf64(elf_file) => elf_file
            .elf_program_headers()
            .iter()
            .any(|ph| ph.p_type.get(elf_file.endian()) == elf::PT_TLS),
        _ => return Err(LayoutError::Elf),
    };
    if !has_tls_segment {
        return Ok(INTERNAL_LINK_TLS_OFFSET);
    }
    let symbol = find_tls_symbol(elf, "runtime.tlsg").map_err(|_| LayoutError::Elf)?;
    match symbol {
        Some(symbol) if symbol.is_executable => {
            let segment = symbol.segment.ok_or(LayoutError::UnknownTls)?;
            Ok(static_tp_offset_main(symbol.arch, &segment, symbol.value))
        }
        // A stripped external link: the symbol is gone, and with it where `g` is.
        _ => Err(LayoutError::UnknownTls),
    }
}

/// The [`MEMBERS`]' offsets from the binary's DWARF; `Ok(None)` without DWARF (stripped) or
/// without one of the three the labels need.
pub fn dwarf_offsets<'data>(elf: impl ReadRef<'data>) -> Result<Option<DwarfLayout>, gimli::Error> {
    let Ok(file) = object::File::parse(elf) else {
        return Ok(None);
    };
    if file.section_by_name(".debug_info").is_none() {
        return Ok(None);
    }
    let load = |id: gimli::SectionId| -> Result<Cow<'data, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|section| section_data(&section))
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|section| gimli::EndianSlice::new(section, gimli::LittleEndian));
    let mut found: [Option<u32>; MEMBERS.len()] = [None; MEMBERS.len()];
    let mut units = dwarf.units();
    'units: while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        // The structure being read (its name) and its depth.
        let mut inside: Option<(String, isize)> = None;
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            if inside.as_ref().is_some_and(|(_, at)| depth <= *at) {
                inside = None;
            }
            let name = || -> Option<String> {
                let value = entry.attr_value(gimli::DW_AT_name)?;
                let text = dwarf.attr_string(&unit, value).ok()?;
                Some(String::from_utf8_lossy(&text).into_owned())
            };
            match (entry.tag(), &inside) {
                (gimli::DW_TAG_structure_type, None) => {
                    if let Some(name) = name().filter(|n| MEMBERS.iter().any(|(s, _)| s == n)) {
                        inside = Some((name, depth));
                    }
                }
                (gimli::DW_TAG_member, Some((owner, at))) if depth == at + 1 => {
                    let Some(gimli::AttributeValue::Udata(offset)) =
                        entry.attr_value(gimli::DW_AT_data_member_location)
                    else {
                        continue;
                    };
                    let (Ok(offset), Some(member)) = (u32::try_from(offset), name()) else {
                        continue;
                    };
                    if let Some(at) = MEMBERS
                        .iter()
                        .position(|w| *w == (owner.as_str(), &*member))
                    {
                        found[at] = Some(offset);
                    }
                }
                _ => {}
            }
            if found.iter().all(Option::is_some) {
                break 'units;
            }
        }
    }
    let [Some(g_m), Some(m_curg), Some(g_labels), sweepgen] = found else {
        return Ok(None);
    };
    Ok(Some(DwarfLayout {
        offsets: RuntimeOffsets {
            g_m,
            m_curg,
            g_labels,
        },
        sweepgen,
    }))
}

/// A section's bytes, decompressed when the linker compressed it (`SHF_COMPRESSED` zlib, as Go
/// writes DWARF). object decompresses only with its `compression` feature, which would bring
/// a zstd decoder we have no use for; flate2 is here already. At most [`MAX_DWARF_BYTES`].
fn section_data<'data>(
    section: &object::Section<'data, '_, impl ReadRef<'data>>,
) -> Option<Cow<'data, [u8]>> {
    let compressed = section.compressed_data().ok()?;
    match compressed.format {
        object::CompressionFormat::None => Some(Cow::Borrowed(compressed.data)),
        object::CompressionFormat::Zlib if compressed.uncompressed_size <= MAX_DWARF_BYTES => {
            let mut out = Vec::with_capacity(compressed.uncompressed_size as usize);
            let decoder = flate2::read::ZlibDecoder::new(compressed.data);
            std::io::Read::read_to_end(
                &mut std::io::Read::take(decoder, compressed.uncompressed_size),
                &mut out,
            )
            .ok()?;
            Some(Cow::Owned(out))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(minor: u32) -> GoVersion {
        GoVersion { major: 1, minor }
    }

    #[test]
    fn every_supported_release_but_1_20_has_table_offsets() {
        for minor in 19..=27 {
            assert!(labels_kind(go(minor)).is_some(), "1.{minor}");
            assert_eq!(table_offsets(go(minor)).is_some(), minor != 20, "1.{minor}");
        }
        assert_eq!(labels_kind(go(23)), Some(GO_LABELS_MAP));
        assert_eq!(labels_kind(go(24)), Some(GO_LABELS_SLICE));
        assert_eq!(labels_kind(go(18)), None);
        assert_eq!(labels_kind(go(28)), None);
        assert_eq!(
            table_offsets(GoVersion {
                major: 2,
                minor: 21
            }),
            None
        );
    }

    #[test]
    fn g_is_in_x28_on_aarch64() {
        // Any aarch64 executable: where g is depends on the architecture alone there.
        let aarch64 = include_bytes!("../tracectx/fixtures/aarch64_tls_exe");
        assert_eq!(g_place(&aarch64[..]), Ok(GPlace::Register));
        // tls_offset, the x86_64 rule, refuses it.
        assert_eq!(
            tls_offset(&aarch64[..]),
            Err(LayoutError::Machine(object::elf::EM_AARCH64))
        );
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error_not_a_panic() {
        let bytes = [0u8; 64];
        assert_eq!(tls_offset(&bytes[..]), Err(LayoutError::Elf));
        assert_eq!(dwarf_offsets(&bytes[..]), Ok(None));
        assert_eq!(go_target(&bytes[..], go(19)), Err(LayoutError::Elf));
        assert_eq!(
            go_target(&bytes[..], go(18)),
            Err(LayoutError::UnknownRelease(go(18)))
        );
    }
}
