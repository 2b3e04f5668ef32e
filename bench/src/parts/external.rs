//! binutils `addr2line` and `llvm-symbolizer`, the references for symbolization: how to run them
//! on a batch of addresses and how to read their answers.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    Addr2line,
    LlvmSymbolizer,
}

impl Reference {
    pub fn label(self) -> &'static str {
        match self {
            Reference::Addr2line => "addr2line -f -i -C",
            Reference::LlvmSymbolizer => "llvm-symbolizer-22",
        }
    }

    fn command(self, binary: &Path) -> Command {
        let mut cmd;
        match self {
            Reference::Addr2line => {
                cmd = Command::new("addr2line");
                cmd.args(["-a", "-f", "-i", "-C", "-e"]).arg(binary);
            }
            Reference::LlvmSymbolizer => {
                cmd = Command::new("llvm-symbolizer-22");
                cmd.args(["-a", "-f", "-i", "-C"])
                    .arg(format!("--obj={}", binary.display()));
            }
        }
        cmd
    }

    pub fn shown(self) -> String {
        match self {
            Reference::Addr2line => "addr2line -a -f -i -C -e $BINARY < addresses".into(),
            Reference::LlvmSymbolizer => {
                "llvm-symbolizer-22 -a -f -i -C --obj=$BINARY < addresses".into()
            }
        }
    }

    /// Starts the tool as a server reading addresses from a pipe (both tools flush their answer
    /// to every address, for this use).
    pub fn start(self, binary: &Path) -> Result<Server> {
        let mut child = self
            .command(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {}: run `cargo xtask bench`, which installs it",
                    self.label()
                )
            })?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Server {
            reference: self,
            child,
            stdin,
            stdout,
        })
    }
}

/// A running reference symbolizer.
pub struct Server {
    reference: Reference,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// Written after each batch: its answer (`??`, no inlined frames) marks the batch's end, as the
/// batch's own addresses are never zero.
const SENTINEL: u64 = 0;

impl Server {
    /// Answers one batch (virtual addresses): the time it took and the function names per
    /// address, innermost first.
    pub fn batch(&mut self, addresses: &[u64]) -> Result<(Duration, Vec<Vec<String>>)> {
        let input: String = addresses
            .iter()
            .chain([&SENTINEL])
            .map(|a| format!("{a:#x}\n"))
            .collect();
        let start = Instant::now();
        let text = thread::scope(|scope| {
            let stdin = &mut self.stdin;
            // Written from a thread: the tool stops reading while its answers fill the pipe.
            let writer = scope.spawn(move || {
                stdin
                    .write_all(input.as_bytes())
                    .and_then(|()| stdin.flush())
            });
            let text = read_through_sentinel(&mut self.stdout, self.reference);
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
            text
        })?;
        let took = start.elapsed();
        let names = match self.reference {
            Reference::Addr2line => parse_addr2line(&text),
            Reference::LlvmSymbolizer => parse_llvm_symbolizer(&text),
        };
        ensure!(
            names.len() == addresses.len(),
            "{} answered {} addresses of {}",
            self.reference.label(),
            names.len(),
            addresses.len()
        );
        Ok((took, names))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads answers up to the sentinel's, which is left out.
fn read_through_sentinel(stdout: &mut impl BufRead, reference: Reference) -> Result<String> {
    let mut text = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        ensure!(
            stdout.read_line(&mut line)? > 0,
            "{} ended before answering",
            reference.label()
        );
        let is_sentinel = line
            .trim()
            .strip_prefix("0x")
            .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c == '0'));
        if is_sentinel {
            // addr2line: `??` and `??:0`; llvm-symbolizer: the same and an empty line.
            let rest = match reference {
                Reference::Addr2line => 2,
                Reference::LlvmSymbolizer => 3,
            };
            for _ in 0..rest {
                line.clear();
                stdout.read_line(&mut line)?;
            }
            return Ok(text);
        }
        text.push_str(&line);
    }
}

/// `??` means unknown: no name.
fn name(line: &str) -> Option<String> {
    let line = line.trim();
    (line != "??" && !line.is_empty()).then(|| line.to_owned())
}

fn is_address_line(line: &str) -> bool {
    line.strip_prefix("0x")
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `addr2line -a -f -i`: per address, a `0x…` line, then function and location lines for the
/// innermost inlined call out to the containing function.
pub fn parse_addr2line(text: &str) -> Vec<Vec<String>> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        if is_address_line(line) {
            blocks.push(Vec::new());
        } else if let Some(block) = blocks.last_mut() {
            block.push(line);
        }
    }
    blocks.iter().map(|block| functions(block)).collect()
}

/// `llvm-symbolizer -a -f -i`: the same, each address ending with an empty line.
pub fn parse_llvm_symbolizer(text: &str) -> Vec<Vec<String>> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        if line.is_empty() {
            blocks.extend(current.take());
        } else if current.is_none() && is_address_line(line) {
            current = Some(Vec::new());
        } else if let Some(block) = current.as_mut() {
            block.push(line);
        }
    }
    blocks.extend(current);
    blocks.iter().map(|block| functions(block)).collect()
}

/// Every other line of a block, from the first, is a function name.
fn functions(block: &[&str]) -> Vec<String> {
    block
        .iter()
        .step_by(2)
        .filter_map(|line| name(line))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addr2line_with_inlined_frames() {
        let text = "0x0000000000001234\ninner\n/src/a.rs:10\nouter\n/src/b.rs:20\n\
                    0x0000000000005678\n??\n??:0\n0x0000000000009abc\nmain\nmain.c:3\n";
        assert_eq!(
            parse_addr2line(text),
            [
                vec!["inner".to_owned(), "outer".to_owned()],
                vec![],
                vec!["main".to_owned()]
            ]
        );
    }

    #[test]
    fn reads_llvm_symbolizer_blocks() {
        let text = "0x1234\ninner\n/src/a.rs:10:5\nouter\n/src/b.rs:20:1\n\n0x5678\n??\n??:0:0\n\n";
        assert_eq!(
            parse_llvm_symbolizer(text),
            [vec!["inner".to_owned(), "outer".to_owned()], vec![]]
        );
    }

    #[test]
    fn batches_end_at_the_sentinel_answer() {
        let out = "0x0000000000001234\nf\na.rs:1\n0x0000000000000000\n??\n??:0\nnext\n";
        let mut reader = out.as_bytes();
        let text = read_through_sentinel(&mut reader, Reference::Addr2line).unwrap();
        assert_eq!(text, "0x0000000000001234\nf\na.rs:1\n");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
        assert_eq!(rest, "next\n");

        let out = "0x1234\nf\na.rs:1:2\n\n0x0\n??\n??:0:0\n\n";
        let text = read_through_sentinel(&mut out.as_bytes(), Reference::LlvmSymbolizer).unwrap();
        assert_eq!(parse_llvm_symbolizer(&text), [vec!["f".to_owned()]]);
    }

    #[test]
    fn a_tool_that_ends_early_is_an_error() {
        let out = "0x0000000000001234\nf\n";
        assert!(read_through_sentinel(&mut out.as_bytes(), Reference::Addr2line).is_err());
    }

    #[test]
    fn address_lines_are_hex() {
        assert!(is_address_line("0x00000000000012e4"));
        assert!(!is_address_line("0x"));
        assert!(!is_address_line("0xfoo"));
        assert!(!is_address_line("main"));
    }
}
