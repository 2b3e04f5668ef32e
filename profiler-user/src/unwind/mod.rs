//! Unwinding user stacks without frame pointers (issue 15): each file's unwind information
//! turned into a compact table of rules a BPF program can follow (`table.rs`, `rule.rs`), and
//! that table in the form the kernel will walk (`layout.rs`), the tables held within a memory
//! budget (`store.rs`), and the walk itself in userspace (`walk.rs`). The tables are built and
//! tested here first; the BPF walk comes in a later step and must agree with `walk.rs`.

pub mod layout;
pub mod mappings;
pub mod rule;
pub mod store;
pub mod table;
pub mod walk;
