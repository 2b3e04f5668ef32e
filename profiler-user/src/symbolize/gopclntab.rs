//! Go function names from `.gopclntab`, the table the Go runtime itself uses for stack traces,
//! which stripped Go binaries (`-ldflags="-s -w"`: no symbol table, no DWARF) keep. blazesym
//! does not read it and no maintained crate parses it without mapping the file, so this is
//! written by hand: only the Go 1.18+ layout (`runtime/symtab.go` `pcHeader`, `functab`,
//! `_func`), read with `read` within [`crate::elf_file`]'s budget, every offset checked.
//! Inlined frames (`FUNCDATA_InlTree`) are not expanded: an address inside inlined code is named
//! by the function it was inlined into.

use object::{Object as _, ObjectSection as _, ObjectSegment as _, ReadRef};

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

/// One Go executable's function table, owned (the file is not kept open or mapped).
#[derive(Debug)]
pub struct GoPcln {
    table: Vec<u8>,
    /// Virtual address function entries are relative to (`runtime.text`).
    text_start: u64,
    nfunc: usize,
    funcnames: usize,
    functab: usize,
    /// Loadable segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
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
        Self::parse(table, segments, text.filter(|_| !has_interp)).map(Some)
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
            table,
            text_start,
            nfunc,
            funcnames,
            functab,
            segments,
        })
    }

    /// The name of the Go function at `file_offset`, as Go writes it (`main.(*server).handle`).
    pub fn function_at(&self, file_offset: u64) -> Option<&str> {
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
        let func = self
            .functab
            .checked_add(usize::try_from(u32_at(&self.table, self.functab + 8 * low + 4)?).ok()?)?;
        // `_func { entryOff uint32; nameOff int32; ... }`
        if u32_at(&self.table, func)? != entry(low)? {
            return None;
        }
        let name_off = usize::try_from(u32_at(&self.table, func + 4)?).ok()?;
        let start = self.funcnames.checked_add(name_off)?;
        let rest = self.table.get(start..)?;
        let len = rest.iter().take(4096).position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..len]).ok()
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of two functions, `a` at text + 0x10 and `b` at text + 0x20, ending at + 0x30.
    fn table() -> Vec<u8> {
        let mut t = vec![0u8; HEADER_LEN];
        t[..4].copy_from_slice(&MAGICS[1].to_le_bytes());
        t[6] = 1;
        t[7] = 8;
        let names = t.len();
        t.extend(b"a\0main.(*server).handle\0");
        let functab = t.len();
        // functab: (entryoff, funcoff from functab), the end marker, then the two `_func`s.
        for (entry, func) in [(0x10u32, 24u32), (0x20, 32), (0x30, 0)] {
            t.extend(entry.to_le_bytes());
            t.extend(func.to_le_bytes());
        }
        for (entry, name) in [(0x10u32, 0u32), (0x20, 2)] {
            t.extend(entry.to_le_bytes());
            t.extend(name.to_le_bytes());
        }
        let header = [2u64, 0, 0, names as u64, 0, 0, 0, functab as u64];
        for (i, word) in header.iter().enumerate() {
            t[8 + 8 * i..16 + 8 * i].copy_from_slice(&word.to_le_bytes());
        }
        t
    }

    #[test]
    fn names_functions_by_file_offset() {
        // Text at 0x401000, loaded from file offset 0x1000.
        let pcln =
            GoPcln::parse(table(), vec![(0x1000, 0x1000, 0x401000)], Some(0x401000)).unwrap();
        assert_eq!(pcln.function_at(0x1010), Some("a"));
        assert_eq!(pcln.function_at(0x101f), Some("a"));
        assert_eq!(pcln.function_at(0x1020), Some("main.(*server).handle"));
        assert_eq!(pcln.function_at(0x1030), None, "past the last function");
        assert_eq!(pcln.function_at(0x100f), None, "before the first");
        assert_eq!(pcln.function_at(0x5000), None, "outside every segment");
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
        // Every truncation of a valid table is refused or reads as nothing, without a panic.
        let full = table();
        for len in 0..full.len() {
            if let Ok(pcln) = GoPcln::parse(full[..len].to_vec(), vec![(0, 0x1000, 0)], Some(0)) {
                for offset in 0..0x40 {
                    let _ = pcln.function_at(offset);
                }
            }
        }
    }
}
