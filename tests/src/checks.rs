//! Checks of what the profiles hold: the hot call chain, labels, the fixture's mapping.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result, ensure};

use crate::*;

/// All samples of `pid` across files, with the file each came from.
pub fn samples_of_pid(profiles: &[Pprof], pid: u32) -> Vec<(&Pprof, &Sample)> {
    profiles
        .iter()
        .flat_map(|p| p.samples_of_pid(pid).map(move |s| (p, s)))
        .collect()
}

/// Every PID with samples in `profiles`.
pub fn sampled_pids(profiles: &[Pprof]) -> BTreeSet<i64> {
    profiles
        .iter()
        .flat_map(|p| {
            p.profile
                .sample
                .iter()
                .filter_map(|s| p.label_num(s, "pid"))
        })
        .collect()
}

/// Sum of the `samples/count` values.
pub fn total_count(samples: &[(&Pprof, &Sample)]) -> i64 {
    samples.iter().map(|(p, s)| p.count(s)).sum()
}

/// Sum of the `samples/count` values of the samples for which `keep` holds.
pub fn count_where(
    samples: &[(&Pprof, &Sample)],
    mut keep: impl FnMut(&Pprof, &Sample) -> bool,
) -> i64 {
    samples
        .iter()
        .filter(|(p, s)| keep(p, s))
        .map(|(p, s)| p.count(s))
        .sum()
}

/// How a test recognises a function name: C names exactly, Rust names by substring (the
/// demangled path, e.g. `hot::rust_fixture_hot_leaf`).
#[derive(Debug, Clone, Copy)]
pub enum Want<'a> {
    Exact(&'a str),
    Contains(&'a str),
}

impl Want<'_> {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Want::Exact(want) => name == *want,
            Want::Contains(want) => name.contains(want),
        }
    }

    /// The text that must appear in a report naming the function.
    pub fn text(&self) -> &str {
        match self {
            Want::Exact(s) | Want::Contains(s) => s,
        }
    }
}

/// The call chain of a CPU-bound fixture as the tests check it.
pub struct Chain<'a> {
    /// The function the CPU time is spent in.
    pub leaf: Want<'a>,
    /// Its callers, innermost first, expected right above the leaf.
    pub callers: &'a [Want<'a>],
}

pub const C_CHAIN: Chain<'static> = Chain {
    leaf: Want::Exact("fixture_hot_leaf"),
    callers: &[
        Want::Exact("fixture_middle"),
        Want::Exact("fixture_outer"),
        Want::Exact("main"),
    ],
};

pub const RUST_CHAIN: Chain<'static> = Chain {
    leaf: Want::Contains("rust_fixture_hot_leaf"),
    callers: &[
        Want::Contains("rust_fixture_middle"),
        Want::Contains("rust_fixture_outer"),
    ],
};

/// Checks a CPU-bound fixture's samples: enough of them, the hot leaf is `location_id[0]`'s
/// function in at least half (by count), and where it is, the callers follow it directly in order (in at least
/// 90% by count: a sample in a prologue may legitimately miss a frame).
pub fn check_hot_chain(samples: &[(&Pprof, &Sample)], chain: &Chain) -> Result<()> {
    let total = total_count(samples);
    ensure!(total >= 20, "only {total} samples of the fixture");
    let leaf_stacks: Vec<_> = samples
        .iter()
        .filter(|(p, s)| p.has_leaf(s, chain.leaf))
        .copied()
        .collect();
    let leaf = total_count(&leaf_stacks);
    ensure!(
        leaf * 2 >= total,
        "{:?} is the leaf in {leaf} of {total} samples; top stacks:\n{}",
        chain.leaf,
        describe_top_stacks(samples, 5)
    );
    let chained = count_where(&leaf_stacks, |p, s| {
        let names = p.caller_names(s);
        chain
            .callers
            .iter()
            .zip(
                names
                    .iter()
                    .map(String::as_str)
                    .chain(std::iter::repeat("")),
            )
            .all(|(want, name)| want.matches(name))
    });
    ensure!(
        chained * 10 >= leaf * 9,
        "callers {:?} directly above the leaf in {chained} of {leaf} samples; top stacks:\n{}",
        chain.callers,
        describe_top_stacks(&leaf_stacks, 5)
    );
    Ok(())
}

/// The `n` heaviest stacks, one per line, for failure messages.
pub fn describe_top_stacks(samples: &[(&Pprof, &Sample)], n: usize) -> String {
    let mut stacks: HashMap<String, i64> = HashMap::new();
    for (p, s) in samples {
        let frames: Vec<String> = p
            .frames(s)
            .into_iter()
            .map(|f| format!("{}@{}", f.function, f.mapping))
            .collect();
        *stacks.entry(frames.join(" <- ")).or_default() += p.count(s);
    }
    let mut stacks: Vec<_> = stacks.into_iter().collect();
    stacks.sort_by_key(|s| std::cmp::Reverse(s.1));
    stacks
        .iter()
        .take(n)
        .map(|(stack, count)| format!("  {count:>6}  {stack}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks the four thread labels of a fixture's samples: `pid` is the fixture's (the caller
/// filtered on it), `comm` its truncated name, and `thread_id`/`thread_name` as `thread` says.
pub fn check_labels(
    samples: &[(&Pprof, &Sample)],
    fixture: &Fixture,
    thread: impl Fn(i64, &str) -> Result<()>,
) -> Result<()> {
    let comm = fixture.expected_comm();
    for (p, s) in samples {
        ensure!(
            p.label_num(s, "pid") == Some(i64::from(fixture.pid())),
            "pid label"
        );
        let got = p.label_str(s, "comm");
        ensure!(
            got == Some(comm.as_str()),
            "comm label {got:?}, want {comm:?}"
        );
        let tid = p.label_num(s, "thread_id").context("thread_id label")?;
        let name = p.label_str(s, "thread_name").context("thread_name label")?;
        thread(tid, name)?;
    }
    Ok(())
}

/// Checks that the locations of frames matching `want` belong to the mapping of the fixture's
/// executable: filename = its path, build_id = its GNU build ID.
pub fn check_fixture_mapping(
    samples: &[(&Pprof, &Sample)],
    fixture: &Fixture,
    want: Want,
) -> Result<()> {
    let path = fixture.path().to_string_lossy().into_owned();
    let build_id = fixture.build_id()?;
    let mut checked = 0;
    for (p, s) in samples {
        for loc in s.location_id.iter().filter_map(|id| p.location(*id)) {
            let named = loc.line.iter().any(|l| {
                p.function(l.function_id)
                    .is_some_and(|f| want.matches(p.str(f.name)))
            });
            if !named {
                continue;
            }
            let mapping = p
                .mapping(loc.mapping_id)
                .context("location without mapping")?;
            let (file, id) = (p.str(mapping.filename), p.str(mapping.build_id));
            ensure!(
                file == path,
                "mapping of {want:?} is {file:?}, want {path:?}"
            );
            ensure!(!id.is_empty(), "mapping {file} has no build_id");
            ensure!(
                id.eq_ignore_ascii_case(&build_id),
                "mapping {file} build_id {id:?}, the ELF's is {build_id}"
            );
            checked += 1;
        }
    }
    ensure!(
        checked > 0,
        "no location of {want:?} to check the mapping of"
    );
    Ok(())
}
