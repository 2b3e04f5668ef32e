//! Running commands as root: directly when we are root, through sudo otherwise.

use std::{ffi::OsStr, process::Command};

use anyhow::{Result, bail};

use crate::paths;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The words to put before a command that needs root; `sudo_flags` go right after `sudo`.
pub fn root_prefix(
    is_root: bool,
    has_sudo: bool,
    sudo_flags: &[&str],
    what: &str,
) -> Result<Vec<String>> {
    if is_root {
        return Ok(Vec::new());
    }
    if !has_sudo {
        bail!("{what} needs root and sudo is not installed: run this as root");
    }
    let flags = sudo_flags.iter().map(|flag| (*flag).to_owned());
    Ok(std::iter::once("sudo".to_owned()).chain(flags).collect())
}

/// A command for `program` that runs as root; `what` names it in the error if that is impossible.
pub fn as_root(program: impl AsRef<OsStr>, sudo_flags: &[&str], what: &str) -> Result<Command> {
    let has_sudo = paths::find_in_path("sudo").is_some();
    let prefix = root_prefix(is_root(), has_sudo, sudo_flags, what)?;
    let Some((first, rest)) = prefix.split_first() else {
        return Ok(Command::new(program));
    };
    let mut cmd = Command::new(first);
    cmd.args(rest).arg(program);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_needs_no_prefix() {
        assert!(root_prefix(true, false, &["-E"], "x").unwrap().is_empty());
    }

    #[test]
    fn non_root_uses_sudo_with_flags() {
        assert_eq!(
            root_prefix(false, true, &["-E"], "x").unwrap(),
            ["sudo", "-E"]
        );
        assert_eq!(root_prefix(false, true, &[], "x").unwrap(), ["sudo"]);
    }

    #[test]
    fn non_root_without_sudo_fails_with_advice() {
        let err = root_prefix(false, false, &[], "installing packages").unwrap_err();
        assert!(err.to_string().contains("run this as root"), "{err}");
    }
}
