use std::fs::File;

use profiler_common::unwind::MAX_CODE_RANGES;

use super::*;
use crate::{
    elf_file::ElfFile,
    unwind::{
        rule::RuleIds,
        table::{self, FileTable},
    },
};

const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";

fn file_table(path: &str) -> FileTable {
    table::build(&ElfFile::new(File::open(path).unwrap())).unwrap()
}

fn ranges(list: &[(u64, u64, u64, u32)]) -> ProcessRanges {
    let mut out = ProcessRanges::default();
    for (slot, &(start, end, bias, table)) in list.iter().enumerate() {
        out.ranges[slot] = CodeRange {
            start,
            end,
            bias,
            table,
            _pad: 0,
        };
    }
    out.count = list.len() as u32;
    out
}

fn found(tables: &KernelTables<VecArrays>, ranges: &ProcessRanges, address: u64) -> Found {
    let arrays = tables.arrays();
    rule_at(ranges, &arrays.tables, &arrays.pages, &arrays.rows, address)
}

/// Every probe of `file` mapped at `bias` in `range` gets, through the kernel arrays, the rule
/// the file's own table gives (as the kernel's bytes).
fn check_file(
    tables: &KernelTables<VecArrays>,
    process: &ProcessRanges,
    file: &FileTable,
    bias: u64,
) {
    let first = file.rows[0].address();
    let last = file.rows.last().unwrap().address();
    let probes = file
        .rows
        .iter()
        .flat_map(|row| {
            let address = row.address();
            [address, address.saturating_sub(1), address + 1]
        })
        .chain((0..5_000u64).map(|i| first + i * (last - first) / 5_000));
    let mut checked = 0;
    for address in probes {
        let Some(range) = range_at(process, address + bias) else {
            continue;
        };
        assert_ne!(range.table, TABLE_NONE);
        let kernel = match found(tables, process, address + bias) {
            Found::Rule(NO_RULE) => None,
            Found::Rule(id) => Some(tables.arrays().rules[usize::from(id)]),
            other => panic!("{address:#x}: {other:?}"),
        };
        let expected = file.rule_at(address).map(|rule| KernelRule::from(*rule));
        assert_eq!(kernel, expected, "{address:#x}");
        checked += 1;
    }
    assert!(
        checked > file.rows.len(),
        "{checked} probes inside the range"
    );
}

#[test]
fn two_files_in_one_process_walk_as_their_own_tables_say() {
    let (libc, ld) = (file_table(LIBC), file_table(LD_SO));
    let mut ids = RuleIds::default();
    let (libc_kernel, ld_kernel) = (
        KernelTable::new(&libc, &mut ids).unwrap(),
        KernelTable::new(&ld, &mut ids).unwrap(),
    );
    let mut tables = KernelTables::new(
        VecArrays::new(Capacity {
            rows: 200_000,
            pages: 1_000,
            tables: 8,
        }),
        Capacity {
            rows: 200_000,
            pages: 1_000,
            tables: 8,
        },
    );
    let libc_id = tables.load(&libc_kernel, ids.rules()).unwrap();
    let ld_id = tables.load(&ld_kernel, ids.rules()).unwrap();
    assert_ne!(libc_id, ld_id);
    // Where a process would map them: each file's code from its first row's page.
    let libc_bias = 0x7f00_0000_0000;
    let ld_bias = 0x7f10_0000_0000;
    let span = |file: &FileTable, bias: u64| {
        (
            file.rows[0].address() + bias,
            file.rows.last().unwrap().address() + bias + 1,
        )
    };
    let (libc_start, libc_end) = span(&libc, libc_bias);
    let (ld_start, ld_end) = span(&ld, ld_bias);
    let process = ranges(&[
        (0x40_0000, 0x40_1000, 0, TABLE_PENDING),
        (libc_start, libc_end, libc_bias, libc_id),
        (ld_start, ld_end, ld_bias, ld_id),
    ]);
    check_file(&tables, &process, &libc, libc_bias);
    check_file(&tables, &process, &ld, ld_bias);
    assert_eq!(
        found(&tables, &process, 0x40_0800),
        Found::NoTable(TABLE_PENDING)
    );
    assert_eq!(found(&tables, &process, 0x40_1000), Found::NoRange);
    assert_eq!(found(&tables, &process, 0x10), Found::NoRange);
    assert_eq!(
        tables.bytes(),
        (libc_kernel.bytes() + ld_kernel.bytes()) as u64
    );
}

#[test]
fn a_table_taken_out_is_not_found_and_its_room_is_reused_only_after_reclaim() {
    let libc = file_table(LIBC);
    let mut ids = RuleIds::default();
    let kernel = KernelTable::new(&libc, &mut ids).unwrap();
    let rows = kernel.rows.len() as u32;
    let pages = kernel.pages.len() as u32;
    // Room for one copy.
    let capacity = Capacity {
        rows: rows + rows / 2,
        pages: pages + pages / 2,
        tables: 4,
    };
    let mut tables = KernelTables::new(VecArrays::new(capacity), capacity);
    let id = tables.load(&kernel, ids.rules()).unwrap();
    assert!(matches!(
        tables.load(&kernel, ids.rules()),
        Err(LoadError::NoRoom { .. })
    ));
    let bias = 0x7f00_0000_0000;
    let address = libc.rows[libc.rows.len() / 2].address();
    let process = ranges(&[(bias, bias + (1 << 32), bias, id)]);
    assert!(matches!(found(&tables, &process, address + bias), Found::Rule(r) if r != NO_RULE));

    tables.unload(id).unwrap();
    // A walk that still holds the ID finds no pages: frame pointers, never another's rows.
    assert_eq!(
        found(&tables, &process, address + bias),
        Found::Rule(NO_RULE)
    );
    assert!(
        matches!(
            tables.load(&kernel, ids.rules()),
            Err(LoadError::NoRoom { .. })
        ),
        "slots reused before reclaim"
    );
    tables.reclaim();
    assert_eq!(tables.bytes(), 0);
    let again = tables.load(&kernel, ids.rules()).unwrap();
    let process = ranges(&[(bias, bias + (1 << 32), bias, again)]);
    check_file(&tables, &process, &libc, bias);
}

#[test]
fn rules_are_written_once_and_too_many_tables_are_refused() {
    let libc = file_table(LIBC);
    let mut ids = RuleIds::default();
    let kernel = KernelTable::new(&libc, &mut ids).unwrap();
    let capacity = Capacity::of_bytes(8 << 20, 2);
    let mut tables = KernelTables::new(VecArrays::new(capacity), capacity);
    tables.load(&kernel, ids.rules()).unwrap();
    tables.load(&kernel, ids.rules()).unwrap();
    assert!(matches!(
        tables.load(&kernel, ids.rules()),
        Err(LoadError::NoTableSlot)
    ));
    let written = &tables.arrays().rules[..ids.rules().len()];
    let expected: Vec<KernelRule> = ids.rules().iter().map(|&r| KernelRule::from(r)).collect();
    assert_eq!(written, expected.as_slice());
}

#[test]
fn ranges_are_found_by_halving_even_when_full() {
    let list: Vec<(u64, u64, u64, u32)> = (0..MAX_CODE_RANGES as u64)
        .map(|i| (0x1000 * (2 * i + 1), 0x1000 * (2 * i + 2), 0, i as u32))
        .collect();
    let process = ranges(&list);
    for (i, &(start, end, _, table)) in list.iter().enumerate() {
        assert_eq!(
            range_at(&process, start).map(|r| r.table),
            Some(table),
            "{i}"
        );
        assert_eq!(
            range_at(&process, end - 1).map(|r| r.table),
            Some(table),
            "{i}"
        );
        assert_eq!(range_at(&process, end), None, "gap after {i}");
    }
    assert_eq!(range_at(&process, 0), None);
    assert_eq!(range_at(&ProcessRanges::default(), 0x1000), None);
    // A count past the array is read as the array.
    let mut broken = process;
    broken.count = u32::MAX;
    assert_eq!(range_at(&broken, 0x1000).map(|r| r.table), Some(0));
}

#[test]
fn a_capacity_spends_in_the_kernel_no_more_than_its_bytes() {
    let bytes: u64 = 24 << 20;
    let capacity = Capacity::of_bytes(bytes, 8192);
    // An array map's element is its value rounded up to 8 bytes.
    let element = |size: usize| size.div_ceil(8) as u64 * 8;
    let spent = u64::from(capacity.rows)
        * element(std::mem::size_of::<profiler_common::unwind::KernelRow>())
        + u64::from(capacity.pages)
            * element(std::mem::size_of::<profiler_common::unwind::PageEntry>());
    assert!(
        spent <= bytes && spent > bytes * 9 / 10,
        "{spent} bytes for a budget of {bytes}"
    );
}
