//! The two kinds of program that build a record and what differs between them: the sampling
//! program (a `cpu-clock` tick, `perf_event`) and the off-CPU program that reads a wait's record
//! when its thread leaves the CPU (`sched_switch`, a raw tracepoint). The user stack walk and
//! the Go labels run as tail calls of either, and a tail call only reaches a program of the
//! caller's own type: each kind has its own program array, its own end (a sample is counted, a
//! wait's record parked until the wait ends), its own slot in the per-CPU scratch maps (a tick
//! may interrupt the switch program on the same CPU), and its own way to the thread's user
//! registers.

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::bpf_probe_read_kernel,
    macros::map,
    maps::ProgramArray,
    programs::{PerfEventContext, RawTracePointContext},
};
use profiler_common::{
    Counter, SLOT_OFF_CPU, SLOT_SAMPLE, SampleKey, SampleValue, TAIL_CALL_SLOTS,
};

use crate::{COUNTS_0, COUNTS_1, add_to_entry, count, insert_sample, store_stacks};

/// Programs the sampling program continues in: `go_label_slot` and `unwind_user`, set by
/// userspace.
#[map]
pub(crate) static TAIL_CALLS: ProgramArray = ProgramArray::with_max_entries(TAIL_CALL_SLOTS, 0);

/// The same for off-CPU records: `go_label_slot_off_cpu` and `unwind_user_off_cpu`.
#[map]
pub(crate) static OFF_CPU_TAIL_CALLS: ProgramArray =
    ProgramArray::with_max_entries(TAIL_CALL_SLOTS, 0);

/// The thread's registers in user code: where its user stack walk starts.
#[derive(Clone, Copy, Default)]
pub(crate) struct UserRegisters {
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
    /// aarch64's link register (0 elsewhere).
    pub lr: u64,
}

pub(crate) trait Origin: EbpfContext {
    /// The slot of the per-CPU scratch maps.
    const SLOT: u32;
    fn tail_calls() -> &'static ProgramArray;

    /// The user registers when this context holds them; `None` when only the kernel can tell
    /// (a tick in kernel code: the caller asks for those saved at kernel entry).
    fn user_registers(&self) -> Option<UserRegisters>;

    /// The user stack pointer, 0 when this context does not hold it; without a branch (the
    /// sampling program verifies each branch's paths again).
    fn user_sp(&self) -> u64;

    /// aarch64 `x28`, where Go keeps `g`; `None` when this context does not hold it.
    fn go_register(&self) -> Option<u64>;
}

impl Origin for PerfEventContext {
    const SLOT: u32 = SLOT_SAMPLE;

    fn tail_calls() -> &'static ProgramArray {
        &TAIL_CALLS
    }

    #[inline(always)]
    fn user_registers(&self) -> Option<UserRegisters> {
        if !crate::interrupted_user_code(self) {
            return None;
        }
        // SAFETY: the verifier allows (and rewrites) 8-byte reads of the context's registers;
        // the context is not a `pt_regs` in memory, so it cannot be read with a helper.
        let regs = unsafe { &(*self.ctx).regs };
        #[cfg(bpf_target_arch = "x86_64")]
        let found = UserRegisters {
            pc: regs.rip,
            sp: regs.rsp,
            fp: regs.rbp,
            lr: 0,
        };
        #[cfg(bpf_target_arch = "aarch64")]
        let found = UserRegisters {
            pc: regs.pc,
            sp: regs.sp,
            fp: regs.regs[29],
            lr: regs.regs[30],
        };
        #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
        let found = {
            let _ = regs;
            UserRegisters::default()
        };
        Some(found)
    }

    #[inline(always)]
    fn user_sp(&self) -> u64 {
        // SAFETY: the verifier allows (and rewrites) 8-byte reads of the context's registers.
        #[cfg(bpf_target_arch = "x86_64")]
        let sp = unsafe { (*self.ctx).regs.rsp };
        #[cfg(bpf_target_arch = "aarch64")]
        let sp = unsafe { (*self.ctx).regs.sp };
        #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
        let sp = 0;
        sp & crate::user_mode(self).wrapping_neg()
    }

    #[inline(always)]
    fn go_register(&self) -> Option<u64> {
        #[cfg(bpf_target_arch = "aarch64")]
        {
            if !crate::interrupted_user_code(self) {
                return None;
            }
            // SAFETY: the verifier allows (and rewrites) 8-byte reads of the context's registers.
            Some(unsafe { (*self.ctx).regs.regs[28] })
        }
        #[cfg(not(bpf_target_arch = "aarch64"))]
        None
    }
}

/// The user code address saved in `regs` (a task's registers at kernel entry); 0 when
/// unreadable.
#[inline(always)]
pub(crate) fn pc_at(regs: *const pt_regs) -> u64 {
    // SAFETY: the address of a field, read with a checked kernel read.
    #[cfg(bpf_target_arch = "x86_64")]
    let pc = unsafe { core::ptr::addr_of!((*regs).rip) };
    #[cfg(not(bpf_target_arch = "x86_64"))]
    let pc = unsafe { core::ptr::addr_of!((*regs).pc) };
    saved(pc)
}

/// The user stack pointer saved in `regs` (a task's registers at kernel entry); 0 when
/// unreadable.
#[inline(always)]
pub(crate) fn sp_at(regs: *const pt_regs) -> u64 {
    // SAFETY: the address of a field, read with a checked kernel read.
    #[cfg(bpf_target_arch = "x86_64")]
    let sp = unsafe { core::ptr::addr_of!((*regs).rsp) };
    #[cfg(not(bpf_target_arch = "x86_64"))]
    let sp = unsafe { core::ptr::addr_of!((*regs).sp) };
    saved(sp)
}

/// The user registers saved in `regs` (a task's registers at kernel entry); 0 where
/// unreadable.
#[inline(always)]
pub(crate) fn registers_at(regs: *const pt_regs) -> UserRegisters {
    // SAFETY (all): addresses of fields, read with checked kernel reads.
    #[cfg(bpf_target_arch = "x86_64")]
    let found = unsafe {
        UserRegisters {
            pc: saved(core::ptr::addr_of!((*regs).rip)),
            sp: saved(core::ptr::addr_of!((*regs).rsp)),
            fp: saved(core::ptr::addr_of!((*regs).rbp)),
            lr: 0,
        }
    };
    #[cfg(bpf_target_arch = "aarch64")]
    let found = unsafe {
        UserRegisters {
            pc: saved(core::ptr::addr_of!((*regs).pc)),
            sp: saved(core::ptr::addr_of!((*regs).sp)),
            fp: saved(core::ptr::addr_of!((*regs).regs[29])),
            lr: saved(core::ptr::addr_of!((*regs).regs[30])),
        }
    };
    #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
    let found = {
        let _ = regs;
        UserRegisters::default()
    };
    found
}

/// A word of the saved registers; 0 when it cannot be read.
#[inline(always)]
fn saved<T: Copy + Into<u64>>(field: *const T) -> u64 {
    // SAFETY: a checked kernel read.
    unsafe { bpf_probe_read_kernel(field) }.map_or(0, Into::into)
}

/// The switch program runs in the kernel, inside the thread's system call (or fault): its
/// user registers are those saved at kernel entry, which only Linux 5.15+ lets a program find
/// (`bpf_task_pt_regs`); the unwinder asks for them itself.
impl Origin for RawTracePointContext {
    const SLOT: u32 = SLOT_OFF_CPU;

    fn tail_calls() -> &'static ProgramArray {
        &OFF_CPU_TAIL_CALLS
    }

    #[inline(always)]
    fn user_registers(&self) -> Option<UserRegisters> {
        None
    }

    #[inline(always)]
    fn user_sp(&self) -> u64 {
        0
    }

    #[inline(always)]
    fn go_register(&self) -> Option<u64> {
        #[cfg(bpf_target_arch = "aarch64")]
        {
            if crate::config().task_pt_regs == 0 {
                return None;
            }
            // SAFETY: helpers without preconditions; the register is read with a checked read.
            use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
            let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
            Some(saved(unsafe { core::ptr::addr_of!((*regs).regs[28]) }))
        }
        #[cfg(not(bpf_target_arch = "aarch64"))]
        {
            let _ = self;
            None
        }
    }
}

/// The end of a record: a sample is counted under `key` in the interval's half of the counts
/// maps; a wait's record is parked until the wait ends (`off_cpu::park`). The stacks `key`
/// names are stored first (`store_stacks`), except for a sample whose count is already in the
/// half: its stacks were stored with it, and the lookups they would take (three cold cache
/// lines each, on a host sampled at 99 Hz) are the largest part of a sample past the stack
/// walk itself.
#[inline(always)]
pub(crate) fn record<O: Origin>(
    interval: u32,
    key: &SampleKey,
    value: SampleValue,
) -> Result<(), Counter> {
    let half = interval & 1;
    let mut key = *key;
    if O::SLOT == SLOT_OFF_CPU {
        store_stacks(&mut key, O::SLOT, half)?;
        return crate::off_cpu::park(interval, &key);
    }
    let counts = if half == 0 { &COUNTS_0 } else { &COUNTS_1 };
    // The drain empties a half's counts and stacks together, once no program writes it: a
    // count in the half means its stacks are there too.
    if !add_to_entry(counts, &key, value) {
        store_stacks(&mut key, O::SLOT, half)?;
        insert_sample(counts, &key, value)?;
    }
    count(Counter::Samples);
    if key.context != profiler_common::NO_CONTEXT {
        count(Counter::Traced);
    }
    Ok(())
}
