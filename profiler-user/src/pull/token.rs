//! `--http-token-file`: the bearer token the pull endpoint asks for. The file is read again at
//! each request, so that a rotated secret (a Kubernetes Secret volume swaps a link) takes effect
//! without a restart; it is small and requests are rare.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use subtle::ConstantTimeEq as _;

/// A token file longer than this is refused.
const MAX_TOKEN_FILE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "cannot read --http-token-file {path}: {source}; give a readable file holding the token"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--http-token-file {path} is not a usable token: {why}; write one line of printable \
         characters (e.g. `head -c 32 /dev/urandom | base64 > FILE`)"
    )]
    Unusable { path: PathBuf, why: &'static str },
}

/// Where the token is; [`TokenFile::open`] checks it can be read.
#[derive(Clone, Debug)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        let file = Self {
            path: path.to_owned(),
        };
        file.read()?;
        Ok(file)
    }

    /// The token now: one line, surrounding white space removed.
    pub fn read(&self) -> Result<Vec<u8>, TokenError> {
        let unusable = |why| TokenError::Unusable {
            path: self.path.clone(),
            why,
        };
        let read = |source| TokenError::Read {
            path: self.path.clone(),
            source,
        };
        let file = fs::File::open(&self.path).map_err(read)?;
        if !file.metadata().map_err(read)?.is_file() {
            return Err(unusable("not a regular file"));
        }
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        if bytes.len() as u64 > MAX_TOKEN_FILE {
            return Err(unusable("longer than 4 KiB"));
        }
        let token = bytes.trim_ascii();
        if token.is_empty() {
            return Err(unusable("empty"));
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(unusable("it holds spaces, control or non-ASCII characters"));
        }
        Ok(token.to_vec())
    }

    /// Whether an `Authorization` header value carries the token. The comparison takes the same
    /// time wherever the first difference is (a different length shows only the length).
    pub fn admits(&self, authorization: Option<&[u8]>) -> Result<bool, TokenError> {
        let token = self.read()?;
        let Some(given) = authorization.and_then(bearer) else {
            return Ok(false);
        };
        Ok(bool::from(given.ct_eq(&token)))
    }
}

/// The credentials of `Bearer <token>` (the scheme is case-insensitive).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn admits_only_the_token_as_a_bearer() {
        let (_dir, path) = token_file("s3cret-token\n");
        let file = TokenFile::open(&path).unwrap();
        assert!(file.admits(Some(b"Bearer s3cret-token")).unwrap());
        assert!(file.admits(Some(b"bearer s3cret-token")).unwrap());
        assert!(!file.admits(Some(b"Bearer s3cret-tokem")).unwrap());
        assert!(!file.admits(Some(b"Bearer s3cret")).unwrap());
        assert!(!file.admits(Some(b"Basic s3cret-token")).unwrap());
        assert!(!file.admits(Some(b"s3cret-token")).unwrap());
        assert!(!file.admits(None).unwrap());
    }

    #[test]
    fn a_rotated_token_takes_effect_at_the_next_request() {
        let (_dir, path) = token_file("old");
        let file = TokenFile::open(&path).unwrap();
        fs::write(&path, "new").unwrap();
        assert!(!file.admits(Some(b"Bearer old")).unwrap());
        assert!(file.admits(Some(b"Bearer new")).unwrap());
    }

    #[test]
    fn unusable_files_are_refused_in_one_line() {
        for (text, why) in [
            ("  \n", "empty"),
            ("two words", "spaces"),
            (&"x".repeat(5000), "4 KiB"),
        ] {
            let (_dir, path) = token_file(text);
            let err = TokenFile::open(&path).unwrap_err().to_string();
            assert!(err.contains(why) && !err.contains('\n'), "{err}");
        }
        let err = TokenFile::open(Path::new("/nonexistent/token"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read --http-token-file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = TokenFile::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("regular file"), "{err}");
    }
}
