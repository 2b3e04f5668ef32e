use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Weak},
};

use blazesym::{
    MaybeDefault,
    symbolize::{
        self, Input,
        source::{Elf, Kernel, Source},
    },
};

use super::{Frames, frames::Interner};
use crate::process::{FileId, MappedFile};

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
}

/// Finished frames of one file, by file offset.
struct FileCache {
    file: Weak<MappedFile>,
    path: PathBuf,
    frames: HashMap<u64, Frames>,
    /// Interval of the last miss, while blazesym holds the file parsed.
    parsed_since_miss: Option<u64>,
}

/// Symbolizes user addresses by (file, file offset) and kernel addresses through kallsyms.
pub struct Symbolizer {
    blaze: symbolize::Symbolizer,
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
        let blaze = symbolize::Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Self {
            blaze,
            files: HashMap::new(),
            kernel: HashMap::new(),
            interner: Interner::default(),
            stats: CacheStats::default(),
            interval: 0,
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Frames for each file offset of `file`, in order. Misses are symbolized in one batch.
    pub fn user(&mut self, file: &Arc<MappedFile>, offsets: &[u64]) -> Vec<Frames> {
        let Some(path) = file.symbolization_path() else {
            return offsets.iter().map(|_| Frames::from([])).collect();
        };
        let cache = self.files.entry(file.id).or_insert_with(|| FileCache {
            file: Arc::downgrade(file),
            path: path.clone(),
            frames: HashMap::new(),
            parsed_since_miss: None,
        });
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
            cache.frames.extend(misses.into_iter().zip(found));
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
            );
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

/// One blazesym call; a failed call names nothing rather than failing the interval.
fn symbolize_batch(
    blaze: &symbolize::Symbolizer,
    interner: &mut Interner,
    source: &Source<'_>,
    input: Input<&[u64]>,
) -> Vec<Frames> {
    let wanted = match input {
        Input::AbsAddr(a) | Input::VirtOffset(a) | Input::FileOffset(a) => a.len(),
    };
    match blaze.symbolize(source, input) {
        Ok(found) => found.iter().map(|s| interner.frames(s)).collect(),
        Err(err) => {
            tracing::debug!("symbolization failed: {err:#}");
            vec![Frames::from([]); wanted]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{FileTable, MappingObject, ProcessSnapshot};

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
        assert_eq!(symbolizer.stats(), CacheStats { hits: 1, misses: 1 });
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
