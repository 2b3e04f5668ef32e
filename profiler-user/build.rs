//! Builds the BPF object (embedded by `bpf::loader`) and the pprof protobuf types.

use std::{env, path::Path};

use aya_build::{Package, Toolchain};

/// Chooses the compiler for the BPF crate. The default is Debian's `/usr` toolchain, which ships
/// a prebuilt `core` for `bpfel-unknown-none`; developers with nightly + rust-src can set
/// `PROFILER_EBPF_TOOLCHAIN=nightly` instead.
const TOOLCHAIN_VAR: &str = "PROFILER_EBPF_TOOLCHAIN";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed={TOOLCHAIN_VAR}");
    let toolchain = env::var(TOOLCHAIN_VAR).unwrap_or_else(|_| "/usr".to_owned());
    let manifest_dir = env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../profiler-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or("non-UTF-8 path to profiler-ebpf")?;
    aya_build::build_ebpf(
        [Package {
            name: "profiler-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .map_err(|err| format!("building the BPF program with toolchain {toolchain:?} failed (run `cargo xtask setup`): {err:#}"))?;
    println!("cargo:rerun-if-changed=../profiler-common/src");

    let proto = Path::new(&manifest_dir).join("proto/profile.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors = protox::compile([&proto], [proto.parent().unwrap_or(Path::new("."))])?;
    prost_build::Config::new().compile_fds(descriptors)?;

    // OTLP profiles (issue 17): the official files of the version `proto/otlp/README.md` names.
    let otlp = Path::new(&manifest_dir).join("proto/otlp");
    println!("cargo:rerun-if-changed={}", otlp.display());
    let service = "opentelemetry/proto/collector/profiles/v1development/profiles_service.proto";
    let descriptors = protox::compile([service], [&otlp])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
