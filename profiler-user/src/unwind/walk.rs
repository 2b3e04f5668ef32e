//! The stack walk over the tables, in userspace: the specification of the BPF walk (the same
//! steps on the same [`KernelTable`] lookups and rules), tested here on real processes, and the
//! oracle the BPF walk will be tested against.

use super::{
    layout::{KernelTable, NO_RULE},
    rule::{Cfa, Rule, Saved},
    table::Arch,
};

/// The registers a walk starts from: those of the sampled user context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    pub pc: u64,
    pub sp: u64,
    /// rbp / x29, when known.
    pub fp: Option<u64>,
    /// aarch64's link register, when known.
    pub lr: Option<u64>,
}

/// Why a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The outermost frame (its return address is undefined, or zero).
    Root,
    /// A rule the walk does not follow.
    Unsupported,
    /// A read of the stack failed.
    ReadFault,
    /// The frame pointer was needed and is not known (or the frame-pointer chain ended).
    NoFramePointer,
    /// No mapping holds the address.
    Unmapped,
    /// The walk took `max_frames`.
    Truncated,
}

/// Where an address is: the table of the file mapped there, and how far the file's addresses
/// are from the process's (`address - bias` is the file's address).
pub struct Module<'a> {
    pub table: Option<&'a KernelTable>,
    pub bias: u64,
}

/// The return addresses of a stack, leaf first (the first is `regs.pc`), and why it ended.
pub fn walk<'a>(
    arch: Arch,
    rules: &[Rule],
    mut regs: Registers,
    module_of: impl Fn(u64) -> Option<Module<'a>>,
    read: impl Fn(u64) -> Option<u64>,
    max_frames: usize,
) -> (Vec<u64>, End) {
    let mut frames = Vec::new();
    // The first pc, and one a signal interrupted, is where the thread was (libgcc's unwinder
    // does not step back from these either); the others are return addresses.
    let mut exact = true;
    for depth in 0..max_frames {
        frames.push(regs.pc);
        let Some(module) = module_of(regs.pc) else {
            return (frames, End::Unmapped);
        };
        // A return address points after its call, which may be a function's last instruction:
        // look up the call's own address.
        let lookup = if exact { regs.pc } else { regs.pc - 1 };
        let rule = module
            .table
            .map(|table| table.rule_at(lookup.wrapping_sub(module.bias)))
            .filter(|&id| id != NO_RULE)
            .and_then(|id| rules.get(usize::from(id)))
            .copied()
            .unwrap_or(Rule::FRAME_POINTER);
        let next = match step(arch, &rule, &regs, depth == 0, &read) {
            Ok(next) => next,
            Err(end) => return (frames, end),
        };
        exact = rule.cfa == Cfa::Signal;
        if next.pc == 0 {
            return (frames, End::Root);
        }
        regs = next;
    }
    (frames, End::Truncated)
}

/// The caller's registers.
fn step(
    arch: Arch,
    rule: &Rule,
    regs: &Registers,
    first: bool,
    read: &impl Fn(u64) -> Option<u64>,
) -> Result<Registers, End> {
    let cfa = match rule.cfa {
        Cfa::End => return Err(End::Root),
        Cfa::Unsupported => return Err(End::Unsupported),
        Cfa::FramePointer => return frame_pointer_step(regs, read),
        Cfa::Signal => return signal_step(arch, regs, read),
        Cfa::Sp => offset(regs.sp, rule.cfa_offset),
        Cfa::Fp => offset(regs.fp.ok_or(End::NoFramePointer)?, rule.cfa_offset),
        Cfa::Plt => {
            let pushed = if (regs.pc & 15) as i32 >= rule.cfa_offset {
                8
            } else {
                0
            };
            regs.sp + 8 + pushed
        }
        Cfa::DerefSp => offset(
            read(offset(regs.sp, rule.cfa_offset)).ok_or(End::ReadFault)?,
            rule.cfa_post,
        ),
    };
    let pc = match rule.ra {
        Saved::AtCfa => read(offset(cfa, i32::from(rule.ra_offset))).ok_or(End::ReadFault)?,
        // aarch64: still in the link register, which only the first frame knows.
        Saved::Unchanged if first && arch == Arch::Aarch64 => regs.lr.ok_or(End::Unsupported)?,
        _ => return Err(End::Unsupported),
    };
    let fp = match rule.fp {
        Saved::Unchanged => regs.fp,
        Saved::AtCfa => read(offset(cfa, i32::from(rule.fp_offset))),
        Saved::Unsupported => None,
    };
    Ok(Registers {
        pc: strip_pointer_authentication(arch, pc),
        sp: cfa,
        fp,
        lr: None,
    })
}

/// A frame built with a frame pointer: `[fp]` is the caller's, `[fp + 8]` the return address.
fn frame_pointer_step(
    regs: &Registers,
    read: &impl Fn(u64) -> Option<u64>,
) -> Result<Registers, End> {
    let fp = regs.fp.filter(|&fp| fp != 0).ok_or(End::NoFramePointer)?;
    // A chain must go up the stack.
    if fp < regs.sp {
        return Err(End::NoFramePointer);
    }
    Ok(Registers {
        pc: read(fp + 8).ok_or(End::ReadFault)?,
        sp: fp + 16,
        fp: Some(read(fp).ok_or(End::ReadFault)?),
        lr: None,
    })
}

/// The registers a signal interrupted, from the `ucontext` the kernel put on the stack: on
/// x86_64 `__restore_rt` runs with sp at the `ucontext` (`uc_mcontext` at +40: rbp +120, rsp
/// +160, rip +168); on aarch64 `__kernel_rt_sigreturn` with sp at the `rt_sigframe` (siginfo
/// 128 bytes, then the ucontext whose `uc_mcontext` is at +176: x29 at regs[29], sp and pc
/// after the 31 registers).
fn signal_step(
    arch: Arch,
    regs: &Registers,
    read: &impl Fn(u64) -> Option<u64>,
) -> Result<Registers, End> {
    let (fp, sp, pc, lr) = match arch {
        Arch::X86_64 => (120, 160, 168, None),
        Arch::Aarch64 => {
            let gregs = 128 + 176 + 8;
            (
                gregs + 29 * 8,
                gregs + 31 * 8,
                gregs + 32 * 8,
                Some(gregs + 30 * 8),
            )
        }
    };
    let at = |off: u64| read(regs.sp + off).ok_or(End::ReadFault);
    Ok(Registers {
        pc: at(pc)?,
        sp: at(sp)?,
        fp: Some(at(fp)?),
        lr: lr.map(at).transpose()?,
    })
}

fn offset(base: u64, by: i32) -> u64 {
    base.wrapping_add_signed(i64::from(by))
}

/// aarch64 return addresses may carry a pointer-authentication code in their high bits; user
/// addresses are below 2^48.
fn strip_pointer_authentication(arch: Arch, pc: u64) -> u64 {
    match arch {
        Arch::X86_64 => pc,
        Arch::Aarch64 => pc & ((1 << 48) - 1),
    }
}
