//! Unwinding user stacks without frame pointers (issue 15): each file's unwind information
//! turned into a compact table of rules a BPF program can follow (`table.rs`, `rule.rs`), and
//! that table in the form the kernel will walk (`layout.rs`).
//! The tables are built and tested here first; the kernel side walks them in a later step.

pub mod layout;
pub mod rule;
pub mod store;
pub mod table;
