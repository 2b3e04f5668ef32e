//! Helpers for the profiler's root integration tests: find (or build) the `profiler` binary, run
//! it with a timeout, spawn the fixtures of `tests/fixtures/`, decode the pprof files it writes
//! and read stacks and labels out of them, and cross-check files with `go tool pprof`.
//!
//! Tests that load BPF call [`require_root`] first: it skips them on a developer's machine and
//! fails them in CI (`CI=true`), where they must run.

use std::{
    collections::HashMap,
    env,
    ffi::{OsStr, OsString},
    fs,
    io::Read,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use prost::Message;

pub use profiler::profile::proto::{Function, Label, Line, Location, Mapping, Profile, Sample};

/// C fixture: main -> fixture_outer -> fixture_middle -> fixture_hot_leaf, CPU-bound.
pub const HOT_C: &str = env!("FIXTURE_HOT_C");
/// C fixture spending its time in `read(2)` of /dev/zero, called from fixture_syscall_loop.
pub const SYSCALLS_C: &str = env!("FIXTURE_SYSCALLS_C");
/// Rust fixture: rust_fixture_outer -> rust_fixture_middle -> rust_fixture_hot_leaf on a thread
/// named [`RUST_WORKER_THREAD`].
pub const HOT_RUST: &str = env!("FIXTURE_HOT_RUST");
/// Name of the thread of [`HOT_RUST`] that burns CPU.
pub const RUST_WORKER_THREAD: &str = "rust-hot-worker";

/// Filename of the mapping that kernel frames belong to.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
/// The rate the recording tests ask for: not the default, so the period check means something.
pub const TEST_FREQUENCY: u32 = 99;

// ---------------------------------------------------------------------------------------------
// Privileges

/// Whether a test that needs root may run. Not root: prints a "skipped" line and returns false,
/// except in CI (`CI=true`), where a skipped test would hide a failure, so it panics.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let test = thread::current().name().unwrap_or("this test").to_owned();
    if env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root, and CI=true: a skipped test in CI is a failure");
    }
    eprintln!(
        "skipped: needs root ({test} loads BPF programs; run `cargo xtask test` or the tests as root)"
    );
    false
}

// ---------------------------------------------------------------------------------------------
// The binary under test

/// The workspace root (parent of this package).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
}

/// The `profiler` binary: `$PROFILER_BIN`, else `<target>/release/profiler`, built once with
/// `cargo build --release -p profiler-user` if missing.
pub fn profiler_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| locate_profiler().unwrap_or_else(|err| panic!("{err:#}")))
}

fn locate_profiler() -> Result<PathBuf> {
    if let Some(bin) = env::var_os("PROFILER_BIN") {
        let bin = PathBuf::from(bin);
        ensure!(
            bin.is_file(),
            "PROFILER_BIN={} is not a file",
            bin.display()
        );
        return Ok(bin);
    }
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace_root().join(dir))
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target_dir.join("release/profiler");
    if !bin.is_file() {
        build_profiler()?;
    }
    ensure!(bin.is_file(), "{} missing after the build", bin.display());
    Ok(bin)
}

fn build_profiler() -> Result<()> {
    // The BPF build inside profiler-user needs bpf-linker from ~/.cargo/bin.
    let mut path = OsString::new();
    if let Some(home) = env::var_os("HOME") {
        path.push(Path::new(&home).join(".cargo/bin"));
        path.push(":");
    }
    path.push(env::var_os("PATH").unwrap_or_default());
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the profiler: cargo build --release -p profiler-user");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "profiler-user"])
        .current_dir(workspace_root())
        .env("PATH", path)
        .status()
        .context("running cargo build for the profiler")?;
    ensure!(
        status.success(),
        "cargo build --release -p profiler-user: {status}"
    );
    Ok(())
}

/// A command running the profiler, with no `PROFILER_*` variable inherited from the caller's
/// environment (those are flag fallbacks and would change what the test asks for).
pub fn profiler_command() -> Command {
    let mut cmd = Command::new(profiler_bin());
    strip_profiler_env(&mut cmd);
    cmd
}

/// `profiler record --output-dir <out_dir> <args>`.
pub fn record_command(out_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = profiler_command();
    cmd.arg("record")
        .arg("--output-dir")
        .arg(out_dir)
        .args(args);
    cmd
}

/// `<wrapper...> <profiler> record --output-dir <out_dir> <args>`, e.g. under `setpriv`.
pub fn wrapped_record_command(
    wrapper: &[&str],
    bin: &Path,
    out_dir: &Path,
    args: &[&str],
) -> Command {
    let (program, wrapper_args) = wrapper.split_first().expect("a wrapper program");
    let mut cmd = Command::new(program);
    cmd.args(wrapper_args)
        .arg(bin)
        .arg("record")
        .arg("--output-dir")
        .arg(out_dir)
        .args(args);
    strip_profiler_env(&mut cmd);
    cmd
}

fn strip_profiler_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("PROFILER_") {
            cmd.env_remove(key);
        }
    }
}

/// A copy of the profiler that any user can execute (the original may sit in a directory only
/// root can enter), in a world-readable temp dir that lives as long as the returned guard.
pub fn world_executable_profiler() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("profiler");
    fs::copy(profiler_bin(), &bin).context("copying the profiler")?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    Ok((dir, bin))
}

/// A temp dir every user may write to, for runs under a dropped identity.
pub fn world_writable_tempdir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// Running a process with a timeout

/// What a finished run printed, and how it ended.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// Exit code 0 and no panic.
    pub fn ensure_success(&self) -> Result<()> {
        self.ensure_no_panic()?;
        ensure!(
            self.status.code() == Some(0),
            "profiler ended with {}; stderr:\n{}",
            self.status,
            self.stderr
        );
        Ok(())
    }

    /// A clean failure: non-zero exit code (not a signal), no panic, and the last non-empty line
    /// of stderr is `error: ...` containing every word of `words` (earlier lines may be logs).
    pub fn ensure_error(&self, words: &[&str]) -> Result<()> {
        self.ensure_no_panic()?;
        let code = self.status.code().ok_or_else(|| {
            anyhow!(
                "profiler killed by {:?} instead of exiting with an error",
                self.status.signal()
            )
        })?;
        ensure!(
            code != 0,
            "profiler exited 0; expected an error. stderr:\n{}",
            self.stderr
        );
        let line = self.last_stderr_line().unwrap_or("");
        ensure!(
            line.starts_with("error: ") && line.len() > "error: ".len(),
            "last line of stderr is not `error: ...`: {line:?}; stderr:\n{}",
            self.stderr
        );
        for word in words {
            ensure!(line.contains(word), "error line lacks {word:?}: {line:?}");
        }
        let error_lines = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count();
        ensure!(
            error_lines == 1,
            "{error_lines} `error: ` lines; stderr:\n{}",
            self.stderr
        );
        Ok(())
    }

    /// The last non-empty line of stderr, trimmed.
    pub fn last_stderr_line(&self) -> Option<&str> {
        self.stderr.lines().map(str::trim).rfind(|l| !l.is_empty())
    }

    fn ensure_no_panic(&self) -> Result<()> {
        for marker in ["panicked", "stack backtrace"] {
            ensure!(
                !self.stderr.contains(marker),
                "profiler stderr shows a panic ({marker:?}):\n{}",
                self.stderr
            );
        }
        Ok(())
    }
}

/// A running child whose output is collected on background threads (so it never blocks on a
/// full pipe). Killed when dropped unless waited for.
pub struct Running {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    waited: bool,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Result<Running> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let stdout = child.stdout.take().map(collect);
        let stderr = child.stderr.take().map(collect);
        Ok(Running {
            child,
            stdout,
            stderr,
            waited: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) -> Result<()> {
        send_signal(self.pid(), signal)
    }

    /// Waits until the process holds at least one perf event per CPU, i.e. it samples. Returns
    /// false on timeout or exit: callers go on and let their assertions decide.
    pub fn wait_until_sampling(&self, timeout: Duration) -> bool {
        let want = thread::available_parallelism().map_or(1, |n| n.get());
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match count_perf_event_fds(self.pid()) {
                Some(n) if n >= want => return true,
                Some(_) => thread::sleep(Duration::from_millis(50)),
                None => return false,
            }
        }
        false
    }

    /// Whether the process is still running (without blocking).
    pub fn is_running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Waits for the exit; on timeout kills the process and fails with what it printed.
    pub fn wait(mut self, timeout: Duration) -> Result<RunOutput> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let timed_out = status.is_none();
        let status = match status {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                self.child.wait()?
            }
        };
        self.waited = true;
        let output = RunOutput {
            status,
            stdout: join_output(self.stdout.take()),
            stderr: join_output(self.stderr.take()),
        };
        ensure!(
            !timed_out,
            "still running after {timeout:?}, killed; stderr:\n{}",
            output.stderr
        );
        Ok(output)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join_output(handle: Option<JoinHandle<String>>) -> String {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

fn count_perf_event_fds(pid: u32) -> Option<usize> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let count = fds
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("perf_event"))
        .count();
    Some(count)
}

/// Runs `cmd` to completion within `timeout`.
pub fn run(cmd: Command, timeout: Duration) -> Result<RunOutput> {
    Running::spawn(cmd)?.wait(timeout)
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A running fixture process, killed and reaped when dropped.
pub struct Fixture {
    child: Child,
    path: PathBuf,
}

impl Fixture {
    /// Starts the fixture at `path` and waits until it has exec'd, so that the profiler sees its
    /// final executable and comm, not the test binary's.
    pub fn spawn(path: &str, args: &[&str]) -> Result<Fixture> {
        let path = fs::canonicalize(path).with_context(|| format!("fixture {path} missing"))?;
        let child = Command::new(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", path.display()))?;
        let fixture = Fixture { child, path };
        fixture.wait_for_exec()?;
        Ok(fixture)
    }

    fn wait_for_exec(&self) -> Result<()> {
        let exe = format!("/proc/{}/exe", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if fs::read_link(&exe).is_ok_and(|target| target == self.path) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        bail!("{} did not exec within 10 s", self.path.display())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The PID as a command-line argument.
    pub fn pid_arg(&self) -> String {
        self.pid().to_string()
    }

    /// The canonical path of the executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel's `comm` of the process: the executable's name cut to 15 bytes.
    pub fn expected_comm(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(OsStr::to_string_lossy)
            .unwrap_or_default();
        name.chars().take(15).collect()
    }

    /// The GNU build ID of the executable, lowercase hex.
    pub fn build_id(&self) -> Result<String> {
        elf_build_id(&self.path)
    }

    /// Waits for the fixture to exit (reaping it, so it does not linger as a zombie).
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "fixture still running after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PID of a process that existed and has been reaped: no process has it (PIDs are not
/// reused this quickly).
pub fn reaped_pid() -> Result<u32> {
    let mut child = Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

fn elf_build_id(path: &Path) -> Result<String> {
    use object::Object;
    let data = fs::read(path)?;
    let file = object::File::parse(&*data)?;
    let id = file
        .build_id()?
        .ok_or_else(|| anyhow!("{} has no build ID", path.display()))?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}

// ---------------------------------------------------------------------------------------------
// Reading profiles

/// One decoded pprof file, with its tables indexed by ID.
pub struct Pprof {
    pub path: PathBuf,
    pub profile: Profile,
    locations: HashMap<u64, usize>,
    functions: HashMap<u64, usize>,
    mappings: HashMap<u64, usize>,
}

/// One frame of a sample's stack, after inline expansion.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Function name ("" when the profiler could not name it).
    pub function: String,
    /// Filename of the location's mapping ("" when the location has none).
    pub mapping: String,
}

impl Frame {
    pub fn is_kernel(&self) -> bool {
        self.mapping == KERNEL_MAPPING
    }
}

/// Every `*.pb.gz` in `dir`, decoded, in name order (= time order). Fails on a `.pb.gz` whose
/// name is not `cpu-<%Y%m%dT%H%M%SZ>[-N].pb.gz`.
pub fn read_profiles(dir: &Path) -> Result<Vec<Pprof>> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".pb.gz") {
            ensure!(is_profile_file_name(&name), "unexpected file name {name:?}");
            paths.push(path);
        }
    }
    paths.sort();
    paths.into_iter().map(|p| Pprof::read(&p)).collect()
}

/// Files left in `dir` that are not finished profiles' names yet look like temp files.
pub fn leftover_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut left = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(".tmp") {
            left.push(path);
        }
    }
    Ok(left)
}

/// `cpu-YYYYmmddTHHMMSSZ.pb.gz` or `cpu-YYYYmmddTHHMMSSZ-N.pb.gz`.
pub fn is_profile_file_name(name: &str) -> bool {
    let Some(stem) = name
        .strip_prefix("cpu-")
        .and_then(|n| n.strip_suffix(".pb.gz"))
    else {
        return false;
    };
    let (stamp, suffix) = match stem.split_once('-') {
        Some((stamp, n)) => (stamp, Some(n)),
        None => (stem, None),
    };
    let b = stamp.as_bytes();
    let stamp_ok = b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    let suffix_ok = suffix.is_none_or(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
    stamp_ok && suffix_ok
}

impl Pprof {
    /// Decodes a gzip-compressed pprof file.
    pub fn read(path: &Path) -> Result<Pprof> {
        let compressed = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut raw)
            .with_context(|| format!("gunzip {}", path.display()))?;
        let profile =
            Profile::decode(&raw[..]).with_context(|| format!("decoding {}", path.display()))?;
        Ok(Pprof::new(path.to_owned(), profile))
    }

    pub fn new(path: PathBuf, profile: Profile) -> Pprof {
        let index = |ids: Vec<u64>| ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        Pprof {
            locations: index(profile.location.iter().map(|l| l.id).collect()),
            functions: index(profile.function.iter().map(|f| f.id).collect()),
            mappings: index(profile.mapping.iter().map(|m| m.id).collect()),
            path,
            profile,
        }
    }

    /// A string-table entry ("" when out of range; [`Pprof::check_well_formed`] catches that).
    pub fn str(&self, index: i64) -> &str {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.profile.string_table.get(i))
            .map_or("", String::as_str)
    }

    pub fn location(&self, id: u64) -> Option<&Location> {
        self.locations.get(&id).map(|&i| &self.profile.location[i])
    }

    pub fn function(&self, id: u64) -> Option<&Function> {
        self.functions.get(&id).map(|&i| &self.profile.function[i])
    }

    pub fn mapping(&self, id: u64) -> Option<&Mapping> {
        self.mappings.get(&id).map(|&i| &self.profile.mapping[i])
    }

    /// Samples whose `pid` label is `pid`.
    pub fn samples_of_pid(&self, pid: u32) -> impl Iterator<Item = &Sample> {
        self.profile
            .sample
            .iter()
            .filter(move |s| self.label_num(s, "pid") == Some(i64::from(pid)))
    }

    pub fn label_num(&self, sample: &Sample, key: &str) -> Option<i64> {
        self.label(sample, key).map(|l| l.num)
    }

    /// A string label's value; None if absent or numeric.
    pub fn label_str(&self, sample: &Sample, key: &str) -> Option<&str> {
        self.label(sample, key)
            .filter(|l| l.str != 0)
            .map(|l| self.str(l.str))
    }

    fn label<'a>(&self, sample: &'a Sample, key: &str) -> Option<&'a Label> {
        sample.label.iter().find(|l| self.str(l.key) == key)
    }

    /// Index of the sample value of type `kind` (e.g. "samples", "cpu").
    pub fn value_index(&self, kind: &str) -> Option<usize> {
        self.profile
            .sample_type
            .iter()
            .position(|t| self.str(t.r#type) == kind)
    }

    /// The sample's `samples/count` value.
    pub fn count(&self, sample: &Sample) -> i64 {
        self.value(sample, "samples")
    }

    /// The sample's value of type `kind` (0 if the profile has no such type).
    pub fn value(&self, sample: &Sample, kind: &str) -> i64 {
        self.value_index(kind)
            .and_then(|i| sample.value.get(i).copied())
            .unwrap_or(0)
    }

    /// The stack, leaf first, with inlined functions expanded (innermost first).
    pub fn frames(&self, sample: &Sample) -> Vec<Frame> {
        let mut frames = Vec::new();
        for &id in &sample.location_id {
            let Some(loc) = self.location(id) else {
                frames.push(Frame {
                    function: String::new(),
                    mapping: String::new(),
                });
                continue;
            };
            let mapping = self
                .mapping(loc.mapping_id)
                .map(|m| self.str(m.filename).to_owned())
                .unwrap_or_default();
            if loc.line.is_empty() {
                frames.push(Frame {
                    function: String::new(),
                    mapping: mapping.clone(),
                });
            }
            for line in &loc.line {
                let function = self
                    .function(line.function_id)
                    .map(|f| self.str(f.name).to_owned())
                    .unwrap_or_default();
                frames.push(Frame {
                    function,
                    mapping: mapping.clone(),
                });
            }
        }
        frames
    }

    /// Function names of the stack, leaf first.
    pub fn stack_names(&self, sample: &Sample) -> Vec<String> {
        self.frames(sample)
            .into_iter()
            .map(|f| f.function)
            .collect()
    }

    /// Whether any sample's stack names a function matching `want`.
    pub fn mentions(&self, want: Want) -> bool {
        self.profile
            .sample
            .iter()
            .any(|s| self.stack_names(s).iter().any(|n| want.matches(n)))
    }

    /// Structure every profile must have: sample types [samples/count, cpu/nanoseconds], period
    /// cpu/nanoseconds of 1e9/frequency (±1), times set, every reference resolvable, the four
    /// thread labels on every sample.
    pub fn check_well_formed(&self, frequency: u32) -> Result<()> {
        let name = self.path.display();
        let p = &self.profile;
        ensure!(
            p.string_table.first().is_some_and(String::is_empty),
            "{name}: string_table[0] must be \"\""
        );
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (self.str(t.r#type), self.str(t.unit)))
            .collect();
        ensure!(
            types == [("samples", "count"), ("cpu", "nanoseconds")],
            "{name}: sample types {types:?}"
        );
        let period_type = p
            .period_type
            .as_ref()
            .map(|t| (self.str(t.r#type), self.str(t.unit)));
        ensure!(
            period_type == Some(("cpu", "nanoseconds")),
            "{name}: period type {period_type:?}"
        );
        let want_period = 1_000_000_000 / i64::from(frequency);
        ensure!(
            (p.period - want_period).abs() <= 1,
            "{name}: period {} for {frequency} Hz, want {want_period}",
            p.period
        );
        ensure!(p.time_nanos > 0, "{name}: time_nanos {}", p.time_nanos);
        ensure!(
            p.duration_nanos > 0,
            "{name}: duration_nanos {}",
            p.duration_nanos
        );
        self.check_references()?;
        for sample in &p.sample {
            self.check_sample(sample)?;
        }
        Ok(())
    }

    fn check_references(&self) -> Result<()> {
        let name = self.path.display();
        let strings = self.profile.string_table.len() as i64;
        let in_table = |i: i64| (0..strings).contains(&i);
        for m in &self.profile.mapping {
            ensure!(m.id != 0, "{name}: mapping with id 0");
            ensure!(
                in_table(m.filename) && in_table(m.build_id),
                "{name}: mapping {} strings",
                m.id
            );
        }
        for f in &self.profile.function {
            ensure!(
                in_table(f.name) && in_table(f.system_name),
                "{name}: function {}",
                f.id
            );
        }
        for loc in &self.profile.location {
            ensure!(
                self.mapping(loc.mapping_id).is_some(),
                "{name}: location {} has mapping {} that does not exist",
                loc.id,
                loc.mapping_id
            );
            for line in &loc.line {
                ensure!(
                    self.function(line.function_id).is_some(),
                    "{name}: location {} names missing function {}",
                    loc.id,
                    line.function_id
                );
            }
        }
        Ok(())
    }

    fn check_sample(&self, s: &Sample) -> Result<()> {
        let name = self.path.display();
        ensure!(
            s.value.len() == 2,
            "{name}: sample with {} values",
            s.value.len()
        );
        ensure!(
            s.value[0] > 0 && s.value[1] > 0,
            "{name}: sample values {:?}",
            s.value
        );
        ensure!(
            !s.location_id.is_empty(),
            "{name}: sample without locations"
        );
        for id in &s.location_id {
            ensure!(
                self.location(*id).is_some(),
                "{name}: sample names missing location {id}"
            );
        }
        for key in ["pid", "thread_id"] {
            ensure!(
                self.label_num(s, key).is_some(),
                "{name}: sample lacks num label {key}"
            );
        }
        for key in ["comm", "thread_name"] {
            ensure!(
                self.label_str(s, key).is_some(),
                "{name}: sample lacks str label {key}"
            );
        }
        Ok(())
    }
}

/// All samples of `pid` across files, with the file each came from.
pub fn samples_of_pid(profiles: &[Pprof], pid: u32) -> Vec<(&Pprof, &Sample)> {
    profiles
        .iter()
        .flat_map(|p| p.samples_of_pid(pid).map(move |s| (p, s)))
        .collect()
}

/// Sum of the `samples/count` values.
pub fn total_count(samples: &[(&Pprof, &Sample)]) -> i64 {
    samples.iter().map(|(p, s)| p.count(s)).sum()
}

/// Sum of the `samples/count` values of the samples for which `keep` holds.
pub fn count_where(
    samples: &[(&Pprof, &Sample)],
    mut keep: impl FnMut(&Pprof, &Sample) -> bool,
) -> i64 {
    samples
        .iter()
        .filter(|(p, s)| keep(p, s))
        .map(|(p, s)| p.count(s))
        .sum()
}

/// How a test recognises a function name: C names exactly, Rust names by substring (the
/// demangled path, e.g. `hot::rust_fixture_hot_leaf`).
#[derive(Debug, Clone, Copy)]
pub enum Want<'a> {
    Exact(&'a str),
    Contains(&'a str),
}

impl Want<'_> {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Want::Exact(want) => name == *want,
            Want::Contains(want) => name.contains(want),
        }
    }

    /// The text that must appear in a report naming the function.
    pub fn text(&self) -> &str {
        match self {
            Want::Exact(s) | Want::Contains(s) => s,
        }
    }
}

/// The call chain of a CPU-bound fixture as the tests check it.
pub struct Chain<'a> {
    /// The function the CPU time is spent in.
    pub leaf: Want<'a>,
    /// Its callers, innermost first, expected right above the leaf.
    pub callers: &'a [Want<'a>],
}

pub const C_CHAIN: Chain<'static> = Chain {
    leaf: Want::Exact("fixture_hot_leaf"),
    callers: &[
        Want::Exact("fixture_middle"),
        Want::Exact("fixture_outer"),
        Want::Exact("main"),
    ],
};

pub const RUST_CHAIN: Chain<'static> = Chain {
    leaf: Want::Contains("rust_fixture_hot_leaf"),
    callers: &[
        Want::Contains("rust_fixture_middle"),
        Want::Contains("rust_fixture_outer"),
    ],
};

/// Checks a CPU-bound fixture's samples: enough of them, the hot leaf is `location_id[0]` in at
/// least half (by count), and where it is, the callers follow it directly in order (in at least
/// 90% by count: a sample in a prologue may legitimately miss a frame).
pub fn check_hot_chain(samples: &[(&Pprof, &Sample)], chain: &Chain) -> Result<()> {
    let total = total_count(samples);
    ensure!(total >= 20, "only {total} samples of the fixture");
    let leaf_stacks: Vec<_> = samples
        .iter()
        .filter(|(p, s)| {
            p.stack_names(s)
                .first()
                .is_some_and(|n| chain.leaf.matches(n))
        })
        .copied()
        .collect();
    let leaf = total_count(&leaf_stacks);
    ensure!(
        leaf * 2 >= total,
        "{:?} is the leaf in {leaf} of {total} samples; top stacks:\n{}",
        chain.leaf,
        describe_top_stacks(samples, 5)
    );
    let chained = count_where(&leaf_stacks, |p, s| {
        let names = p.stack_names(s);
        chain
            .callers
            .iter()
            .enumerate()
            .all(|(i, want)| names.get(i + 1).is_some_and(|n| want.matches(n)))
    });
    ensure!(
        chained * 10 >= leaf * 9,
        "callers {:?} directly above the leaf in {chained} of {leaf} samples; top stacks:\n{}",
        chain.callers,
        describe_top_stacks(&leaf_stacks, 5)
    );
    Ok(())
}

/// The `n` heaviest stacks, one per line, for failure messages.
pub fn describe_top_stacks(samples: &[(&Pprof, &Sample)], n: usize) -> String {
    let mut stacks: HashMap<String, i64> = HashMap::new();
    for (p, s) in samples {
        let frames: Vec<String> = p
            .frames(s)
            .into_iter()
            .map(|f| format!("{}@{}", f.function, f.mapping))
            .collect();
        *stacks.entry(frames.join(" <- ")).or_default() += p.count(s);
    }
    let mut stacks: Vec<_> = stacks.into_iter().collect();
    stacks.sort_by(|a, b| b.1.cmp(&a.1));
    stacks
        .iter()
        .take(n)
        .map(|(stack, count)| format!("  {count:>6}  {stack}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks the four thread labels of a fixture's samples: `pid` is the fixture's (the caller
/// filtered on it), `comm` its truncated name, and `thread_id`/`thread_name` as `thread` says.
pub fn check_labels(
    samples: &[(&Pprof, &Sample)],
    fixture: &Fixture,
    thread: impl Fn(i64, &str) -> Result<()>,
) -> Result<()> {
    let comm = fixture.expected_comm();
    for (p, s) in samples {
        ensure!(
            p.label_num(s, "pid") == Some(i64::from(fixture.pid())),
            "pid label"
        );
        let got = p.label_str(s, "comm");
        ensure!(
            got == Some(comm.as_str()),
            "comm label {got:?}, want {comm:?}"
        );
        let tid = p.label_num(s, "thread_id").context("thread_id label")?;
        let name = p.label_str(s, "thread_name").context("thread_name label")?;
        thread(tid, name)?;
    }
    Ok(())
}

/// Checks that the locations of frames matching `want` belong to the mapping of the fixture's
/// executable: filename = its path, build_id = its GNU build ID.
pub fn check_fixture_mapping(
    samples: &[(&Pprof, &Sample)],
    fixture: &Fixture,
    want: Want,
) -> Result<()> {
    let path = fixture.path().to_string_lossy().into_owned();
    let build_id = fixture.build_id()?;
    let mut checked = 0;
    for (p, s) in samples {
        for loc in s.location_id.iter().filter_map(|id| p.location(*id)) {
            let named = loc.line.iter().any(|l| {
                p.function(l.function_id)
                    .is_some_and(|f| want.matches(p.str(f.name)))
            });
            if !named {
                continue;
            }
            let mapping = p
                .mapping(loc.mapping_id)
                .context("location without mapping")?;
            let (file, id) = (p.str(mapping.filename), p.str(mapping.build_id));
            ensure!(
                file == path,
                "mapping of {want:?} is {file:?}, want {path:?}"
            );
            ensure!(!id.is_empty(), "mapping {file} has no build_id");
            ensure!(
                id.eq_ignore_ascii_case(&build_id),
                "mapping {file} build_id {id:?}, the ELF's is {build_id}"
            );
            checked += 1;
        }
    }
    ensure!(
        checked > 0,
        "no location of {want:?} to check the mapping of"
    );
    Ok(())
}

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

// ---------------------------------------------------------------------------------------------
// Timing

/// Generous bound on any profiler run: load, record, symbolize, write, on 2 noisy cores.
pub fn run_timeout(recording: Duration) -> Duration {
    recording + Duration::from_secs(90)
}

// ---------------------------------------------------------------------------------------------
// Recording

/// Every profile in `dir`, each checked by [`Pprof::check_well_formed`]; at least one.
pub fn read_checked_profiles(dir: &Path, frequency: u32) -> Result<Vec<Pprof>> {
    let profiles = read_profiles(dir)?;
    ensure!(
        !profiles.is_empty(),
        "no profile written in {}",
        dir.display()
    );
    for p in &profiles {
        p.check_well_formed(frequency)?;
    }
    Ok(profiles)
}

/// Records `fixture` by `--pid` at [`TEST_FREQUENCY`] for `seconds` in 2-second intervals plus
/// `extra` flags, expects a clean exit, and returns the files written, checked well-formed.
pub fn record_fixture(
    fixture: &Fixture,
    out_dir: &Path,
    seconds: u64,
    extra: &[&str],
) -> Result<Vec<Pprof>> {
    let (pid, frequency, duration) = (
        fixture.pid_arg(),
        TEST_FREQUENCY.to_string(),
        seconds.to_string(),
    );
    let mut args = vec!["--pid", &pid, "--frequency", &frequency];
    args.extend(["--duration", &duration, "--interval", "2"]);
    args.extend(extra);
    let output = run(
        record_command(out_dir, &args),
        run_timeout(Duration::from_secs(seconds)),
    )?;
    output.ensure_success()?;
    read_checked_profiles(out_dir, TEST_FREQUENCY)
}
