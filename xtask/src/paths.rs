//! Where things are: the workspace, its build output, cargo's bin directory.

use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// The workspace root: the parent of this crate's directory. Taken at compile time so that it
/// holds whichever directory xtask is started from.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.join(".."), Path::to_path_buf)
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR` as cargo does.
pub fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// The release profiler binary.
pub fn profiler_bin(root: &Path) -> PathBuf {
    target_dir(root).join("release").join("profiler")
}

/// Where `cargo install` puts binaries (bpf-linker).
pub fn cargo_bin_dir() -> Result<PathBuf> {
    let home = match env::var_os("CARGO_HOME") {
        Some(cargo_home) => PathBuf::from(cargo_home),
        None => PathBuf::from(env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?)
            .join(".cargo"),
    };
    Ok(home.join("bin"))
}

/// `dir` followed by the directories of `path` (a PATH value).
pub fn prepend_path(dir: &Path, path: Option<&OsStr>) -> Result<OsString> {
    let rest = path.map(env::split_paths).into_iter().flatten();
    env::join_paths(std::iter::once(dir.to_path_buf()).chain(rest))
        .with_context(|| format!("cannot put {} on PATH", dir.display()))
}

/// The first file called `name` in the directories of PATH.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_path_puts_dir_first() {
        let path = prepend_path(Path::new("/a/bin"), Some(OsStr::new("/usr/bin:/bin"))).unwrap();
        assert_eq!(path, "/a/bin:/usr/bin:/bin");
    }

    #[test]
    fn prepend_path_without_path() {
        assert_eq!(prepend_path(Path::new("/a/bin"), None).unwrap(), "/a/bin");
    }

    #[test]
    fn prepend_path_rejects_separator_in_dir() {
        assert!(prepend_path(Path::new("/a:b"), None).is_err());
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("xtask").join("Cargo.toml").is_file());
    }
}
