//! Builds the test fixtures into OUT_DIR and exports their paths as `FIXTURE_*` env vars.
//!
//! The executables' names are longer than 15 bytes on purpose: the kernel truncates `comm`, and
//! the tests check the profiler reports the truncated name.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Flags of every C fixture: frame pointers so the BPF side can unwind them (see TOOLCHAIN.md).
const CFLAGS: &[&str] = &["-O2", "-g", "-fno-omit-frame-pointer"];
/// The unwinder's fixtures': no frame pointers, as distributions and release builds ship code.
const NO_FP_CFLAGS: &[&str] = &["-O2", "-g", "-fomit-frame-pointer"];
/// The churn fixture's: -O1, as a typical short-lived tool might be built.
const CHURN_CFLAGS: &[&str] = &["-O1", "-g", "-fno-omit-frame-pointer"];

#[path = "fixtures/go/offline_build.rs"]
mod go_offline;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let fixtures = manifest_dir.join("fixtures");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    let hot_c = build_c(
        &fixtures.join("hot.c"),
        &out_dir.join("fixture-hot-c-frames"),
    );
    let syscalls = build_c(
        &fixtures.join("syscalls.c"),
        &out_dir.join("fixture-syscalls-loop"),
    );
    let churn = build_c_with(
        &fixtures.join("churn.c"),
        &out_dir.join("fixture-churn-short-lived"),
        CHURN_CFLAGS,
    );
    let stacks = build_c(
        &fixtures.join("stacks.c"),
        &out_dir.join("fixture-many-distinct-stacks"),
    );
    let hot_rust = build_rust(
        &fixtures.join("hot.rs"),
        &out_dir.join("fixture-hot-rust-frames"),
    );

    let deep_spin = build_c(
        &fixtures.join("deep_spin.c"),
        &out_dir.join("fixture-deep-spin-frames"),
    );

    let unwind_chain = build_c_with(
        &fixtures.join("unwind_chain.c"),
        &out_dir.join("fixture-unwind-chain-no-fp"),
        NO_FP_CFLAGS,
    );
    let unwind_spin = build_c_with(
        &fixtures.join("unwind_spin.c"),
        &out_dir.join("fixture-unwind-spin-no-fp"),
        NO_FP_CFLAGS,
    );
    let unwind_spin_fp = build_c_with(
        &fixtures.join("unwind_spin.c"),
        &out_dir.join("fixture-unwind-spin-fp"),
        CFLAGS,
    );
    let unwind_plugin = out_dir.join("libfixture_unwind_plugin.so");
    let source = fixtures.join("unwind_plugin.c");
    println!("cargo:rerun-if-changed={}", source.display());
    let mut cmd = Command::new("gcc");
    cmd.args(NO_FP_CFLAGS)
        .args(["-fPIC", "-shared", "-o"])
        .arg(&unwind_plugin)
        .arg(&source);
    run(cmd);
    let unwind_rust = build_rust_with(
        &fixtures.join("unwind_rust.rs"),
        &out_dir.join("fixture-unwind-rust-release"),
        "unwind_rust",
        &["-C", "opt-level=3", "-g"],
    );
    let unwind_cpp = out_dir.join("fixture-unwind-cpp-no-fp");
    let source = fixtures.join("unwind_cpp.cc");
    println!("cargo:rerun-if-changed={}", source.display());
    let mut cmd = Command::new("g++");
    cmd.args(NO_FP_CFLAGS)
        .arg("-o")
        .arg(&unwind_cpp)
        .arg(&source);
    run(cmd);
    let traced = build_traced(&fixtures, &out_dir);
    let off_cpu = out_dir.join("fixture-off-cpu-waits");
    let source = fixtures.join("off_cpu.c");
    println!("cargo:rerun-if-changed={}", source.display());
    let mut cmd = Command::new("gcc");
    cmd.args(CFLAGS)
        .arg("-pthread")
        .arg("-Wl,--export-dynamic-symbol=otel_thread_ctx_v1")
        .arg("-o")
        .arg(&off_cpu)
        .arg(&source);
    run(cmd);
    let (go_labels, go_checkout, go_off_cpu) = build_go_labels(&manifest_dir, &fixtures, &out_dir);
    let (lifetimes, plugin) = build_lifetimes(&fixtures, &out_dir);

    export("FIXTURE_HOT_C", &hot_c);
    export("FIXTURE_SYSCALLS_C", &syscalls);
    export("FIXTURE_HOT_RUST", &hot_rust);
    export("FIXTURE_CHURN", &churn);
    export("FIXTURE_STACKS", &stacks);
    export("FIXTURE_UNWIND_CHAIN", &unwind_chain);
    export("FIXTURE_UNWIND_SPIN", &unwind_spin);
    export("FIXTURE_UNWIND_SPIN_FP", &unwind_spin_fp);
    export("FIXTURE_DEEP_SPIN", &deep_spin);
    export("FIXTURE_UNWIND_PLUGIN", &unwind_plugin);
    export("FIXTURE_UNWIND_RUST", &unwind_rust);
    export("FIXTURE_UNWIND_CPP", &unwind_cpp);
    export("FIXTURE_TRACED_EXE", &traced.exe);
    export("FIXTURE_TRACED_TLSDESC", &traced.tlsdesc);
    export("FIXTURE_TRACED_GD", &traced.gd);
    export("FIXTURE_LIBOTELCTX_GNU2", &traced.lib_gnu2);
    export("FIXTURE_LIBOTELCTX_GNU", &traced.lib_gnu);
    export("FIXTURE_TRACED_DLOPEN", &traced.dlopen);
    export("FIXTURE_OFF_CPU", &off_cpu);
    export("FIXTURE_LIFETIMES", &lifetimes);
    export("FIXTURE_PLUGIN", &plugin);
    println!("cargo:rustc-env=FIXTURE_GO_LABELS={go_labels}");
    println!("cargo:rustc-env=FIXTURE_GO_CHECKOUT={go_checkout}");
    println!("cargo:rustc-env=FIXTURE_GO_OFF_CPU={go_off_cpu}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
}

fn build_c(source: &Path, output: &Path) -> PathBuf {
    build_c_with(source, output, CFLAGS)
}

fn build_c_with(source: &Path, output: &Path, flags: &[&str]) -> PathBuf {
    println!("cargo:rerun-if-changed={}", source.display());
    let mut cmd = Command::new("gcc");
    cmd.args(flags).arg("-o").arg(output).arg(source);
    run(cmd);
    output.to_owned()
}

/// The process-lifetime fixture and the library it opens with dlopen.
fn build_lifetimes(fixtures: &Path, out_dir: &Path) -> (PathBuf, PathBuf) {
    let exe = out_dir.join("fixture-process-lifetimes");
    let mut cmd = Command::new("gcc");
    cmd.args(CFLAGS)
        .arg("-pthread")
        .arg("-o")
        .arg(&exe)
        .arg(fixtures.join("lifetimes.c"))
        .arg("-ldl");
    println!(
        "cargo:rerun-if-changed={}",
        fixtures.join("lifetimes.c").display()
    );
    run(cmd);
    let plugin = out_dir.join("libfixture_plugin.so");
    let mut cmd = Command::new("gcc");
    cmd.args(CFLAGS)
        .args(["-fPIC", "-shared"])
        .arg("-o")
        .arg(&plugin)
        .arg(fixtures.join("plugin.c"));
    println!(
        "cargo:rerun-if-changed={}",
        fixtures.join("plugin.c").display()
    );
    run(cmd);
    (exe, plugin)
}

/// The traced fixtures: one scenario (traced_scenario.c), three places for the thread-local
/// `otel_thread_ctx_v1` (see the fixture files).
struct Traced {
    /// Variable in the executable (static TLS).
    exe: PathBuf,
    /// Variable in libotelctx_gnu2.so (TLSDESC).
    tlsdesc: PathBuf,
    /// Variable in libotelctx_gnu.so (general dynamic: DTPMOD64/DTPOFF64, __tls_get_addr).
    gd: PathBuf,
    /// No variable at start; dlopens libotelctx_gnu2.so (found next to itself) on SIGUSR1.
    dlopen: PathBuf,
    lib_gnu2: PathBuf,
    lib_gnu: PathBuf,
}

fn build_traced(fixtures: &Path, out_dir: &Path) -> Traced {
    for name in [
        "trace_ids.h",
        "traced_scenario.h",
        "traced_scenario.c",
        "traced.c",
        "otelctx.h",
        "otelctx.c",
        "traced_lib.c",
        "traced_dlopen.c",
    ] {
        println!("cargo:rerun-if-changed={}", fixtures.join(name).display());
    }
    let scenario = fixtures.join("traced_scenario.c");

    let exe = out_dir.join("traced");
    let mut cmd = Command::new("gcc");
    cmd.args(CFLAGS)
        .arg("-pthread")
        .arg("-Wl,--export-dynamic-symbol=otel_thread_ctx_v1")
        .arg("-o")
        .arg(&exe)
        .arg(fixtures.join("traced.c"))
        .arg(&scenario);
    run(cmd);

    let build_variant = |dialect: &str, lib_name: &str, exe_name: &str| {
        let lib = out_dir.join(format!("lib{lib_name}.so"));
        let mut cmd = Command::new("gcc");
        cmd.args(CFLAGS)
            .args(["-pthread", "-fPIC", "-shared"])
            .arg(format!("-mtls-dialect={dialect}"))
            .arg("-o")
            .arg(&lib)
            .arg(fixtures.join("otelctx.c"));
        run(cmd);
        let exe = out_dir.join(exe_name);
        let mut cmd = Command::new("gcc");
        cmd.args(CFLAGS)
            .arg("-pthread")
            .arg("-o")
            .arg(&exe)
            .arg(fixtures.join("traced_lib.c"))
            .arg(&scenario)
            .arg("-L")
            .arg(out_dir)
            .arg(format!("-l{lib_name}"))
            // No shell: `$ORIGIN` reaches the linker as is, and the loader finds the library
            // next to the executable.
            .arg("-Wl,-rpath,$ORIGIN");
        run(cmd);
        (lib, exe)
    };
    let (lib_gnu2, tlsdesc) = build_variant("gnu2", "otelctx_gnu2", "traced_tlsdesc");
    let (lib_gnu, gd) = build_variant("gnu", "otelctx_gnu", "traced_gd");

    // Not linked against the library: it opens it itself, from its own directory (OUT_DIR).
    let dlopen = out_dir.join("traced_dlopen");
    let mut cmd = Command::new("gcc");
    cmd.args(CFLAGS)
        .arg("-pthread")
        .arg("-o")
        .arg(&dlopen)
        .arg(fixtures.join("traced_dlopen.c"))
        .arg("-ldl");
    run(cmd);

    Traced {
        exe,
        tlsdesc,
        gd,
        dlopen,
        lib_gnu2,
        lib_gnu,
    }
}

/// The Go labels fixture (fixtures/go/labels) built with every toolchain of
/// fixtures/go/toolchains.txt, with DWARF and stripped (`-ldflags=-s -w`). Returns
/// `version=full,stripped` entries joined by `;`. A toolchain that is not installed (`cargo xtask
/// setup` installs them) is left out with a warning: its tests then skip, or fail in CI.
/// Also builds the worked example (examples/go-checkout) and the Go off-CPU fixture
/// (fixtures/go/offcpu) with the newest toolchain installed, returned second and third (empty
/// without one).
fn build_go_labels(
    manifest_dir: &Path,
    fixtures: &Path,
    out_dir: &Path,
) -> (String, String, String) {
    let source = fixtures.join("go").join("labels");
    let list = fixtures.join("go").join("toolchains.txt");
    for file in [source.join("main.go"), source.join("go.mod"), list.clone()] {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(
        || manifest_dir.join("../target"),
        |dir| manifest_dir.join("..").join(dir),
    );
    let go_dir = target.join("go");
    let mut built = Vec::new();
    let mut newest = None;
    let list = std::fs::read_to_string(&list).expect("fixtures/go/toolchains.txt");
    for line in list.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(version), Some(from)) = (fields.next(), fields.next()) else {
            panic!("fixtures/go/toolchains.txt: cannot read {line:?}");
        };
        let go = match from {
            "debian" => {
                let minor = version.rsplit_once('.').map_or(version, |(minor, _)| minor);
                PathBuf::from(format!("/usr/lib/go-{minor}/bin/go"))
            }
            _ => go_dir.join(version).join("go/bin/go"),
        };
        println!("cargo:rerun-if-changed={}", go.display());
        if !go.is_file() {
            println!(
                "cargo:warning=Go {version} is not installed ({}): run `cargo xtask setup`",
                go.display()
            );
            continue;
        }
        newest = Some(go.clone());
        let full = out_dir.join(format!("go-labels-fixture-{version}"));
        let stripped = out_dir.join(format!("go-labels-fixture-{version}-stripped"));
        for (output, ldflags) in [(&full, ""), (&stripped, "-s -w")] {
            go_build(&go, &go_dir, &source, output, ldflags);
        }
        built.push(format!(
            "{version}={},{}",
            full.display(),
            stripped.display()
        ));
    }
    let example = manifest_dir.join("../examples/go-checkout");
    for file in ["main.go", "go.mod"] {
        println!("cargo:rerun-if-changed={}", example.join(file).display());
    }
    let checkout = newest.as_ref().map_or_else(String::new, |go| {
        let output = out_dir.join("go-checkout-example");
        go_build(go, &go_dir, &example, &output, "");
        output.display().to_string()
    });
    let off_cpu = fixtures.join("go").join("offcpu");
    for file in ["main.go", "go.mod"] {
        println!("cargo:rerun-if-changed={}", off_cpu.join(file).display());
    }
    let off_cpu = newest.map_or_else(String::new, |go| {
        let output = out_dir.join("go-off-cpu-fixture");
        go_build(&go, &go_dir, &off_cpu, &output, "");
        output.display().to_string()
    });
    (built.join(";"), checkout, off_cpu)
}

/// `go build` of the package in `source`: standard library only, offline, exactly this
/// toolchain, caches under target/go.
fn go_build(go: &Path, go_dir: &Path, source: &Path, output: &Path, ldflags: &str) {
    let mut cmd = Command::new(go);
    cmd.current_dir(source)
        .args(["build", "-trimpath"])
        .arg(format!("-ldflags={ldflags}"))
        .arg("-o")
        .arg(output)
        .arg(".");
    go_offline::offline(&mut cmd, go_dir);
    run(cmd);
}

fn build_rust(source: &Path, output: &Path) -> PathBuf {
    build_rust_with(
        source,
        output,
        "hot",
        &["-C", "opt-level=2", "-C", "force-frame-pointers=yes", "-g"],
    )
}

fn build_rust_with(source: &Path, output: &Path, name: &str, flags: &[&str]) -> PathBuf {
    println!("cargo:rerun-if-changed={}", source.display());
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition", "2021", "--crate-name", name])
        .args(flags)
        // rustc's linker call adds no build ID by default; the tests check it is reported.
        .args(["-C", "link-arg=-Wl,--build-id"])
        .arg("-o")
        .arg(output)
        .arg(source);
    run(cmd);
    output.to_owned()
}

fn run(mut cmd: Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

fn export(name: &str, path: &Path) {
    println!("cargo:rustc-env={name}={}", path.display());
}
