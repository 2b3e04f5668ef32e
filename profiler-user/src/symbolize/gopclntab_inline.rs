//! Inlined frames from `.gopclntab`, walked as the Go runtime walks them (`runtime/symtabinl.go`
//! `inlineUnwinder`, Go 1.21+; `gentraceback` in `runtime/traceback.go` before). A function's
//! pc-value table `PCDATA_InlTreeIndex` gives, at each pc, an index into its inline tree
//! (`FUNCDATA_InlTree`, an array of `runtime.inlinedCall`), or -1 in its own code. The entry
//! names the inlined function and a pc in its caller (`parentPc`), which is looked up again,
//! until -1: the function that holds the code.
//!
//! The tree is at `moduledata.gofunc` plus the funcdata offset. `gofunc` is an address that
//! `.gopclntab` does not hold: it is read from `runtime.firstmoduledata`, found in the data
//! sections as the word equal to the table's address (its first field, `pcHeader`), followed by
//! the table's own slices. Where `gofunc` is in `moduledata` and how an `inlinedCall` is laid out
//! depend on the release (from `.go.buildinfo`): releases not listed here get no inlined frames.

use object::{ObjectSection as _, ReadRef};

use super::gopclntab::{GoPcln, u32_at, u64_at};
use crate::golabels::buildinfo::{self, BuildInfoError, GoVersion};

/// `internal/abi` `PCDATA_InlTreeIndex` and `FUNCDATA_InlTree` (the same in 1.19-1.27).
const PCDATA_INL_TREE_INDEX: usize = 2;
const FUNCDATA_INL_TREE: usize = 3;
/// Levels of inlining beyond which a chain is taken for a loop in a malformed table.
pub(super) const MAX_DEPTH: usize = 64;
/// Steps of one pc-value table read at most (one table covers one function).
const MAX_STEPS: usize = 1 << 20;
/// Bytes of inline trees read at most.
const MAX_TREES_LEN: u64 = 32 << 20;
/// Bytes of a data section read at once while looking for `moduledata`.
const SCAN_CHUNK: u64 = 64 << 10;
/// `_func.npcdata`, after entryOff, nameOff, args, deferreturn, pcsp, pcfile, pcln.
const NPCDATA_AT: usize = 28;

/// Why an executable's inlined frames cannot be named (its functions still are).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InlineError {
    #[error("unreadable Go build information")]
    BuildInfo(#[source] BuildInfoError),
    #[error("no Go build information")]
    NoRelease,
    #[error("the inline tables of {0} are not known")]
    Release(GoVersion),
    #[error("the table's magic is not that of {0}")]
    Magic(GoVersion),
    #[error("runtime.firstmoduledata not found")]
    NoModuledata,
    #[error("malformed inline tables: {0}")]
    Malformed(&'static str),
}

/// What differs between releases for the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    /// Offset of `gofunc` in `runtime.moduledata`.
    pub(super) gofunc: usize,
    /// Size of `_func` up to its pcdata offsets (`nfuncdata` is its last byte).
    pub(super) func_size: usize,
    /// Size of `runtime.inlinedCall`, and where its name offset and `parentPc` are.
    pub(super) call_size: usize,
    pub(super) call_name: usize,
    pub(super) call_parent_pc: usize,
}

/// Go 1.19 (`runtime/symtab.go`): `_func` without `startLine`; `inlinedCall { parent int16,
/// funcID uint8, _ byte, file, line, func_, parentPc int32 }` (20 bytes, as cmd/link's
/// `genInlTreeSym` writes it); `moduledata.gofunc` after `types, etypes, rodata`.
pub(super) const GO_1_19: Layout = Layout {
    gofunc: 304,
    func_size: 40,
    call_size: 20,
    call_name: 12,
    call_parent_pc: 16,
};
/// Go 1.20-1.26: `_func.startLine`; `inlinedCall { funcID uint8, _ [3]byte, nameOff, parentPc,
/// startLine int32 }` (16 bytes, `runtime/symtabinl.go` from 1.21); `covctrs, ecovctrs` before
/// `end` in `moduledata` move `gofunc` by 16.
pub(super) const GO_1_20: Layout = Layout {
    gofunc: 320,
    func_size: 44,
    call_size: 16,
    call_name: 4,
    call_parent_pc: 8,
};
/// Go 1.27: `typedesclen`, `itaboffset, itabsize` in `moduledata` move `gofunc` by 24.
pub(super) const GO_1_27: Layout = Layout {
    gofunc: 344,
    ..GO_1_20
};

impl Layout {
    /// The layout of `version`, whose table must carry the matching `pcHeader.magic`.
    pub(super) fn of(version: GoVersion, magic: u32) -> Result<Self, InlineError> {
        let (layout, want) = match (version.major, version.minor) {
            (1, 19) => (GO_1_19, 0xffff_fff0),
            (1, 20..=26) => (GO_1_20, 0xffff_fff1),
            (1, 27) => (GO_1_27, 0xffff_fff1),
            _ => return Err(InlineError::Release(version)),
        };
        if magic != want {
            return Err(InlineError::Magic(version));
        }
        Ok(layout)
    }

    /// Offset (from `pcHeader.pctabOffset`) of the `_func` at `func`'s pc-value table `index`;
    /// `None` without one, as `runtime.pcdatavalue` (-1).
    fn pcdata(&self, table: &[u8], func: usize, index: usize) -> Option<u32> {
        let npcdata = usize::try_from(u32_at(table, func.checked_add(NPCDATA_AT)?)?).ok()?;
        if index >= npcdata {
            return None;
        }
        let at = func.checked_add(self.func_size)?.checked_add(4 * index)?;
        u32_at(table, at).filter(|&offset| offset != 0)
    }

    /// Offset (from `moduledata.gofunc`) of funcdata `index`; `None` without it, as
    /// `runtime.funcdata` (nil: past `nfuncdata`, or `^0`).
    fn funcdata(&self, table: &[u8], func: usize, index: usize) -> Option<u32> {
        let nfuncdata = *table.get(func.checked_add(self.func_size - 1)?)?;
        if index >= usize::from(nfuncdata) {
            return None;
        }
        let npcdata = usize::try_from(u32_at(table, func.checked_add(NPCDATA_AT)?)?).ok()?;
        let at = npcdata
            .checked_add(index)?
            .checked_mul(4)?
            .checked_add(func.checked_add(self.func_size)?)?;
        u32_at(table, at).filter(|&offset| offset != u32::MAX)
    }
}

/// The (value, end pc) pairs of one pc-value table, as `runtime.step` decodes them: a
/// zig-zag varint value delta (from -1), then a varint pc delta in units of `pcHeader.minLC`,
/// until a zero value delta after the first pair. Pcs are offsets from the text start.
struct PcValues<'a> {
    bytes: &'a [u8],
    entry: u64,
    pc: u64,
    value: i32,
    quantum: u64,
    steps: usize,
}

impl Iterator for PcValues<'_> {
    type Item = (i32, u64);

    fn next(&mut self) -> Option<(i32, u64)> {
        if self.steps >= MAX_STEPS {
            return None;
        }
        self.steps += 1;
        // A zero first byte ends the table, except for the first pair (pc still at entry).
        if *self.bytes.first()? == 0 && self.pc != self.entry {
            return None;
        }
        let delta = self.varint()?;
        self.value = self
            .value
            .wrapping_add((0u32.wrapping_sub(delta & 1) ^ (delta >> 1)) as i32);
        let pc_delta = self.varint()?;
        self.pc = self
            .pc
            .checked_add(u64::from(pc_delta).checked_mul(self.quantum)?)?;
        Some((self.value, self.pc))
    }
}

impl PcValues<'_> {
    /// `runtime.readvarint`, at most 5 bytes (32 bits).
    fn varint(&mut self) -> Option<u32> {
        let mut value = 0u32;
        for (i, &byte) in self.bytes.iter().enumerate().take(5) {
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Some(value);
            }
        }
        None
    }
}

/// Where the inline trees' bytes are.
#[derive(Debug)]
enum Region {
    /// Inside `.gopclntab`, at this address (Go 1.26+ puts `go:func.*` there).
    Table { address: u64 },
    /// Read from the file, from this address.
    Read { address: u64, bytes: Vec<u8> },
}

/// The inline trees of an executable's functions.
#[derive(Debug)]
pub(super) struct InlineTrees {
    layout: Layout,
    /// `moduledata.gofunc`: funcdata offsets are relative to it.
    gofunc: u64,
    region: Region,
}

impl InlineTrees {
    /// Reads the trees of `pcln`, the table at `address` of the executable `elf`.
    pub(super) fn load<'data, R: ReadRef<'data>>(
        elf: R,
        file: &object::File<'data, R>,
        pcln: &GoPcln,
        address: u64,
    ) -> Result<Self, InlineError> {
        let version = buildinfo::go_version(elf)
            .map_err(InlineError::BuildInfo)?
            .ok_or(InlineError::NoRelease)?;
        let magic = u32_at(&pcln.table, 0).ok_or(InlineError::Malformed("magic"))?;
        let layout = Layout::of(version, magic)?;
        let gofunc = find_gofunc(elf, file, pcln, address, &layout)?;

        // The trees are read as one range, from the first to the end of the last, which ends
        // after its highest index: what `PCDATA_InlTreeIndex` of its function reaches.
        let mut first: Option<u32> = None;
        let mut last: Option<(u32, usize)> = None;
        for func in pcln.funcs() {
            if let Some(offset) = layout.funcdata(&pcln.table, func, FUNCDATA_INL_TREE) {
                first = Some(first.map_or(offset, |first| first.min(offset)));
                if last.is_none_or(|(last, _)| offset > last) {
                    last = Some((offset, func));
                }
            }
        }
        let (Some(first), Some((last, last_func))) = (first, last) else {
            let region = Region::Read {
                address: gofunc,
                bytes: Vec::new(),
            };
            return Ok(Self {
                layout,
                gofunc,
                region,
            });
        };
        let entries = match layout.pcdata(&pcln.table, last_func, PCDATA_INL_TREE_INDEX) {
            Some(offset) => pcln
                .pc_values(offset, 0)
                .ok_or(InlineError::Malformed("pc-value table"))?
                .map(|(index, _)| i64::from(index) + 1)
                .max()
                .unwrap_or(0),
            None => 0,
        };
        let last_len = u64::try_from(entries)
            .unwrap_or(0)
            .checked_mul(layout.call_size as u64)
            .ok_or(InlineError::Malformed("inline tree size"))?;
        let start = gofunc
            .checked_add(u64::from(first))
            .ok_or(InlineError::Malformed("inline tree address"))?;
        let end = gofunc
            .checked_add(u64::from(last))
            .and_then(|end| end.checked_add(last_len))
            .ok_or(InlineError::Malformed("inline tree address"))?;
        let len = end - start;
        if len > MAX_TREES_LEN {
            return Err(InlineError::Malformed("inline trees too large"));
        }
        let table_end = address.saturating_add(pcln.table.len() as u64);
        let region = if address <= start && end <= table_end {
            Region::Table { address }
        } else {
            let offset = pcln
                .file_offset_of(start, len)
                .ok_or(InlineError::Malformed("inline trees outside the file"))?;
            let bytes = elf
                .read_bytes_at(offset, len)
                .map_err(|()| InlineError::Malformed("unreadable inline trees"))?
                .to_vec();
            Region::Read {
                address: start,
                bytes,
            }
        };
        Ok(Self {
            layout,
            gofunc,
            region,
        })
    }

    /// Trees read from `bytes` at `address`, with `layout` (tests).
    #[cfg(test)]
    pub(super) fn new(layout: Layout, gofunc: u64, address: u64, bytes: Vec<u8>) -> Self {
        Self {
            layout,
            gofunc,
            region: Region::Read { address, bytes },
        }
    }

    pub(super) fn gofunc(&self) -> u64 {
        self.gofunc
    }

    /// `len` bytes at `address`, within the trees read.
    fn bytes<'a>(&'a self, table: &'a [u8], address: u64, len: usize) -> Option<&'a [u8]> {
        let (bytes, start) = match &self.region {
            Region::Table { address } => (table, *address),
            Region::Read { address, bytes } => (bytes.as_slice(), *address),
        };
        let at = usize::try_from(address.checked_sub(start)?).ok()?;
        bytes.get(at..at.checked_add(len)?)
    }

    /// The functions inlined at `pc` of the `_func` at `func` (entry `entry`; both relative to
    /// the text start), innermost first, without the function itself; `None` when the tables
    /// are malformed (a chain is all or nothing).
    pub(super) fn chain<'p>(
        &'p self,
        pcln: &'p GoPcln,
        func: usize,
        entry: u32,
        pc: u32,
    ) -> Option<Vec<&'p str>> {
        let table = pcln.table.as_slice();
        let (Some(tree), Some(indices)) = (
            self.layout.funcdata(table, func, FUNCDATA_INL_TREE),
            self.layout.pcdata(table, func, PCDATA_INL_TREE_INDEX),
        ) else {
            return Some(Vec::new());
        };
        let tree = self.gofunc.checked_add(u64::from(tree))?;
        let mut names = Vec::new();
        let mut pc = u64::from(pc);
        loop {
            let index = pcln
                .pc_values(indices, entry)?
                .find(|&(_, end)| pc < end)?
                .0;
            // Negative: the function's own code.
            let Ok(index) = u64::try_from(index) else {
                return Some(names);
            };
            if names.len() == MAX_DEPTH {
                return None;
            }
            let size = self.layout.call_size;
            let call = self.bytes(
                table,
                tree.checked_add(index.checked_mul(size as u64)?)?,
                size,
            )?;
            names.push(pcln.name(u32_at(call, self.layout.call_name)?)?);
            // `parentPc` is an int32 offset from the entry, never negative.
            let parent = i32::try_from(u32_at(call, self.layout.call_parent_pc)?).ok()?;
            pc = u64::from(entry).checked_add(u64::try_from(parent).ok()?)?;
        }
    }
}

/// Reads `moduledata.gofunc` of `runtime.firstmoduledata`, which Go's linker puts in
/// `.go.module` (1.26+) or `.noptrdata` (before).
fn find_gofunc<'data, R: ReadRef<'data>>(
    elf: R,
    file: &object::File<'data, R>,
    pcln: &GoPcln,
    address: u64,
    layout: &Layout,
) -> Result<u64, InlineError> {
    let needle = address.to_le_bytes();
    let len = layout.gofunc as u64 + 8;
    for name in [".go.module", ".noptrdata", ".data"] {
        let Some(section) = object::Object::section_by_name(file, name) else {
            continue;
        };
        let Some((offset, size)) = section.file_range() else {
            continue;
        };
        // Fields are 8-byte aligned in memory.
        let mut at = (8 - section.address() % 8) % 8;
        while at < size {
            let chunk_len = SCAN_CHUNK.min(size - at);
            let Some(chunk_offset) = offset.checked_add(at) else {
                break;
            };
            let Ok(chunk) = elf.read_bytes_at(chunk_offset, chunk_len) else {
                break;
            };
            for (i, word) in chunk.chunks_exact(8).enumerate() {
                if word != needle {
                    continue;
                }
                let candidate = chunk_offset + 8 * i as u64;
                if let Ok(bytes) = elf.read_bytes_at(candidate, len)
                    && let Some(gofunc) = moduledata_gofunc(bytes, pcln, address, layout)
                {
                    return Ok(gofunc);
                }
            }
            at += chunk_len;
        }
    }
    Err(InlineError::NoModuledata)
}

/// `gofunc` of `bytes` if they are the `moduledata` of `pcln` at `address`: `pcHeader`, then the
/// slices funcnametab, cutab, filetab, pctab, pclntable and ftab (pointer, len, cap) where the
/// header says, `ftab` with `nfunc + 1` entries, and `text` the text start.
pub(super) fn moduledata_gofunc(
    bytes: &[u8],
    pcln: &GoPcln,
    address: u64,
    layout: &Layout,
) -> Option<u64> {
    let field = |index: usize| u64_at(bytes, 8 * index);
    let header = |index: usize| u64_at(&pcln.table, 8 + 8 * index);
    if field(0)? != address {
        return None;
    }
    // pcHeader words 3-7: funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset;
    // ftab starts the pclntable.
    for (slice, word) in [(0, 3), (1, 4), (2, 5), (3, 6), (4, 7), (5, 7)] {
        if field(1 + 3 * slice)? != address.checked_add(header(word)?)? {
            return None;
        }
    }
    let nfunc = header(0)?;
    // ftab's len, then findfunctab, minpc, maxpc, text.
    if field(17)? != nfunc.checked_add(1)? || field(22)? != pcln.text_start {
        return None;
    }
    let gofunc = u64_at(bytes, layout.gofunc)?;
    let rodata = u64_at(bytes, layout.gofunc - 8)?;
    (gofunc != 0 && rodata <= gofunc).then_some(gofunc)
}

impl GoPcln {
    /// The pairs of the pc-value table at `offset` (from `pcHeader.pctabOffset`) of the
    /// function at `entry`; `None` when it starts outside the table.
    fn pc_values(&self, offset: u32, entry: u32) -> Option<PcValues<'_>> {
        let start = self.pctab.checked_add(usize::try_from(offset).ok()?)?;
        Some(PcValues {
            bytes: self.table.get(start..)?,
            entry: u64::from(entry),
            pc: u64::from(entry),
            value: -1,
            quantum: u64::from(self.quantum),
            steps: 0,
        })
    }
}

/// `pairs` of (value, length in pc units) as a pc-value table (tests).
#[cfg(test)]
pub(super) fn pc_value_table(pairs: &[(i32, u32)]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut value: u32) {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    let mut out = Vec::new();
    let mut previous = -1i32;
    for &(value, len) in pairs {
        let delta = value.wrapping_sub(previous);
        varint(&mut out, ((delta << 1) ^ (delta >> 31)) as u32);
        varint(&mut out, len);
        previous = value;
    }
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(bytes: &[u8], quantum: u64) -> Vec<(i32, u64)> {
        PcValues {
            bytes,
            entry: 0x100,
            pc: 0x100,
            value: -1,
            quantum,
            steps: 0,
        }
        .collect()
    }

    #[test]
    fn decodes_pc_value_tables_as_the_runtime() {
        let table = pc_value_table(&[(-1, 4), (0, 300), (5, 1), (-70000, 2)]);
        assert_eq!(
            values(&table, 1),
            [(-1, 0x104), (0, 0x230), (5, 0x231), (-70000, 0x233)]
        );
        // Pc deltas are in units of minLC (4 on arm64).
        assert_eq!(values(&table, 4)[1], (0, 0x100 + 4 * (4 + 300)));
        // A zero first value delta is a pair, not the end.
        assert_eq!(values(&[0, 2, 2, 1, 0], 1), [(-1, 0x102), (0, 0x103)]);
        // Truncated, or a varint longer than 32 bits: the pairs before.
        assert_eq!(values(&table[..3], 1), [(-1, 0x104)]);
        assert_eq!(values(&[0x80; 9], 1), []);
        assert_eq!(values(&[], 1), []);
    }

    #[test]
    fn layouts_follow_the_release_and_its_magic() {
        let v = |minor| GoVersion { major: 1, minor };
        assert_eq!(Layout::of(v(19), 0xffff_fff0), Ok(GO_1_19));
        assert_eq!(Layout::of(v(20), 0xffff_fff1), Ok(GO_1_20));
        assert_eq!(Layout::of(v(26), 0xffff_fff1), Ok(GO_1_20));
        assert_eq!(Layout::of(v(27), 0xffff_fff1), Ok(GO_1_27));
        assert_eq!(
            Layout::of(v(19), 0xffff_fff1),
            Err(InlineError::Magic(v(19)))
        );
        assert_eq!(
            Layout::of(v(18), 0xffff_fff0),
            Err(InlineError::Release(v(18)))
        );
        assert_eq!(
            Layout::of(v(28), 0xffff_fff1),
            Err(InlineError::Release(v(28)))
        );
    }
}
