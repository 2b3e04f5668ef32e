//! A file's table in the form the kernel walks: 4-byte rows (the low 16 bits of the address and
//! a rule ID) grouped by 64 KiB page of the file's addresses, each page found through an 8-byte
//! entry (its first row, how many, and the rule in force at the page's start). A lookup is one
//! page-entry read and a binary search of at most 17 steps over that page's rows, a shape the
//! verifier accepts on every kernel from 5.10 (no `bpf_loop`); [`KernelTable::rule_at`] is that
//! search, written as the BPF side will be, and tested against [`FileTable::rule_at`].
//!
//! Rule IDs are global: every file's rules go through one [`RuleIds`] of all tables loaded, so
//! the kernel holds each distinct rule once (a desktop's binaries need about 10,000, research/unwinding.md).

use super::{
    rule::RuleIds,
    table::{FileTable, Row},
};

use profiler_common::unwind::UNWIND_PAGE_BITS as PAGE_BITS;
pub use profiler_common::unwind::{KernelRow, NO_RULE, PageEntry};

/// The rule at `low` within `page`: its last row at or below `low` (a fixed number of
/// halvings, as the BPF walk does), else the page's carry; [`NO_RULE`] when a row is missing.
/// `row` reads the row array at an index (a file's rows, or the kernel's shared array).
pub fn page_rule(page: &PageEntry, low: u16, row: impl Fn(u32) -> Option<KernelRow>) -> u16 {
    let (mut lo, mut hi) = (0u32, u32::from(page.count));
    for _ in 0..17 {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        match row(page.first + mid) {
            Some(found) if found.address_low <= low => lo = mid + 1,
            Some(_) => hi = mid,
            None => return NO_RULE,
        }
    }
    match lo {
        0 => page.carry,
        n => row(page.first + n - 1).map_or(NO_RULE, |found| found.rule),
    }
}

/// A file's table in kernel form: `pages[0]` is the page of `first_page`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelTable {
    pub first_page: u64,
    pub pages: Vec<PageEntry>,
    pub rows: Vec<KernelRow>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("more than 65,535 unwind rows in one 64 KiB page")]
    DensePage,
    #[error("more than 65,535 distinct unwind rules across the loaded tables")]
    TooManyRules,
    #[error("more than 2^32 unwind rows in one file")]
    TooManyRows,
}

impl KernelTable {
    pub fn new(table: &FileTable, ids: &mut RuleIds) -> Result<Self, LayoutError> {
        let (Some(first), Some(last)) = (table.rows.first(), table.rows.last()) else {
            return Ok(Self {
                first_page: 0,
                pages: Vec::new(),
                rows: Vec::new(),
            });
        };
        let global: Vec<u16> = table
            .rules
            .iter()
            .map(|&rule| ids.id(rule).ok_or(LayoutError::TooManyRules))
            .collect::<Result<_, _>>()?;
        let id_of = |row: &Row| global[usize::from(row.rule())];
        let first_page = first.address() >> PAGE_BITS;
        let last_page = last.address() >> PAGE_BITS;
        let mut pages = Vec::with_capacity((last_page - first_page + 1) as usize);
        let mut rows = Vec::with_capacity(table.rows.len());
        let mut next = 0usize;
        let mut carry = NO_RULE;
        for page in first_page..=last_page {
            let start = rows.len();
            let first = u32::try_from(start).map_err(|_| LayoutError::TooManyRows)?;
            let page_carry = carry;
            while let Some(row) = table.rows.get(next)
                && row.address() >> PAGE_BITS == page
            {
                rows.push(KernelRow {
                    address_low: (row.address() & 0xffff) as u16,
                    rule: id_of(row),
                });
                carry = id_of(row);
                next += 1;
            }
            let count = u16::try_from(rows.len() - start).map_err(|_| LayoutError::DensePage)?;
            pages.push(PageEntry {
                first,
                count,
                carry: page_carry,
            });
        }
        Ok(Self {
            first_page,
            pages,
            rows,
        })
    }

    /// The rule ID at `address`, as the BPF walk finds it; [`NO_RULE`] outside the table.
    pub fn rule_at(&self, address: u64) -> u16 {
        let Some(page) = (address >> PAGE_BITS)
            .checked_sub(self.first_page)
            .and_then(|index| self.pages.get(usize::try_from(index).ok()?))
        else {
            // Past the last page the last row holds (an FDE end marks where it stops).
            return match address >> PAGE_BITS > self.first_page {
                true => self.rows.last().map_or(NO_RULE, |row| row.rule),
                false => NO_RULE,
            };
        };
        page_rule(page, (address & 0xffff) as u16, |index| {
            self.rows.get(index as usize).copied()
        })
    }

    /// Bytes in the kernel: 8 a row or page entry (an array element's size).
    pub fn bytes(&self) -> usize {
        (self.pages.len() + self.rows.len()) * super::kernel_maps::SLOT_BYTES as usize
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::{elf_file::ElfFile, unwind::table};

    fn libc() -> FileTable {
        let file = File::open("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        table::build(&ElfFile::new(file)).unwrap()
    }

    #[test]
    fn every_address_gets_the_rule_of_the_file_table() {
        let table = libc();
        let mut ids = RuleIds::default();
        let kernel = KernelTable::new(&table, &mut ids).unwrap();
        let first = table.rows[0].address();
        let last = table.rows.last().unwrap().address();
        // Every row's start, the byte before it, and a spread of addresses across the file.
        let probes = table
            .rows
            .iter()
            .flat_map(|row| {
                let address = row.address();
                [address, address.saturating_sub(1), address + 1]
            })
            .chain(
                (0..20_000u64).map(|i| first.saturating_sub(4096) + i * (last - first) / 19_000),
            );
        for address in probes {
            let expected = table.rule_at(address);
            let found = kernel.rule_at(address);
            match expected {
                None => assert_eq!(found, NO_RULE, "{address:#x}"),
                Some(rule) => assert_eq!(
                    ids.rules().get(usize::from(found)),
                    Some(rule),
                    "{address:#x}"
                ),
            }
        }
        // Rows and page entries take an 8-byte array element each.
        assert_eq!(kernel.bytes(), (kernel.rows.len() + kernel.pages.len()) * 8);
    }

    #[test]
    fn rules_are_shared_between_files() {
        let table = libc();
        let mut ids = RuleIds::default();
        KernelTable::new(&table, &mut ids).unwrap();
        let after_one = ids.rules().len();
        KernelTable::new(&table, &mut ids).unwrap();
        assert_eq!(ids.rules().len(), after_one);
        assert_eq!(after_one, table.rules.len());
    }

    #[test]
    fn an_empty_table_has_no_rule_anywhere() {
        let table = FileTable {
            arch: table::Arch::X86_64,
            rules: Vec::new(),
            rows: Vec::new(),
            stats: Default::default(),
        };
        let kernel = KernelTable::new(&table, &mut RuleIds::default()).unwrap();
        assert_eq!(kernel.rule_at(0x1234), NO_RULE);
    }
}
