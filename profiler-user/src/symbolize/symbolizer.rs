use std::{
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::SystemTime,
};

use blazesym::{
    MaybeDefault,
    symbolize::{
        self, Input,
        source::{Elf, Kernel, Source},
    },
};

use super::{
    Frame, Frames,
    frames::{Converter, Interner},
    gopclntab::GoPcln,
    sigbus,
};
use crate::{
    fast_hash::HashMap,
    process::{FileId, MappedFile},
};

/// Cached addresses beyond which the whole frame cache starts afresh: bounds memory on hosts
/// whose code keeps changing (JITs, churn of short-lived binaries).
const MAX_CACHED_ADDRESSES: usize = 500_000;

/// Intervals without a miss after which blazesym's parsed copy of a file is dropped: the frame
/// cache answers for known addresses, and a large library's symbol tables and DWARF cost
/// megabytes.
const IDLE_INTERVALS_BEFORE_EVICTION: u64 = 2;

/// Cache counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Reads of a file that shrank under blazesym's mapping of it (SIGBUS recovered): their
    /// frames were left unnamed.
    pub truncated_reads: u64,
}

/// Why one blazesym call named nothing.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("blazesym could not read the file")]
    Blazesym(#[source] blazesym::Error),
    #[error("the file, or its separate debug file, shrank while blazesym read it")]
    Truncated(#[source] sigbus::Faulted),
}

/// Size and modification time: what changes when a file is rewritten or truncated in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileVersion {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileVersion {
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// Finished frames of one file, by file offset.
struct FileCache {
    file: Weak<MappedFile>,
    path: PathBuf,
    /// The file as it was when `frames` were made.
    version: Option<FileVersion>,
    frames: HashMap<u64, Frames>,
    /// Interval of the last miss, while blazesym holds the file parsed.
    parsed_since_miss: Option<u64>,
    /// Whether a truncation was logged (once per file).
    warned: bool,
    /// The Go function table, read at the first address blazesym could not name (`None`
    /// inside: not a Go binary, or one whose table cannot be read).
    go: Option<Option<Arc<GoPcln>>>,
}

impl FileCache {
    /// Drops what was read from the file, its frames and blazesym's copy (and mapping), so that
    /// the next miss reads the file as it is now.
    fn forget(&mut self, blaze: &mut symbolize::Symbolizer) {
        self.frames.clear();
        self.go = None;
        if self.parsed_since_miss.take().is_some() {
            let _ = blaze.evict(&symbolize::evict::Elf::new(self.path.clone()).into());
        }
    }
}

/// Names the unnamed of `found` (frames of `offsets`) from the file's `.gopclntab`, read once:
/// one frame per function, inlined ones first, as blazesym's frames.
fn name_from_go_table(
    cache: &mut FileCache,
    offsets: &[u64],
    found: &mut [Frames],
    interner: &mut Interner,
) {
    let path = &cache.path;
    let table = cache.go.get_or_insert_with(|| {
        let file = std::fs::File::open(path).ok()?;
        match GoPcln::load(&crate::elf_file::ElfFile::new(file)) {
            Ok(table) => {
                if let Some(err) = table.as_ref().and_then(GoPcln::inline_error) {
                    tracing::debug!(
                        file = %path.display(),
                        "Go inlined calls are not expanded: {}",
                        crate::error_chain(err)
                    );
                }
                table.map(Arc::new)
            }
            Err(err) => {
                tracing::debug!(file = %path.display(), "no Go function table: {err}");
                None
            }
        }
    });
    let Some(table) = table else { return };
    for (offset, frames) in offsets.iter().zip(found.iter_mut()) {
        if frames.is_empty()
            && let Some(names) = table.frames_at(*offset)
        {
            *frames = names
                .into_iter()
                .map(|name| Frame {
                    function: interner.intern(name),
                    file: None,
                    line: None,
                })
                .collect();
        }
    }
}

/// Symbolizes user addresses by (file, file offset) and kernel addresses through kallsyms.
pub struct Symbolizer {
    blaze: symbolize::Symbolizer,
    /// Whether a file's size and mtime are checked before its frames are used (off only in
    /// tests that need a stale mapping).
    check_versions: bool,
    files: HashMap<FileId, FileCache>,
    kernel: HashMap<u64, Frames>,
    interner: Interner,
    stats: CacheStats,
    interval: u64,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Self::with_blazesym(symbolize::Symbolizer::builder(), true)
    }

    /// Neither blazesym nor we check that a file is unchanged before reading it: the next call
    /// then reads a file truncated since the last one through the old mapping, a deterministic
    /// stand-in for a truncation in the middle of a call.
    #[cfg(test)]
    fn without_reload() -> Self {
        Self::with_blazesym(
            symbolize::Symbolizer::builder().enable_auto_reload(false),
            false,
        )
    }

    fn with_blazesym(builder: symbolize::Builder, check_versions: bool) -> Self {
        // Names come back mangled: the conversion demangles each distinct name of a batch once.
        let blaze = builder
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(false)
            .build();
        Self {
            blaze,
            check_versions,
            files: HashMap::default(),
            kernel: HashMap::default(),
            interner: Interner::default(),
            stats: CacheStats::default(),
            interval: 0,
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Frames for each file offset of `file`, in order. Misses are symbolized in one batch.
    ///
    /// A file changed in place since its frames were made is read again; one that shrinks
    /// while blazesym reads it leaves this call's frames unnamed (counted in
    /// [`CacheStats::truncated_reads`], logged once per file), never misnamed.
    pub fn user(&mut self, file: &Arc<MappedFile>, offsets: &[u64]) -> Vec<Frames> {
        let unnamed = || offsets.iter().map(|_| Frames::from([])).collect();
        let Some(path) = file.symbolization_path() else {
            return unnamed();
        };
        let version = if self.check_versions {
            FileVersion::of(&path)
        } else {
            None
        };
        let cache = self.files.entry(file.id).or_insert_with(|| FileCache {
            file: Arc::downgrade(file),
            path: path.clone(),
            version,
            frames: HashMap::default(),
            parsed_since_miss: None,
            warned: false,
            go: None,
        });
        if cache.version != version {
            // Rewritten or truncated in place: the frames may name code that is not there now.
            tracing::debug!(file = %file.path, "file changed in place, reading it again");
            cache.forget(&mut self.blaze);
            cache.version = version;
        }
        let misses = missing(&cache.frames, offsets);
        self.stats.hits += (offsets.len() - misses.len()) as u64;
        self.stats.misses += misses.len() as u64;
        if !misses.is_empty() {
            cache.parsed_since_miss = Some(self.interval);
            let source = Source::Elf(Elf::new(path));
            let found = symbolize_batch(
                &self.blaze,
                &mut self.interner,
                &source,
                Input::FileOffset(&misses),
            );
            match found {
                Ok(mut found) => {
                    // Stripped Go binaries have no symbols for blazesym: their own table names
                    // them.
                    if found.iter().any(|frames| frames.is_empty()) {
                        name_from_go_table(cache, &misses, &mut found, &mut self.interner);
                    }
                    cache.frames.reserve(misses.len());
                    cache.frames.extend(misses.into_iter().zip(found));
                }
                Err(err @ BatchError::Truncated(_)) => {
                    self.stats.truncated_reads += 1;
                    if !cache.warned {
                        cache.warned = true;
                        tracing::warn!(
                            file = %file.path,
                            "{}; its frames stay unnamed until it is read again",
                            crate::error_chain(&err)
                        );
                    }
                    cache.forget(&mut self.blaze);
                    return unnamed();
                }
                Err(err) => {
                    tracing::debug!(file = %file.path, "symbolization failed: {}", crate::error_chain(&err));
                    let unknown = misses.into_iter().map(|o| (o, Frames::from([])));
                    cache.frames.extend(unknown);
                }
            }
        }
        offsets.iter().map(|o| cache.frames[o].clone()).collect()
    }

    /// Frames for each kernel address, in order.
    pub fn kernel(&mut self, addresses: &[u64]) -> Vec<Frames> {
        let misses = missing(&self.kernel, addresses);
        self.stats.hits += (addresses.len() - misses.len()) as u64;
        self.stats.misses += misses.len() as u64;
        if !misses.is_empty() {
            // kallsyms only: searching the disk for a vmlinux image costs seconds and rarely helps.
            let source = Source::Kernel(Kernel {
                vmlinux: MaybeDefault::None,
                ..Kernel::default()
            });
            let found = symbolize_batch(
                &self.blaze,
                &mut self.interner,
                &source,
                Input::AbsAddr(&misses),
            )
            .unwrap_or_else(|err| {
                tracing::debug!("kernel symbolization failed: {}", crate::error_chain(&err));
                vec![Frames::from([]); misses.len()]
            });
            self.kernel.extend(misses.into_iter().zip(found));
        }
        addresses.iter().map(|a| self.kernel[a].clone()).collect()
    }
    /// Called after each interval: forgets files no snapshot holds any more, releases blazesym's
    /// parsed copy of files without recent misses, and bounds the frame cache.
    pub fn end_interval(&mut self) {
        let interval = self.interval;
        let mut evict = Vec::new();
        self.files.retain(|_, cache| {
            let closed = cache.file.strong_count() == 0;
            let idle = cache
                .parsed_since_miss
                .is_some_and(|last| last + IDLE_INTERVALS_BEFORE_EVICTION <= interval);
            if (closed || idle) && cache.parsed_since_miss.take().is_some() {
                evict.push(cache.path.clone());
            }
            !closed
        });
        for path in evict {
            let _ = self.blaze.evict(&symbolize::evict::Elf::new(path).into());
        }
        if self.cached() > MAX_CACHED_ADDRESSES {
            self.kernel.clear();
            self.files.values_mut().for_each(|c| c.frames.clear());
            self.interner.clear();
        }
        self.interval += 1;
    }

    /// Number of cached user and kernel addresses.
    pub fn cached(&self) -> usize {
        self.kernel.len() + self.files.values().map(|c| c.frames.len()).sum::<usize>()
    }

    /// Number of files whose parsed form blazesym currently holds.
    pub fn parsed_files(&self) -> usize {
        self.files
            .values()
            .filter(|c| c.parsed_since_miss.is_some())
            .count()
    }
}

/// Distinct keys of `wanted` that `cache` lacks.
fn missing(cache: &HashMap<u64, Frames>, wanted: &[u64]) -> Vec<u64> {
    let mut misses: Vec<u64> = wanted
        .iter()
        .copied()
        .filter(|k| !cache.contains_key(k))
        .collect();
    misses.sort_unstable();
    misses.dedup();
    misses
}

/// One blazesym call, with its answer turned into frames, under the SIGBUS guard: blazesym
/// reads the file through a mapping, and names it returns point into that mapping.
fn symbolize_batch(
    blaze: &symbolize::Symbolizer,
    interner: &mut Interner,
    source: &Source<'_>,
    input: Input<&[u64]>,
) -> Result<Vec<Frames>, BatchError> {
    let found = sigbus::guarded(|| {
        let found = blaze.symbolize(source, input)?;
        let mut converter = Converter::new(interner);
        Ok(found.iter().map(|s| converter.frames(s)).collect())
    });
    // Faulted: read (partly) from zeros, whatever came back is not the file's.
    found
        .map_err(BatchError::Truncated)?
        .map_err(BatchError::Blazesym)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        process::{FileTable, MappingObject, ProcessSnapshot},
        test_support::{in_child, truncate_in_place},
    };

    #[inline(never)]
    fn a_function_with_a_distinct_name() -> u64 {
        std::hint::black_box(a_function_with_a_distinct_name as *const () as u64)
    }

    fn own_file_offset(address: u64) -> (Arc<MappedFile>, u64) {
        let mut files = FileTable::default();
        let snapshot = ProcessSnapshot::capture(std::process::id(), 0, &mut files);
        let mapping = snapshot.find(address).expect("own code is mapped");
        let MappingObject::File(file) = &mapping.object else {
            panic!("own code is file-backed")
        };
        (file.clone(), mapping.file_offset(address))
    }

    #[test]
    fn names_own_function_and_caches_it() {
        let (file, offset) = own_file_offset(a_function_with_a_distinct_name());
        let mut symbolizer = Symbolizer::new();
        let first = symbolizer.user(&file, &[offset, offset]);
        let name = &first[0].last().expect("named").function;
        assert!(name.ends_with("a_function_with_a_distinct_name"), "{name}");
        // The repeated offset is symbolized once.
        assert_eq!(
            symbolizer.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                truncated_reads: 0
            }
        );
        let again = symbolizer.user(&file, &[offset]);
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        assert_eq!(symbolizer.stats().hits, 2);
    }

    #[test]
    fn an_address_outside_any_symbol_is_unnamed_not_an_error() {
        let (file, _) = own_file_offset(a_function_with_a_distinct_name());
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.user(&file, &[u64::MAX / 2]);
        assert!(frames[0].is_empty());
    }

    /// A small ELF file with a symbol table past its first page and no debug info anywhere.
    const FIXTURE: &[u8] = include_bytes!("../tracectx/fixtures/aarch64_tls_exe");
    /// File offsets of functions in it (`readelf -s`; its code segment has offset = address).
    const MAIN: u64 = 0x8c0;
    const PROBE_SERVE: u64 = 0xa60;
    const OTEL_CTX_ADDR: u64 = 0xb70;

    #[test]
    fn a_file_truncated_under_blazesym_is_unnamed_not_a_crash() {
        in_child(
            "symbolize::symbolizer::tests::a_file_truncated_under_blazesym_is_unnamed_not_a_crash",
            || {
                let dir = tempfile::tempdir().unwrap();
                let copy = dir.path().join("tls_exe");
                std::fs::write(&copy, FIXTURE).unwrap();
                let open = || {
                    let handle = std::fs::File::open(&copy).ok();
                    let id = FileId { dev: 0, inode: 1 };
                    Arc::new(MappedFile::new(id, copy.display().to_string(), handle))
                };
                let file = open();
                assert!(file.build_id.is_some());
                let mut symbolizer = Symbolizer::without_reload();
                let named = symbolizer.user(&file, &[MAIN]);
                assert_eq!(&*named[0].last().expect("main is named").function, "main");

                // The first page (headers, code) stays; the symbol names are gone.
                truncate_in_place(&copy, 4096);
                let after = symbolizer.user(&file, &[OTEL_CTX_ADDR, MAIN]);
                assert!(after.iter().all(|f| f.is_empty()), "{after:?}");
                assert_eq!(symbolizer.stats().truncated_reads, 1);
                assert_eq!(symbolizer.parsed_files(), 0, "blazesym's copy is dropped");
                // The next read opens the file as it is now: an error, not a fault.
                let again = symbolizer.user(&file, &[PROBE_SERVE, MAIN]);
                assert!(again.iter().all(|f| f.is_empty()), "{again:?}");
                assert_eq!(symbolizer.stats().truncated_reads, 1);
                // The build ID of the truncated file is read again without a crash.
                let _ = open().build_id;
            },
        );
    }

    #[test]
    fn a_file_truncated_between_reads_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("tls_exe");
        std::fs::write(&copy, FIXTURE).unwrap();
        let handle = std::fs::File::open(&copy).ok();
        let id = FileId { dev: 0, inode: 1 };
        let file = Arc::new(MappedFile::new(id, copy.display().to_string(), handle));
        let mut symbolizer = Symbolizer::new();
        let named = symbolizer.user(&file, &[MAIN, PROBE_SERVE]);
        assert!(named.iter().all(|f| !f.is_empty()), "{named:?}");

        truncate_in_place(&copy, 4096);
        // Cached names of the old content are not served; blazesym maps the file anew (it
        // checks size and mtime too), so nothing faults.
        let after = symbolizer.user(&file, &[MAIN, OTEL_CTX_ADDR]);
        assert!(after.iter().all(|f| f.is_empty()), "{after:?}");
        assert_eq!(symbolizer.stats().truncated_reads, 0);

        // Written again in place with the same content: named again.
        std::fs::write(&copy, FIXTURE).unwrap();
        let again = symbolizer.user(&file, &[MAIN]);
        assert_eq!(&*again[0].last().expect("named").function, "main");
    }

    #[test]
    fn releases_idle_files_then_closed_ones() {
        let (file, offset) = own_file_offset(a_function_with_a_distinct_name());
        let mut symbolizer = Symbolizer::new();
        symbolizer.user(&file, &[offset]);
        assert_eq!(symbolizer.parsed_files(), 1);
        symbolizer.end_interval(); // the interval of the miss
        symbolizer.end_interval();
        assert_eq!(symbolizer.parsed_files(), 1, "one interval without a miss");
        symbolizer.end_interval();
        assert_eq!(symbolizer.parsed_files(), 0, "two intervals without a miss");
        assert_eq!(
            symbolizer.cached(),
            1,
            "finished frames stay while the file is held"
        );
        let hits = symbolizer.stats().hits;
        symbolizer.user(&file, &[offset]);
        assert_eq!(symbolizer.stats().hits, hits + 1);
        drop(file);
        symbolizer.end_interval();
        assert_eq!(symbolizer.cached(), 0);
    }
}
