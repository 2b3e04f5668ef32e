//! A process's code ranges in the kernel's form ([`ProcessRanges`]): its executable file
//! mappings (`mappings.rs`) sorted by address, each with its file's table ID, at most
//! [`MAX_CODE_RANGES`]; the lowest-addressed are kept (the executable, then the libraries), the
//! rest are counted and unwound by frame pointer.

use profiler_common::unwind::{CodeRange, MAX_CODE_RANGES, ProcessRanges};

use super::mappings::CodeMapping;

/// The ranges, and how many mappings did not fit or overlapped one kept.
#[derive(Debug, PartialEq, Eq)]
pub struct Built {
    pub ranges: ProcessRanges,
    pub dropped: usize,
}

/// `mappings` as sorted ranges; `table_of` gives each one's table ID (or `TABLE_NONE`,
/// `TABLE_PENDING`).
pub fn process_ranges(
    mappings: &[CodeMapping],
    mut table_of: impl FnMut(&CodeMapping) -> u32,
) -> Built {
    let mut sorted: Vec<&CodeMapping> = mappings.iter().filter(|m| m.start < m.end).collect();
    sorted.sort_by_key(|m| m.start);
    let mut ranges = ProcessRanges::default();
    let mut kept = 0usize;
    let mut end = 0u64;
    for mapping in &sorted {
        // /proc/PID/maps never overlaps; a list read in two passes might.
        if kept == MAX_CODE_RANGES || (kept > 0 && mapping.start < end) {
            continue;
        }
        ranges.ranges[kept] = CodeRange {
            start: mapping.start,
            end: mapping.end,
            bias: mapping.bias,
            table: table_of(mapping),
            _pad: 0,
        };
        end = mapping.end;
        kept += 1;
    }
    ranges.count = kept as u32;
    Built {
        ranges,
        dropped: mappings.len() - kept,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::unwind::kernel_maps::range_at;

    fn mapping(start: u64, end: u64) -> CodeMapping {
        CodeMapping {
            start,
            end,
            bias: start - 0x1000,
            path: PathBuf::from(format!("/lib/{start:x}.so")),
            key: None,
        }
    }

    #[test]
    fn sorted_with_their_tables() {
        let list = [
            mapping(0x7f00_0000, 0x7f01_0000),
            mapping(0x40_0000, 0x41_0000),
            mapping(0x7e00_0000, 0x7e00_8000),
        ];
        let built = process_ranges(&list, |m| (m.start >> 24) as u32);
        assert_eq!(built.dropped, 0);
        assert_eq!(built.ranges.count, 3);
        let starts: Vec<u64> = built.ranges.ranges[..3].iter().map(|r| r.start).collect();
        assert_eq!(starts, [0x40_0000, 0x7e00_0000, 0x7f00_0000]);
        let found = range_at(&built.ranges, 0x7e00_7fff).unwrap();
        assert_eq!((found.table, found.bias), (0x7e, 0x7e00_0000 - 0x1000));
        assert_eq!(range_at(&built.ranges, 0x7e00_8000), None);
    }

    #[test]
    fn what_does_not_fit_or_overlaps_is_dropped_and_counted() {
        let mut list: Vec<CodeMapping> = (0..MAX_CODE_RANGES as u64 + 5)
            .map(|i| mapping(0x10_0000 * (i + 1), 0x10_0000 * (i + 1) + 0x1000))
            .collect();
        list.push(mapping(0x10_0800, 0x10_2000));
        list.push(mapping(0x30_0000, 0x30_0000));
        let built = process_ranges(&list, |_| 0);
        assert_eq!(built.ranges.count as usize, MAX_CODE_RANGES);
        assert_eq!(built.dropped, 7);
        // The lowest are kept.
        assert_eq!(built.ranges.ranges[0].start, 0x10_0000);
        assert_eq!(
            built.ranges.ranges[MAX_CODE_RANGES - 1].start,
            0x10_0000 * MAX_CODE_RANGES as u64
        );
    }
}
