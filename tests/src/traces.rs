//! Trace context on samples: the IDs the traced fixtures publish (mirroring
//! `fixtures/trace_ids.h`), what the samples of each hot function must carry, and checks of the
//! `trace_id` / `span_id` / attribute labels.

use std::collections::BTreeMap;

use anyhow::{Result, bail, ensure};

use crate::*;

// ---------------------------------------------------------------------------------------------
// The traced C fixtures (fixtures/trace_ids.h; a unit test below keeps both copies equal)

pub const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const SPAN_A: &str = "00f067aa0ba902b7";
pub const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";
pub const SPAN_B: &str = "b7ad6b7169203331";
pub const TRACE_C1: &str = "c1a2b3c4d5e6f708192a3b4c5d6e7f80";
pub const SPAN_C1: &str = "51a1c1d1e1f10203";
pub const TRACE_C2: &str = "00c2b3c4d5e6f708192a3b4c5d6e7f81";
pub const SPAN_C2: &str = "52a2c2d2e2f20304";
/// Published with valid = 0: must never show up.
pub const TRACE_D: &str = "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf";
/// Published by [`TRACED_DLOPEN`] once it has dlopen'ed the library with the variable.
pub const TRACE_DLOPEN: &str = "0e1d2c3b4a5968778695a4b3c2d1e0f1";
pub const SPAN_DLOPEN: &str = "d1e0f1a2b3c4d5e6";
/// Published by the off-CPU fixture's request thread, which computes and then waits in poll.
pub const TRACE_E: &str = "0ee1c2d3b4a5968778695a4b3c2d1e0f";
pub const SPAN_E: &str = "e5e4e3e2e1e0dfde";
/// The Go off-CPU fixture's waiting goroutine (fixtures/go/offcpu/main.go).
pub const TRACE_GO_WAIT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
pub const SPAN_GO_WAIT: &str = "f0e1d2c3b4a59687";

pub const TRACE_ID_LABEL: &str = "trace_id";
pub const SPAN_ID_LABEL: &str = "span_id";
pub const SERVICE_NAME_LABEL: &str = "service_name";

/// Fewest samples of a hot function for a check of its labels to mean something.
pub const MIN_FUNCTION_SAMPLES: i64 = 10;

/// What the samples of one hot function, run under one trace context, must carry.
#[derive(Debug, Clone, Copy)]
pub struct TracedFn<'a> {
    /// The hot function (a sample is its when it is the leaf).
    pub function: Want<'a>,
    /// The `trace_id` label, lowercase hex.
    pub trace_id: &'a str,
    /// The `span_id` label; `None`: any well-formed span ID.
    pub span_id: Option<&'a str>,
    /// Further string labels of every sample of the trace, with their values.
    pub labels: &'a [(&'a str, &'a str)],
    /// Labels the samples of the trace must not carry.
    pub absent: &'a [&'a str],
}

/// The traced hot functions of the C scenario. It publishes no process context, so attributes
/// are `attr_<index>` and there is no `service_name`.
pub const C_TRACED: [TracedFn<'static>; 4] = [
    TracedFn {
        function: Want::Exact("traced_fn_a"),
        trace_id: TRACE_A,
        span_id: Some(SPAN_A),
        labels: &[("attr_0", "checkout")],
        absent: &["attr_1", SERVICE_NAME_LABEL],
    },
    TracedFn {
        function: Want::Exact("traced_fn_b"),
        trace_id: TRACE_B,
        span_id: Some(SPAN_B),
        // Key 1 appears twice in the record, "stale" then "fresh": the last one wins.
        labels: &[("attr_1", "fresh")],
        absent: &["attr_0", SERVICE_NAME_LABEL],
    },
    TracedFn {
        function: Want::Exact("switch_fn_1"),
        trace_id: TRACE_C1,
        span_id: Some(SPAN_C1),
        labels: &[("attr_0", "switch-1")],
        absent: &["attr_1", SERVICE_NAME_LABEL],
    },
    TracedFn {
        function: Want::Exact("switch_fn_2"),
        trace_id: TRACE_C2,
        span_id: Some(SPAN_C2),
        labels: &[("attr_0", "switch-2")],
        absent: &["attr_1", SERVICE_NAME_LABEL],
    },
];

/// Hot functions of the C scenario's threads without a valid context: a record with valid = 0
/// (trace [`TRACE_D`]), a pointer to an unmapped page, a null pointer.
pub const C_UNTRACED: [Want<'static>; 3] = [
    Want::Exact("invalid_fn"),
    Want::Exact("unmapped_fn"),
    Want::Exact("untraced_fn"),
];

// ---------------------------------------------------------------------------------------------
// Reading labels

/// Every string label of a sample as (key, value).
pub fn string_labels<'p>(p: &'p Pprof, s: &Sample) -> Vec<(&'p str, &'p str)> {
    s.label
        .iter()
        .filter(|l| l.str != 0)
        .map(|l| (p.str(l.key), p.str(l.str)))
        .collect()
}

/// Whether the sample has a label `key` (string or number).
pub fn has_label(p: &Pprof, s: &Sample, key: &str) -> bool {
    s.label.iter().any(|l| p.str(l.key) == key)
}

/// The sample's `trace_id` label.
pub fn trace_id_of<'p>(p: &'p Pprof, s: &Sample) -> Option<&'p str> {
    p.label_str(s, TRACE_ID_LABEL)
}

/// Whether a label key belongs to the trace context (IDs and attributes without a process
/// context); `service_name` and named attributes are told apart by the callers.
fn is_context_label(key: &str) -> bool {
    key == TRACE_ID_LABEL || key == SPAN_ID_LABEL || key.starts_with("attr_")
}

/// `len` lowercase hex digits, not all zero.
pub fn is_hex_id(text: &str, len: usize) -> bool {
    text.len() == len
        && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && text.bytes().any(|b| b != b'0')
}

/// Sample counts by `trace_id` label (`None`: no label).
pub fn count_by_trace(samples: &[(&Pprof, &Sample)]) -> BTreeMap<Option<String>, i64> {
    let mut counts = BTreeMap::new();
    for (p, s) in samples {
        *counts
            .entry(trace_id_of(p, s).map(str::to_owned))
            .or_default() += p.count(s);
    }
    counts
}

/// The `n` most frequent label sets (besides the thread labels), one per line, for failure
/// messages.
pub fn describe_trace_labels(samples: &[(&Pprof, &Sample)], n: usize) -> String {
    let mut sets: BTreeMap<String, i64> = BTreeMap::new();
    for (p, s) in samples {
        let labels: Vec<String> = string_labels(p, s)
            .into_iter()
            .filter(|(k, _)| !matches!(*k, "comm" | "thread_name"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let labels = if labels.is_empty() {
            "(no trace labels)".to_owned()
        } else {
            labels.join(" ")
        };
        *sets.entry(labels).or_default() += p.count(s);
    }
    let mut sets: Vec<_> = sets.into_iter().collect();
    sets.sort_by_key(|s| std::cmp::Reverse(s.1));
    sets.iter()
        .take(n)
        .map(|(labels, count)| format!("  {count:>6}  {labels}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The samples whose leaf is `function`.
pub fn leaf_samples<'p>(
    samples: &[(&'p Pprof, &'p Sample)],
    function: Want,
) -> Vec<(&'p Pprof, &'p Sample)> {
    samples
        .iter()
        .filter(|(p, s)| p.has_leaf(s, function))
        .copied()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checks

/// The samples of `expect.function`: at least [`MIN_FUNCTION_SAMPLES`]; none labelled with
/// another trace; at least 90% (by count) labelled with its trace (a few may precede the
/// profiler's look at the process), and those carry the span and the labels it expects.
pub fn check_traced_fn(samples: &[(&Pprof, &Sample)], expect: &TracedFn) -> Result<()> {
    let (total, right) = check_traced_fn_labels(samples, expect)?;
    let leaf = leaf_samples(samples, expect.function);
    ensure!(
        right * 10 >= total * 9,
        "{right} of {total} samples in {} carry trace {}; labels:\n{}",
        expect.function.text(),
        expect.trace_id,
        describe_trace_labels(&leaf, 8)
    );
    Ok(())
}

/// The samples of `expect.function`, whether labelled or not (e.g. under a cap on traces): at
/// least [`MIN_FUNCTION_SAMPLES`], none labelled with another trace, and those labelled with its
/// trace carry the span and labels it expects. Returns (all, labelled) sample counts.
pub fn check_traced_fn_labels(
    samples: &[(&Pprof, &Sample)],
    expect: &TracedFn,
) -> Result<(i64, i64)> {
    let name = expect.function.text();
    let leaf = leaf_samples(samples, expect.function);
    let total = total_count(&leaf);
    ensure!(
        total >= MIN_FUNCTION_SAMPLES,
        "only {total} samples in {name}; top stacks:\n{}",
        describe_top_stacks(samples, 8)
    );
    let wrong = count_where(&leaf, |p, s| {
        trace_id_of(p, s).is_some_and(|t| t != expect.trace_id)
    });
    ensure!(
        wrong == 0,
        "{wrong} of {total} samples in {name} carry another trace than {}; labels:\n{}",
        expect.trace_id,
        describe_trace_labels(&leaf, 8)
    );
    let mut right = 0;
    for (p, s) in &leaf {
        if trace_id_of(p, s) == Some(expect.trace_id) {
            check_trace_sample(p, s, expect)?;
            right += p.count(s);
        }
    }
    Ok((total, right))
}

/// One sample of `expect.trace_id`: the span and labels `expect` names, none it forbids.
pub fn check_trace_sample(p: &Pprof, s: &Sample, expect: &TracedFn) -> Result<()> {
    let trace = expect.trace_id;
    let labels = string_labels(p, s);
    let span = p.label_str(s, SPAN_ID_LABEL);
    match expect.span_id {
        Some(want) => ensure!(
            span == Some(want),
            "{}: sample of trace {trace} has span_id {span:?}, want {want}; labels {labels:?}",
            p.path.display()
        ),
        None => ensure!(
            span.is_some_and(|id| is_hex_id(id, 16)),
            "{}: sample of trace {trace} has span_id {span:?}, want 16 hex digits",
            p.path.display()
        ),
    }
    for (key, want) in expect.labels {
        let got = p.label_str(s, key);
        ensure!(
            got == Some(*want),
            "{}: sample of trace {trace} has {key} = {got:?}, want {want:?}; labels {labels:?}",
            p.path.display()
        );
    }
    for key in expect.absent {
        ensure!(
            !has_label(p, s, key),
            "{}: sample of trace {trace} has a {key} label; labels {labels:?}",
            p.path.display()
        );
    }
    Ok(())
}

/// The samples of `function`, run without a valid context: there are some (the thread is still
/// sampled), and none carries a trace ID, span ID or attribute.
pub fn check_untraced_fn(samples: &[(&Pprof, &Sample)], function: Want) -> Result<()> {
    let name = function.text();
    let leaf = leaf_samples(samples, function);
    let total = total_count(&leaf);
    ensure!(
        total >= MIN_FUNCTION_SAMPLES,
        "only {total} samples in {name}; top stacks:\n{}",
        describe_top_stacks(samples, 8)
    );
    let labelled = count_where(&leaf, |p, s| {
        s.label.iter().any(|l| is_context_label(p.str(l.key)))
    });
    ensure!(
        labelled == 0,
        "{labelled} of {total} samples in {name} (no valid context) carry trace labels:\n{}",
        describe_trace_labels(&leaf, 8)
    );
    Ok(())
}

/// Every trace label is well formed: `trace_id` 32 and `span_id` 16 lowercase hex digits (not
/// all zero), each only with the other, and attributes only with a trace ID.
pub fn check_trace_label_format(samples: &[(&Pprof, &Sample)]) -> Result<()> {
    for (p, s) in samples {
        let labels = string_labels(p, s);
        let file = p.path.display();
        let (trace, span) = (trace_id_of(p, s), p.label_str(s, SPAN_ID_LABEL));
        for key in [TRACE_ID_LABEL, SPAN_ID_LABEL] {
            let n = s.label.iter().filter(|l| p.str(l.key) == key).count();
            ensure!(n <= 1, "{file}: sample with {n} {key} labels: {labels:?}");
        }
        match (trace, span) {
            (None, None) => {
                let attrs: Vec<_> = labels.iter().filter(|(k, _)| is_context_label(k)).collect();
                ensure!(
                    attrs.is_empty(),
                    "{file}: attributes without a trace_id: {labels:?}"
                );
            }
            (Some(trace), Some(span)) => {
                ensure!(
                    is_hex_id(trace, 32),
                    "{file}: trace_id {trace:?} is not 32 lowercase hex digits"
                );
                ensure!(
                    is_hex_id(span, 16),
                    "{file}: span_id {span:?} is not 16 lowercase hex digits"
                );
            }
            _ => bail!("{file}: trace_id and span_id must come together: {labels:?}"),
        }
    }
    Ok(())
}

/// No sample carries `trace_id` (e.g. one published with valid = 0).
pub fn check_trace_absent(samples: &[(&Pprof, &Sample)], trace_id: &str) -> Result<()> {
    let n = count_where(samples, |p, s| trace_id_of(p, s) == Some(trace_id));
    ensure!(n == 0, "{n} samples carry trace {trace_id}");
    Ok(())
}

/// No sample carries any trace label (`trace_id`, `span_id`, `attr_*`, `service_name`).
pub fn check_no_trace_labels(samples: &[(&Pprof, &Sample)]) -> Result<()> {
    let n = count_where(samples, |p, s| {
        s.label.iter().any(|l| {
            let key = p.str(l.key);
            is_context_label(key) || key == SERVICE_NAME_LABEL
        })
    });
    ensure!(
        n == 0,
        "{n} samples carry trace labels:\n{}",
        describe_trace_labels(samples, 8)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The fixtures' IDs agree with the constants here, and the traced fixtures put
    //! `otel_thread_ctx_v1` where each variant says (no root needed).

    use std::{collections::HashMap, path::Path, process::Command};

    use super::*;

    fn header_defines() -> HashMap<String, String> {
        include_str!("../fixtures/trace_ids.h")
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("#define ")?;
                let (name, value) = rest.split_once(' ')?;
                let value = value.trim().strip_prefix('"')?.strip_suffix('"')?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect()
    }

    #[test]
    fn ids_match_the_fixture_header() {
        let defines = header_defines();
        let consts = [
            ("TRACE_A_ID", TRACE_A),
            ("SPAN_A_ID", SPAN_A),
            ("TRACE_B_ID", TRACE_B),
            ("SPAN_B_ID", SPAN_B),
            ("TRACE_C1_ID", TRACE_C1),
            ("SPAN_C1_ID", SPAN_C1),
            ("TRACE_C2_ID", TRACE_C2),
            ("SPAN_C2_ID", SPAN_C2),
            ("TRACE_D_ID", TRACE_D),
            ("TRACE_DLOPEN_ID", TRACE_DLOPEN),
            ("SPAN_DLOPEN_ID", SPAN_DLOPEN),
            ("TRACE_E_ID", TRACE_E),
            ("SPAN_E_ID", SPAN_E),
            ("TRACE_A_ATTR_0", "checkout"),
            ("TRACE_B_ATTR_1", "fresh"),
            ("TRACE_C1_ATTR_0", "switch-1"),
            ("TRACE_C2_ATTR_0", "switch-2"),
        ];
        for (name, value) in consts {
            assert_eq!(defines.get(name).map(String::as_str), Some(value), "{name}");
        }
        for t in &C_TRACED {
            assert!(is_hex_id(t.trace_id, 32), "{}", t.trace_id);
            assert!(t.span_id.is_some_and(|s| is_hex_id(s, 16)));
        }
        assert_eq!(C_TRACED[0].labels, [("attr_0", "checkout")]);
        assert!(is_hex_id(TRACE_D, 32));
        assert!(is_hex_id(TRACE_DLOPEN, 32));
        assert!(is_hex_id(SPAN_DLOPEN, 16));
    }

    #[test]
    fn hex_ids() {
        assert!(is_hex_id(SPAN_A, 16));
        assert!(!is_hex_id("0000000000000000", 16));
        assert!(!is_hex_id("00F067AA0BA902B7", 16));
        assert!(!is_hex_id(SPAN_A, 32));
    }

    fn readelf(args: &[&str], file: &str) -> String {
        let output = Command::new("readelf")
            .args(args)
            .arg(file)
            .output()
            .expect("run readelf");
        assert!(output.status.success(), "readelf {args:?} {file}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `otel_thread_ctx_v1` is in `.dynsym`, defined (not UND), TLS, GLOBAL.
    fn assert_exports_tls_symbol(file: &str) {
        let syms = readelf(&["--dyn-syms", "-W"], file);
        let line = syms
            .lines()
            .find(|l| l.split_whitespace().last() == Some("otel_thread_ctx_v1"))
            .unwrap_or_else(|| panic!("{file} does not export otel_thread_ctx_v1:\n{syms}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Num: Value Size Type Bind Vis Ndx Name
        assert_eq!(fields[3], "TLS", "{line}");
        assert_eq!(fields[4], "GLOBAL", "{line}");
        assert_ne!(fields[6], "UND", "{line}");
    }

    fn assert_needs(exe: &str, lib: &str) {
        let name = Path::new(lib).file_name().unwrap().to_string_lossy();
        let dynamic = readelf(&["-d", "-W"], exe);
        assert!(
            dynamic.contains(&format!("[{name}]")),
            "{exe} does not need {name}:\n{dynamic}"
        );
    }

    #[test]
    fn executable_variant_exports_its_tls_variable() {
        assert_exports_tls_symbol(TRACED_EXE);
    }

    #[test]
    fn tlsdesc_library_has_a_tlsdesc_relocation() {
        assert_exports_tls_symbol(LIBOTELCTX_GNU2);
        let relocs = readelf(&["-rW"], LIBOTELCTX_GNU2);
        assert!(
            relocs
                .lines()
                .any(|l| l.contains("R_X86_64_TLSDESC") && l.contains("otel_thread_ctx_v1")),
            "no TLSDESC relocation of otel_thread_ctx_v1:\n{relocs}"
        );
        assert_needs(TRACED_TLSDESC, LIBOTELCTX_GNU2);
    }

    #[test]
    fn general_dynamic_library_has_dtpmod_relocations() {
        assert_exports_tls_symbol(LIBOTELCTX_GNU);
        let relocs = readelf(&["-rW"], LIBOTELCTX_GNU);
        assert!(
            relocs
                .lines()
                .any(|l| l.contains("R_X86_64_DTPMOD64") && l.contains("otel_thread_ctx_v1")),
            "no DTPMOD64 relocation of otel_thread_ctx_v1:\n{relocs}"
        );
        assert!(
            !relocs.contains("R_X86_64_TLSDESC"),
            "the general-dynamic library has TLSDESC relocations:\n{relocs}"
        );
        assert_needs(TRACED_GD, LIBOTELCTX_GNU);
    }

    /// The dlopen fixture neither defines the variable nor needs the library: the profiler can
    /// only find it once the process has opened the library.
    #[test]
    fn dlopen_fixture_starts_without_the_variable() {
        let syms = readelf(&["--dyn-syms", "-W"], TRACED_DLOPEN);
        assert!(
            !syms.contains("otel_thread_ctx_v1"),
            "{TRACED_DLOPEN} mentions otel_thread_ctx_v1:\n{syms}"
        );
        let dynamic = readelf(&["-d", "-W"], TRACED_DLOPEN);
        assert!(
            !dynamic.contains("libotelctx"),
            "{TRACED_DLOPEN} needs a libotelctx library:\n{dynamic}"
        );
        let dir = |p: &str| Path::new(p).parent().map(Path::to_path_buf);
        assert_eq!(
            dir(TRACED_DLOPEN),
            dir(LIBOTELCTX_GNU2),
            "the fixture looks for the library in its own directory"
        );
    }
}
