//! A process's name and executable mappings at one moment.

use std::{fs::File, path::Path, sync::Arc};

use procfs::process::{MMPermissions, MMapPath, MemoryMap, Process};

use super::{ContainerInfo, FileId, FileTable, MappedFile, container, identity};

/// What a mapping holds.
#[derive(Clone, Debug)]
pub enum MappingObject {
    File(Arc<MappedFile>),
    /// The kernel-provided `[vdso]`.
    Vdso,
    /// Executable memory without a file (JIT code, for example).
    Anonymous,
}

/// One executable mapping of a process.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// Absolute start address (inclusive).
    pub start: u64,
    /// Absolute end address (exclusive).
    pub end: u64,
    /// File offset mapped at `start`.
    pub offset: u64,
    pub object: MappingObject,
}

impl Mapping {
    /// The file offset that an absolute address in this mapping corresponds to.
    pub fn file_offset(&self, address: u64) -> u64 {
        address - self.start + self.offset
    }
}

/// A process at the time it was first seen.
#[derive(Debug, Default)]
pub struct ProcessSnapshot {
    pub pid: u32,
    /// Process name (`/proc/<pid>/comm`); empty when the process was gone before it was read.
    pub name: String,
    /// Executable mappings sorted by start address.
    pub mappings: Vec<Mapping>,
    /// The container the process runs in, if any.
    pub container: Option<Arc<ContainerInfo>>,
}

impl ProcessSnapshot {
    /// Reads `/proc/<pid>` if it still holds generation `pid_gen` (0: any). A process that is
    /// gone, or whose PID another process has taken, yields an empty snapshot, not an error: its
    /// frames stay unnamed but its samples are kept, and never named after another program.
    pub fn capture(pid: u32, pid_gen: u64, files: &mut FileTable) -> Self {
        let Ok(process) = Process::new(pid as i32) else {
            return Self::gone(pid);
        };
        if !identity::is_generation(&process, pid_gen) {
            return Self::gone(pid);
        }
        let name = process.stat().map(|stat| stat.comm).unwrap_or_default();
        let (source, maps) = memory_maps(pid, &process);
        let mut mappings: Vec<Mapping> = maps
            .into_iter()
            .filter(|map| map.perms.contains(MMPermissions::EXECUTE))
            .filter_map(|map| mapping(source, map, files))
            .collect();
        mappings.sort_by_key(|m| m.start);
        Self {
            pid,
            name,
            mappings,
            container: container::of_process(&process),
        }
    }

    fn gone(pid: u32) -> Self {
        Self {
            pid,
            ..Self::default()
        }
    }

    /// The mapping that contains `address`.
    pub fn find(&self, address: u64) -> Option<&Mapping> {
        let index = self.mappings.partition_point(|m| m.start <= address);
        let mapping = self.mappings.get(index.checked_sub(1)?)?;
        (address < mapping.end).then_some(mapping)
    }
}

/// The process's memory maps, and the `/proc` entry they were read from. A main thread that
/// called `pthread_exit` leaves a zombie leader whose `/proc/PID/maps` is empty while its other
/// threads run on in the same memory: read them through a live thread (`/proc/TID` works for
/// any thread and has `map_files` too).
fn memory_maps(pid: u32, process: &Process) -> (u32, Vec<MemoryMap>) {
    let maps = process.maps().map(|maps| maps.0).unwrap_or_default();
    if !maps.is_empty() {
        return (pid, maps);
    }
    let Ok(tasks) = process.tasks() else {
        return (pid, maps);
    };
    for task in tasks.flatten() {
        let tid = task.tid as u32;
        if tid == pid {
            continue;
        }
        let Ok(thread) = Process::new(tid as i32) else {
            continue;
        };
        let maps = thread.maps().map(|maps| maps.0).unwrap_or_default();
        if !maps.is_empty() {
            return (tid, maps);
        }
    }
    (pid, Vec::new())
}

/// `pid`: the `/proc` entry the maps came from (the process, or one of its threads).
fn mapping(pid: u32, map: MemoryMap, files: &mut FileTable) -> Option<Mapping> {
    let (start, end) = map.address;
    let object = match &map.pathname {
        MMapPath::Path(path) => {
            let path = path.to_string_lossy();
            let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
            let id = FileId {
                dev: ((map.dev.0 as u64) << 32) | map.dev.1 as u64,
                inode: map.inode,
            };
            MappingObject::File(files.get_or_open(id, path, || open_mapped(pid, start, end, path)))
        }
        MMapPath::Vdso => MappingObject::Vdso,
        MMapPath::Anonymous => MappingObject::Anonymous,
        // [vsyscall] and other pseudo mappings hold no code we can name.
        _ => return None,
    };
    Some(Mapping {
        start,
        end,
        offset: map.offset,
        object,
    })
}

/// Opens the mapped file as the process sees it: `map_files` reaches deleted files and files in
/// other mount namespaces; `root/<path>` is the fallback where `map_files` is not permitted.
fn open_mapped(pid: u32, start: u64, end: u64, path: &str) -> Option<File> {
    File::open(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
        .or_else(|_| {
            File::open(Path::new(&format!("/proc/{pid}/root")).join(path.trim_start_matches('/')))
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_own_executable_mapping() {
        let mut files = FileTable::default();
        let snapshot = ProcessSnapshot::capture(std::process::id(), 0, &mut files);
        assert!(!snapshot.name.is_empty());
        let here = captures_own_executable_mapping as *const () as u64;
        let mapping = snapshot.find(here).expect("our own code is mapped");
        let MappingObject::File(file) = &mapping.object else {
            panic!("code of the test binary is file-backed");
        };
        let exe = std::env::current_exe().unwrap();
        assert_eq!(Path::new(&file.path), exe);
        assert!(file.symbolization_path().is_some());
    }

    #[test]
    fn a_missing_process_gives_an_empty_snapshot() {
        let mut files = FileTable::default();
        let snapshot = ProcessSnapshot::capture(u32::MAX - 1, 0, &mut files);
        assert!(snapshot.name.is_empty() && snapshot.mappings.is_empty());
    }

    #[test]
    fn find_respects_bounds() {
        let snapshot = ProcessSnapshot {
            pid: 1,
            name: "x".into(),
            mappings: vec![
                Mapping {
                    start: 0x1000,
                    end: 0x2000,
                    offset: 0,
                    object: MappingObject::Anonymous,
                },
                Mapping {
                    start: 0x3000,
                    end: 0x4000,
                    offset: 0x500,
                    object: MappingObject::Vdso,
                },
            ],
            container: None,
        };
        assert!(snapshot.find(0xfff).is_none());
        assert_eq!(snapshot.find(0x1000).unwrap().start, 0x1000);
        assert!(snapshot.find(0x2000).is_none());
        let m = snapshot.find(0x3abc).unwrap();
        assert_eq!(m.file_offset(0x3abc), 0xabc + 0x500);
        assert!(snapshot.find(0x4000).is_none());
    }
}
