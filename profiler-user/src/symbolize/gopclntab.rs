//! Go function names from `.gopclntab`, the table the Go runtime itself uses for stack traces,
//! which stripped Go binaries (`-ldflags="-s -w"`: no symbol table, no DWARF) keep. blazesym
//! does not read it and no maintained crate parses it without mapping the file, so this is
//! written by hand: only the Go 1.18+ layout (`runtime/symtab.go` `pcHeader`, `functab`,
//! `_func`), read with `read` within [`crate::elf_file`]'s budget, every offset checked.
//! An address inside inlined code is named by the chain of functions inlined there, innermost
//! first, down to the function that holds the code ([`super::gopclntab_inline`], Go 1.19-1.27);
//! where the inline tables cannot be read, by that function alone.

use object::{Object as _, ObjectSection as _, ObjectSegment as _, ReadRef};

pub use super::gopclntab_inline::InlineError;
use super::gopclntab_inline::InlineTrees;

/// Go 1.18-1.19 and Go 1.20+ (same layout for what is read here).
const MAGICS: [u32; 2] = [0xffff_fff0, 0xffff_fff1];
/// `pcHeader` on 64-bit targets: magic, pads, minLC, ptrSize, then 8 words.
const HEADER_LEN: usize = 8 + 8 * 8;

/// Errors of reading the table: the binary is then named as before (not at all).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclnError {
    #[error("malformed ELF file")]
    Elf,
    #[error("malformed .gopclntab: {0}")]
    Malformed(&'static str),
    #[error("unsupported .gopclntab (before Go 1.18, or not 64-bit)")]
    Unsupported,
    #[error("the text start is unknown (a stripped external link)")]
    TextStart,
}

/// One Go executable's function table and inline trees, owned (the file is not kept open or
/// mapped).
#[derive(Debug)]
pub struct GoPcln {
    pub(super) table: Vec<u8>,
    /// Virtual address function entries are relative to (`runtime.text`).
    pub(super) text_start: u64,
    nfunc: usize,
    funcnames: usize,
    functab: usize,
    /// `pcHeader.pctabOffset`: pc-value tables are relative to it.
    pub(super) pctab: usize,
    /// `pcHeader.minLC`: the unit of pc deltas in pc-value tables.
    pub(super) quantum: u8,
    /// Loadable segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
    /// The inline trees, or why they could not be read.
    inline: Result<InlineTrees, InlineError>,
}

/// A function found at an address: its `_func` (offset in the table), its entry and the
/// address, both relative to the text start.
struct FuncAt {
    func: usize,
    entry: u32,
    pc: u32,
}

impl GoPcln {
    /// The table of a Go executable; `Ok(None)` without `.gopclntab`.
    pub fn load<'data>(elf: impl ReadRef<'data>) -> Result<Option<Self>, PclnError> {
        let file = object::File::parse(elf).map_err(|_| PclnError::Elf)?;
        let Some(section) = file.section_by_name(".gopclntab") else {
            return Ok(None);
        };
        let (offset, size) = section
            .file_range()
            .ok_or(PclnError::Malformed("no file data"))?;
        let table = elf
            .read_bytes_at(offset, size)
            .map_err(|()| PclnError::Malformed("unreadable"))?
            .to_vec();
        let segments = file
            .segments()
            .map(|segment| {
                let (offset, size) = segment.file_range();
                (offset, size, segment.address())
            })
            .collect();
        // Recent releases no longer store the text start in the header: it is `runtime.text`,
        // the start of `.text` when Go's own linker laid the file out. An external linker may
        // put C code first; such a binary (dynamic) is not guessed at.
        let has_interp = match &file {
            object::File::Elf64(elf_file) => elf_file
                .elf_program_headers()
                .iter()
                .any(|ph| ph.p_type.get(elf_file.endian()) == object::elf::PT_INTERP),
            _ => return Err(PclnError::Unsupported),
        };
        let text = file.section_by_name(".text").map(|s| s.address());
        let mut pcln = Self::parse(table, segments, text.filter(|_| !has_interp))?;
        pcln.inline = InlineTrees::load(elf, &file, &pcln, section.address());
        Ok(Some(pcln))
    }

    fn parse(
        table: Vec<u8>,
        segments: Vec<(u64, u64, u64)>,
        text: Option<u64>,
    ) -> Result<Self, PclnError> {
        if table.len() < HEADER_LEN {
            return Err(PclnError::Malformed("short header"));
        }
        if !MAGICS.contains(&u32_at(&table, 0).ok_or(PclnError::Unsupported)?) || table[7] != 8 {
            return Err(PclnError::Unsupported);
        }
        let word =
            |index: usize| u64_at(&table, 8 + 8 * index).ok_or(PclnError::Malformed("header"));
        let to_offset =
            |value: u64| usize::try_from(value).map_err(|_| PclnError::Malformed("offset"));
        let nfunc = to_offset(word(0)?)?;
        let text_start = match word(2)? {
            0 => text.ok_or(PclnError::TextStart)?,
            stored => stored,
        };
        let funcnames = to_offset(word(3)?)?;
        let pctab = to_offset(word(6)?)?;
        let functab = to_offset(word(7)?)?;
        // The function table and its end marker must be inside the table.
        let end = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .and_then(|len| len.checked_add(functab))
            .ok_or(PclnError::Malformed("function count"))?;
        if end > table.len() || funcnames >= table.len() {
            return Err(PclnError::Malformed("offsets past the table"));
        }
        Ok(Self {
            quantum: table[6],
            table,
            text_start,
            nfunc,
            funcnames,
            functab,
            pctab,
            segments,
            inline: Err(InlineError::NoRelease),
        })
    }

    /// The name of the Go function at `file_offset`, as Go writes it (`main.(*server).handle`):
    /// the function that holds the code, inlined calls aside.
    pub fn function_at(&self, file_offset: u64) -> Option<&str> {
        let at = self.func_at(file_offset)?;
        self.name(u32_at(&self.table, at.func + 4)?)
    }

    /// The functions at `file_offset`, innermost first: those inlined there (when the inline
    /// trees could be read and are well-formed), then the one that holds the code.
    pub fn frames_at(&self, file_offset: u64) -> Option<Vec<&str>> {
        let at = self.func_at(file_offset)?;
        let outer = self.name(u32_at(&self.table, at.func + 4)?)?;
        let mut frames = match &self.inline {
            Ok(trees) => trees
                .chain(self, at.func, at.entry, at.pc)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        frames.push(outer);
        Some(frames)
    }

    /// Why inlined calls are not expanded, if they are not.
    pub fn inline_error(&self) -> Option<&InlineError> {
        self.inline.as_ref().err()
    }

    /// `moduledata.gofunc`, the base of funcdata, when the inline trees were read.
    pub fn gofunc(&self) -> Option<u64> {
        self.inline.as_ref().ok().map(InlineTrees::gofunc)
    }

    fn func_at(&self, file_offset: u64) -> Option<FuncAt> {
        let address = self
            .segments
            .iter()
            .find(|(offset, size, _)| {
                (*offset..offset.saturating_add(*size)).contains(&file_offset)
            })
            .map(|(offset, _, vaddr)| vaddr.wrapping_add(file_offset - offset))?;
        let pc = u32::try_from(address.checked_sub(self.text_start)?).ok()?;
        let entry = |index: usize| u32_at(&self.table, self.functab + 8 * index);
        // The last function ends at the end marker (entry `nfunc`).
        if self.nfunc == 0 || pc < entry(0)? || pc >= entry(self.nfunc)? {
            return None;
        }
        // The last entry at or before `pc`.
        let (mut low, mut high) = (0, self.nfunc);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if entry(middle)? <= pc {
                low = middle;
            } else {
                high = middle;
            }
        }
        let func = self.func(low)?;
        // `_func { entryOff uint32; nameOff int32; ... }`
        let entry = entry(low)?;
        (u32_at(&self.table, func)? == entry).then_some(FuncAt { func, entry, pc })
    }

    /// Offset in the table of function `index`'s `_func`.
    fn func(&self, index: usize) -> Option<usize> {
        let at = self
            .functab
            .checked_add(index.checked_mul(8)?.checked_add(4)?)?;
        self.functab
            .checked_add(usize::try_from(u32_at(&self.table, at)?).ok()?)
    }

    /// Offsets in the table of every function's `_func`.
    pub(super) fn funcs(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nfunc).filter_map(|index| self.func(index))
    }

    /// The name at `name_off` in funcnametab.
    pub(super) fn name(&self, name_off: u32) -> Option<&str> {
        let start = self
            .funcnames
            .checked_add(usize::try_from(name_off).ok()?)?;
        let rest = self.table.get(start..)?;
        let len = rest.iter().take(4096).position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..len]).ok()
    }

    /// The file offset of `len` bytes at virtual address `address`, all in one segment's file
    /// bytes.
    pub(super) fn file_offset_of(&self, address: u64, len: u64) -> Option<u64> {
        let end = address.checked_add(len)?;
        self.segments.iter().find_map(|&(offset, size, vaddr)| {
            (vaddr <= address && end <= vaddr.checked_add(size)?)
                .then(|| offset.checked_add(address - vaddr))?
        })
    }
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(super) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::gopclntab_inline::{
        GO_1_19, GO_1_20, GO_1_27, Layout, MAX_DEPTH, moduledata_gofunc, pc_value_table,
    };

    const PROCESS: &str = "main.(*worker).process";
    /// `moduledata.gofunc` of the built tables, and the offset of the inline tree from it.
    const GOFUNC: u64 = 0x50_0000;
    const TREE: u32 = 0x40;
    /// Text at 0x401000, loaded from file offset 0x1000.
    const SEGMENTS: [(u64, u64, u64); 1] = [(0x1000, 0x1000, 0x401000)];

    /// Name offsets in the built tables.
    const NAMES: &[u8] = b"a\0main.(*worker).process\0main.hot\0main.inner\0";
    const HOT: u32 = 25;
    const INNER: u32 = 34;

    /// A table of two functions, `a` at text offset 0x10 and [`PROCESS`] at 0x20, ending at
    /// 0x40; with `layout`, [`PROCESS`] has an inline tree: `main.hot` at 0x24..0x28, inlined at
    /// 0x22, and `main.inner` inlined into it (at 0x25) at 0x28..0x2c.
    fn table_with(layout: Option<Layout>) -> Vec<u8> {
        let mut t = vec![0u8; HEADER_LEN];
        let magic = if layout == Some(GO_1_19) { 0 } else { 1 };
        t[..4].copy_from_slice(&MAGICS[magic].to_le_bytes());
        t[6] = 1;
        t[7] = 8;
        let names = t.len();
        t.extend(NAMES);
        // pctab: offset 0 means "no table".
        let pctab = t.len();
        t.push(0);
        let indices = (t.len() - pctab) as u32;
        t.extend(pc_value_table(&[(-1, 4), (0, 4), (1, 4), (-1, 0x14)]));
        let functab = t.len();
        let func_size = layout.map_or(40, |l| l.func_size);
        let a_len = func_size as u32;
        // functab: (entryoff, funcoff from functab), the end marker, then the two `_func`s.
        for (entry, func) in [(0x10u32, 24u32), (0x20, 24 + a_len), (0x40, 0)] {
            t.extend(entry.to_le_bytes());
            t.extend(func.to_le_bytes());
        }
        for (entry, name) in [(0x10u32, 0u32), (0x20, 2)] {
            let func = t.len();
            t.extend(entry.to_le_bytes());
            t.extend(name.to_le_bytes());
            t.resize(func + func_size, 0);
            if let (Some(_), 0x20) = (layout, entry) {
                t[func + 28] = 3; // npcdata
                t[func + func_size - 1] = 4; // nfuncdata
                for pcdata in [0, 0, indices] {
                    t.extend(pcdata.to_le_bytes());
                }
                for funcdata in [u32::MAX, u32::MAX, u32::MAX, TREE] {
                    t.extend(funcdata.to_le_bytes());
                }
            }
        }
        let header = [2u64, 0, 0, names as u64, 0, 0, pctab as u64, functab as u64];
        for (i, word) in header.iter().enumerate() {
            t[8 + 8 * i..16 + 8 * i].copy_from_slice(&word.to_le_bytes());
        }
        t
    }

    fn table() -> Vec<u8> {
        table_with(None)
    }

    /// The tree of [`table_with`]: (name offset, parentPc) for each `inlinedCall`.
    fn tree(layout: Layout, calls: &[(u32, u32)]) -> Vec<u8> {
        let mut bytes = vec![0u8; layout.call_size * calls.len()];
        for (i, &(name, parent_pc)) in calls.iter().enumerate() {
            let call = i * layout.call_size;
            let mut put = |at: usize, value: u32| {
                bytes[call + at..call + at + 4].copy_from_slice(&value.to_le_bytes());
            };
            put(layout.call_name, name);
            put(layout.call_parent_pc, parent_pc);
        }
        bytes
    }

    const CALLS: [(u32, u32); 2] = [(HOT, 0x2), (INNER, 0x5)];

    fn with_trees(table: Vec<u8>, layout: Layout, tree: Vec<u8>) -> GoPcln {
        let mut pcln = GoPcln::parse(table, SEGMENTS.to_vec(), Some(0x401000)).unwrap();
        let trees = InlineTrees::new(layout, GOFUNC, GOFUNC + u64::from(TREE), tree);
        pcln.inline = Ok(trees);
        pcln
    }

    #[test]
    fn names_functions_by_file_offset() {
        let pcln = GoPcln::parse(table(), SEGMENTS.to_vec(), Some(0x401000)).unwrap();
        assert_eq!(pcln.function_at(0x1010), Some("a"));
        assert_eq!(pcln.function_at(0x101f), Some("a"));
        assert_eq!(pcln.function_at(0x1020), Some(PROCESS));
        assert_eq!(pcln.function_at(0x1040), None, "past the last function");
        assert_eq!(pcln.function_at(0x100f), None, "before the first");
        assert_eq!(pcln.function_at(0x5000), None, "outside every segment");
        // Without inline trees, one frame.
        assert_eq!(pcln.frames_at(0x1028), Some(vec![PROCESS]));
        assert_eq!(pcln.inline_error(), Some(&InlineError::NoRelease));
        assert_eq!(pcln.gofunc(), None);
    }

    #[test]
    fn expands_inlined_calls_innermost_first() {
        for layout in [GO_1_19, GO_1_20, GO_1_27] {
            let pcln = with_trees(table_with(Some(layout)), layout, tree(layout, &CALLS));
            assert_eq!(pcln.gofunc(), Some(GOFUNC));
            let frames = |offset| pcln.frames_at(offset).unwrap();
            assert_eq!(frames(0x1010), ["a"], "{layout:?}");
            for offset in (0x1020..0x1024).chain(0x102c..0x1040) {
                assert_eq!(frames(offset), [PROCESS], "{layout:?} {offset:#x}");
            }
            for offset in 0x1024..0x1028 {
                assert_eq!(frames(offset), ["main.hot", PROCESS], "{layout:?}");
            }
            for offset in 0x1028..0x102c {
                assert_eq!(frames(offset), ["main.inner", "main.hot", PROCESS]);
            }
            // The function that holds the code, whatever is inlined.
            assert_eq!(pcln.function_at(0x1028), Some(PROCESS));
        }
    }

    #[test]
    fn a_malformed_inline_tree_gives_the_function_alone() {
        let layout = GO_1_20;
        let outer = |calls: &[(u32, u32)], tree_len: Option<usize>| {
            let mut tree = tree(layout, calls);
            tree.truncate(tree_len.unwrap_or(tree.len()));
            let pcln = with_trees(table_with(Some(layout)), layout, tree);
            (0x1024..0x102c)
                .map(|offset| pcln.frames_at(offset).unwrap().len())
                .collect::<Vec<_>>()
        };
        assert_eq!(outer(&CALLS, None), [2, 2, 2, 2, 3, 3, 3, 3]);
        // main.inner's caller is itself: a loop, cut at the depth limit.
        assert_eq!(
            outer(&[CALLS[0], (INNER, 0x9)], None),
            [2, 2, 2, 2, 1, 1, 1, 1]
        );
        // A caller pc past the function, or negative.
        assert_eq!(
            outer(&[CALLS[0], (INNER, 0x100)], None),
            [2, 2, 2, 2, 1, 1, 1, 1]
        );
        assert_eq!(
            outer(&[CALLS[0], (INNER, u32::MAX)], None),
            [2, 2, 2, 2, 1, 1, 1, 1]
        );
        // A name outside funcnametab.
        assert_eq!(
            outer(&[CALLS[0], (0x7fff_0000, 5)], None),
            [2, 2, 2, 2, 1, 1, 1, 1]
        );
        // The tree is shorter than its indices.
        let short = Some(layout.call_size + 4);
        assert_eq!(outer(&CALLS, short), [2, 2, 2, 2, 1, 1, 1, 1]);
        assert_eq!(outer(&CALLS, Some(0)), [1; 8]);
    }

    #[test]
    fn finds_gofunc_only_in_the_tables_moduledata() {
        let pcln = GoPcln::parse(table_with(Some(GO_1_20)), vec![], Some(0x401000)).unwrap();
        let address = 0x4c_0000u64;
        let header = |word: usize| u64_at(&pcln.table, 8 + 8 * word).unwrap();
        for layout in [GO_1_19, GO_1_20, GO_1_27] {
            let mut words = vec![0u64; layout.gofunc / 8 + 1];
            words[0] = address;
            for (slice, word) in [(0, 3), (1, 4), (2, 5), (3, 6), (4, 7), (5, 7)] {
                words[1 + 3 * slice] = address + header(word);
            }
            words[17] = 3; // ftab: nfunc + 1 entries
            words[22] = 0x401000; // text
            words[layout.gofunc / 8 - 1] = GOFUNC - 0x1000; // rodata
            words[layout.gofunc / 8] = GOFUNC;
            let bytes =
                |words: &[u64]| -> Vec<u8> { words.iter().flat_map(|w| w.to_le_bytes()).collect() };
            assert_eq!(
                moduledata_gofunc(&bytes(&words), &pcln, address, &layout),
                Some(GOFUNC),
                "{layout:?}"
            );
            for field in [0, 1, 4, 7, 10, 13, 16, 17, 22] {
                let mut wrong = words.clone();
                wrong[field] += 8;
                assert_eq!(
                    moduledata_gofunc(&bytes(&wrong), &pcln, address, &layout),
                    None,
                    "{layout:?}: field {field}"
                );
            }
            // No gofunc, or one before rodata.
            let mut zero = words.clone();
            zero[layout.gofunc / 8] = 0;
            assert_eq!(
                moduledata_gofunc(&bytes(&zero), &pcln, address, &layout),
                None
            );
            let mut before = words.clone();
            before[layout.gofunc / 8 - 1] = GOFUNC + 8;
            assert_eq!(
                moduledata_gofunc(&bytes(&before), &pcln, address, &layout),
                None
            );
            let short = bytes(&words);
            assert_eq!(
                moduledata_gofunc(&short[..short.len() - 1], &pcln, address, &layout),
                None
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_and_never_panics() {
        assert_eq!(
            GoPcln::parse(vec![0; 10], vec![], Some(0)).unwrap_err(),
            PclnError::Malformed("short header")
        );
        let mut old = table();
        old[..4].copy_from_slice(&0xffff_fffau32.to_le_bytes());
        assert_eq!(
            GoPcln::parse(old, vec![], Some(0)).unwrap_err(),
            PclnError::Unsupported
        );
        assert_eq!(
            GoPcln::parse(table(), vec![], None).unwrap_err(),
            PclnError::TextStart
        );
        let mut huge = table();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(GoPcln::parse(huge, vec![], Some(0)).is_err());
    }

    /// Every truncation of a table and its inline tree, and every byte of them changed, is
    /// refused or reads as something, without a panic.
    #[test]
    fn malformed_tables_never_panic() {
        let look = |table: Vec<u8>, layout: Layout, tree: Vec<u8>| {
            if let Ok(mut pcln) = GoPcln::parse(table, SEGMENTS.to_vec(), Some(0x401000)) {
                let trees = InlineTrees::new(layout, GOFUNC, GOFUNC + u64::from(TREE), tree);
                pcln.inline = Ok(trees);
                for offset in 0x1000..0x1050 {
                    if let Some(frames) = pcln.frames_at(offset) {
                        assert!(!frames.is_empty() && frames.len() <= MAX_DEPTH + 1);
                    }
                    let _ = pcln.function_at(offset);
                }
            }
        };
        for layout in [GO_1_19, GO_1_20] {
            let full = table_with(Some(layout));
            let calls = tree(layout, &CALLS);
            for len in 0..full.len() {
                look(full[..len].to_vec(), layout, calls.clone());
            }
            for len in 0..calls.len() {
                look(full.clone(), layout, calls[..len].to_vec());
            }
            for at in 0..full.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut changed = full.clone();
                    changed[at] ^= flip;
                    look(changed, layout, calls.clone());
                }
            }
            for at in 0..calls.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut changed = calls.clone();
                    changed[at] ^= flip;
                    look(full.clone(), layout, changed);
                }
            }
        }
    }
}
