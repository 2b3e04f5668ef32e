//! The offsets the BPF program needs for Go, derived from the fixture built with every pinned
//! toolchain (no root needed): the release from `.go.buildinfo` (stripped binaries too), the
//! runtime offsets from DWARF, which must equal the per-release table a stripped binary gets.

use std::fs::File;

use anyhow::{Context, Result, ensure};
use integration_tests::{go_fixture, go_versions, skip_or_fail};
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
use profiler::{
    elf_file::ElfFile,
    golabels::{
        buildinfo::{GoVersion, go_version},
        layout::{dwarf_offsets, go_target, labels_kind, readonly_data, table_offsets, tls_offset},
    },
    symbolize::gopclntab::GoPcln,
};
use profiler_common::GoTarget;

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
        // The same but for the read-only segment, whose size the symbols change.
        let stripped_target = go_target(&stripped, want)?;
        ensure!(
            GoTarget {
                readonly_start: target.readonly_start,
                readonly_end: target.readonly_end,
                ..stripped_target
            } == target,
            "{version}: stripped target differs"
        );
        ensure!(
            readonly_data(&stripped)
                == Some((stripped_target.readonly_start, stripped_target.readonly_end)),
            "{version}: stripped read-only data"
        );
        ensure!(Some(target.labels_kind) == labels_kind(want));

        // The literal keys are in the read-only segment the target names (position-dependent,
        // Go's default): the program's key cache depends on it.
        let (start, end) =
            readonly_data(&full).with_context(|| format!("{version}: no read-only segment"))?;
        ensure!(
            (target.readonly_start, target.readonly_end) == (start, end) && start < end,
            "{version}: read-only data {start:#x}..{end:#x}"
        );
        let bytes = std::fs::read(fixture.full)?;
        let file = object::File::parse(&*bytes)?;
        let holds_key = file.segments().any(|segment| {
            segment.address() == start
                && segment
                    .data()
                    .is_ok_and(|data| data.windows(8).any(|w| w == b"trace_id"))
        });
        ensure!(
            holds_key,
            "{version}: \"trace_id\" is not in {start:#x}..{end:#x}"
        );
    }
    Ok(())
}

/// `.gopclntab` names every `main.` function at its symbol's address, in the full build and in
/// the stripped one (same code, no symbols).
#[test]
fn the_go_function_table_names_what_the_symbol_table_names() -> Result<()> {
    for version in go_versions() {
        let Some(fixture) = go_fixture(version) else {
            skip_or_fail(&format!(
                "Go {version} is not installed: run `cargo xtask setup`"
            ));
            continue;
        };
        let bytes = std::fs::read(fixture.full)?;
        let file = object::File::parse(&*bytes)?;
        let full = GoPcln::load(&elf(fixture.full)?)?.context("no table in the full build")?;
        let stripped =
            GoPcln::load(&elf(fixture.stripped)?)?.context("no table in the stripped build")?;
        let mut checked = 0;
        for symbol in file.symbols() {
            let name = symbol.name()?;
            if !name.starts_with("main.") || symbol.kind() != object::SymbolKind::Text {
                continue;
            }
            let segment = file
                .segments()
                .find(|s| (s.address()..s.address() + s.size()).contains(&symbol.address()))
                .context("symbol outside the segments")?;
            let offset = symbol.address() - segment.address() + segment.file_range().0;
            ensure!(
                full.function_at(offset) == Some(name),
                "{version}: {name} in the full build"
            );
            ensure!(
                stripped.function_at(offset) == Some(name),
                "{version}: {name} in the stripped build: {:?}",
                stripped.function_at(offset)
            );
            checked += 1;
        }
        ensure!(checked >= 4, "{version}: only {checked} main. functions");
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
