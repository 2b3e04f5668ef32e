//! Folded stacks, the flame graph's input and a format for scripts: one line per distinct stack,
//! `comm (pid);thread_name (tid);outer;…;leaf value`, root first, inlined functions expanded
//! (the caller below the functions inlined into it), lines sorted.

use std::{collections::BTreeMap, fmt::Write as _};

use super::stacks::{StackSample, Thread, ValueKind};

/// Distinct stacks and their summed value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    lines: BTreeMap<String, u64>,
}

impl Folded {
    /// Folds `samples`, weighing each by `value`; samples worth nothing are left out.
    pub fn new(samples: &[StackSample], value: ValueKind) -> Folded {
        let mut folded = Folded::default();
        folded.add(samples, value);
        folded
    }

    /// Adds more samples.
    pub fn add(&mut self, samples: &[StackSample], value: ValueKind) {
        let lines = &mut self.lines;
        let mut stack = String::new();
        for sample in samples {
            let Ok(weight) = u64::try_from(value.of(sample)) else {
                continue;
            };
            if weight == 0 {
                continue;
            }
            stack.clear();
            push_thread_frames(&mut stack, &sample.thread);
            for frame in sample.frames.iter().rev() {
                if !stack.is_empty() {
                    stack.push(';');
                }
                push_name(&mut stack, &frame.name);
            }
            match lines.get_mut(stack.as_str()) {
                Some(total) => *total = total.saturating_add(weight),
                None => {
                    lines.insert(stack.clone(), weight);
                }
            }
        }
    }

    /// Every value divided by `divisor`, rounded; lines that round to nothing are left out.
    pub fn scaled(&self, divisor: u64) -> Folded {
        let lines = self
            .lines
            .iter()
            .map(|(stack, value)| (stack.clone(), value.saturating_add(divisor / 2) / divisor))
            .filter(|(_, value)| *value > 0)
            .collect();
        Folded { lines }
    }

    /// The length of [`Folded::to_text`], about the memory it holds.
    pub fn text_len(&self) -> usize {
        self.lines.keys().map(|stack| stack.len() + 22).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The sum of all lines' values.
    pub fn total(&self) -> u64 {
        self.lines.values().fold(0, |sum, v| sum.saturating_add(*v))
    }

    /// `stack value` lines, sorted.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.lines
            .iter()
            .map(|(stack, value)| format!("{stack} {value}"))
    }

    /// The whole text, one line each, newline-terminated.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (stack, value) in &self.lines {
            let _ = writeln!(text, "{stack} {value}");
        }
        text
    }
}

/// The process and thread as the two bottom frames, when the sample names them.
fn push_thread_frames(stack: &mut String, thread: &Thread) {
    if let Some(pid) = thread.pid {
        push_name(stack, or_unknown(&thread.comm));
        let _ = write!(stack, " ({pid})");
    }
    if let Some(tid) = thread.tid {
        if !stack.is_empty() {
            stack.push(';');
        }
        push_name(stack, or_unknown(&thread.thread_name));
        let _ = write!(stack, " ({tid})");
    }
}

fn or_unknown(name: &str) -> &str {
    if name.is_empty() { "?" } else { name }
}

/// A frame name that cannot break the format: `;` separates frames and a line ends the stack.
fn push_name(stack: &mut String, name: &str) {
    stack.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::stacks::{
        Stacks,
        tests::{labels, profile},
    };

    #[test]
    fn folds_root_first_with_process_and_thread_at_the_bottom() {
        let p = profile(&[
            ("main;outer;inl+leaf", labels(7, 8), 3),
            ("main;outer;inl+leaf", labels(7, 8), 2),
            ("main;a;b[k]", labels(7, 9), 1),
            ("main;odd;name", labels(9, 9), 1),
        ]);
        let stacks = Stacks::from_profile(&p);
        let folded = Folded::new(&stacks.samples, ValueKind::Samples);
        assert_eq!(
            folded.to_text(),
            "app7 (7);worker8 (8);main;outer;leaf;inl 5\n\
             app7 (7);worker9 (9);main;a;b 1\n\
             app9 (9);worker9 (9);main;odd;name 1\n"
        );
        assert_eq!(folded.total(), 7);
        let cpu = Folded::new(&stacks.samples, ValueKind::Cpu);
        assert_eq!(cpu.total(), 70_000_000);
    }

    #[test]
    fn names_cannot_break_lines_or_frames() {
        let mut s = String::new();
        push_name(&mut s, "drop<[u8; 8]>\nx");
        assert_eq!(s, "drop<[u8: 8]> x");
    }
}
