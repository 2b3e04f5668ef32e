//! Builds the kernel-cost benchmark's floor program (`floor-ebpf/`), embedded by `src/floor.rs`,
//! the way `profiler-user/build.rs` builds the profiler's: aya-build with Debian's `/usr`
//! toolchain, whose `core` is prebuilt for BPF (`PROFILER_EBPF_TOOLCHAIN` overrides it, as there).

use std::{env, path::Path};

use aya_build::{Package, Toolchain};

const TOOLCHAIN_VAR: &str = "PROFILER_EBPF_TOOLCHAIN";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed={TOOLCHAIN_VAR}");
    let toolchain = env::var(TOOLCHAIN_VAR).unwrap_or_else(|_| "/usr".to_owned());
    let manifest_dir = env::var("CARGO_MANIFEST_DIR")?;
    let floor_dir = Path::new(&manifest_dir).join("floor-ebpf");
    let floor_dir = floor_dir.to_str().ok_or("non-UTF-8 path to floor-ebpf")?;
    aya_build::build_ebpf(
        [Package {
            name: "profiler-bench-floor",
            root_dir: floor_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .map_err(|err| {
        format!(
            "building the floor BPF program with toolchain {toolchain:?} failed (run `cargo \
             xtask setup`): {err:#}"
        )
    })?;
    Ok(())
}
