//! Puts files' tables into the kernel's shared arrays (`profiler_common::unwind`) and takes them
//! out: rows and page entries at ranges the [`Arena`]s give, each table's entry last (a walk
//! finds a table only once all of it is there), rules once each. A table taken out first loses
//! its entry, and its slots are reused only after [`KernelTables::reclaim`], which the caller
//! runs a while later: a walk that found the entry just before never reads another table's rows.
//!
//! [`rule_at`] is the lookup the BPF walk does, written over these arrays so that the tests
//! check it against the file tables.

use std::collections::HashMap;

use profiler_common::unwind::{
    CODE_RANGE_STEPS, CodeRange, KernelRow, KernelRule, MAX_UNWIND_RULES, NO_RULE, PageEntry,
    ProcessRanges, TABLE_NONE, TABLE_PENDING, UNWIND_PAGE_BITS, UnwindTable,
};

use super::{
    arena::Arena,
    layout::{KernelTable, page_rule},
    rule::Rule,
};

/// Where [`KernelTables`] writes: the BPF maps, or vectors in tests.
pub trait UnwindArrays {
    type Error: std::error::Error + Send + Sync + 'static;
    fn set_rows(&mut self, at: u32, rows: &[KernelRow]) -> Result<(), Self::Error>;
    fn set_pages(&mut self, at: u32, pages: &[PageEntry]) -> Result<(), Self::Error>;
    fn set_table(&mut self, id: u32, table: &UnwindTable) -> Result<(), Self::Error>;
    fn set_rule(&mut self, id: u16, rule: &KernelRule) -> Result<(), Self::Error>;
}

/// How many of each the kernel arrays hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub rows: u32,
    pub pages: u32,
    pub tables: u32,
}

/// What one row or page entry takes in the kernel: an array element of 8 bytes (a row's 4
/// bytes round up to 8).
// Two rows to an element would halve a row's; the budget counts what is spent meanwhile.
pub const SLOT_BYTES: u64 = 8;

impl Capacity {
    /// Row and page slots for `bytes` of kernel memory (rows and page entries 8 bytes each in
    /// the kernel: an array map rounds its elements up to 8 bytes, so a 4-byte row takes 8;
    /// files average one page entry per 40 rows or more, so one in 16 slots of the budget's
    /// bytes go to pages), and `tables` table entries.
    pub fn of_bytes(bytes: u64, tables: u32) -> Self {
        let page_bytes = bytes / 16;
        let row_bytes = bytes - page_bytes;
        Self {
            rows: u32::try_from(row_bytes / SLOT_BYTES).unwrap_or(u32::MAX),
            pages: u32::try_from(page_bytes / SLOT_BYTES).unwrap_or(u32::MAX),
            tables,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError<E: std::error::Error + 'static> {
    /// Not enough contiguous room: evict and ask again.
    #[error("no room for {rows} rows and {pages} page entries")]
    NoRoom { rows: u32, pages: u32 },
    #[error("more tables than the kernel array holds")]
    NoTableSlot,
    #[error("more than {MAX_UNWIND_RULES} distinct rules")]
    TooManyRules,
    #[error("writing the unwind maps: {0}")]
    Write(#[source] E),
}

/// Where one loaded table lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Placed {
    rows_at: u32,
    rows: u32,
    pages_at: u32,
    pages: u32,
}

/// The tables in the kernel, by table ID.
#[derive(Debug)]
pub struct KernelTables<A> {
    arrays: A,
    rows: Arena,
    pages: Arena,
    ids: Arena,
    placed: HashMap<u32, Placed>,
    /// Taken out, not yet reusable: (ID, where).
    retired: Vec<(u32, Placed)>,
    /// Rules already written, by global ID (they never change once written).
    rules_written: usize,
}

impl<A: UnwindArrays> KernelTables<A> {
    pub fn new(arrays: A, capacity: Capacity) -> Self {
        Self {
            arrays,
            rows: Arena::new(capacity.rows),
            pages: Arena::new(capacity.pages),
            ids: Arena::new(capacity.tables),
            placed: HashMap::new(),
            retired: Vec::new(),
            rules_written: 0,
        }
    }

    /// Loads `table`, whose rule IDs index `rules` (all rules known so far, in ID order), and
    /// returns its table ID.
    pub fn load(
        &mut self,
        table: &KernelTable,
        rules: &[Rule],
    ) -> Result<u32, LoadError<A::Error>> {
        if rules.len() > MAX_UNWIND_RULES as usize {
            return Err(LoadError::TooManyRules);
        }
        for (id, rule) in rules.iter().enumerate().skip(self.rules_written) {
            // In range: checked above.
            self.arrays
                .set_rule(id as u16, &KernelRule::from(*rule))
                .map_err(LoadError::Write)?;
            self.rules_written = id + 1;
        }
        let too_many = |_| LoadError::NoRoom {
            rows: u32::MAX,
            pages: u32::MAX,
        };
        let rows = u32::try_from(table.rows.len()).map_err(too_many)?;
        let pages = u32::try_from(table.pages.len()).map_err(too_many)?;
        let id = self.ids.alloc(1).ok_or(LoadError::NoTableSlot)?;
        let (Some(rows_at), Some(pages_at)) = (self.rows.alloc(rows), self.pages.alloc(pages))
        else {
            self.ids.free(id, 1);
            return Err(LoadError::NoRoom { rows, pages });
        };
        let placed = Placed {
            rows_at,
            rows,
            pages_at,
            pages,
        };
        let written = self.write(id, table, placed);
        if let Err(err) = written {
            self.free(id, placed);
            return Err(LoadError::Write(err));
        }
        self.placed.insert(id, placed);
        Ok(id)
    }

    fn write(&mut self, id: u32, table: &KernelTable, placed: Placed) -> Result<(), A::Error> {
        self.arrays.set_rows(placed.rows_at, &table.rows)?;
        let pages: Vec<PageEntry> = table
            .pages
            .iter()
            .map(|page| PageEntry {
                first: page.first + placed.rows_at,
                ..*page
            })
            .collect();
        self.arrays.set_pages(placed.pages_at, &pages)?;
        self.arrays.set_table(
            id,
            &UnwindTable {
                first_page: table.first_page,
                pages_at: placed.pages_at,
                page_count: placed.pages,
                last_rule: table.rows.last().map_or(NO_RULE, |row| row.rule),
                _pad: [0; 3],
            },
        )
    }

    /// Takes table `id` out: a walk no longer finds it. Its slots stay taken until
    /// [`Self::reclaim`].
    pub fn unload(&mut self, id: u32) -> Result<(), A::Error> {
        let Some(placed) = self.placed.remove(&id) else {
            return Ok(());
        };
        self.retired.push((id, placed));
        self.arrays.set_table(id, &UnwindTable::default())
    }

    /// Makes the slots of the tables taken out so far reusable; run it well after the walks
    /// that may have found them (a BPF program runs for microseconds).
    pub fn reclaim(&mut self) {
        for (id, placed) in std::mem::take(&mut self.retired) {
            self.free(id, placed);
        }
    }

    fn free(&mut self, id: u32, placed: Placed) {
        self.rows.free(placed.rows_at, placed.rows);
        self.pages.free(placed.pages_at, placed.pages);
        self.ids.free(id, 1);
    }

    /// Bytes of rows and page entries in use (taken out and not reclaimed included).
    pub fn bytes(&self) -> u64 {
        let used = self.used();
        (u64::from(used.rows) + u64::from(used.pages)) * SLOT_BYTES
    }

    /// Row, page and table slots in use (taken out and not reclaimed included).
    pub fn used(&self) -> Capacity {
        Capacity {
            rows: self.rows.used(),
            pages: self.pages.used(),
            tables: self.ids.used(),
        }
    }

    pub fn arrays(&self) -> &A {
        &self.arrays
    }
}

/// What the walk finds for a code address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// No executable mapping of the process holds it (JIT code, a mapping not yet seen).
    NoRange,
    /// Its file has no table ([`TABLE_NONE`]) or it is not loaded yet ([`TABLE_PENDING`]):
    /// frame pointers.
    NoTable(u32),
    /// The rule ID ([`NO_RULE`]: before the table's first row, frame pointers).
    Rule(u16),
}

/// The code range that holds `address`: the last range starting at or below it, if it ends
/// above. A fixed number of halvings, as the BPF walk does.
pub fn range_at(ranges: &ProcessRanges, address: u64) -> Option<&CodeRange> {
    let count = (ranges.count as usize).min(ranges.ranges.len());
    let (mut low, mut high) = (0usize, count);
    for _ in 0..CODE_RANGE_STEPS {
        if low >= high {
            break;
        }
        let middle = low + (high - low) / 2;
        if ranges.ranges[middle].start <= address {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    let range = ranges.ranges.get(low.checked_sub(1)?)?;
    (address < range.end).then_some(range)
}

/// The lookup of the BPF walk over the arrays: range, table, page, row.
pub fn rule_at(
    ranges: &ProcessRanges,
    tables: &[UnwindTable],
    pages: &[PageEntry],
    rows: &[KernelRow],
    address: u64,
) -> Found {
    let Some(range) = range_at(ranges, address) else {
        return Found::NoRange;
    };
    if range.table == TABLE_NONE || range.table == TABLE_PENDING {
        return Found::NoTable(range.table);
    }
    let Some(table) = tables.get(range.table as usize) else {
        return Found::NoTable(TABLE_NONE);
    };
    let file_address = address.wrapping_sub(range.bias);
    let page = file_address >> UNWIND_PAGE_BITS;
    let Some(index) = page.checked_sub(table.first_page) else {
        return Found::Rule(NO_RULE);
    };
    if index >= u64::from(table.page_count) {
        // An unloaded table has no pages: frame pointers, not the last rule.
        return Found::Rule(match table.page_count {
            0 => NO_RULE,
            _ => table.last_rule,
        });
    }
    let Some(page) = pages.get(table.pages_at as usize + index as usize) else {
        return Found::Rule(NO_RULE);
    };
    Found::Rule(page_rule(page, (file_address & 0xffff) as u16, |index| {
        rows.get(index as usize).copied()
    }))
}

/// The arrays in memory: the tests' kernel.
#[derive(Debug, Default)]
pub struct VecArrays {
    pub rows: Vec<KernelRow>,
    pub pages: Vec<PageEntry>,
    pub tables: Vec<UnwindTable>,
    pub rules: Vec<KernelRule>,
}

impl VecArrays {
    pub fn new(capacity: Capacity) -> Self {
        Self {
            rows: vec![KernelRow::default(); capacity.rows as usize],
            pages: vec![PageEntry::default(); capacity.pages as usize],
            tables: vec![UnwindTable::default(); capacity.tables as usize],
            rules: vec![KernelRule::default(); MAX_UNWIND_RULES as usize],
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("index {0} past the array")]
pub struct OutOfBounds(pub usize);

fn put<T: Copy>(array: &mut [T], at: usize, values: &[T]) -> Result<(), OutOfBounds> {
    array
        .get_mut(at..at + values.len())
        .ok_or(OutOfBounds(at + values.len()))?
        .copy_from_slice(values);
    Ok(())
}

impl UnwindArrays for VecArrays {
    type Error = OutOfBounds;
    fn set_rows(&mut self, at: u32, rows: &[KernelRow]) -> Result<(), OutOfBounds> {
        put(&mut self.rows, at as usize, rows)
    }
    fn set_pages(&mut self, at: u32, pages: &[PageEntry]) -> Result<(), OutOfBounds> {
        put(&mut self.pages, at as usize, pages)
    }
    fn set_table(&mut self, id: u32, table: &UnwindTable) -> Result<(), OutOfBounds> {
        put(&mut self.tables, id as usize, &[*table])
    }
    fn set_rule(&mut self, id: u16, rule: &KernelRule) -> Result<(), OutOfBounds> {
        put(&mut self.rules, usize::from(id), &[*rule])
    }
}

#[cfg(test)]
mod tests;
