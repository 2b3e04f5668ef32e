//! Reads through blazesym's file mappings that survive the file shrinking under them.
//!
//! blazesym maps every ELF file it reads (memmap2: `PROT_READ`, `MAP_SHARED`), including the
//! separate debug files it finds through `.gnu_debuglink`, and has no option to read them
//! instead. Access past the end of a file truncated in place since (`cp new.so old.so`, an
//! in-place upgrade) raises SIGBUS, which kills the process. blazesym checks a file's size and
//! mtime at the start of each call and maps it anew when they changed, so what remains is a
//! truncation during a call, or of a debug file (never checked again once found).
//!
//! [`guarded`] runs a closure with a process-wide SIGBUS handler armed for the calling thread.
//! A fault is recovered only when it is ours: raised on a thread inside [`guarded`], for a
//! nonexistent page (`BUS_ADRERR`), at an address in a read-only shared mapping of a file
//! (`r--s` and a path in `/proc/self/maps`: how memmap2 maps for reading; code and data of
//! loaded libraries are private mappings and are never touched). Anonymous zero pages then
//! replace the mapping from the faulting page to its end, so the access reads zeros, and the
//! fault is counted. Parsers trip over zeros where they had seen data before (blazesym unwraps
//! what it parsed earlier), so a panic in a call that had a fault is caught too (its message
//! left unprinted); either way [`guarded`] returns [`Faulted`], and the caller throws away what
//! the call made of the zeros and has blazesym drop the mapping. Any other SIGBUS goes back to
//! the action that was in force before (Rust's own handler, or the default), so the process
//! dies as it would have; any other panic goes on unwinding.
//!
//! Written by hand because no maintained crate does this: signal-hook always chains to the
//! previous handler (Rust's, which resets SIGBUS to the default for a fault that is not a stack
//! overflow) and cannot consume a fault; sapling-indexedlog's handler knows only the buffers it
//! mapped itself. The technique is EFL's "mmap safety" (eina_mmap).
//!
//! The handler uses only async-signal-safe operations: `open`, `read`, `close`, `mmap`,
//! `sigaction` and `raise` through libc, constant-initialized thread-locals (ordered against
//! the guarded code by compiler fences), an atomic, and a fixed buffer on the stack.

use std::{
    cell::Cell,
    ffi::{c_int, c_void},
    panic::{self, AssertUnwindSafe},
    sync::{
        Once, OnceLock,
        atomic::{AtomicUsize, Ordering, compiler_fence},
    },
};

/// The SIGBUS action in force before ours, for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread is inside [`guarded`]. Constant-initialized and without a destructor,
    /// so that the handler's access neither allocates nor registers anything.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Faults recovered on this thread during the current [`guarded`] call.
    static FAULTS: Cell<u64> = const { Cell::new(0) };
}

/// A guarded call read zeros in place of a file's bytes: the file shrank under its mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bus errors recovered: {faults}")]
pub struct Faulted {
    pub faults: u64,
}

/// Runs `read` with SIGBUS recovery armed on this thread. [`Faulted`] when a fault was
/// recovered meanwhile: what `read` returned, or the panic it raised over the zeros, is
/// dropped. A panic without a fault is resumed.
pub fn guarded<T>(read: impl FnOnce() -> T) -> Result<T, Faulted> {
    install();
    // Restores the outer state on the way out (a nested call, or a panic resumed).
    struct Restore(bool, u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            ARMED.set(self.0);
            FAULTS.set(self.1);
        }
    }
    let _restore = Restore(ARMED.replace(true), FAULTS.replace(0));
    // The handler writes FAULTS on this thread behind the compiler's back.
    compiler_fence(Ordering::SeqCst);
    let outcome = panic::catch_unwind(AssertUnwindSafe(read));
    compiler_fence(Ordering::SeqCst);
    let faults = FAULTS.get();
    match (outcome, faults) {
        (Ok(value), 0) => Ok(value),
        (Err(panic), 0) => panic::resume_unwind(panic),
        (_, faults) => Err(Faulted { faults }),
    }
}

/// Installs the handler once per process, keeping the action it replaces.
fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: sysconf and sigaction with valid pointers; the handler only does
        // async-signal-safe work (see the module's documentation).
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            PAGE_SIZE.store(usize::try_from(page).unwrap_or(4096), Ordering::Relaxed);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                tracing::warn!(
                    "cannot read the SIGBUS action: {}",
                    std::io::Error::last_os_error()
                );
                return;
            }
            let _ = PREVIOUS.set(previous);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
                tracing::warn!(
                    "cannot install the SIGBUS handler, a file truncated while read will stop \
                     the profiler: {}",
                    std::io::Error::last_os_error()
                );
                return;
            }
        }
        // A panic over zeros we put there is reported as Faulted, not printed.
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !(ARMED.get() && FAULTS.get() > 0) {
                previous(info);
            }
        }));
    });
}

extern "C" fn on_sigbus(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; errno is this
    // thread's and is given back as found.
    unsafe {
        let errno = *libc::__errno_location();
        let recovered = !info.is_null() && recover(&*info);
        if !recovered {
            hand_back(signal, info, context);
        }
        *libc::__errno_location() = errno;
    }
}

/// Replaces the rest of the mapping at the faulting address with zero pages, when the fault is
/// ours (see the module's documentation).
///
/// # Safety
/// Only from the SIGBUS handler, on the faulting thread.
unsafe fn recover(info: &libc::siginfo_t) -> bool {
    if !ARMED.get() || info.si_code != libc::BUS_ADRERR {
        return false;
    }
    // SAFETY: si_addr is valid for SIGBUS.
    let address = unsafe { info.si_addr() } as usize;
    let Some(end) = read_only_file_mapping_end(address) else {
        return false;
    };
    let page = address & !(PAGE_SIZE.load(Ordering::Relaxed).max(1) - 1);
    // SAFETY: the range lies inside a read-only mapping of a file, which nothing in this
    // process writes through; MAP_FIXED replaces those pages in place.
    let zeros = unsafe {
        libc::mmap(
            page as *mut c_void,
            end - page,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if zeros == libc::MAP_FAILED {
        return false;
    }
    FAULTS.set(FAULTS.get() + 1);
    true
}

/// What would have happened without us. A fault (the kernel's `si_code` > 0) gets the previous
/// action back and returns: the access runs again and faults into it. A signal sent by a
/// process goes to the previous action directly, and we stay installed.
///
/// # Safety
/// Only from the SIGBUS handler, with its arguments.
unsafe fn hand_back(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let Some(previous) = PREVIOUS.get() else {
        // SAFETY: resetting to the default is always valid.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
        return;
    };
    let from_kernel = !info.is_null() && unsafe { (*info).si_code } > 0;
    if from_kernel {
        // SAFETY: `previous` is what sigaction gave us.
        unsafe { libc::sigaction(signal, previous, std::ptr::null_mut()) };
        return;
    }
    match previous.sa_sigaction {
        libc::SIG_IGN => {}
        libc::SIG_DFL => {
            // SAFETY: default action, then the same signal again: delivered once we return.
            unsafe {
                libc::sigaction(signal, previous, std::ptr::null_mut());
                libc::raise(signal);
            }
        }
        handler if previous.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: the previous handler, called as the kernel would have.
            let handler: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                unsafe { std::mem::transmute(handler) };
            handler(signal, info, context);
        }
        handler => {
            // SAFETY: as above, without SA_SIGINFO.
            let handler: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
            handler(signal);
        }
    }
}

/// End of the mapping holding `address` if it is a read-only shared mapping of a file, from
/// `/proc/self/maps` read with raw `read` calls into a buffer on the stack.
fn read_only_file_mapping_end(address: usize) -> Option<usize> {
    // SAFETY: open, read and close on a NUL-terminated path and a buffer we own.
    unsafe {
        let fd = libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let mut buffer = [0u8; 512];
        let mut line = MapsLine::default();
        let mut found = None;
        'read: loop {
            let read = libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len());
            let Ok(read @ 1..) = usize::try_from(read) else {
                break;
            };
            for &byte in &buffer[..read] {
                if let Some(mapping) = line.push(byte)
                    && (mapping.start..mapping.end).contains(&address)
                {
                    found = mapping.is_read_only_shared_file().then_some(mapping.end);
                    break 'read;
                }
            }
        }
        libc::close(fd);
        found
    }
}

/// One line of `/proc/<pid>/maps`, as far as the handler needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    perms: [u8; 4],
    /// First byte of the path (`/` for a file), 0 for none.
    path_start: u8,
}

impl Mapping {
    fn is_read_only_shared_file(&self) -> bool {
        &self.perms == b"r--s" && self.path_start == b'/'
    }
}

/// Parses `/proc/<pid>/maps` a byte at a time, without allocating: `start-end perms offset dev
/// inode   path`.
#[derive(Default)]
struct MapsLine {
    mapping: Mapping,
    field: u8,
    perms_len: u8,
}

impl MapsLine {
    /// Takes the next byte; returns the mapping when it ends its line.
    fn push(&mut self, byte: u8) -> Option<Mapping> {
        if byte == b'\n' {
            let mapping = self.mapping;
            *self = Self::default();
            return Some(mapping);
        }
        let mapping = &mut self.mapping;
        match (self.field, byte) {
            (0, b'-') | (1..=5, b' ') => self.field += 1,
            (0, _) => mapping.start = (mapping.start << 4) | hex(byte),
            (1, _) => mapping.end = (mapping.end << 4) | hex(byte),
            (2, _) => {
                if let Some(slot) = mapping.perms.get_mut(usize::from(self.perms_len)) {
                    *slot = byte;
                    self.perms_len += 1;
                }
            }
            (6, b' ') => {}
            (6, _) => {
                mapping.path_start = byte;
                self.field = 7;
            }
            _ => {}
        }
        None
    }
}

fn hex(byte: u8) -> usize {
    usize::from(match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Mapping> {
        let mut line = MapsLine::default();
        text.bytes().filter_map(|b| line.push(b)).collect()
    }

    #[test]
    fn maps_lines_are_parsed_a_byte_at_a_time() {
        let mappings = parse(
            "7f2a1c000000-7f2a1c021000 r--s 00000000 08:01 1234                       /usr/lib/libfoo.so\n\
             7f2a1c021000-7f2a1c022000 r-xp 00001000 08:01 1234 /usr/lib/libfoo.so\n\
             7ffd4a5e1000-7ffd4a602000 rw-p 00000000 00:00 0                          [stack]\n\
             7f0000000000-7f0000001000 r--s 00000000 00:0e 77 anon_inode:[bpf-ringbuf]\n\
             7f0000002000-7f0000003000 r--s 00000000 00:00 0\n",
        );
        assert_eq!(mappings.len(), 5);
        assert_eq!(mappings[0].start, 0x7f2a1c000000);
        assert_eq!(mappings[0].end, 0x7f2a1c021000);
        let recoverable: Vec<bool> = mappings
            .iter()
            .map(Mapping::is_read_only_shared_file)
            .collect();
        assert_eq!(recoverable, [true, false, false, false, false]);
    }

    #[test]
    fn finds_a_read_only_file_mapping_of_this_process() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(3 * 4096).unwrap();
        // SAFETY: a file nobody else knows about.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let start = map.as_ptr() as usize;
        assert_eq!(
            read_only_file_mapping_end(start + 5000),
            Some(start + 3 * 4096)
        );
        let on_stack = 0u8;
        assert_eq!(
            read_only_file_mapping_end(&on_stack as *const u8 as usize),
            None
        );
    }

    /// A file of four pages, the first filled with 7s, mapped, then truncated to 100 bytes.
    fn truncated_mapping() -> memmap2::Mmap {
        let file = tempfile::tempfile().unwrap();
        file.set_len(4 * 4096).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[7; 4096], 0).unwrap();
        // SAFETY: a file nobody else knows about.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        file.set_len(100).unwrap();
        map
    }

    #[test]
    fn a_fault_in_a_truncated_mapping_reads_zeros_and_is_reported() {
        let map = truncated_mapping();
        let mut read = None;
        let outcome = guarded(|| {
            // The first page still holds the file's start; the rest is past its end.
            let first = std::hint::black_box(map[0]);
            let beyond = std::hint::black_box(map[2 * 4096 + 1]);
            read = Some((first, beyond));
        });
        assert_eq!(outcome, Err(Faulted { faults: 1 }));
        assert_eq!(read, Some((7, 0)));
        // Later pages of the same mapping were replaced too.
        assert_eq!(guarded(|| std::hint::black_box(map[3 * 4096])), Ok(0));
    }

    #[test]
    fn a_panic_over_the_zeros_is_a_fault_and_other_panics_go_on() {
        let map = truncated_mapping();
        let outcome = guarded(|| {
            // As a parser that trusts what it read before does.
            assert_eq!(std::hint::black_box(map[2 * 4096]), 7, "data changed");
        });
        assert_eq!(outcome, Err(Faulted { faults: 1 }));
        let resumed = panic::catch_unwind(|| guarded(|| panic!("not ours")));
        assert!(resumed.is_err());
        assert!(!ARMED.get(), "disarmed on the way out");
    }
}
