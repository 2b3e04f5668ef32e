//! The offsets the BPF program needs for Go, derived from the fixture built with every pinned
//! toolchain (no root needed): the release from `.go.buildinfo` (stripped binaries too), the
//! runtime offsets from DWARF, which must equal the per-release table a stripped binary gets.

use std::{fs::File, os::unix::fs::MetadataExt as _, sync::Arc};

use anyhow::{Context, Result, ensure};
use integration_tests::{GoFixture, go_fixture, go_versions, skip_or_fail};
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
use profiler::{
    elf_file::ElfFile,
    golabels::{
        buildinfo::{GoVersion, go_version},
        layout::{dwarf_offsets, go_target, labels_kind, readonly_data, table_offsets, tls_offset},
    },
    process::{FileId, MappedFile},
    symbolize::{Symbolizer, gopclntab::GoPcln},
};
use profiler_common::GoTarget;

/// Every pinned toolchain's fixture; a toolchain not installed is skipped (a failure in CI).
fn installed_fixtures() -> impl Iterator<Item = GoFixture> {
    go_versions().into_iter().filter_map(|version| {
        let fixture = go_fixture(version);
        if fixture.is_none() {
            skip_or_fail(&format!(
                "Go {version} is not installed: run `cargo xtask setup`"
            ));
        }
        fixture
    })
}

fn elf(path: &str) -> Result<ElfFile> {
    Ok(ElfFile::new(
        File::open(path).with_context(|| path.to_owned())?,
    ))
}

#[test]
fn dwarf_and_table_agree_for_every_toolchain() -> Result<()> {
    for fixture in installed_fixtures() {
        let version = fixture.version;
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
            table_offsets(want) == Some(from_dwarf.offsets),
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
        // The same but for the read-only segment, whose size the symbols change, and the
        // garbage collector's generation, which needs the symbols.
        let stripped_target = go_target(&stripped, want)?;
        ensure!(
            GoTarget {
                readonly_start: target.readonly_start,
                readonly_end: target.readonly_end,
                gc_generation: target.gc_generation,
                ..stripped_target
            } == target,
            "{version}: stripped target differs"
        );
        ensure!(
            stripped_target.gc_generation == 0,
            "{version}: a stripped build has no runtime.mheap_ to find the generation in"
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

        // The generation: `sweepgen` (DWARF) bytes into `runtime.mheap_` (symbol table), in the
        // writable data the runtime keeps it in.
        let sweepgen = from_dwarf
            .sweepgen
            .with_context(|| format!("{version}: no runtime.mheap.sweepgen in the DWARF"))?;
        let heap = file
            .symbols()
            .find(|s| s.name() == Ok("runtime.mheap_"))
            .with_context(|| format!("{version}: no runtime.mheap_"))?;
        ensure!(
            sweepgen > 0 && u64::from(sweepgen) < heap.size(),
            "{version}: sweepgen at {sweepgen} of a {}-byte mheap_",
            heap.size()
        );
        ensure!(
            target.gc_generation == heap.address() + u64::from(sweepgen),
            "{version}: generation at {:#x}, mheap_ at {:#x} + {sweepgen}",
            target.gc_generation,
            heap.address()
        );
    }
    Ok(())
}

/// `.gopclntab` names every `main.` function at its symbol's address, in the full build and in
/// the stripped one (same code, no symbols).
#[test]
fn the_go_function_table_names_what_the_symbol_table_names() -> Result<()> {
    for fixture in installed_fixtures() {
        let version = fixture.version;
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

/// The file as the process model hands it to the symbolizer.
fn mapped(path: &str) -> Result<Arc<MappedFile>> {
    let file = File::open(path).with_context(|| path.to_owned())?;
    let metadata = file.metadata()?;
    let id = FileId {
        dev: metadata.dev(),
        inode: metadata.ino(),
    };
    Ok(Arc::new(MappedFile::new(id, path.to_owned(), Some(file))))
}

/// Every byte of `main.` code, and every 5th byte of the rest (`OTHER_CODE_STRIDE`; the runtime
/// inlines deeper than the fixture): the chain of inlined calls that the stripped build's
/// `.gopclntab` gives is the one the full build's DWARF gives (`DW_TAG_inlined_subroutine`, read
/// by blazesym as the symbolizer reads it), and the symbolizer names the stripped build so. The
/// `moduledata.gofunc` found without symbols is the full build's `go:func.*`.
///
/// Outside `main.` only addresses DWARF puts in inlined calls are compared: Go 1.19 writes no
/// DWARF for the inlining in autogenerated wrappers (`runtime.(*lockRank).String` calling
/// `runtime.lockRank.String`), which the table has, and its table shortens some generated names
/// (`type..eq.[...]runtime.Frame`).
#[test]
fn the_go_inline_trees_give_the_chains_dwarf_gives() -> Result<()> {
    const OTHER_CODE_STRIDE: u64 = 5;
    for fixture in installed_fixtures() {
        let version = fixture.version;
        let bytes = std::fs::read(fixture.full)?;
        let file = object::File::parse(&*bytes)?;
        // `go.func.*` until Go 1.20 renamed the linker's symbols.
        let gofunc = file
            .symbols()
            .find(|s| matches!(s.name(), Ok("go:func.*" | "go.func.*")))
            .with_context(|| format!("{version}: no go:func.* symbol"))?
            .address();
        let stripped =
            GoPcln::load(&elf(fixture.stripped)?)?.context("no table in the stripped build")?;
        let full = GoPcln::load(&elf(fixture.full)?)?.context("no table in the full build")?;
        for (build, table) in [("stripped", &stripped), ("full", &full)] {
            ensure!(
                table.inline_error().is_none() && table.gofunc() == Some(gofunc),
                "{version}: {build} build: gofunc {:x?} != go:func.* {gofunc:#x} ({:?})",
                table.gofunc(),
                table.inline_error()
            );
        }

        // (file offset, in main.)
        let mut offsets = Vec::new();
        for symbol in file.symbols() {
            if symbol.kind() != object::SymbolKind::Text || symbol.size() == 0 {
                continue;
            }
            let main = symbol.name()?.starts_with("main.");
            let segment = file
                .segments()
                .find(|s| (s.address()..s.address() + s.size()).contains(&symbol.address()))
                .context("symbol outside the segments")?;
            let offset = symbol.address() - segment.address() + segment.file_range().0;
            let stride = if main { 1 } else { OTHER_CODE_STRIDE };
            let code = (offset..offset + symbol.size()).step_by(stride as usize);
            offsets.extend(code.map(|offset| (offset, main)));
        }
        let just_offsets: Vec<u64> = offsets.iter().map(|(offset, _)| *offset).collect();
        let dwarf = Symbolizer::new().user(&mapped(fixture.full)?, &just_offsets);
        let named = Symbolizer::new().user(&mapped(fixture.stripped)?, &just_offsets);
        let (mut main_code, mut main_inlined, mut other_inlined, mut deep) = (0, 0, 0, 0);
        let mut step_in_process = false;
        for (((offset, main), want), named) in offsets.iter().zip(&dwarf).zip(&named) {
            let want: Vec<&str> = want.iter().map(|f| &*f.function).collect();
            if !main && want.len() < 2 {
                continue;
            }
            let table = stripped.frames_at(*offset).unwrap_or_default();
            ensure!(
                table == want,
                "{version}: at {offset:#x}: the table gives {table:?}, DWARF {want:?}"
            );
            let named: Vec<&str> = named.iter().map(|f| &*f.function).collect();
            ensure!(
                named == want,
                "{version}: at {offset:#x}: the symbolizer names {named:?}, DWARF {want:?}"
            );
            match (main, want.len()) {
                (true, 0 | 1) => main_code += 1,
                (true, _) => main_inlined += 1,
                (false, _) => other_inlined += 1,
            }
            deep += usize::from(want.len() >= 3);
            step_in_process |= want == ["main.step", "main.(*worker).process"];
        }
        eprintln!(
            "{version}: main. code: {} addresses, {main_inlined} in inlined calls; other code: \
             {other_inlined} addresses in inlined calls; {deep} with 3 frames or more",
            main_code + main_inlined
        );
        ensure!(
            step_in_process,
            "{version}: main.step is not inlined into main.(*worker).process"
        );
        ensure!(
            main_inlined >= 32 && deep >= 32,
            "{version}: only {main_inlined} addresses in inlined main. calls, {deep} deeper"
        );
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
