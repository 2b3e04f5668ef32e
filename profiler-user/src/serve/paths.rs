//! Which request paths name a file of the served directory. A request path is refused (400, and
//! a warning in the log) when it tries to leave the directory in any spelling: a `..` or `.`
//! segment, raw or percent-encoded, an encoded slash or backslash, an absolute path, a NUL, or a
//! symlink whose target lies outside. A plain relative path to nothing is a 404.

use std::{
    fs, io,
    path::{Component, Path, PathBuf},
};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Why a path was not served.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It tries to leave the directory, or is not a plain relative path (400).
    Outside(&'static str),
    /// Nothing (readable) there, or not a profile (404).
    NotFound,
}

/// Checks a raw (still percent-encoded) relative path from a request and decodes it.
pub fn decode(raw: &str) -> Result<String, Refusal> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(Refusal::Outside("an encoded slash"));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Refusal::Outside("not UTF-8"))?;
    check_relative(&decoded)?;
    Ok(decoded.into_owned())
}

/// Checks an already decoded relative path (a query parameter).
pub fn check_relative(path: &str) -> Result<(), Refusal> {
    if path.is_empty() {
        return Err(Refusal::NotFound);
    }
    if path.contains('\0') {
        return Err(Refusal::Outside("a NUL byte"));
    }
    if path.starts_with('/') || path.contains('\\') {
        return Err(Refusal::Outside("an absolute path"));
    }
    for segment in path.split('/') {
        match segment {
            ".." => return Err(Refusal::Outside("a `..` segment")),
            "." | "" => return Err(Refusal::Outside("an empty or `.` segment")),
            _ => {}
        }
    }
    // Belt and braces: whatever the platform makes of it, only normal components pass.
    if !Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(Refusal::Outside("not a plain relative path"));
    }
    Ok(())
}

/// The file `relative` (checked by [`check_relative`]) names under `root` (canonical), with
/// symlinks resolved; it must stay under `root`. Hidden names are not served.
pub fn resolve(root: &Path, relative: &str) -> Result<PathBuf, Refusal> {
    check_relative(relative)?;
    if relative.split('/').any(|segment| segment.starts_with('.')) {
        return Err(Refusal::NotFound);
    }
    let real = match fs::canonicalize(root.join(relative)) {
        Ok(real) => real,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(Refusal::NotFound),
        Err(_) => return Err(Refusal::NotFound),
    };
    if !real.starts_with(root) {
        return Err(Refusal::Outside("a symlink out of the directory"));
    }
    Ok(real)
}

/// What a path segment of a link must encode (RFC 3986 `pchar` is what stays).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// What a query value of a link must encode (the slash may stay).
const QUERY_VALUE: &AsciiSet = &SEGMENT.remove(b'/').add(b'&').add(b'+').add(b'=').add(b';');

/// `relative` as the path of a link: each segment percent-encoded.
pub fn link_path(relative: &str) -> String {
    relative
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// `value` as a query parameter value of a link.
pub fn query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn refuses_every_way_out() {
        for raw in [
            "../etc/passwd",
            "traces/../../etc/passwd",
            "%2e%2e/etc/passwd",
            "%2E%2E/%2E%2E/etc/passwd",
            "..%2fetc%2fpasswd",
            "traces%2fx.pb.gz",
            "..%5cx",
            "/etc/passwd",
            "%2fetc%2fpasswd",
            "a//b",
            "./x",
            "x%00y",
        ] {
            assert!(
                matches!(decode(raw), Err(Refusal::Outside(_))),
                "{raw}: {:?}",
                decode(raw)
            );
        }
        assert_eq!(decode("traces/ab.pb.gz").unwrap(), "traces/ab.pb.gz");
        assert_eq!(decode("a%20b.pb.gz").unwrap(), "a b.pb.gz");
        assert_eq!(decode(""), Err(Refusal::NotFound));
    }

    #[test]
    fn resolves_inside_and_refuses_symlinks_that_leave() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.pb.gz"), b"secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::write(root.join("cpu-1.pb.gz"), b"x").unwrap();
        fs::write(root.join(".cpu-2.pb.gz.tmp"), b"x").unwrap();
        symlink(outside.path().join("secret.pb.gz"), root.join("leak.pb.gz")).unwrap();
        symlink(outside.path(), root.join("out")).unwrap();
        symlink(root.join("cpu-1.pb.gz"), root.join("alias.pb.gz")).unwrap();

        assert_eq!(
            resolve(&root, "cpu-1.pb.gz").unwrap(),
            root.join("cpu-1.pb.gz")
        );
        assert_eq!(
            resolve(&root, "alias.pb.gz").unwrap(),
            root.join("cpu-1.pb.gz")
        );
        assert!(matches!(
            resolve(&root, "leak.pb.gz"),
            Err(Refusal::Outside(_))
        ));
        assert!(matches!(
            resolve(&root, "out/secret.pb.gz"),
            Err(Refusal::Outside(_))
        ));
        assert_eq!(resolve(&root, "none.pb.gz"), Err(Refusal::NotFound));
        assert_eq!(resolve(&root, ".cpu-2.pb.gz.tmp"), Err(Refusal::NotFound));
        assert!(matches!(resolve(&root, "../x"), Err(Refusal::Outside(_))));
    }

    #[test]
    fn links_encode_what_they_must() {
        assert_eq!(link_path("traces/ab.pb.gz"), "traces/ab.pb.gz");
        assert_eq!(link_path("a b#?.pb.gz"), "a%20b%23%3F.pb.gz");
        assert_eq!(query_value("traces/a&b=c.pb.gz"), "traces/a%26b%3Dc.pb.gz");
    }
}
