//! The initramfs every kernel boots: Debian's static busybox, the release profiler and the
//! traced fixture with the shared libraries they link (as `ldd` lists them; `cross.rs` lists the
//! arm64 ones), the fixture's trace IDs, `init.sh` and `check.sh`, written as an uncompressed
//! `newc` cpio archive (the format the kernel unpacks; no cpio tool needed).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::fixtures::Fixtures;
use crate::process;

/// The static busybox of Debian's `busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";

/// A shared library of the profiler: where it is here, and its path inside the VM.
pub struct Library {
    pub host: PathBuf,
    pub inside: String,
}

/// What the kernel runs as PID 1: mounts, then the check.
const INIT: &str = include_str!("init.sh");
/// The check itself, also run on the host (`host.rs`).
pub const CHECK: &str = include_str!("check.sh");

const LDD_LIMIT: Duration = Duration::from_secs(20);

/// Writes the archive to `path`: `profiler` is the binary to check, `fixtures` what runs beside
/// it, `libraries` what both link (one file per path inside).
pub fn build(
    busybox: &Path,
    profiler: &Path,
    fixtures: &Fixtures,
    libraries: &[Library],
    path: &Path,
) -> Result<()> {
    let mut archive = Archive::default();
    for dir in ["bin", "dev", "etc", "lib", "lib64", "proc", "sys", "tmp"] {
        archive.directory(dir);
    }
    // The kernel opens /dev/console for init's standard streams before anything is mounted.
    archive.char_device("dev/console", 5, 1);
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file("check.sh", 0o755, CHECK.as_bytes());
    archive.file("bin/busybox", 0o755, &read(busybox)?);
    archive.file("bin/profiler", 0o755, &read(profiler)?);
    archive.file("bin/traced", 0o755, &read(&fixtures.traced)?);
    archive.file("etc/trace_ids.h", 0o644, &read(&fixtures.trace_ids)?);
    for go in &fixtures.go_labels {
        let name = go
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("golabels");
        archive.file(&format!("bin/{name}"), 0o755, &read(go)?);
    }
    archive.file("etc/go_labels.go", 0o644, &read(&fixtures.go_source)?);
    let mut written = std::collections::HashSet::new();
    for library in libraries {
        if !written.insert(library.inside.as_str()) {
            continue;
        }
        if let Some((parent, _)) = library.inside.rsplit_once('/') {
            archive.directory(parent);
        }
        archive.file(&library.inside, 0o755, &read(&library.host)?);
    }
    fs::write(path, archive.finish()).with_context(|| format!("cannot write {}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The files `ldd` resolves for `binary` (none for a static one), at the same paths inside.
pub fn host_libraries(binary: &Path) -> Result<Vec<Library>> {
    let libraries = shared_libraries(binary)?;
    Ok(libraries
        .into_iter()
        .map(|host| Library {
            inside: host
                .strip_prefix("/")
                .unwrap_or(&host)
                .to_string_lossy()
                .into_owned(),
            host,
        })
        .collect())
}

/// The files `ldd` resolves for `binary` (none for a static one).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let mut ldd = Command::new("ldd");
    ldd.arg(binary);
    let output = match process::output_bounded(&mut ldd, LDD_LIMIT) {
        Ok(output) => output,
        // ldd exits 1 with "not a dynamic executable" for a static binary.
        Err(err) if err.to_string().contains("not a dynamic executable") => return Ok(Vec::new()),
        Err(err) => {
            return Err(err.context(format!(
                "could not list the shared libraries of {}",
                binary.display()
            )));
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let libraries = parse_ldd(&text)?;
    Ok(libraries)
}

/// The paths in `ldd` output: `name => /path (address)` and the loader's `/path (address)`.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if line.contains("=> not found") {
            bail!("a shared library is missing: {line}");
        }
        let path = line
            .rsplit_once("=>")
            .map_or(line, |(_, after)| after)
            .trim();
        let path = path.split_whitespace().next().unwrap_or_default();
        // linux-vdso.so.1 has no file.
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// A `newc` cpio archive under construction (see the kernel's
/// Documentation/driver-api/early-userspace/buffer-format.rst).
#[derive(Default)]
struct Archive {
    bytes: Vec<u8>,
    next_inode: u32,
    directories: Vec<String>,
}

impl Archive {
    fn directory(&mut self, path: &str) {
        // Parents first: the kernel creates each entry where its path says.
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.directories.contains(&prefix) {
                self.directories.push(prefix.clone());
                let name = prefix.clone();
                self.entry(&name, 0o040_755, 0, &[]);
            }
        }
    }

    fn file(&mut self, path: &str, permissions: u32, data: &[u8]) {
        self.entry(path, 0o100_000 | permissions, 0, data);
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, 0o020_600, (major << 8) | minor, &[]);
    }

    /// `rdev` holds major << 8 | minor.
    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.next_inode += 1;
        let name_size = u32::try_from(name.len() + 1).expect("short path");
        let file_size = u32::try_from(data.len()).expect("file under 4 GiB");
        let fields = [
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime: reproducible archives
            file_size,
            0, // devmajor
            0, // devminor
            rdev >> 8,
            rdev & 0xff,
            name_size,
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f65)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f66)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn missing_library_is_an_error() {
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn entries_are_newc_and_aligned() {
        let mut archive = Archive::default();
        archive.directory("lib/x86_64-linux-gnu");
        archive.file("init", 0o755, b"#!x");
        let bytes = archive.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        // lib, lib/x86_64-linux-gnu, init, trailer.
        assert_eq!(bytes.windows(6).filter(|w| w == b"070701").count(), 4);
        let tail = String::from_utf8_lossy(&bytes[bytes.len() - 16..]).into_owned();
        assert!(tail.contains("TRAILER!!!"), "{tail:?}");
    }
}
