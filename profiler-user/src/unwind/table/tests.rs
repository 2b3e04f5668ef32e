//! The tables against binutils' own reading of the same CFI (`readelf
//! --debug-dump=frames-interp`: binutils comes with gcc, which the tests need anyway), on this
//! machine's libc and dynamic loader (x86_64) and on the aarch64 fixtures of `tracectx`.

use std::{fs::File, path::Path, process::Command};

use super::*;

fn table_of(path: &str) -> FileTable {
    build(&ElfFile::new(File::open(path).unwrap())).unwrap()
}

/// One row of `readelf --debug-dump=frames-interp`: its address and the CFA, frame-pointer and
/// return-address columns as printed (`rsp+8`, `c-16`, `u`, `exp`), and whether its CIE is a
/// signal frame's (`S` in the augmentation).
#[derive(Debug)]
struct ReadelfRow {
    address: u64,
    cfa: String,
    fp: String,
    ra: String,
    signal: bool,
}

fn readelf_rows(path: &str, fp_name: &str) -> Vec<ReadelfRow> {
    let output = Command::new("readelf")
        .args(["--debug-dump=frames-interp", path])
        .output()
        .expect("readelf (binutils) runs");
    // readelf exits 1 when the file has no .debug_frame, having printed .eh_frame.
    let text = String::from_utf8(output.stdout).unwrap();
    let mut rows = Vec::new();
    let mut signal_cies = std::collections::HashSet::new();
    let (mut columns, mut in_fde, mut signal): (Vec<String>, bool, bool) =
        (Vec::new(), false, false);
    for line in text.lines() {
        // `r10 (r10)` is one cell: a register rule and the register's name.
        let line = line.replace(" (", "(");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [offset, _, _, "CIE", augmentation, ..] => {
                if augmentation.contains('S') {
                    signal_cies.insert((*offset).to_owned());
                }
                in_fde = false;
            }
            [_, _, _, "FDE", cie, ..] => {
                in_fde = true;
                signal = signal_cies.contains(cie.trim_start_matches("cie="));
                columns.clear();
            }
            ["LOC", "CFA", rest @ ..] => columns = rest.iter().map(|c| (*c).to_owned()).collect(),
            [address, cfa, values @ ..] if in_fde && address.len() == 16 => {
                let column = |name: &str| {
                    columns
                        .iter()
                        .position(|c| *c == name)
                        .and_then(|i| values.get(i))
                        .map_or("u".to_owned(), |v| (*v).to_owned())
                };
                let row = ReadelfRow {
                    address: u64::from_str_radix(address, 16).unwrap(),
                    cfa: (*cfa).to_owned(),
                    fp: column(fp_name),
                    ra: column("ra"),
                    signal,
                };
                // Of rows at one address the last holds.
                if rows
                    .last()
                    .is_some_and(|last: &ReadelfRow| last.address == row.address)
                {
                    rows.pop();
                }
                rows.push(row);
            }
            _ => {}
        }
    }
    rows
}

/// `c-16` -> -16.
fn at_cfa(value: &str) -> Option<i64> {
    value.strip_prefix('c')?.parse().ok()
}

/// Why our rule disagrees with readelf's row, if it does.
fn disagreement(arch: Arch, rule: &Rule, row: &ReadelfRow) -> Option<String> {
    let (sp, fp) = match arch {
        Arch::X86_64 => ("rsp+", "rbp+"),
        Arch::Aarch64 => ("sp+", "x29+"),
    };
    let ok = if row.signal {
        rule.cfa == Cfa::Signal
    } else if row.ra == "u" && arch == Arch::X86_64 {
        rule.cfa == Cfa::End
    } else if row.ra == "u" && rule.cfa == Cfa::End {
        // readelf prints `u` both for "no rule yet" and for DW_CFA_undefined.
        true
    } else if arch == Arch::X86_64 && row.ra != "c-8" {
        // The return address elsewhere than where the call put it (`__vfork`: in rdi).
        rule.cfa == Cfa::Unsupported
    } else {
        let ra_ok = match (arch, at_cfa(&row.ra)) {
            (Arch::X86_64, Some(-8)) => rule.ra == Saved::AtCfa && rule.ra_offset == -8,
            (Arch::Aarch64, Some(offset)) => {
                rule.ra == Saved::AtCfa && i64::from(rule.ra_offset) == offset
            }
            (Arch::Aarch64, None) if row.ra == "u" => rule.ra == Saved::Unchanged,
            _ => rule.cfa == Cfa::Unsupported,
        };
        let cfa_ok = if let Some(offset) = row.cfa.strip_prefix(sp) {
            rule.cfa == Cfa::Sp && rule.cfa_offset.to_string() == offset
        } else if let Some(offset) = row.cfa.strip_prefix(fp) {
            rule.cfa == Cfa::Fp && rule.cfa_offset.to_string() == offset
        } else if row.cfa == "exp" {
            matches!(rule.cfa, Cfa::Plt | Cfa::DerefSp | Cfa::Unsupported)
        } else {
            rule.cfa == Cfa::Unsupported
        };
        let fp_ok = rule.cfa == Cfa::Unsupported
            || match at_cfa(&row.fp) {
                Some(offset) => rule.fp == Saved::AtCfa && i64::from(rule.fp_offset) == offset,
                None if row.fp == "u" => rule.fp != Saved::AtCfa,
                None => rule.fp == Saved::Unsupported,
            };
        ra_ok && cfa_ok && fp_ok
    };
    (!ok).then(|| format!("{:#x}: readelf {row:?}, table {rule:?}", row.address))
}

/// Every row readelf prints has the rule it describes.
fn agrees_with_readelf(path: &str, fp_name: &str) -> FileTable {
    let table = table_of(path);
    let rows = readelf_rows(path, fp_name);
    assert!(
        rows.len() > 2,
        "{path}: readelf printed {} rows",
        rows.len()
    );
    let wrong: Vec<String> = rows
        .iter()
        .filter_map(|row| match table.rule_at(row.address) {
            Some(rule) => disagreement(table.arch, rule, row),
            None => Some(format!("{:#x}: no rule", row.address)),
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{path}: {} of {} rows differ, first: {:#?}",
        wrong.len(),
        rows.len(),
        &wrong[..wrong.len().min(8)]
    );
    table
}

const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
const AARCH64_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tracectx/fixtures");

#[test]
fn libc_agrees_with_readelf() {
    let table = agrees_with_readelf(LIBC, "rbp");
    assert_eq!(table.arch, Arch::X86_64);
    assert!(table.stats.fdes > 1000, "{:?}", table.stats);
    assert_eq!(table.stats.bad_fdes, 0);
    // libc has its PLT, `__restore_rt` and `_start`-like ends.
    for kind in [Cfa::Plt, Cfa::Signal, Cfa::Sp, Cfa::Fp] {
        assert!(
            table.rules.iter().any(|rule| rule.cfa == kind),
            "no {kind:?} rule in libc"
        );
    }
    // Merged rows, few distinct rules: the sizes the design counts on (research: libc has
    // 25,212 CFI rows and about 300 distinct CFA/RBP rules).
    assert!(table.rules.len() < 1000, "{} rules", table.rules.len());
    let kernel = crate::unwind::layout::KernelTable::new(&table, &mut Default::default()).unwrap();
    assert!(
        kernel.bytes() < 256 << 10,
        "{} bytes in the kernel",
        kernel.bytes()
    );
}

#[test]
fn the_dynamic_loader_agrees_with_readelf() {
    agrees_with_readelf(LD_SO, "rbp");
}

#[test]
fn aarch64_fixtures_agree_with_readelf() {
    for name in ["aarch64_tls_exe", "aarch64_tls_gd.so"] {
        let path = format!("{AARCH64_FIXTURES}/{name}");
        let table = agrees_with_readelf(&path, "x29");
        assert_eq!(table.arch, Arch::Aarch64, "{name}");
    }
    // A prologue that saved x29 and x30 (readelf: sp+32, x29 at c-32, ra at c-24).
    let table = table_of(&format!("{AARCH64_FIXTURES}/aarch64_tls_exe"));
    let rule = table.rule_at(0xa0c).unwrap();
    assert_eq!(
        (
            rule.cfa,
            rule.cfa_offset,
            rule.fp,
            rule.fp_offset,
            rule.ra,
            rule.ra_offset
        ),
        (Cfa::Sp, 32, Saved::AtCfa, -32, Saved::AtCfa, -24)
    );
    // Its entry: the return address is still in the link register.
    let rule = table.rule_at(0xa00).unwrap();
    assert_eq!((rule.cfa, rule.ra), (Cfa::Sp, Saved::Unchanged));
}

#[test]
fn between_functions_the_walk_falls_back_to_frame_pointers() {
    let table = table_of(LIBC);
    // The end of one FDE with a gap before the next.
    let gap = table
        .rows
        .iter()
        .find(|row| table.rules[usize::from(row.rule())] == Rule::FRAME_POINTER)
        .expect("libc has gaps between its FDEs");
    assert_eq!(table.rule_at(gap.address()), Some(&Rule::FRAME_POINTER));
    assert_eq!(table.rule_at(0), None);
}

#[test]
fn rows_are_sorted_and_merged() {
    let table = table_of(LIBC);
    for pair in table.rows.windows(2) {
        assert!(pair[0].address() < pair[1].address(), "{pair:?}");
        assert_ne!(pair[0].rule(), pair[1].rule(), "{pair:?}");
    }
}

#[test]
fn files_without_cfi_or_of_another_kind_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text");
    std::fs::write(&text, b"not an ELF file").unwrap();
    let open = |path: &Path| ElfFile::new(File::open(path).unwrap());
    assert!(matches!(build(&open(&text)), Err(TableError::Parse(_))));
    // A truncated libc: the section headers are gone.
    let truncated = dir.path().join("truncated");
    let libc = std::fs::read(LIBC).unwrap();
    std::fs::write(&truncated, &libc[..libc.len() / 2]).unwrap();
    assert!(build(&open(&truncated)).is_err());
}

#[test]
fn plt_and_realignment_expressions_are_recognised() {
    use gimli::{Encoding, Expression, Format};
    let encoding = Encoding {
        format: Format::Dwarf32,
        version: 1,
        address_size: 8,
    };
    let expr = |bytes: &'static [u8]| Expression(EndianSlice::new(bytes, LittleEndian));
    // breg7 +8; breg16 +0; lit15; and; lit11; ge; lit3; shl; plus
    let plt: &'static [u8] = &[
        0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
    ];
    assert_eq!(
        cfa_expression(Arch::X86_64, expr(plt), encoding),
        Some(CfaExpression::Plt { threshold: 11 })
    );
    // breg7 +24; deref; plus_uconst 8 (OpenSSL's perlasm).
    let deref: &'static [u8] = &[0x77, 0x18, 0x06, 0x23, 0x08];
    assert_eq!(
        cfa_expression(Arch::X86_64, expr(deref), encoding),
        Some(CfaExpression::DerefSp {
            offset: 24,
            post: 8
        })
    );
    // The same on aarch64, and anything else: not followed.
    assert_eq!(cfa_expression(Arch::Aarch64, expr(deref), encoding), None);
    assert_eq!(
        cfa_expression(Arch::X86_64, expr(&[0x77, 0x18, 0x06, 0x06]), encoding),
        None
    );
}
