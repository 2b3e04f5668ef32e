//! Unwinding user stacks without frame pointers (issue 15): each file's unwind information
//! turned into a compact table of rules a BPF program can follow (`table.rs`, `rule.rs`), and
//! that table in the form the kernel will walk (`layout.rs`), the tables held within a memory
//! budget (`store.rs`), placed in the kernel's shared arrays (`kernel_maps.rs`, `arena.rs`)
//! with each process's code ranges (`ranges.rs`, from `mappings.rs`) as the processes sampled
//! come and go (`loader.rs`), and the walk itself in userspace (`walk.rs`), the oracle of the
//! BPF walk (`profiler-ebpf/src/unwind.rs`), which must agree with it and with
//! `kernel_maps::rule_at`.

pub(crate) mod arena;
pub mod kernel_maps;
pub mod layout;
pub mod loader;
pub mod mappings;
pub mod ranges;
pub mod rule;
pub mod store;
pub mod table;
pub mod walk;
