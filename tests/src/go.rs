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
    // Go wants writable HOME/GOCACHE/GOPATH; the test may run with none or a read-only one.
    let scratch = tempfile::tempdir()?;
    let output = Command::new("/usr/bin/go")
        .args(["tool", "pprof", "-top", "-symbolize=none"])
        .arg(file)
        .env("HOME", scratch.path())
        .env("GOCACHE", scratch.path().join("cache"))
        .env("GOPATH", scratch.path().join("gopath"))
        .env("PPROF_TMPDIR", scratch.path())
        .stdin(Stdio::null())
        .output()
        .context("running go tool pprof")?;
    ensure!(
        output.status.success(),
        "go tool pprof -top {} failed ({}):\n{}",
        file.display(),
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
