//! Pages a process never touched, as the kernel leaves them after reclaim: a position-dependent
//! executable's literals found by their bytes, paged out of a running process
//! (`process_madvise(MADV_PAGEOUT)`, Linux 5.10+), and whether a page is in its page tables
//! (`/proc/<pid>/pagemap`).

use std::{fs::File, os::unix::fs::FileExt as _, path::Path};

use anyhow::{Context, Result, bail, ensure};
use object::{elf, read::elf::ProgramHeader as _};

const PAGE: u64 = 4096;

/// The address of each of `literals` in the read-only, not executable segment of the
/// position-dependent executable `binary` (its first occurrence there).
pub fn literal_addresses(binary: &Path, literals: &[&str]) -> Result<Vec<u64>> {
    let data = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let object::File::Elf64(file) = object::File::parse(&*data)? else {
        bail!("{}: not a 64-bit ELF file", binary.display());
    };
    let endian = file.endian();
    ensure!(
        file.elf_header().e_type.get(endian) == elf::ET_EXEC,
        "{}: not a position-dependent executable",
        binary.display()
    );
    let segment = file
        .elf_program_headers()
        .iter()
        .find(|ph| ph.p_type(endian) == elf::PT_LOAD && ph.p_flags(endian) == elf::PF_R)
        .context("no read-only segment")?;
    let (vaddr, offset, size) = (
        segment.p_vaddr(endian),
        segment.p_offset(endian) as usize,
        segment.p_filesz(endian) as usize,
    );
    let bytes = &data[offset..offset + size];
    literals
        .iter()
        .map(|literal| {
            bytes
                .windows(literal.len())
                .position(|window| window == literal.as_bytes())
                .map(|at| vaddr + at as u64)
                .with_context(|| format!("{literal:?} is not in {}", binary.display()))
        })
        .collect()
}

/// Pages the pages holding `addresses` out of process `pid`: no longer in its page tables, and
/// out of the page cache when no other process maps them.
pub fn page_out(pid: u32, addresses: &[u64]) -> Result<()> {
    // SAFETY: plain system calls with valid arguments; the descriptor is closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    ensure!(
        pidfd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    let mut result = Ok(());
    for &address in addresses {
        let page = libc::iovec {
            iov_base: (address & !(PAGE - 1)) as *mut libc::c_void,
            iov_len: PAGE as usize,
        };
        // SAFETY: one iovec naming the target's memory, which the kernel does not dereference
        // in ours.
        let done = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd,
                &page,
                1,
                libc::MADV_PAGEOUT,
                0,
            )
        };
        if done < 0 {
            result = Err(anyhow::anyhow!(
                "process_madvise({pid}, {address:#x}, MADV_PAGEOUT): {}",
                std::io::Error::last_os_error()
            ));
            break;
        }
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(pidfd as i32) };
    result
}

/// Whether the page holding `address` is in process `pid`'s page tables.
pub fn page_present(pid: u32, address: u64) -> Result<bool> {
    let pagemap = File::open(format!("/proc/{pid}/pagemap"))?;
    let mut entry = [0u8; 8];
    pagemap.read_exact_at(&mut entry, address / PAGE * 8)?;
    Ok(u64::from_le_bytes(entry) >> 63 == 1)
}
