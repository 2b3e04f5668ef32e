//! The unwind tables as the kernel holds them (issue 15): arrays shared by every table, filled by
//! userspace (`profiler-user/src/unwind/`), walked by the BPF program.
//!
//! A code address is found in three steps, each a lookup in an array map, none in a hash map:
//! the process's [`ProcessRanges`] give the mapping that holds it, its table and bias; the
//! table's [`UnwindTable`] gives its 64 KiB page's [`PageEntry`]; a bounded binary search of the
//! page's [`KernelRow`]s gives the rule ID, an index into the [`KernelRule`]s. Rows and page
//! entries of every table share two arrays, placed by userspace's allocator, so the memory is
//! what the loaded tables need and never more than `--unwind-memory-mb`.

/// Bits of a code address below its page.
pub const UNWIND_PAGE_BITS: u32 = 16;

/// One row: where in its page the rule starts, and the rule's global ID.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelRow {
    pub address_low: u16,
    pub rule: u16,
}

/// One 64 KiB page of a file's addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageEntry {
    /// Index of the page's first row: in its table's rows, or (in the kernel) in the shared row
    /// array.
    pub first: u32,
    pub count: u16,
    /// The rule at the page's first address when no row of the page starts there.
    pub carry: u16,
}

/// No rule covers the address (before the file's first row): the walk uses frame pointers.
pub const NO_RULE: u16 = u16::MAX;

/// A loaded table: where its page entries are in the shared page array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    /// The page (address >> [`UNWIND_PAGE_BITS`]) of `pages_at`'s entry.
    pub first_page: u64,
    pub pages_at: u32,
    pub page_count: u32,
    /// The rule past the last page (the last row's: an FDE's end marks where rules stop).
    pub last_rule: u16,
    pub _pad: [u16; 3],
}

/// How the canonical frame address is found ([`KernelRule::cfa`]); the userspace `Cfa` enum
/// has these values.
pub const CFA_UNSUPPORTED: u8 = 0;
pub const CFA_SP: u8 = 1;
pub const CFA_FP: u8 = 2;
pub const CFA_PLT: u8 = 3;
pub const CFA_DEREF_SP: u8 = 4;
pub const CFA_SIGNAL: u8 = 5;
pub const CFA_END: u8 = 6;
pub const CFA_FRAME_POINTER: u8 = 7;

/// Where a caller's register is ([`KernelRule::fp`], [`KernelRule::ra`]); the userspace
/// `Saved` enum has these values.
pub const SAVED_UNCHANGED: u8 = 0;
pub const SAVED_AT_CFA: u8 = 1;
pub const SAVED_UNSUPPORTED: u8 = 2;

/// One rule, as userspace's `Rule` with its enums as bytes (a byte the kernel reads from a map
/// must not be a Rust enum: any value can be there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelRule {
    pub cfa: u8,
    pub fp: u8,
    pub ra: u8,
    pub _pad: u8,
    pub cfa_offset: i32,
    /// `CFA_DEREF_SP`'s addend after the load.
    pub cfa_post: i32,
    pub fp_offset: i16,
    pub ra_offset: i16,
}

/// Rule IDs are `u16` and [`NO_RULE`] is not one.
pub const MAX_UNWIND_RULES: u32 = NO_RULE as u32;

/// The table of a code range that has none: its frames are walked by frame pointer.
pub const TABLE_NONE: u32 = u32::MAX;
/// The table is being built (or waits for room): frame pointers meanwhile, counted.
pub const TABLE_PENDING: u32 = u32::MAX - 1;

/// One executable mapping of a process: `[start, end)`, its table, and the bias from the
/// process's addresses to the file's (`address - bias`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeRange {
    pub start: u64,
    pub end: u64,
    pub bias: u64,
    pub table: u32,
    pub _pad: u32,
}

/// Code ranges kept per process: a server maps a few dozen files; one with more keeps the
/// lowest-addressed (the rest unwind by frame pointer, counted).
pub const MAX_CODE_RANGES: usize = 128;
/// Halvings that find a range among [`MAX_CODE_RANGES`].
pub const CODE_RANGE_STEPS: usize = 8;

/// Where a process's code ranges are in the kernel's shared range array: `count` ranges from
/// index `first`, sorted by start. The BPF walk reads each range by an array lookup rather
/// than by indexing one map value: an index into a value is tracked precisely by the
/// verifier, and every halving's two outcomes then made new states (a million instructions
/// for eight frames), where an array lookup's key is not tracked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessSlot {
    pub first: u32,
    pub count: u32,
}

/// A process's executable mappings, sorted by start, without overlaps: userspace's form, whose
/// first `count` ranges go to the shared array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessRanges {
    pub count: u32,
    pub _pad: u32,
    pub ranges: [CodeRange; MAX_CODE_RANGES],
}

impl Default for ProcessRanges {
    fn default() -> Self {
        Self {
            count: 0,
            _pad: 0,
            ranges: [CodeRange::default(); MAX_CODE_RANGES],
        }
    }
}

const _: () = assert!(MAX_CODE_RANGES <= 1 << (CODE_RANGE_STEPS - 1));
const _: () = assert!(core::mem::size_of::<KernelRule>() == 16);
const _: () = assert!(core::mem::size_of::<UnwindTable>() == 24);
