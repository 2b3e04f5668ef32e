//! The offsets the BPF program needs for Go, derived from the fixture built with every pinned
//! toolchain (no root needed): the release from `.go.buildinfo` (stripped binaries too), the
//! runtime offsets from DWARF, which must equal the per-release table a stripped binary gets.

use std::fs::File;

use anyhow::{Context, Result, ensure};
use integration_tests::{go_fixture, go_versions, skip_or_fail};
use profiler::{
    elf_file::ElfFile,
    golabels::{
        buildinfo::{GoVersion, go_version},
        layout::{dwarf_offsets, go_target, labels_kind, table_offsets, tls_offset},
    },
};

fn elf(path: &str) -> Result<ElfFile> {
    Ok(ElfFile::new(
        File::open(path).with_context(|| path.to_owned())?,
    ))
}

#[test]
fn dwarf_and_table_agree_for_every_toolchain() -> Result<()> {
    for version in go_versions() {
        let Some(fixture) = go_fixture(version) else {
            skip_or_fail(&format!(
                "Go {version} is not installed: run `cargo xtask setup`"
            ));
            continue;
        };
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
        let want = GoVersion {
            major: parts.next().unwrap(),
            minor: parts.next().unwrap(),
        };
        let full = elf(fixture.full)?;
        let stripped = elf(fixture.stripped)?;
        ensure!(go_version(&full)? == Some(want), "{version}: build info");
        ensure!(
            go_version(&stripped)? == Some(want),
            "{version}: stripped build info"
        );

        let from_dwarf = dwarf_offsets(&full)?.with_context(|| format!("{version}: no DWARF"))?;
        ensure!(
            table_offsets(want) == Some(from_dwarf),
            "{version}: table {:?} != DWARF {from_dwarf:?}",
            table_offsets(want)
        );
        ensure!(
            dwarf_offsets(&stripped)?.is_none(),
            "{version}: stripped has DWARF"
        );
        // Built by Go's own linker (CGO_ENABLED=0): g at -8 from the thread pointer.
        ensure!(tls_offset(&full) == Ok(-8), "{version}: tls offset");

        let target = go_target(&full, want)?;
        ensure!(
            go_target(&stripped, want)? == target,
            "{version}: stripped target differs"
        );
        ensure!(Some(target.labels_kind) == labels_kind(want));
    }
    Ok(())
}

#[test]
fn a_binary_that_is_not_go_has_no_version() -> Result<()> {
    let own = std::env::current_exe()?;
    let elf = ElfFile::new(File::open(own)?);
    ensure!(go_version(&elf)?.is_none());
    Ok(())
}
