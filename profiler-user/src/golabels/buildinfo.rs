//! The Go release an executable was built with, from its `.go.buildinfo` section, which the
//! linker writes into every Go executable since Go 1.13, stripped ones included
//! (`-ldflags="-s -w"` drops symbols and DWARF, not this). Written by hand: no crate reads it.
//! Only the Go 1.18+ format (version string inline, varint length) is read: the releases the
//! profiler supports start at 1.19.

use object::{Object as _, ObjectSection as _, ReadRef};

/// The section's first 14 bytes.
const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Header size before the inline strings.
const HEADER_LEN: usize = 32;
/// `flags` bit of the inline-string format (Go 1.18+).
const FLAG_INLINE: u8 = 0x2;
/// Bytes of the section read at most: the header and the version string (the module info after
/// it is not needed).
const MAX_READ: u64 = 4096;

/// A Go release, `go1.21.13` -> 1.21 (patch releases keep the runtime's layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for GoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "go{}.{}", self.major, self.minor)
    }
}

/// Errors of reading the build information.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("malformed ELF file")]
    Elf,
    #[error("malformed .go.buildinfo: {0}")]
    Malformed(&'static str),
    #[error("unsupported .go.buildinfo format (before Go 1.18)")]
    OldFormat,
    #[error("unknown Go version string {0:?}")]
    Version(String),
}

/// The executable's Go release; `Ok(None)` when it has no `.go.buildinfo` (not Go).
pub fn go_version<'data>(elf: impl ReadRef<'data>) -> Result<Option<GoVersion>, BuildInfoError> {
    let file = object::File::parse(elf).map_err(|_| BuildInfoError::Elf)?;
    let Some(section) = file.section_by_name(".go.buildinfo") else {
        return Ok(None);
    };
    let (offset, size) = section
        .file_range()
        .ok_or(BuildInfoError::Malformed("no file data"))?;
    let bytes = elf
        .read_bytes_at(offset, size.min(MAX_READ))
        .map_err(|()| BuildInfoError::Malformed("unreadable"))?;
    parse(bytes).map(Some)
}

/// The release in the section's bytes.
pub fn parse(bytes: &[u8]) -> Result<GoVersion, BuildInfoError> {
    if bytes.len() < HEADER_LEN || !bytes.starts_with(MAGIC) {
        return Err(BuildInfoError::Malformed("no magic"));
    }
    if bytes[MAGIC.len() + 1] & FLAG_INLINE == 0 {
        return Err(BuildInfoError::OldFormat);
    }
    let rest = &bytes[HEADER_LEN..];
    let (len, used) = uvarint(rest).ok_or(BuildInfoError::Malformed("version length"))?;
    let text = usize::try_from(len)
        .ok()
        .and_then(|len| rest.get(used..used.checked_add(len)?))
        .ok_or(BuildInfoError::Malformed("version string"))?;
    let text = std::str::from_utf8(text).map_err(|_| BuildInfoError::Malformed("version"))?;
    parse_version(text).ok_or_else(|| BuildInfoError::Version(text.to_owned()))
}

/// `go1.21.13`, `go1.24.0 X:nocoverageredesign`, `go1.22rc1` -> the release.
fn parse_version(text: &str) -> Option<GoVersion> {
    let rest = text.strip_prefix("go")?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some(GoVersion { major, minor })
}

/// Go's `binary.Uvarint`: at most 10 bytes.
fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(version: &str, flags: u8) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend([8, flags]);
        bytes.resize(HEADER_LEN, 0);
        bytes.push(version.len() as u8);
        bytes.extend(version.as_bytes());
        bytes
    }

    #[test]
    fn reads_the_inline_version() {
        let v = parse(&section("go1.21.13", 2)).unwrap();
        assert_eq!(
            v,
            GoVersion {
                major: 1,
                minor: 21
            }
        );
        assert_eq!(v.to_string(), "go1.21");
        let v = parse(&section("go1.24.0 X:nocoverageredesign", 2)).unwrap();
        assert_eq!(v.minor, 24);
        assert_eq!(parse(&section("go1.22rc1", 2)).unwrap().minor, 22);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(parse(&section("go1.17", 0)), Err(BuildInfoError::OldFormat));
        assert!(matches!(
            parse(&section("devel +abc", 2)),
            Err(BuildInfoError::Version(_))
        ));
        assert!(parse(b"\xff Go buildinf:").is_err());
        let mut long = section("go1.21.1", 2);
        long[HEADER_LEN] = 200;
        assert!(parse(&long).is_err());
        assert_eq!(uvarint(&[0xff; 12]), None);
    }
}
