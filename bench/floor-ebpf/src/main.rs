//! The physical floor of a stack sampler's kernel cost, for the kernel-cost benchmark: on every
//! tick of the per-CPU `cpu-clock` event, the kernel stack and the user stack (frame pointers)
//! each read and stored by the kernel's own `bpf_get_stackid`, then one per-CPU counter bumped.
//! Any program that reads both stacks pays at least this; the harness (`bench/src/floor.rs`)
//! loads it and the report divides our cost by its cost in the same window.
//!
//! Nothing is filtered and no error is looked at: a full stack map or a collision costs the
//! same walk, and reading the IDs back is the work the floor leaves out on purpose.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    macros::{map, perf_event},
    maps::{PerCpuArray, StackTrace},
    programs::{PerfEventContext, tracing::StackIdContext},
};

/// Stack IDs, kernel and user in one map as bpftrace keeps them, and sized as bpftrace 0.17
/// sizes its stack map (131072 entries of 127 frames; read from its map's fdinfo while the
/// benchmark ran it), so that a bucket lookup touches a table as large as there.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(131_072, 0);

/// Samples taken: the one counter.
#[map]
static SAMPLES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[perf_event]
pub fn floor(ctx: PerfEventContext) -> u32 {
    let _kernel = ctx.get_stackid(&STACKS, 0);
    let _user = ctx.get_stackid(&STACKS, u64::from(BPF_F_USER_STACK));
    if let Some(count) = SAMPLES.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, written only by this program on this CPU (perf_event
        // programs do not nest on one CPU).
        unsafe { *count += 1 };
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_get_stackid` is a GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
