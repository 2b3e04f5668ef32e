//! Other processes' ELF files, read with `read`, never mapped.
//!
//! The profiler reads binaries and libraries it does not own. Through a mapping, a file
//! truncated in place while we read it (`cp new.so old.so`, an in-place upgrade) raises SIGBUS
//! on the first access past its new end, and that kills the process; through `read` it is a
//! short read, an error. object's [`ReadCache`] reads only the ranges a parse asks for (headers,
//! the few sections needed) and keeps them for the parse's lifetime. The sizes of those ranges
//! come from the file's own headers, so [`ElfFile`] adds a byte budget: a crafted (or sparse)
//! file cannot make us allocate more than that.

use std::{cell::Cell, fs::File, ops::Range};

use object::{
    Endianness, FileKind, ReadCache, ReadRef,
    elf::{self, FileHeader32, FileHeader64},
    read::elf::{FileHeader, NoteIterator, ProgramHeader as _, SectionHeader as _},
};

/// Bytes one [`ElfFile`] reads at most (freed when it is dropped): far above the headers, notes
/// and symbol tables it is used for (a 64 MiB `.symtab` holds 2.8 million symbols); a file that
/// needs more is an error.
pub const READ_BUDGET: u64 = 64 << 20;

/// Errors of reading an ELF file.
#[derive(Debug, thiserror::Error)]
pub enum ElfFileError {
    #[error("malformed, truncated or too large ELF file: {what}")]
    Parse {
        what: &'static str,
        #[source]
        source: object::read::Error,
    },
    #[error("not an ELF file")]
    NotElf,
}

impl ElfFileError {
    fn parse(what: &'static str) -> impl FnOnce(object::read::Error) -> Self {
        move |source| Self::Parse { what, source }
    }
}

/// An open file read through object's [`ReadRef`], with `read` into owned buffers, within
/// [`READ_BUDGET`] bytes.
#[derive(Debug)]
pub struct ElfFile {
    cache: ReadCache<File>,
    budget: Cell<u64>,
}

impl ElfFile {
    pub fn new(file: File) -> Self {
        Self::with_budget(file, READ_BUDGET)
    }

    fn with_budget(file: File, budget: u64) -> Self {
        Self {
            cache: ReadCache::new(file),
            budget: Cell::new(budget),
        }
    }
}

impl<'a> ReadRef<'a> for &'a ElfFile {
    fn len(self) -> Result<u64, ()> {
        (&self.cache).len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        // Charged before the read: ReadCache allocates the whole range first. A range read
        // twice is charged twice, which the budget's margin absorbs.
        let left = self.budget.get().checked_sub(size).ok_or(())?;
        self.budget.set(left);
        (&self.cache).read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        // ReadCache looks at most 4 KiB ahead for the delimiter (names in string tables).
        (&self.cache).read_bytes_at_until(range, delimiter)
    }
}

/// The GNU build ID (`NT_GNU_BUILD_ID` note) of an ELF file, or `None` when it has none.
///
/// Looks in the `PT_NOTE` segments first (near the start of the file: a few small reads), then
/// in the `SHT_NOTE` sections of a file without such a segment.
pub fn build_id(file: &ElfFile) -> Result<Option<Vec<u8>>, ElfFileError> {
    match FileKind::parse(file).map_err(ElfFileError::parse("file kind"))? {
        FileKind::Elf32 => build_id_of::<FileHeader32<Endianness>>(file),
        FileKind::Elf64 => build_id_of::<FileHeader64<Endianness>>(file),
        _ => Err(ElfFileError::NotElf),
    }
}

fn build_id_of<Elf: FileHeader<Endian = Endianness>>(
    file: &ElfFile,
) -> Result<Option<Vec<u8>>, ElfFileError> {
    let header = Elf::parse(file).map_err(ElfFileError::parse("header"))?;
    let endian = header.endian().map_err(ElfFileError::parse("endianness"))?;
    let segments = header
        .program_headers(endian, file)
        .map_err(ElfFileError::parse("program headers"))?;
    for segment in segments {
        let notes = segment
            .notes(endian, file)
            .map_err(ElfFileError::parse("note segment"))?;
        if let Some(id) = gnu_build_id(notes, endian)? {
            return Ok(Some(id));
        }
    }
    let sections = header
        .sections(endian, file)
        .map_err(ElfFileError::parse("section headers"))?;
    for section in sections.iter() {
        let notes = section
            .notes(endian, file)
            .map_err(ElfFileError::parse("note section"))?;
        if let Some(id) = gnu_build_id(notes, endian)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn gnu_build_id<Elf: FileHeader<Endian = Endianness>>(
    notes: Option<NoteIterator<'_, Elf>>,
    endian: Endianness,
) -> Result<Option<Vec<u8>>, ElfFileError> {
    let Some(mut notes) = notes else {
        return Ok(None);
    };
    while let Some(note) = notes.next().map_err(ElfFileError::parse("note"))? {
        if note.name() == elf::ELF_NOTE_GNU && note.n_type(endian) == elf::NT_GNU_BUILD_ID {
            return Ok(Some(note.desc().to_vec()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn own_executable() -> ElfFile {
        ElfFile::new(File::open(std::env::current_exe().unwrap()).unwrap())
    }

    #[test]
    fn build_id_matches_blazesym() {
        let exe = std::env::current_exe().unwrap();
        let expected = blazesym::helper::read_elf_build_id(&exe)
            .unwrap()
            .expect("test binaries have a build ID");
        assert_eq!(
            build_id(&own_executable()).unwrap().as_deref(),
            Some(&*expected)
        );
    }

    #[test]
    fn a_truncated_file_is_an_error() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        // The ELF header and little else: the program headers it points to are gone.
        file.write_all(&exe[..64]).unwrap();
        assert!(build_id(&ElfFile::new(file)).is_err());
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"#!/bin/sh\n").unwrap();
        assert!(build_id(&ElfFile::new(file)).is_err());
    }

    #[test]
    fn reads_beyond_the_budget_fail() {
        let file = ElfFile::with_budget(File::open(std::env::current_exe().unwrap()).unwrap(), 100);
        assert!(file.read_bytes_at(0, 64).is_ok());
        assert!(file.read_bytes_at(64, 64).is_err(), "past the budget");
        assert!(file.read_bytes_at(0, 36).is_ok(), "what is left");
    }
}
