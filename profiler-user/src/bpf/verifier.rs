//! A program the kernel's verifier refused: its log (hundreds of lines) goes to a file in the
//! output directory, and the error is one line with the verifier's reason and that file's path.

use std::{io::Write, path::Path};

use aya::programs::ProgramError;

use super::BpfError;

/// The refused program, the syscall's error and the verifier's log, when `err` is that.
pub fn refusal(err: &BpfError) -> Option<(&'static str, &std::io::Error, String)> {
    match err {
        BpfError::Program {
            name,
            source:
                ProgramError::LoadError {
                    io_error,
                    verifier_log,
                },
        } => Some((name, io_error, verifier_log.to_string())),
        _ => None,
    }
}

/// The line of a verifier log that says why: the last one before the statistics the verifier
/// appends (`verification time`, `stack depth`, `processed N insns`).
pub fn reason(log: &str) -> Option<&str> {
    log.lines().map(str::trim).rev().find(|line| {
        !line.is_empty()
            && !line.starts_with("verification time")
            && !line.starts_with("stack depth")
            && !line.starts_with("processed ")
            && !line.starts_with("max_states_per_insn")
    })
}

/// Writes `log` to `dir/verifier-<program>-<UTC time>.log` (a new file of our own); returns its
/// path.
pub fn keep_log(dir: &Path, program: &str, log: &str) -> std::io::Result<std::path::PathBuf> {
    let time = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let path = dir.join(format!("verifier-{program}-{time}.log"));
    crate::safe_file::replace(&path, |mut file| file.write_all(log.as_bytes()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_last_line_before_the_statistics() {
        let log = "116: (bf) r1 = r8\n117: (85) call bpf_get_current_ancestor_cgroup_id#123\n\
                   unknown func bpf_get_current_ancestor_cgroup_id#123\n\
                   verification time 25024 usec\nstack depth 136+0+0\n\
                   processed 58 insns (limit 1000000) max_states_per_insn 0 total_states 4\n";
        assert_eq!(
            reason(log),
            Some("unknown func bpf_get_current_ancestor_cgroup_id#123")
        );
        assert_eq!(reason(""), None);
    }

    #[test]
    fn the_log_is_a_new_file_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = keep_log(dir.path(), "sample", "the log\n").unwrap();
        assert!(path.starts_with(dir.path()));
        assert!(
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("verifier-sample-")
        );
        assert_eq!(std::fs::read_to_string(path).unwrap(), "the log\n");
    }
}
