//! Publishing a record in this thread's `otel_thread_ctx_v1`, and taking it back.
//!
//! The reader (a BPF program) interrupts this thread on its own CPU at any instruction, so:
//! a record is completely written before its address is stored (a compiler fence between the
//! two; no CPU fence is needed on the same CPU), the address is stored with one atomic word
//! store, a published record is never written again, and the pointer is moved away from a
//! record before the record is freed.
//!
//! Records belong to a per-thread stack, one entry per live [`ContextGuard`], and the top entry
//! is the one published. Guards may be dropped in any order: dropping one that is not on top
//! frees its record, which is not published, and leaves the pointer alone.

use std::{
    cell::RefCell,
    ffi::c_void,
    fmt,
    marker::PhantomData,
    ptr,
    sync::atomic::{AtomicPtr, Ordering, compiler_fence},
};

use crate::{
    context::{Error, TraceContext},
    record::{self, RecordBuf},
};

unsafe extern "C" {
    /// Address of this thread's `otel_thread_ctx_v1` (src/otel_thread_ctx.c).
    fn profiler_marker_slot() -> *mut *mut c_void;
}

/// This thread's `otel_thread_ctx_v1`, as an atomic so that loads and stores are single
/// instructions that the compiler neither splits nor drops.
fn slot() -> &'static AtomicPtr<c_void> {
    // SAFETY: the C accessor returns the address of this thread's TLS variable, a pointer-sized
    // and pointer-aligned `void *`, valid until the thread has exited (longer than anything of
    // this thread can use the reference, TLS destructors included). `AtomicPtr<c_void>` has
    // the layout of `*mut c_void`, and only this thread writes the variable.
    unsafe { AtomicPtr::from_ptr(profiler_marker_slot()) }
}

fn load() -> *mut c_void {
    slot().load(Ordering::Relaxed)
}

fn store(record: *mut c_void) {
    // The record's bytes are in memory before its address, and the address is replaced before
    // the caller goes on to free what it pointed to.
    compiler_fence(Ordering::SeqCst);
    slot().store(record, Ordering::Release);
    compiler_fence(Ordering::SeqCst);
}

struct Entry {
    id: u64,
    /// `None` for a guard of an invalid context, which publishes "no context".
    record: Option<RecordBuf>,
}

impl Entry {
    fn ptr(&self) -> *mut c_void {
        self.record
            .as_ref()
            .map_or(ptr::null_mut(), RecordBuf::as_ptr)
    }
}

#[derive(Default)]
struct ThreadState {
    stack: Vec<Entry>,
    /// The pointer found in the slot when the stack was last empty (normally null; something
    /// else when code outside this crate published a record), restored when it empties again.
    base: *mut c_void,
    next_id: u64,
}

impl ThreadState {
    fn push(&mut self, record: Option<RecordBuf>) -> u64 {
        if self.stack.is_empty() {
            self.base = load();
        }
        let id = self.next_id;
        self.next_id += 1;
        let entry = Entry { id, record };
        store(entry.ptr());
        self.stack.push(entry);
        id
    }

    fn remove(&mut self, id: u64) {
        let Some(index) = self.stack.iter().rposition(|entry| entry.id == id) else {
            return;
        };
        let entry = self.stack.remove(index);
        if index == self.stack.len() {
            // It was on top: publish the context below it.
            store(self.top());
        } else if !entry.ptr().is_null() && load() == entry.ptr() {
            // Not reachable through this API, but never leave the pointer on a freed record.
            store(self.top());
        }
        drop(entry);
    }

    fn top(&self) -> *mut c_void {
        self.stack.last().map_or(self.base, Entry::ptr)
    }
}

impl Drop for ThreadState {
    /// At thread exit with guards still alive (forgotten, or kept in other thread-locals):
    /// take the pointer off our records before they are freed.
    fn drop(&mut self) {
        let current = load();
        if self.stack.iter().any(|entry| entry.ptr() == current) {
            store(self.base);
        }
    }
}

thread_local! {
    static STATE: RefCell<ThreadState> = RefCell::default();
}

/// Publishes `ctx` as this thread's context until the returned guard is dropped, which
/// restores the context that was current before.
///
/// Never fails: attributes that do not fit the record are shortened (see [`crate::record`]), and
/// an invalid context (zero trace ID) publishes "no context" for the guard's lifetime. Use
/// [`try_attach`] to get an error instead. Each call allocates the record (at most 640 bytes).
///
/// ```
/// use profiler_marker::{attach, current, TraceContext};
///
/// let outer = TraceContext::from_hex("11111111111111111111111111111111", "1111111111111111")?;
/// let inner = TraceContext::from_hex("22222222222222222222222222222222", "2222222222222222")?;
/// {
///     let _outer = attach(&outer);
///     {
///         let _inner = attach(&inner);
///         assert_eq!(current(), Some(inner.clone()));
///     }
///     assert_eq!(current(), Some(outer.clone()));
/// }
/// assert_eq!(current(), None);
/// # Ok::<(), profiler_marker::Error>(())
/// ```
pub fn attach(ctx: &TraceContext) -> ContextGuard {
    publish(RecordBuf::new(ctx))
}

/// Like [`attach`], but fails instead of publishing a changed or empty context: for a zero
/// trace ID, a value longer than 255 bytes, or a record longer than 640 bytes.
pub fn try_attach(ctx: &TraceContext) -> Result<ContextGuard, Error> {
    RecordBuf::try_new(ctx).map(|record| publish(Some(record)))
}

fn publish(record: Option<RecordBuf>) -> ContextGuard {
    let id = STATE
        .try_with(|state| state.borrow_mut().push(record))
        // The thread is exiting and its state is gone: publish nothing.
        .ok();
    ContextGuard {
        id,
        _not_send: PhantomData,
    }
}

/// Removes this thread's context, without ending any guard: readers see no context until the
/// next [`attach`] or until a guard is dropped, which publishes the context below it.
pub fn clear() {
    store(ptr::null_mut());
}

/// The context this thread publishes now, read back from the record `otel_thread_ctx_v1`
/// points to (also when code outside this crate published it). `None` if there is none or
/// readers would ignore it.
pub fn current() -> Option<TraceContext> {
    let published = load();
    if published.is_null() {
        return None;
    }
    let ours = STATE
        .try_with(|state| {
            let state = state.borrow();
            state
                .stack
                .iter()
                .rev()
                .filter_map(|entry| entry.record.as_ref())
                .find(|record| record.as_ptr() == published)
                .map(|record| record::decode(record.bytes()))
        })
        .ok()
        .flatten();
    ours.unwrap_or_else(|| {
        // SAFETY: a record published on this thread by other code stays allocated and unchanged
        // while it is published (the format's contract), and `published` is not null.
        unsafe { read_foreign(published.cast()) }
    })
}

/// Decodes a record published by code outside this crate, reading no further than its header
/// says or [`record::MAX_SIZE`].
///
/// # Safety
/// `record` points to a record of the thread-local format that stays valid during the call.
unsafe fn read_foreign(record: *const u8) -> Option<TraceContext> {
    // SAFETY: the caller's contract; a record has at least its header.
    let header = unsafe { std::slice::from_raw_parts(record, record::HEADER_SIZE) };
    let size = record::declared_size(header)?;
    if size > record::MAX_SIZE {
        return None;
    }
    // SAFETY: the caller's contract: the record is `size` bytes long, as its header says.
    record::decode(unsafe { std::slice::from_raw_parts(record, size) })
}

/// Keeps a context published on the thread that called [`attach`]; dropping it restores the
/// context that was current before (or none).
///
/// Guards belong to their thread (`!Send`):
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// let ctx = profiler_marker::TraceContext::new([1; 16], [1; 8]).unwrap();
/// send(profiler_marker::attach(&ctx));
/// ```
#[must_use = "the context is removed again when the guard is dropped"]
pub struct ContextGuard {
    /// `None` if nothing was published (the thread was exiting).
    id: Option<u64>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // If the state is gone (thread exit), its destructor has already moved the pointer
            // off the records and freed them.
            let _ = STATE.try_with(|state| state.borrow_mut().remove(id));
        }
    }
}

impl fmt::Debug for ContextGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextGuard")
            .field("id", &self.id)
            .finish()
    }
}

/// The address of this thread's `otel_thread_ctx_v1`, for tests that look at the variable
/// through other means (its dynamic symbol, raw memory).
#[doc(hidden)]
pub fn slot_address() -> *mut *mut c_void {
    // SAFETY: a plain function returning the address of a TLS variable.
    unsafe { profiler_marker_slot() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(byte: u8) -> TraceContext {
        TraceContext::new([byte; 16], [byte; 8])
            .unwrap()
            .with_attribute(0, format!("value-{byte}"))
    }

    fn published_bytes() -> Option<Vec<u8>> {
        let ptr = load().cast::<u8>();
        if ptr.is_null() {
            return None;
        }
        // SAFETY: our own record, published on this thread.
        let header = unsafe { std::slice::from_raw_parts(ptr, record::HEADER_SIZE) };
        let size = record::declared_size(header)?;
        Some(unsafe { std::slice::from_raw_parts(ptr, size) }.to_vec())
    }

    #[test]
    fn attach_publishes_the_encoded_record() {
        let guard = attach(&ctx(1));
        assert_eq!(published_bytes(), Some(record::encode(&ctx(1)).unwrap()));
        assert_eq!(load() as usize % 2, 0);
        drop(guard);
        assert!(load().is_null());
        assert_eq!(current(), None);
    }

    #[test]
    fn nested_guards_restore_in_order() {
        assert_eq!(current(), None);
        let a = attach(&ctx(1));
        let b = attach(&ctx(2));
        {
            let _c = attach(&ctx(3));
            assert_eq!(current(), Some(ctx(3)));
        }
        assert_eq!(current(), Some(ctx(2)));
        drop(b);
        assert_eq!(current(), Some(ctx(1)));
        drop(a);
        assert_eq!(current(), None);
        assert!(load().is_null());
    }

    #[test]
    fn guards_dropped_out_of_order_never_leave_a_freed_record() {
        let a = attach(&ctx(1));
        let b = attach(&ctx(2));
        let c = attach(&ctx(3));
        // Dropping the middle one frees a record that is not published.
        drop(b);
        assert_eq!(current(), Some(ctx(3)));
        // Dropping the top one publishes the one below it that still lives: a, not b.
        drop(c);
        assert_eq!(current(), Some(ctx(1)));
        drop(a);
        assert_eq!(current(), None);

        let a = attach(&ctx(1));
        let b = attach(&ctx(2));
        drop(a);
        assert_eq!(current(), Some(ctx(2)));
        drop(b);
        assert_eq!(current(), None);
    }

    #[test]
    fn invalid_context_publishes_nothing_for_its_guard() {
        let _a = attach(&ctx(1));
        {
            let _none = attach(&TraceContext::default());
            assert!(load().is_null());
            assert_eq!(current(), None);
        }
        assert_eq!(current(), Some(ctx(1)));
        assert!(matches!(
            try_attach(&TraceContext::default()),
            Err(Error::ZeroTraceId)
        ));
        assert_eq!(current(), Some(ctx(1)));
    }

    #[test]
    fn clear_then_drop_restores_below() {
        let _a = attach(&ctx(1));
        let b = attach(&ctx(2));
        clear();
        assert_eq!(current(), None);
        drop(b);
        assert_eq!(current(), Some(ctx(1)));
    }

    #[test]
    fn foreign_record_is_read_and_restored() {
        // A record published by other code (e.g. C through the header) before ours.
        let foreign = RecordBuf::try_new(&ctx(9)).unwrap();
        store(foreign.as_ptr());
        assert_eq!(current(), Some(ctx(9)));
        {
            let _ours = attach(&ctx(1));
            assert_eq!(current(), Some(ctx(1)));
        }
        assert_eq!(load(), foreign.as_ptr());
        assert_eq!(current(), Some(ctx(9)));
        store(ptr::null_mut());
    }

    #[test]
    fn threads_are_independent() {
        let _main = attach(&ctx(1));
        std::thread::spawn(|| {
            assert_eq!(current(), None);
            let _worker = attach(&ctx(2));
            assert_eq!(current(), Some(ctx(2)));
        })
        .join()
        .unwrap();
        assert_eq!(current(), Some(ctx(1)));
    }

    #[test]
    fn thread_state_drop_unpublishes_before_freeing() {
        // What thread exit does with a forgotten guard's record.
        let mut state = ThreadState::default();
        state.push(RecordBuf::new(&ctx(4)));
        assert!(!load().is_null());
        drop(state);
        assert!(load().is_null());

        // And a forgotten guard on a real thread exits cleanly.
        std::thread::spawn(|| std::mem::forget(attach(&ctx(4))))
            .join()
            .unwrap();
    }

    #[test]
    fn try_attach_rejects_oversized() {
        let long = ctx(1).with_attribute(1, "x".repeat(300));
        assert!(matches!(
            try_attach(&long),
            Err(Error::AttributeTooLong { key: 1, len: 300 })
        ));
        let guard = attach(&long);
        assert_eq!(current().unwrap().attribute(1).map(str::len), Some(255));
        drop(guard);
    }
}
