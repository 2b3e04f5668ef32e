//! One step of a stack walk: how the caller's stack pointer, frame pointer and return address
//! follow from a frame's registers at one code address. A file's `.eh_frame` says this in a
//! DWARF program per function; the table keeps only the rules a BPF program can follow in a few
//! instructions, and says so when a row asks for more.

use profiler_common::unwind::KernelRule;

use crate::fast_hash::HashMap;

/// How the canonical frame address (the stack pointer just before the call) is found.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cfa {
    /// A rule the walk cannot follow (an expression other than those below, a CFA in another
    /// register): the walk stops and counts it rather than guess a frame.
    Unsupported = 0,
    /// `sp + offset`.
    Sp = 1,
    /// `fp + offset` (rbp on x86_64, x29 on aarch64).
    Fp = 2,
    /// x86_64 PLT stubs' expression: `sp + 8`, plus 8 once `(pc & 15) >= offset` (the push of
    /// the lazy-binding stub has happened).
    Plt = 3,
    /// `*(sp + offset) + post`: stack realignment (GCC's) and OpenSSL's perlasm.
    DerefSp = 4,
    /// A signal trampoline (`__restore_rt`): the interrupted registers are in the `ucontext`
    /// on the stack.
    Signal = 5,
    /// The return address is undefined: the outermost frame (`_start`, a thread's start).
    End = 6,
    /// No FDE covers the address: fall back to the frame pointer.
    FramePointer = 7,
}

/// Where the caller's frame pointer is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Saved {
    /// Not saved by this frame: the register still holds it.
    Unchanged = 0,
    /// At `cfa + offset`.
    AtCfa = 1,
    /// A rule the walk does not follow (another register, an expression); for the frame
    /// pointer, the walk goes on with it unknown.
    Unsupported = 2,
}

/// The rule for one range of addresses. 16 bytes, `#[repr(C)]`: the layout the BPF side will
/// read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub cfa: Cfa,
    pub fp: Saved,
    /// x86_64: always at `cfa - 8` (`AtCfa`, -8). aarch64: the link register, `Unchanged` in a
    /// leaf (only usable in the first frame) or `AtCfa` once the prologue saved it.
    pub ra: Saved,
    pub _pad: u8,
    pub cfa_offset: i32,
    /// `DerefSp`'s addend after the load.
    pub cfa_post: i32,
    pub fp_offset: i16,
    pub ra_offset: i16,
}

impl Rule {
    pub const FRAME_POINTER: Self = Self::of(Cfa::FramePointer);
    pub const UNSUPPORTED: Self = Self::of(Cfa::Unsupported);

    pub const fn of(cfa: Cfa) -> Self {
        Self {
            cfa,
            fp: Saved::Unchanged,
            ra: Saved::Unchanged,
            _pad: 0,
            cfa_offset: 0,
            cfa_post: 0,
            fp_offset: 0,
            ra_offset: 0,
        }
    }
}

impl From<Rule> for KernelRule {
    /// The enums' discriminants are the kernel's `CFA_*` and `SAVED_*` bytes (tested below).
    fn from(rule: Rule) -> Self {
        Self {
            cfa: rule.cfa as u8,
            fp: rule.fp as u8,
            ra: rule.ra as u8,
            _pad: 0,
            cfa_offset: rule.cfa_offset,
            cfa_post: rule.cfa_post,
            fp_offset: rule.fp_offset,
            ra_offset: rule.ra_offset,
        }
    }
}

/// Rules numbered in the order they come, each once: a file's (`table.rs`), and those of all
/// tables loaded (`layout.rs`).
#[derive(Debug, Default)]
pub struct RuleIds {
    rules: Vec<Rule>,
    /// Asked once per row (1.9 M times for librustc_driver).
    ids: HashMap<Rule, u16>,
}

impl RuleIds {
    /// The ID of `rule`, new if it is; `None` past 65,536 distinct rules.
    pub fn id(&mut self, rule: Rule) -> Option<u16> {
        if let Some(&id) = self.ids.get(&rule) {
            return Some(id);
        }
        let id = u16::try_from(self.rules.len()).ok()?;
        self.rules.push(rule);
        self.ids.insert(rule, id);
        Some(id)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn into_rules(self) -> Vec<Rule> {
        self.rules
    }
}

#[cfg(test)]
mod tests {
    use profiler_common::unwind as kernel;

    use super::*;

    #[test]
    fn the_kernel_reads_the_enums_by_the_shared_constants() {
        let cfa = [
            (Cfa::Unsupported, kernel::CFA_UNSUPPORTED),
            (Cfa::Sp, kernel::CFA_SP),
            (Cfa::Fp, kernel::CFA_FP),
            (Cfa::Plt, kernel::CFA_PLT),
            (Cfa::DerefSp, kernel::CFA_DEREF_SP),
            (Cfa::Signal, kernel::CFA_SIGNAL),
            (Cfa::End, kernel::CFA_END),
            (Cfa::FramePointer, kernel::CFA_FRAME_POINTER),
        ];
        for (cfa, byte) in cfa {
            assert_eq!(KernelRule::from(Rule::of(cfa)).cfa, byte, "{cfa:?}");
        }
        let saved = [
            (Saved::Unchanged, kernel::SAVED_UNCHANGED),
            (Saved::AtCfa, kernel::SAVED_AT_CFA),
            (Saved::Unsupported, kernel::SAVED_UNSUPPORTED),
        ];
        for (how, byte) in saved {
            let rule = KernelRule::from(Rule {
                fp: how,
                ra: how,
                cfa_offset: 16,
                cfa_post: -8,
                fp_offset: -16,
                ra_offset: -8,
                ..Rule::of(Cfa::Sp)
            });
            assert_eq!((rule.fp, rule.ra), (byte, byte), "{how:?}");
            assert_eq!(
                (
                    rule.cfa_offset,
                    rule.cfa_post,
                    rule.fp_offset,
                    rule.ra_offset
                ),
                (16, -8, -16, -8)
            );
        }
    }
}
