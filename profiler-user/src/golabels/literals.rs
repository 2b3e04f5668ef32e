//! Label strings the kernel kept by address ([`GoLabels::literal`]): literals in a Go
//! executable's read-only data whose page was not in the process's page tables when it was
//! sampled. A program never reads the bytes of a label value it only passes on (a constant
//! trace ID, an `http.route`), the kernel drops such clean file pages under memory pressure,
//! and a BPF program cannot fault them back in: read in the kernel, the whole label set was
//! lost for as long as the page stayed out. They are read here from the file instead.
//!
//! [`GoLabels::literal`]: profiler_common::GoLabels::literal

use std::{collections::HashMap, fs::File, sync::Arc};

use object::elf;

use crate::{
    elf_file::ElfFile,
    process::{FileId, MappedFile, MappingObject, ProcessSnapshot},
};

/// Executables remembered before the cache starts afresh.
const MAX_FILES: usize = 1024;

/// A loaded segment's file bytes: `[vaddr, vaddr + size)` at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    vaddr: u64,
    offset: u64,
    size: u64,
}

/// A position-dependent executable, read through the descriptor its snapshots hold, with its
/// loaded segments.
struct Executable {
    file: Arc<MappedFile>,
    segments: Vec<Segment>,
}

/// Reads literals from the processes' executables, each opened and parsed once.
#[derive(Default)]
pub struct Literals {
    /// `None`: not a position-dependent ELF executable (its addresses name no file bytes).
    files: HashMap<FileId, Option<Arc<Executable>>>,
}

impl Literals {
    /// The `len` bytes at `address` in the read-only data of `snapshot`'s executable (the
    /// position-dependent file mapped there: its addresses are its own in every process).
    pub fn read(
        &mut self,
        snapshot: &ProcessSnapshot,
        address: u64,
        len: usize,
    ) -> Option<Vec<u8>> {
        let files = snapshot
            .mappings
            .iter()
            .filter_map(|mapping| match &mapping.object {
                MappingObject::File(file) => Some(file),
                _ => None,
            });
        for mapped in files {
            if self.files.len() >= MAX_FILES && !self.files.contains_key(&mapped.id) {
                self.files.clear();
            }
            let executable = self
                .files
                .entry(mapped.id)
                .or_insert_with(|| {
                    let file = File::open(mapped.symbolization_path()?).ok()?;
                    let segments = segments(&ElfFile::new(file))?;
                    Some(Arc::new(Executable {
                        file: mapped.clone(),
                        segments,
                    }))
                })
                .clone();
            let Some(executable) = executable else {
                continue;
            };
            let Some(offset) = file_offset(&executable.segments, address, len) else {
                continue;
            };
            let mut bytes = vec![0; len];
            return executable
                .file
                .read_exact_at(&mut bytes, offset)
                .ok()
                .map(|()| bytes);
        }
        None
    }
}

/// The loaded segments of a position-dependent executable (`ET_EXEC`); `None` for anything
/// else.
fn segments<'data>(elf: impl object::ReadRef<'data>) -> Option<Vec<Segment>> {
    let object::File::Elf64(file) = object::File::parse(elf).ok()? else {
        return None;
    };
    let endian = file.endian();
    if file.elf_header().e_type.get(endian) != elf::ET_EXEC {
        return None;
    }
    Some(
        file.elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type.get(endian) == elf::PT_LOAD)
            .map(|ph| Segment {
                vaddr: ph.p_vaddr.get(endian),
                offset: ph.p_offset.get(endian),
                size: ph.p_filesz.get(endian),
            })
            .collect(),
    )
}

/// Where `len` bytes at `address` are in the file: wholly inside one segment's file bytes.
fn file_offset(segments: &[Segment], address: u64, len: usize) -> Option<u64> {
    let end = address.checked_add(len as u64)?;
    segments
        .iter()
        .find(|s| s.vaddr <= address && end <= s.vaddr.saturating_add(s.size))
        .map(|s| s.offset + (address - s.vaddr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_names_file_bytes_only_inside_a_segment() {
        let segments = [
            Segment {
                vaddr: 0x40_0000,
                offset: 0,
                size: 0x1000,
            },
            Segment {
                vaddr: 0x48_0000,
                offset: 0x8_0000,
                size: 0x2000,
            },
        ];
        assert_eq!(file_offset(&segments, 0x40_0010, 8), Some(0x10));
        assert_eq!(file_offset(&segments, 0x48_1ff8, 8), Some(0x8_1ff8));
        // Past a segment's file bytes (its end, or the gap after it).
        assert_eq!(file_offset(&segments, 0x48_1ffc, 8), None);
        assert_eq!(file_offset(&segments, 0x40_1000, 1), None);
        assert_eq!(file_offset(&segments, u64::MAX - 2, 8), None);
    }

    /// The test binary is position-independent: its addresses name no file bytes.
    #[test]
    fn a_position_independent_file_has_no_literals() {
        let exe = File::open(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(segments(&ElfFile::new(exe)), None);
    }
}
