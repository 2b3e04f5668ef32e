//! Where a process's code comes from, for the walk: each executable file mapping's address
//! range, the file it maps and the bias from the file's own addresses (which the tables use) to
//! the process's. The bias comes from the load segment that holds the mapping's file offset:
//! `address - bias` is the file's virtual address.

use std::{fs::File, path::PathBuf};

use object::{Object, ObjectSegment};
use procfs::process::{MMPermissions, MMapPath, MemoryMaps, Process};

use super::store::FileKey;
use crate::elf_file::ElfFile;

/// One executable mapping of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeMapping {
    pub start: u64,
    pub end: u64,
    pub bias: u64,
    /// The file as this process sees it (through `/proc/PID/root`, so in its container too).
    pub path: PathBuf,
    /// What the file's table is known by; `None` for the vDSO.
    pub key: Option<FileKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum MappingsError {
    #[error("cannot read the mappings of process {pid}: {source}")]
    Maps {
        pid: i32,
        #[source]
        source: procfs::ProcError,
    },
}

/// The executable file mappings of process `pid`, and its vDSO (path `[vdso]`, bias 0, no
/// file); mappings of files that cannot be opened or read as ELF are left out (their frames
/// fall back to frame pointers). Each file is opened once, for its bias and its key.
pub fn code_mappings(pid: i32) -> Result<Vec<CodeMapping>, MappingsError> {
    Ok(code_mappings_in(pid, &maps(pid)?))
}

/// What identifies process `pid`'s executable file mappings, cheaply (no file is opened): their
/// ranges, offsets and inodes. A change means a library was opened or closed.
pub fn fingerprint(pid: i32) -> Result<Fingerprint, MappingsError> {
    Ok(fingerprint_of(&maps(pid)?))
}

/// [`code_mappings`] and [`fingerprint`] from one read of `/proc/PID/maps`.
pub fn code_mappings_and_fingerprint(
    pid: i32,
) -> Result<(Vec<CodeMapping>, Fingerprint), MappingsError> {
    let maps = maps(pid)?;
    Ok((code_mappings_in(pid, &maps), fingerprint_of(&maps)))
}

/// Each executable file mapping's range, offset and inode.
pub type Fingerprint = Vec<(u64, u64, u64, u64)>;

fn maps(pid: i32) -> Result<MemoryMaps, MappingsError> {
    Process::new(pid)
        .and_then(|process| process.maps())
        .map_err(|source| MappingsError::Maps { pid, source })
}

fn code_mappings_in(pid: i32, maps: &MemoryMaps) -> Vec<CodeMapping> {
    let mut mappings = Vec::new();
    for map in maps {
        // The vDSO is code of no file: a range without a table, so that its frames are not
        // taken for code mapped since (frame pointers walk them).
        if map.pathname == MMapPath::Vdso && map.perms.contains(MMPermissions::EXECUTE) {
            mappings.push(CodeMapping {
                start: map.address.0,
                end: map.address.1,
                bias: 0,
                path: PathBuf::from("[vdso]"),
                key: None,
            });
            continue;
        }
        let MMapPath::Path(path) = &map.pathname else {
            continue;
        };
        if !map.perms.contains(MMPermissions::EXECUTE) {
            continue;
        }
        // The file as the process sees it: its root may be a container's.
        let path =
            PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
        let Some((bias, key)) = File::open(&path).ok().and_then(|file| {
            let metadata = file.metadata().ok()?;
            let elf = ElfFile::new(file);
            let bias = bias(&elf, map.address.0, map.offset)?;
            Some((bias, FileKey::of_elf(&elf, &metadata)))
        }) else {
            continue;
        };
        mappings.push(CodeMapping {
            start: map.address.0,
            end: map.address.1,
            bias,
            path,
            key: Some(key),
        });
    }
    mappings
}

fn fingerprint_of(maps: &MemoryMaps) -> Fingerprint {
    maps.iter()
        .filter(|map| {
            matches!(map.pathname, MMapPath::Path(_)) && map.perms.contains(MMPermissions::EXECUTE)
        })
        .map(|map| (map.address.0, map.address.1, map.offset, map.inode))
        .collect()
}

/// The bias of an executable mapping at `start` of the file's bytes from `offset`. Its load
/// segment is the executable one whose pages hold `offset` (mappings start on a page, segments
/// need not: the page before an executable segment's start may be a read-only segment's too;
/// a segment's alignment is at least the page size it was linked for).
pub fn bias(file: &ElfFile, start: u64, offset: u64) -> Option<u64> {
    let elf = object::File::parse(file).ok()?;
    let segment = elf.segments().find(|segment| {
        let (file_offset, size) = segment.file_range();
        let executable = matches!(
            segment.flags(),
            object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0
        );
        let page = segment.align().max(4096);
        executable
            && page.is_power_of_two()
            && (file_offset & !(page - 1)..file_offset.saturating_add(size)).contains(&offset)
    })?;
    let (file_offset, _) = segment.file_range();
    Some(
        start
            .wrapping_sub(offset)
            .wrapping_sub(segment.address().wrapping_sub(file_offset)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_maps_its_own_code() {
        let mappings = code_mappings(std::process::id() as i32).unwrap();
        let here = this_process_maps_its_own_code as *const () as u64;
        let mapping = mappings
            .iter()
            .find(|m| (m.start..m.end).contains(&here))
            .expect("a mapping holds this function");
        // The file's address of this function is where its symbol says.
        let data = std::fs::read(&mapping.path).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let file_address = here - mapping.bias;
        let names: Vec<String> = object::Object::symbols(&elf)
            .filter(|symbol| {
                use object::ObjectSymbol;
                (symbol.address()..symbol.address() + symbol.size().max(1)).contains(&file_address)
            })
            .filter_map(|symbol| object::ObjectSymbol::name(&symbol).ok().map(str::to_owned))
            .collect();
        assert!(
            names
                .iter()
                .any(|name| name.contains("this_process_maps_its_own_code")),
            "at {file_address:#x} of {}: {names:?}",
            mapping.path.display()
        );
        // libc is there too.
        assert!(
            mappings
                .iter()
                .any(|m| m.path.to_string_lossy().contains("libc.so")),
            "{mappings:?}"
        );
    }

    #[test]
    fn a_process_that_is_gone_is_an_error() {
        assert!(code_mappings(i32::MAX).is_err());
    }
}
