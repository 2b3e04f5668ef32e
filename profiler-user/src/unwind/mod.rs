//! Unwinding user stacks without frame pointers (issue 15): each file's unwind information
//! turned into a compact table of rules a BPF program can follow (`table.rs`, `rule.rs`), and
//! that table in the form the kernel will walk (`layout.rs`), the tables held within a memory
//! budget (`store.rs`), placed in the kernel's shared arrays (`kernel_maps.rs`, `arena.rs`)
//! with each process's code ranges (`ranges.rs`, from `mappings.rs`), and the walk itself in
//! userspace (`walk.rs`). The BPF walk comes in a later step and must agree with `walk.rs` and
//! with `kernel_maps::rule_at`.

mod arena;
pub mod kernel_maps;
pub mod layout;
pub mod mappings;
pub mod ranges;
pub mod rule;
pub mod store;
pub mod table;
pub mod walk;
