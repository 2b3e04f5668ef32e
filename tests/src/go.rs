//! Cross-checks with `go tool pprof`, the external reader.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, ensure};

use crate::*;

// ---------------------------------------------------------------------------------------------
// go tool pprof

/// `go tool pprof -top -symbolize=none <file>`'s stdout; fails on a non-zero exit.
pub fn go_pprof_top(file: &Path) -> Result<String> {
    go_pprof(&["-top", "-symbolize=none"], file)
}

/// `go tool pprof <args> <file>`'s stdout, e.g. with `-tagfocus`; fails on a non-zero exit.
pub fn go_pprof(args: &[&str], file: &Path) -> Result<String> {
    // Go wants writable HOME/GOCACHE/GOPATH; the test may run with none or a read-only one.
    let scratch = tempfile::tempdir()?;
    go_pprof_in(scratch.path(), args, file.as_os_str())
}

/// `go tool pprof <args> <source>`'s stdout, `source` a file or a URL, with `scratch` as its
/// home and `PPROF_TMPDIR` (where it keeps a copy of a profile it fetched).
pub fn go_pprof_in(scratch: &Path, args: &[&str], source: &std::ffi::OsStr) -> Result<String> {
    let output = Command::new("/usr/bin/go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(source)
        .env("HOME", scratch)
        .env("GOCACHE", scratch.join("cache"))
        .env("GOPATH", scratch.join("gopath"))
        .env("PPROF_TMPDIR", scratch)
        .stdin(Stdio::null())
        .output()
        .context("running go tool pprof")?;
    ensure!(
        output.status.success(),
        "go tool pprof {} {} failed ({}):\n{}",
        args.join(" "),
        source.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `go tool pprof -top` on every file; where our decoding finds `want` in a stack, its
/// report must name it too.
pub fn check_go_pprof(profiles: &[Pprof], want: Want) -> Result<()> {
    ensure!(!profiles.is_empty(), "no profile to give go tool pprof");
    for p in profiles {
        let top = go_pprof_top(&p.path)?;
        if p.mentions(want) {
            ensure!(
                top.contains(want.text()),
                "go tool pprof -top {} does not name {}:\n{top}",
                p.path.display(),
                want.text()
            );
        }
    }
    Ok(())
}

/// `go tool pprof -tagfocus trace_id=<trace> -top` on the interval file with the most samples of
/// `expect`'s function and trace names that function, and none of the other traces' functions.
pub fn check_go_tagfocus(profiles: &[Pprof], expect: &TracedFn, all: &[TracedFn]) -> Result<()> {
    let in_file = |p: &Pprof| -> i64 {
        p.profile
            .sample
            .iter()
            .filter(|s| {
                p.has_leaf(s, expect.function) && trace_id_of(p, s) == Some(expect.trace_id)
            })
            .map(|s| p.count(s))
            .sum()
    };
    let best = profiles
        .iter()
        .max_by_key(|p| in_file(p))
        .filter(|p| in_file(p) > 0)
        .with_context(|| {
            format!(
                "no interval file has samples of {} with trace {}",
                expect.function.text(),
                expect.trace_id
            )
        })?;
    let focus = format!("trace_id={}", tag_regexp(expect.trace_id));
    let top = go_pprof(
        &["-tagfocus", &focus, "-top", "-symbolize=none"],
        &best.path,
    )?;
    let file = best.path.display();
    ensure!(
        top.contains(expect.function.text()),
        "go tool pprof -tagfocus {focus} -top {file} does not name {}:\n{top}",
        expect.function.text()
    );
    for other in all.iter().filter(|o| o.trace_id != expect.trace_id) {
        ensure!(
            !top.contains(other.function.text()),
            "go tool pprof -tagfocus {focus} -top {file} names {} (trace {}):\n{top}",
            other.function.text(),
            other.trace_id
        );
    }
    Ok(())
}

/// A `-tagfocus` value matching exactly `value`. pprof reads a value with digits as a numeric
/// range first (`strconv.ParseInt` on each digit run: a run of 19+ digits, as in an all-digit
/// trace ID, makes it panic), so every digit is put in its own character class.
pub fn tag_regexp(value: &str) -> String {
    let body: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                format!("[{c}]")
            } else {
                c.to_string()
            }
        })
        .collect();
    format!("^{body}$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_regexp_has_no_digit_runs() {
        assert_eq!(tag_regexp("0af1"), "^[0]af[1]$");
        assert_eq!(tag_regexp("ab"), "^ab$");
    }
}
