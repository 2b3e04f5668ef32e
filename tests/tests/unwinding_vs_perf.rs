//! The stacks the kernel walk reports, against `perf record --call-graph dwarf` on the same
//! processes at the same time: perf copies each sample's stack and unwinds it in userspace with
//! the same `.eh_frame`, the reference users compare us with.

use std::{collections::HashMap, process::Command, thread, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Fixture, TEST_FREQUENCY, assert_root, read_checked_profiles, record_fixture_run,
};

/// A caller chain: function names from the leaf up to `main` (what is above `main` differs in
/// name between the two tools' symbolizers, not in where the walk went), a run of recursive
/// calls as one name: how deep qsort's merge sort was at each sample splits the weight over
/// a dozen chains, and two recordings' sampling noise then hides what is compared.
type Chain = Vec<String>;

/// Cuts a leaf-first list of names after `main`.
fn to_main(names: impl IntoIterator<Item = String>) -> Chain {
    from_leaf(names, "")
}

/// A leaf-first list of names from the first that contains `leaf` (the fixture's hot function:
/// which instruction of its loop a sample lands on, and so which inlined helper shows below
/// it, is the sampling's noise, not the walk's) up to `main`; empty when `leaf` is not there.
fn from_leaf(names: impl IntoIterator<Item = String>, leaf: &str) -> Chain {
    let mut chain: Chain = Vec::new();
    let mut names = names.into_iter().skip_while(|name| !name.contains(leaf));
    for name in names.by_ref().map(without_parameters) {
        let done = name == "main";
        if chain.last() == Some(&name) {
            continue;
        }
        chain.push(name);
        if done {
            break;
        }
    }
    chain
}

/// A C++ name without its parameter list: our symbolizer writes `Worker::run(int)`, perf
/// `Worker::run` (applied to both sides alike).
fn without_parameters(name: String) -> String {
    match name.split_once('(') {
        Some((function, _)) if !function.is_empty() => function.to_owned(),
        _ => name,
    }
}

/// `perf script -F ip,sym,dso` output: one block per sample, one line per frame (`address
/// symbol (dso)`, inlined functions with `(inlined)`); kernel frames are left out.
fn parse_perf_script(text: &str, leaf: &str) -> HashMap<Chain, u64> {
    let mut chains = HashMap::new();
    for block in text.split("\n\n") {
        // Frame lines are indented; a header line (with other `-F` fields) is not.
        let frames = block.lines().filter(|line| line.starts_with(['\t', ' ']));
        let names = frames.filter_map(|line| {
            let line = line.trim();
            let (_address, rest) = line.split_once(' ')?;
            if rest.contains("kernel.kallsyms") || rest.contains("[kernel") {
                return None;
            }
            let symbol = rest.rsplit_once(" (").map_or(rest, |(symbol, _)| symbol);
            Some(symbol.trim().to_owned())
        });
        let chain = from_leaf(names, leaf);
        if !chain.is_empty() {
            *chains.entry(chain).or_insert(0) += 1;
        }
    }
    chains
}

/// perf's chains of process `pid` over `seconds`, at the test's rate.
fn perf_chains(
    pid: u32,
    seconds: u64,
    leaf: &str,
    dir: &std::path::Path,
) -> Result<HashMap<Chain, u64>> {
    let data = dir.join("perf.data");
    let record = Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "--call-graph",
            "dwarf",
            "-F",
        ])
        .arg(TEST_FREQUENCY.to_string())
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .output()
        .context("running perf record (cargo xtask setup installs linux-perf)")?;
    ensure!(
        record.status.success(),
        "perf record failed: {}",
        String::from_utf8_lossy(&record.stderr)
    );
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym,dso", "-i"])
        .arg(&data)
        .output()
        .context("running perf script")?;
    ensure!(
        script.status.success(),
        "perf script failed: {}",
        String::from_utf8_lossy(&script.stderr)
    );
    Ok(parse_perf_script(
        &String::from_utf8_lossy(&script.stdout),
        leaf,
    ))
}

/// The share of `reference`'s weight that `ours` carries on the same chains.
fn overlap(reference: &HashMap<Chain, u64>, ours: &HashMap<Chain, u64>) -> f64 {
    let total = |chains: &HashMap<Chain, u64>| chains.values().sum::<u64>().max(1) as f64;
    let (theirs_total, ours_total) = (total(reference), total(ours));
    reference
        .iter()
        .map(|(chain, &weight)| {
            let mine = ours.get(chain).copied().unwrap_or(0) as f64 / ours_total;
            (weight as f64 / theirs_total).min(mine)
        })
        .sum()
}

/// Records `path mode` with ours for 7 s and perf for 4 s from the third second, and compares
/// perf's chains with ours from the same seconds.
fn compare(path: &str, mode: &[&str], leaf: &'static str) -> Result<()> {
    let fixture = Fixture::spawn_ready(path, mode, Duration::from_secs(10))?;
    let out = tempfile::tempdir()?;
    let pid = fixture.pid();
    let perf_dir = out.path().join("perf");
    std::fs::create_dir(&perf_dir)?;
    let perf = thread::spawn(move || {
        // Ours walks by frame pointers until the fixture's tables are built: compare after.
        thread::sleep(Duration::from_secs(2));
        perf_chains(pid, 4, leaf, &perf_dir)
    });
    let profiles_dir = out.path().join("profiles");
    record_fixture_run(&fixture, &profiles_dir, 7, 1, &[])?;
    let theirs = perf.join().expect("the perf thread")?;
    let profiles = read_checked_profiles(&profiles_dir, TEST_FREQUENCY)?;
    let mut ours: HashMap<Chain, u64> = HashMap::new();
    for profile in profiles.iter().skip(2) {
        for sample in profile.samples_of_pid(pid) {
            let names = profile
                .frames(sample)
                .into_iter()
                .filter(|frame| !frame.is_kernel())
                .map(|frame| frame.function);
            let chain = from_leaf(names, leaf);
            if !chain.is_empty() {
                *ours.entry(chain).or_insert(0) += profile.count(sample) as u64;
            }
        }
    }
    let (theirs_samples, ours_samples) = (theirs.values().sum::<u64>(), ours.values().sum::<u64>());
    ensure!(
        theirs_samples >= 100 && ours_samples >= 100,
        "too few samples: perf {theirs_samples}, ours {ours_samples}"
    );
    let share = overlap(&theirs, &ours);
    let top = |chains: &HashMap<Chain, u64>| {
        let mut list: Vec<_> = chains.iter().collect();
        list.sort_by(|a, b| b.1.cmp(a.1));
        list.into_iter()
            .take(3)
            .map(|(c, w)| format!("{w} {}", c.join(";")))
            .collect::<Vec<_>>()
    };
    ensure!(
        share >= 0.95,
        "{path} {mode:?}: our chains carry {:.1}% of perf's weight (at least 95% wanted)\n\
         perf: {:#?}\nours: {:#?}",
        share * 100.0,
        top(&theirs),
        top(&ours)
    );
    Ok(())
}

#[test]
#[ignore = "needs root: loads BPF programs and runs perf"]
fn our_stacks_carry_what_perf_dwarf_unwinding_reports() -> Result<()> {
    assert_root();
    compare(env!("FIXTURE_UNWIND_SPIN"), &["chain"], "spin_leaf")?;
    compare(env!("FIXTURE_UNWIND_SPIN_FP"), &["qsort"], "spin_leaf")?;
    compare(env!("FIXTURE_UNWIND_RUST"), &["spin"], "chain_c")?;
    compare(env!("FIXTURE_UNWIND_CPP"), &["spin"], "Worker::block")
}

#[test]
fn perf_script_blocks_become_chains_to_main() {
    let text = "spin 1 \n\t 1268 spin_leaf (/x)\n\t ffffffff81 asm_sysvec (/[kernel.kallsyms])\n\
                \t 12c4 chain_three (/x)\n\t 10c0 main (/x)\n\t 1170 _start (/x)\n\n\
                spin 1 \n\t 1268 spin_leaf (/x)\n\t 10c0 main (/x)\n";
    let chains = parse_perf_script(text, "spin_leaf");
    assert_eq!(chains.len(), 2);
    assert_eq!(
        to_main(["a", "b", "b", "b", "main", "_start"].map(String::from)),
        ["a", "b", "main"]
    );
    assert_eq!(
        chains[&vec!["spin_leaf".to_owned(), "chain_three".into(), "main".into()]],
        1
    );
    let ours = HashMap::from([(vec!["spin_leaf".to_owned(), "main".into()], 3)]);
    assert!((overlap(&chains, &ours) - 0.5).abs() < 1e-9);
}
