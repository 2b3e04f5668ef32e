//! The memory that holds the header and payload, and the write orders of the protocol.
//!
//! Readers are other processes on other CPUs (reading `/proc/<pid>/mem`), so the ordering
//! points here are real CPU fences, not only compiler fences.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::{self, NonNull},
    sync::atomic::{AtomicU32, AtomicU64, Ordering, fence},
};

use super::{
    ProcessContextError,
    header::{
        HEADER_SIZE, PAYLOAD_PTR_OFFSET, PAYLOAD_SIZE_OFFSET, PUBLISHED_AT_OFFSET, SIGNATURE,
        VERSION, VERSION_OFFSET,
    },
};

/// Name of the memfd (`/memfd:OTEL_CTX` in `/proc/<pid>/maps`) and of the anonymous mapping
/// (`[anon:OTEL_CTX]`).
const NAME: &std::ffi::CStr = c"OTEL_CTX";

/// One mapping of header + payload, unmapped on drop by the process that created it.
pub(super) struct Mapping {
    addr: NonNull<u8>,
    len: usize,
    memfd: bool,
    /// `PR_SET_VMA_ANON_NAME` succeeded.
    named: bool,
    /// The creator: after `fork` the child has no such mapping (`MADV_DONTFORK`).
    pid: libc::pid_t,
}

// SAFETY: the mapping is plain memory owned by this value; writes need `&mut self`.
unsafe impl Send for Mapping {}
// SAFETY: `&self` methods only read.
unsafe impl Sync for Mapping {}

fn syscall_error(syscall: &'static str) -> ProcessContextError {
    ProcessContextError::Syscall {
        syscall,
        source: io::Error::last_os_error(),
    }
}

impl Mapping {
    /// Maps `len` bytes (a multiple of the page size): a memfd if `try_memfd` and the kernel
    /// allows it (Linux 3.17+), else anonymous memory; not inherited by `fork`.
    pub(super) fn create(len: usize, try_memfd: bool) -> Result<Self, ProcessContextError> {
        let memfd = if try_memfd { map_memfd(len) } else { None };
        let (addr, memfd) = match memfd {
            Some(addr) => (addr, true),
            None => (map_anonymous(len)?, false),
        };
        let mapping = Self {
            addr,
            len,
            memfd,
            named: false,
            // SAFETY: getpid has no preconditions.
            pid: unsafe { libc::getpid() },
        };
        // SAFETY: the range is the mapping just created. On error `mapping` is dropped and
        // unmapped.
        if unsafe { libc::madvise(mapping.addr.as_ptr().cast(), len, libc::MADV_DONTFORK) } != 0 {
            return Err(syscall_error("madvise(MADV_DONTFORK)"));
        }
        Ok(mapping)
    }

    pub(super) fn addr(&self) -> usize {
        self.addr.as_ptr() as usize
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_memfd(&self) -> bool {
        self.memfd
    }

    #[cfg(test)]
    pub(super) fn is_named(&self) -> bool {
        self.named
    }

    /// Whether this process created the mapping (false in a child after `fork`).
    pub(super) fn is_ours(&self) -> bool {
        // SAFETY: getpid has no preconditions.
        self.pid == unsafe { libc::getpid() }
    }

    /// Payload bytes the mapping can hold.
    pub(super) fn capacity(&self) -> usize {
        self.len - HEADER_SIZE
    }

    fn field(&self, offset: usize) -> *mut u8 {
        // SAFETY: offsets are header offsets, inside the mapping.
        unsafe { self.addr.as_ptr().add(offset) }
    }

    fn published_at(&self) -> &AtomicU64 {
        // SAFETY: 8-aligned (page + 16), inside the mapping, which lives as long as `self`.
        unsafe { AtomicU64::from_ptr(self.field(PUBLISHED_AT_OFFSET).cast()) }
    }

    /// `published_at_ns` as it is now.
    pub(super) fn published_at_ns(&self) -> u64 {
        self.published_at().load(Ordering::Acquire)
    }

    /// First publication into a fresh (zero-filled) mapping: payload and header fields, a
    /// fence, then the signature, so that a reader that sees the signature sees the rest.
    pub(super) fn publish(&mut self, payload: &[u8], published_at_ns: u64) {
        debug_assert!(payload.len() <= self.capacity());
        self.write_payload(payload);
        let payload_ptr = self.field(HEADER_SIZE) as u64;
        // SAFETY: header fields inside the mapping; nothing else in this process writes them.
        unsafe {
            ptr::write_volatile(self.field(VERSION_OFFSET).cast::<u32>(), VERSION);
            ptr::write_volatile(self.field(PAYLOAD_PTR_OFFSET).cast::<u64>(), payload_ptr);
        }
        self.published_at()
            .store(published_at_ns, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // SAFETY: offset 0 of the page-aligned mapping is 8-aligned.
        let signature = unsafe { AtomicU64::from_ptr(self.addr.as_ptr().cast()) };
        signature.store(u64::from_ne_bytes(SIGNATURE), Ordering::Release);
        fence(Ordering::SeqCst);
        self.name();
    }

    /// Names the mapping, last, so that a reader hooking `prctl` finds it complete. Readers find
    /// the mapping by this name. It fails for a memfd (whose name is the file's) and before
    /// Linux 5.17 or without CONFIG_ANON_VMA_NAME; then readers fall back to the memfd name or
    /// to the signature, so the error is ignored.
    fn name(&mut self) {
        // SAFETY: names our own mapping; the name is a NUL-terminated constant.
        self.named = unsafe {
            libc::prctl(
                libc::PR_SET_VMA,
                libc::PR_SET_VMA_ANON_NAME as libc::c_ulong,
                self.addr.as_ptr() as libc::c_ulong,
                self.len as libc::c_ulong,
                NAME.as_ptr(),
            )
        } == 0;
    }

    /// The update protocol: `published_at_ns` = 0 (update in progress), fence, new payload and
    /// size, fence, new timestamp. A reader that saw the same non-zero timestamp before and
    /// after reading the payload has read a consistent one.
    pub(super) fn update(&mut self, payload: &[u8], published_at_ns: u64) {
        debug_assert!(payload.len() <= self.capacity());
        self.mark_updating();
        self.write_payload(payload);
        fence(Ordering::SeqCst);
        self.published_at()
            .store(published_at_ns, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Tells readers the content is about to change (or go away).
    pub(super) fn mark_updating(&self) {
        self.published_at().store(0, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    fn write_payload(&mut self, payload: &[u8]) {
        let start = self.field(HEADER_SIZE);
        // SAFETY: `payload` fits after the header (checked by the caller), and it is our own
        // memory, not aliased by any Rust reference.
        unsafe {
            ptr::copy_nonoverlapping(payload.as_ptr(), start, payload.len());
            // Zero what an earlier, longer payload left behind.
            ptr::write_bytes(start.add(payload.len()), 0, self.capacity() - payload.len());
            AtomicU32::from_ptr(self.field(PAYLOAD_SIZE_OFFSET).cast())
                // At most the mapping's size, which `publish` keeps below u32::MAX.
                .store(payload.len() as u32, Ordering::Relaxed);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.is_ours() {
            // SAFETY: our mapping, unused after this. Failure leaves it mapped, which is
            // harmless.
            unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
        }
    }
}

fn map_memfd(len: usize) -> Option<NonNull<u8>> {
    // MFD_NOEXEC_SEAL (Linux 6.3+) keeps the kernel from warning about executable memfds, and
    // is required where vm.memfd_noexec = 2; older kernels reject the flag.
    // SAFETY: a NUL-terminated name and flags.
    let mut fd =
        unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_NOEXEC_SEAL) };
    if fd < 0 {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC) };
    }
    if fd < 0 {
        return None;
    }
    // SAFETY: a new descriptor that nothing else owns. The mapping keeps the file alive once
    // the descriptor is closed at the end of this function.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len_off = libc::off_t::try_from(len).ok()?;
    // SAFETY: our descriptor.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len_off) } != 0 {
        return None;
    }
    // SAFETY: a new shared mapping of our file, at an address the kernel picks.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(addr.cast())
}

fn map_anonymous(len: usize) -> Result<NonNull<u8>, ProcessContextError> {
    // SAFETY: a new private anonymous mapping at an address the kernel picks.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(syscall_error("mmap"));
    }
    NonNull::new(addr.cast()).ok_or_else(|| syscall_error("mmap"))
}
