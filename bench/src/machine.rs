//! The machine a run measured, and the versions of the tools compared.

use std::{fmt::Write as _, fs, process::Command};

use procfs::Current;

use crate::report::Table;

#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub virtualized: bool,
    /// (tool, first line of its version output)
    pub tools: Vec<(String, String)>,
}

impl Machine {
    /// `profile_bee`: its binary, which is not on PATH.
    pub fn describe(profiler_version: &str, profile_bee: &std::path::Path) -> Self {
        let cpuinfo = procfs::CpuInfo::current().ok();
        let cpu = cpuinfo
            .as_ref()
            .and_then(|info| info.model_name(0).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        let virtualized = cpuinfo
            .as_ref()
            .and_then(|info| info.flags(0))
            .is_some_and(|flags| flags.contains(&"hypervisor"));
        let memory_gib = procfs::Meminfo::current()
            .map(|m| m.mem_total as f64 / (1u64 << 30) as f64)
            .unwrap_or(0.0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let mut tools = vec![("profiler".to_owned(), profiler_version.to_owned())];
        for (name, program, arg) in [
            ("perf", "perf", "--version"),
            ("bpftrace", "bpftrace", "--version"),
            ("addr2line", "addr2line", "--version"),
            ("llvm-symbolizer", "llvm-symbolizer-22", "--version"),
            ("gcc", "gcc", "--version"),
        ] {
            tools.push((name.to_owned(), first_line_of(program, arg)));
        }
        if profile_bee.is_file() {
            let version = first_line_of(&profile_bee.display().to_string(), "--version");
            tools.push(("profile-bee".to_owned(), version));
        }
        Self {
            cpu,
            cpus: crate::online_cpus(),
            memory_gib,
            kernel,
            virtualized,
            tools,
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let vm = if self.virtualized {
            " (a virtual machine: expect noise from neighbours)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{} online CPUs ({}){vm}, {:.1} GiB of memory, Linux {}.\n",
            self.cpus, self.cpu, self.memory_gib, self.kernel
        );
        let mut table = Table::new(&["Tool", "Version"]);
        for (tool, version) in &self.tools {
            table.row(vec![tool.clone(), version.clone()]);
        }
        out.push_str(&table.markdown());
        out
    }

    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self {
            cpu: "Test CPU".into(),
            cpus: 2,
            memory_gib: 4.0,
            kernel: "6.1.0".into(),
            virtualized: true,
            tools: vec![("perf".into(), "perf version 6.1".into())],
        }
    }
}

/// The first line of `program arg`'s output with a dotted version number (llvm-symbolizer
/// prints its name first and the version two lines down), else its first non-empty line.
fn first_line_of(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|out| version_line(&String::from_utf8_lossy(&out.stdout)))
        .unwrap_or_else(|| "not installed".into())
}

fn version_line(text: &str) -> Option<String> {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let first = lines.clone().next()?;
    let has_version = |line: &&str| {
        line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .any(|token| token.split('.').filter(|part| !part.is_empty()).count() >= 2)
    };
    let versioned = lines.find(has_version);
    Some(versioned.unwrap_or(first).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_machine_and_tools() {
        let md = Machine::for_tests().markdown();
        assert!(md.starts_with("2 online CPUs (Test CPU) (a virtual machine"));
        assert!(md.contains("| perf | perf version 6.1 |"));
    }

    #[test]
    fn picks_the_line_with_the_version() {
        let llvm = "llvm-symbolizer\nLLVM (http://llvm.org/):\n  LLVM version 22.1.8\n";
        assert_eq!(version_line(llvm).unwrap(), "LLVM version 22.1.8");
        assert_eq!(
            version_line("\nbpftrace v0.17.0\n").unwrap(),
            "bpftrace v0.17.0"
        );
        assert_eq!(version_line(""), None);
    }

    #[test]
    fn missing_tool_is_named_not_installed() {
        assert_eq!(
            first_line_of("no-such-program-here", "--version"),
            "not installed"
        );
    }
}
