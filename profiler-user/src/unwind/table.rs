//! A file's unwind table: its `.eh_frame` (or, where that is all there is, `.debug_frame`)
//! evaluated with gimli into sorted rows of (address, rule), each rule one of the few a BPF
//! program can follow ([`Rule`]), identical neighbours merged, and the rules deduplicated.
//!
//! Addresses are the file's own virtual addresses (what `/proc/PID/maps` offsets map to through
//! the load bias), so one table serves every process that maps the file.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Register,
    RegisterRule, UnwindContext, UnwindSection, UnwindTableRow,
};
use object::{
    Endianness,
    elf::{self, FileHeader64},
    read::elf::{FileHeader, SectionHeader},
};

use super::rule::{Cfa, Rule, RuleIds, Saved};
use crate::elf_file::ElfFile;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("not an ELF file the unwinder reads: {0}")]
    Parse(#[source] object::Error),
    #[error("unwind tables are built for x86_64 and aarch64 only, not ELF machine {0}")]
    Machine(u16),
    #[error("the file has neither .eh_frame nor .debug_frame")]
    NoCfi,
    #[error("Go code keeps frame pointers: walked by them, which costs less than a table")]
    GoFramePointers,
    #[error("cannot read {section} within the read budget")]
    Read { section: &'static str },
    #[error("malformed {section}: {source}")]
    Cfi {
        section: &'static str,
        #[source]
        source: gimli::Error,
    },
    #[error("more than 65,536 distinct unwind rules")]
    TooManyRules,
}

/// The architectures whose calling conventions the rules encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// DWARF register numbers of the stack pointer, the frame pointer and the return address.
    fn registers(self) -> (Register, Register, Register) {
        match self {
            // rsp, rbp, and the return-address column.
            Arch::X86_64 => (Register(7), Register(6), Register(16)),
            // sp, x29, x30 (the link register).
            Arch::Aarch64 => (Register(31), Register(29), Register(30)),
        }
    }
}

/// The start of a range of addresses and the index of its rule, in one word (the address
/// above the rule's 16 bits): 8 bytes a row, not 16, in tables of up to 2 M rows.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row(u64);

impl Row {
    /// `address` must have at most [`MAX_ADDRESS_BITS`] bits.
    fn new(address: u64, rule: u16) -> Self {
        Self(address << 16 | u64::from(rule))
    }

    pub fn address(self) -> u64 {
        self.0 >> 16
    }

    pub fn rule(self) -> u16 {
        self.0 as u16
    }
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Row({:#x}, rule {})", self.address(), self.rule())
    }
}

/// Addresses in a table have at most this many bits (a file's own virtual addresses are far
/// below; an FDE beyond is counted as bad): a row's address and rule, and a build entry's
/// address, order bit and rule, fit in one `u64`.
pub const MAX_ADDRESS_BITS: u32 = 47;

/// What building a table met, for the log and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    pub fdes: u64,
    /// FDEs (or their CIEs) that did not parse: their addresses fall back to frame pointers.
    pub bad_fdes: u64,
    /// Rows whose rule the walk cannot follow (counted and stopped at when sampled).
    pub unsupported_rows: u64,
}

/// One file's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTable {
    pub arch: Arch,
    pub rules: Vec<Rule>,
    /// Sorted by address; a row holds until the next one.
    pub rows: Vec<Row>,
    pub stats: BuildStats,
}

impl FileTable {
    /// The rule for `address`; `None` before the first row.
    pub fn rule_at(&self, address: u64) -> Option<&Rule> {
        let after = self.rows.partition_point(|row| row.address() <= address);
        let row = self.rows.get(after.checked_sub(1)?)?;
        self.rules.get(usize::from(row.rule()))
    }
}

/// Builds the table of `file`.
pub fn build(file: &ElfFile) -> Result<FileTable, TableError> {
    // The header and section headers only: object's `File::parse` also copies the symbol
    // tables into the heap (6 MiB of librustc_driver's), which a table never reads.
    let header = FileHeader64::<Endianness>::parse(file).map_err(TableError::Parse)?;
    let endian = header.endian().map_err(TableError::Parse)?;
    let arch = match header.e_machine(endian) {
        elf::EM_X86_64 => Arch::X86_64,
        elf::EM_AARCH64 => Arch::Aarch64,
        other => return Err(TableError::Machine(other)),
    };
    let sections = header.sections(endian, file).map_err(TableError::Parse)?;
    let section = |name: &str| {
        sections
            .section_by_name(endian, name.as_bytes())
            .map(|(_, section)| section)
    };
    // Go has kept frame pointers on amd64 and arm64 for years, and its runtime's assembly has
    // no CFI the walk could use anyway; its .debug_frame would only make each frame dearer.
    if section(".gopclntab").is_some() || section(".go.buildinfo").is_some() {
        return Err(TableError::GoFramePointers);
    }
    let address_of = |name: &str| section(name).map(|s| s.sh_addr(endian));
    let data_of = |name: &'static str| -> Result<Option<(u64, &[u8])>, TableError> {
        let Some(found) = section(name) else {
            return Ok(None);
        };
        let data = found
            .data(endian, file)
            .map_err(|_| TableError::Read { section: name })?;
        Ok((!data.is_empty()).then_some((found.sh_addr(endian), data)))
    };
    let mut bases = BaseAddresses::default();
    if let Some(text) = address_of(".text") {
        bases = bases.set_text(text);
    }
    if let Some(got) = address_of(".got") {
        bases = bases.set_got(got);
    }
    if let Some((address, data)) = data_of(".eh_frame")? {
        let section = EhFrame::new(data, LittleEndian);
        let bases = bases.set_eh_frame(address);
        from_section(arch, &section, &bases, ".eh_frame")
    } else if let Some((_, data)) = data_of(".debug_frame")? {
        let section = DebugFrame::new(data, LittleEndian);
        from_section(arch, &section, &bases, ".debug_frame")
    } else {
        Err(TableError::NoCfi)
    }
}

type Slice<'a> = EndianSlice<'a, LittleEndian>;

fn from_section<'a, S: UnwindSection<Slice<'a>>>(
    arch: Arch,
    section: &S,
    bases: &BaseAddresses,
    name: &'static str,
) -> Result<FileTable, TableError> {
    let cfi = |source| TableError::Cfi {
        section: name,
        source,
    };
    let mut stats = BuildStats::default();
    let mut rules = RuleIds::default();
    // address << 17 | (0 for an FDE's end, 1 for a row) << 16 | the rule's ID: at one
    // address a row wins over the end of the function before it. 8 bytes an entry, the rule
    // interned at once: the largest library here has 2 M entries, and with the rule in each
    // entry building its table took 100 MiB (49 with 16-byte entries).
    let mut entries: Vec<u64> = Vec::new();
    let mut keyed = |address: u64, order: u64, rule: Rule| -> Result<u64, TableError> {
        let id = rules.id(rule).ok_or(TableError::TooManyRules)?;
        Ok(address << 17 | order << 16 | u64::from(id))
    };
    let mut context = UnwindContext::new();
    let mut iter = section.entries(bases);
    while let Some(entry) = iter.next().map_err(cfi)? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        stats.fdes += 1;
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            stats.bad_fdes += 1;
            continue;
        };
        if fde.len() == 0 {
            continue;
        }
        if fde.end_address() >> MAX_ADDRESS_BITS != 0 {
            stats.bad_fdes += 1;
            continue;
        }
        let signal = fde.is_signal_trampoline();
        let encoding = fde.cie().encoding();
        let Ok(mut table) = fde.rows(section, bases, &mut context) else {
            stats.bad_fdes += 1;
            continue;
        };
        let start = entries.len();
        loop {
            match table.next_row() {
                Ok(Some(row)) => {
                    let rule = if signal {
                        Rule::of(Cfa::Signal)
                    } else {
                        rule_of(arch, section, encoding, row)
                    };
                    entries.push(keyed(row.start_address(), 1, rule)?);
                }
                Ok(None) => break,
                Err(_) => {
                    // A program that fails halfway describes nothing reliably.
                    entries.truncate(start);
                    stats.bad_fdes += 1;
                    break;
                }
            }
        }
        if entries.len() > start {
            entries.push(keyed(fde.end_address(), 0, Rule::FRAME_POINTER)?);
        }
    }
    // Unstable (no buffer of half the entries), and the rule ID makes the order total.
    entries.sort_unstable();
    let rules = rules.into_rules();
    // The rows are written over the entries (`kept` never passes `i`), then become `Row`s in
    // the same allocation: no second list of 15 MiB for the largest library.
    let mut kept = 0;
    for i in 0..entries.len() {
        let entry = entries[i];
        let (address, id) = (entry >> 17, entry as u16);
        // Of several entries at one address the last (a row over an end) holds.
        if entries.get(i + 1).is_some_and(|next| next >> 17 == address) {
            continue;
        }
        if kept > 0 && entries[kept - 1] as u16 == id {
            continue;
        }
        if rules[usize::from(id)].cfa == Cfa::Unsupported {
            stats.unsupported_rows += 1;
        }
        entries[kept] = Row::new(address, id).0;
        kept += 1;
    }
    entries.truncate(kept);
    entries.shrink_to_fit();
    // Same layout: collected in place.
    let rows: Vec<Row> = entries.into_iter().map(Row).collect();
    Ok(FileTable {
        arch,
        rules,
        rows,
        stats,
    })
}

/// The [`Rule`] of one row of the CFI table.
fn rule_of<'a, S: UnwindSection<Slice<'a>>>(
    arch: Arch,
    section: &S,
    encoding: gimli::Encoding,
    row: &UnwindTableRow<usize>,
) -> Rule {
    let (sp, fp, ra) = arch.registers();
    let mut rule = Rule::of(Cfa::Unsupported);
    match row.register(ra) {
        Some(RegisterRule::Undefined) => return Rule::of(Cfa::End),
        Some(RegisterRule::Offset(offset)) => match i16::try_from(offset) {
            Ok(offset) if arch == Arch::Aarch64 || offset == -8 => {
                rule.ra = Saved::AtCfa;
                rule.ra_offset = offset;
            }
            // x86_64's return address is where the call put it, or the row is one the walk
            // does not follow (`__vfork` keeps it in a register).
            _ => return Rule::UNSUPPORTED,
        },
        None | Some(RegisterRule::SameValue) if arch == Arch::Aarch64 => {
            rule.ra = Saved::Unchanged;
        }
        _ => return Rule::UNSUPPORTED,
    }
    rule.fp = match row.register(fp) {
        None | Some(RegisterRule::SameValue) => Saved::Unchanged,
        Some(RegisterRule::Offset(offset)) => match i16::try_from(offset) {
            Ok(offset) => {
                rule.fp_offset = offset;
                Saved::AtCfa
            }
            Err(_) => Saved::Unsupported,
        },
        Some(_) => Saved::Unsupported,
    };
    match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(offset) = i32::try_from(*offset) else {
                return Rule::UNSUPPORTED;
            };
            rule.cfa_offset = offset;
            rule.cfa = if *register == sp {
                Cfa::Sp
            } else if *register == fp {
                Cfa::Fp
            } else {
                Cfa::Unsupported
            };
        }
        CfaRule::Expression(expression) => {
            let Ok(expression) = expression.get(section) else {
                return Rule::UNSUPPORTED;
            };
            match cfa_expression(arch, expression, encoding) {
                Some(CfaExpression::Plt { threshold }) => {
                    rule.cfa = Cfa::Plt;
                    rule.cfa_offset = threshold;
                }
                Some(CfaExpression::DerefSp { offset, post }) => {
                    rule.cfa = Cfa::DerefSp;
                    rule.cfa_offset = offset;
                    rule.cfa_post = post;
                }
                None => return Rule::UNSUPPORTED,
            }
        }
    }
    rule
}

/// The CFA expressions the walk follows.
#[derive(Debug, PartialEq, Eq)]
enum CfaExpression {
    Plt { threshold: i32 },
    DerefSp { offset: i32, post: i32 },
}

fn cfa_expression(
    arch: Arch,
    expression: gimli::Expression<Slice<'_>>,
    encoding: gimli::Encoding,
) -> Option<CfaExpression> {
    use gimli::Operation as Op;
    if arch != Arch::X86_64 {
        return None;
    }
    let (sp, _, _) = arch.registers();
    let rip = Register(16);
    let mut ops = Vec::new();
    let mut iter = expression.operations(encoding);
    // The shapes below are at most 9 operations long.
    while let Some(op) = iter.next().ok()? {
        if ops.len() == 9 {
            return None;
        }
        ops.push(op);
    }
    match ops.as_slice() {
        // GCC and binutils' PLT stubs: rsp + 8 + (((rip & 15) >= 11) << 3) (10 for .plt.sec).
        [
            Op::RegisterOffset {
                register: r1,
                offset: 8,
                ..
            },
            Op::RegisterOffset {
                register: r2,
                offset: 0,
                ..
            },
            Op::UnsignedConstant { value: 15 },
            Op::And,
            Op::UnsignedConstant { value: threshold },
            Op::Ge,
            Op::UnsignedConstant { value: 3 },
            Op::Shl,
            Op::Plus,
        ] if *r1 == sp && *r2 == rip => Some(CfaExpression::Plt {
            threshold: i32::try_from(*threshold).ok()?,
        }),
        // Stack realignment: *(rsp + offset) [+ post].
        [
            Op::RegisterOffset {
                register, offset, ..
            },
            Op::Deref { size: 8, .. },
            rest @ ..,
        ] if *register == sp => {
            let post = match rest {
                [] => 0,
                [Op::PlusConstant { value }] => i32::try_from(*value).ok()?,
                _ => return None,
            };
            Some(CfaExpression::DerefSp {
                offset: i32::try_from(*offset).ok()?,
                post,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
