//! The C ABI (feature `capi`), declared in `include/mooncake_shm.h`.
//!
//! Shape, after rustls-ffi: opaque handles (`mcshm_pool`, `mcshm_table`)
//! created and destroyed only here, `int32_t` result codes (`MCSHM_OK` = 0,
//! one named code per [`Error`] variant), out-parameters for results, and no
//! panic ever unwinds into C: every entry point runs inside `guard`, which
//! turns a panic into `MCSHM_ERR_PANIC`, except the hot paths of allocation,
//! free and lookup, which first try a path that cannot panic (no calls, no
//! checked arithmetic) and hand everything else to a guarded one.
//!
//! Null or misaligned pointers get `MCSHM_ERR_NULL_ARGUMENT` /
//! `MCSHM_ERR_INVALID_ARGUMENT`; a handle must be one this library returned
//! and not yet destroyed (that cannot be checked without UB, as in C).
#![allow(non_camel_case_types)]

use crate::arena::{ArenaStats, ThreadCache};
use crate::cleanup;
use crate::pool::{Pool, PoolOptions};
use crate::sys::AnonMap;
use crate::table::{RemoteSpan, Table, TableConfig};
use crate::Error;
use core::cell::UnsafeCell;
use core::ffi::{c_char, c_void, CStr};
use core::mem::align_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const MCSHM_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const MCSHM_ERR_NULL_ARGUMENT: i32 = 1;
/// A zero-byte allocation was requested.
pub const MCSHM_ERR_ZERO_SIZE: i32 = 2;
/// The request is larger than the pool's capacity.
pub const MCSHM_ERR_TOO_LARGE: i32 = 3;
/// The alignment is not a power of two up to 4096.
pub const MCSHM_ERR_BAD_ALIGNMENT: i32 = 4;
/// No free block is large enough right now.
pub const MCSHM_ERR_EXHAUSTED: i32 = 5;
/// The offset was already freed.
pub const MCSHM_ERR_DOUBLE_FREE: i32 = 6;
/// The offset was never handed out by this pool.
pub const MCSHM_ERR_INVALID_OFFSET: i32 = 7;
/// The allocator's metadata storage is full (raise `max_blocks`).
pub const MCSHM_ERR_METADATA_FULL: i32 = 8;
/// An offset/length pair does not fit, or overflows.
pub const MCSHM_ERR_OUT_OF_BOUNDS: i32 = 9;
/// No such object, segment, peer or range.
pub const MCSHM_ERR_NOT_FOUND: i32 = 10;
/// The name, id or range is already in use.
pub const MCSHM_ERR_ALREADY_EXISTS: i32 = 11;
/// The translation table's storage is exhausted.
pub const MCSHM_ERR_TABLE_FULL: i32 = 12;
/// An argument is outside its documented domain.
pub const MCSHM_ERR_INVALID_ARGUMENT: i32 = 13;
/// The shared-memory name is empty, too long, or contains '/' or NUL.
pub const MCSHM_ERR_INVALID_NAME: i32 = 14;
/// The object is shorter than its header or the caller expects.
pub const MCSHM_ERR_TRUNCATED: i32 = 15;
/// The object is not a mooncake-shm pool.
pub const MCSHM_ERR_BAD_MAGIC: i32 = 16;
/// The pool was written with another layout version.
pub const MCSHM_ERR_VERSION_MISMATCH: i32 = 17;
/// The pool's creator has not finished initializing it.
pub const MCSHM_ERR_NOT_READY: i32 = 18;
/// Only the pool's owner may allocate or free.
pub const MCSHM_ERR_NOT_OWNER: i32 = 19;
/// A system call failed; `mcshm_last_os_error()` gives its errno.
pub const MCSHM_ERR_OS: i32 = 20;
/// An internal bug was caught at the boundary (please report it).
pub const MCSHM_ERR_PANIC: i32 = 21;
/// A descriptor offered as a memfd pool is not sealed against shrinking.
pub const MCSHM_ERR_NOT_SEALED: i32 = 22;
/// The block belongs to a thread cache (`mcshm_cache`): free it through that cache.
pub const MCSHM_ERR_CACHE_OWNED: i32 = 23;
/// A thread cache was used from a thread other than the one that created it.
pub const MCSHM_ERR_WRONG_THREAD: i32 = 24;

/// Size of a buffer that always holds a `mcshm_unique_name` result,
/// terminating NUL included.
pub const MCSHM_UNIQUE_NAME_BUF_LEN: usize = 255;

/// `mcshm_pool_options.flags` bit: fault every page in at creation.
pub const MCSHM_POOL_PREFAULT: u32 = 1;
/// `mcshm_pool_options.flags` bit: back the pool with huge pages (MAP_HUGETLB).
pub const MCSHM_POOL_HUGE_PAGES: u32 = 2;

thread_local! {
    static LAST_OS_ERROR: Cell<i32> = const { Cell::new(0) };
}

/// The result code of an [`Error`]; remembers the errno of `Error::Os`.
/// Out of line and cold: errors are the slow path of every entry point.
#[cold]
#[inline(never)]
fn code_of(err: Error) -> i32 {
    match err {
        Error::ZeroSize => MCSHM_ERR_ZERO_SIZE,
        Error::TooLarge => MCSHM_ERR_TOO_LARGE,
        Error::BadAlignment => MCSHM_ERR_BAD_ALIGNMENT,
        Error::Exhausted => MCSHM_ERR_EXHAUSTED,
        Error::DoubleFree => MCSHM_ERR_DOUBLE_FREE,
        Error::InvalidOffset => MCSHM_ERR_INVALID_OFFSET,
        Error::MetadataFull => MCSHM_ERR_METADATA_FULL,
        Error::OutOfBounds => MCSHM_ERR_OUT_OF_BOUNDS,
        Error::NotFound => MCSHM_ERR_NOT_FOUND,
        Error::AlreadyExists => MCSHM_ERR_ALREADY_EXISTS,
        Error::TableFull => MCSHM_ERR_TABLE_FULL,
        Error::InvalidArgument => MCSHM_ERR_INVALID_ARGUMENT,
        Error::InvalidName => MCSHM_ERR_INVALID_NAME,
        Error::Truncated => MCSHM_ERR_TRUNCATED,
        Error::BadMagic => MCSHM_ERR_BAD_MAGIC,
        Error::VersionMismatch => MCSHM_ERR_VERSION_MISMATCH,
        Error::NotReady => MCSHM_ERR_NOT_READY,
        Error::NotOwner => MCSHM_ERR_NOT_OWNER,
        Error::NotSealed => MCSHM_ERR_NOT_SEALED,
        Error::CacheOwned => MCSHM_ERR_CACHE_OWNED,
        Error::Os(errno) => {
            LAST_OS_ERROR.with(|e| e.set(errno));
            MCSHM_ERR_OS
        }
    }
}

/// Why a call failed before reaching the library: a bad pointer argument.
enum ArgError {
    Null,
    Misaligned,
}

/// Outcome of an entry point's body: a library error or a bad argument.
enum Fail {
    Lib(Error),
    Arg(ArgError),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Lib(e)
    }
}

impl From<ArgError> for Fail {
    fn from(e: ArgError) -> Fail {
        Fail::Arg(e)
    }
}

/// Runs an entry point's body, mapping its outcome to a result code and
/// stopping any panic at the boundary.
#[inline(always)]
fn guard(body: impl FnOnce() -> Result<(), Fail>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MCSHM_OK,
        Ok(Err(Fail::Lib(e))) => code_of(e),
        Ok(Err(Fail::Arg(ArgError::Null))) => MCSHM_ERR_NULL_ARGUMENT,
        Ok(Err(Fail::Arg(ArgError::Misaligned))) => MCSHM_ERR_INVALID_ARGUMENT,
        Err(_) => MCSHM_ERR_PANIC,
    }
}

/// Runs a hot entry point's core call with panics stopped: its value, or
/// the result code of its error (or of a panic). Unlike [`guard`], the
/// caller has checked its pointers already and writes any out-parameter
/// itself, so the success path carries no `Fail` to map.
#[inline(always)]
fn caught<T>(body: impl FnOnce() -> crate::Result<T>) -> Result<T, i32> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(code_of(e)),
        Err(_) => Err(MCSHM_ERR_PANIC),
    }
}

/// Borrows `*p` after checking it is non-null and aligned.
///
/// # Safety
/// A non-null, aligned `p` must point to a live `T` for `'a`.
#[inline(always)]
unsafe fn arg_ref<'a, T>(p: *const T) -> Result<&'a T, ArgError> {
    if p.is_null() {
        return Err(ArgError::Null);
    }
    if !p.is_aligned() {
        return Err(ArgError::Misaligned);
    }
    // SAFETY: non-null and aligned checked above; liveness is the caller's contract.
    Ok(unsafe { &*p })
}

/// Writes `v` through an out-parameter after checking it.
///
/// # Safety
/// A non-null, aligned `p` must be valid for a write of `T`.
#[inline(always)]
unsafe fn put<T>(p: *mut T, v: T) -> Result<(), ArgError> {
    if p.is_null() {
        return Err(ArgError::Null);
    }
    if !p.is_aligned() {
        return Err(ArgError::Misaligned);
    }
    // SAFETY: non-null and aligned checked above; writability is the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// Checks an out-parameter before any side effect happens, so a call that
/// would fail on it fails before creating or opening anything.
fn check_out<T>(p: *mut T) -> Result<(), ArgError> {
    if p.is_null() {
        Err(ArgError::Null)
    } else if !p.is_aligned() {
        Err(ArgError::Misaligned)
    } else {
        Ok(())
    }
}

/// The code for pointer arguments `(address, alignment)` of which at least
/// one is NULL or misaligned: the first bad one in `args` order decides.
#[cold]
#[inline(never)]
fn bad_pointer(args: &[(usize, usize)]) -> i32 {
    for &(p, align) in args {
        if p == 0 {
            return MCSHM_ERR_NULL_ARGUMENT;
        }
        if p % align != 0 {
            return MCSHM_ERR_INVALID_ARGUMENT;
        }
    }
    MCSHM_ERR_INVALID_ARGUMENT
}

/// `true` iff `p` is non-null and aligned for `T`, computed without
/// branches so that a caller can test several pointers with one.
#[inline(always)]
fn ptr_ok<T>(p: *const T) -> bool {
    let a = p.addr();
    (a != 0) & (a & (align_of::<T>() - 1) == 0)
}

/// `true` iff the handle `t` and the out-parameter `out` are both non-null
/// and aligned: the one branch the lookups' and the thread cache's fast
/// paths take.
#[inline(always)]
fn handle_and_out_ok<H, O>(t: *const H, out: *mut O) -> bool {
    let (t, o) = (t.addr(), out.addr());
    let mis = (t & (align_of::<H>() - 1)) | (o & (align_of::<O>() - 1));
    (t != 0) & (o != 0) & (mis == 0)
}

/// The code for a failed [`handle_and_out_ok`]: `t` is reported first.
/// Out of line, so the fast path sets up no stack frame for it.
#[cold]
#[inline(never)]
fn bad_handle_or_out<O>(t: *const mcshm_table, out: *mut O) -> i32 {
    bad_pointer(&[
        (t.addr(), align_of::<mcshm_table>()),
        (out.addr(), align_of::<O>()),
    ])
}

/// The code for bad pointer arguments of `mcshm_table_locate`: the
/// out-parameters are checked (and reported) before the handle.
#[cold]
#[inline(never)]
fn bad_locate_args(t: *const mcshm_table, out_id: *mut u32, out_offset: *mut u64) -> i32 {
    bad_pointer(&[
        (out_id.addr(), align_of::<u32>()),
        (out_offset.addr(), align_of::<u64>()),
        (t.addr(), align_of::<mcshm_table>()),
    ])
}

/// Moves `value` to the heap and gives C the handle through `out`.
///
/// # Safety
/// `out` is non-null, aligned and writable (checked by the caller at entry).
unsafe fn hand_out<T>(out: *mut *mut T, value: T) {
    // SAFETY: per this function's contract.
    unsafe { out.write(Box::into_raw(Box::new(value))) };
}

/// Drops a handle [`hand_out`] created; NULL is a no-op, and a panic while
/// dropping stays on this side of the boundary.
///
/// # Safety
/// `handle` is NULL or came from [`hand_out`] and is not used again.
unsafe fn take_back<T>(handle: *mut T) {
    if handle.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: per this function's contract, the Box is reclaimed exactly once.
        drop(unsafe { Box::from_raw(handle) });
    }));
}

/// Reads a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// A non-null `p` must point to a NUL-terminated string live for `'a`.
unsafe fn arg_str<'a>(p: *const c_char) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(Fail::Arg(ArgError::Null));
    }
    // SAFETY: non-null checked; NUL termination and liveness are the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| Fail::Lib(Error::InvalidName))
}

// ---------------------------------------------------------------------------
// Pools
// ---------------------------------------------------------------------------

/// A shared-memory pool: the owner's (allocates) or a peer's (maps only).
pub struct mcshm_pool {
    pool: Pool,
    /// The handle plus one per live `mcshm_cache` of the pool: the last of
    /// `mcshm_pool_destroy` and `mcshm_cache_destroy` releases the pool.
    refs: AtomicU32,
}

impl mcshm_pool {
    fn new(pool: Pool) -> Self {
        mcshm_pool {
            pool,
            refs: AtomicU32::new(1),
        }
    }
}

/// Drops one reference to a pool handle, releasing it with the last one.
///
/// # Safety
/// `pool` came from [`hand_out`] and the caller holds one of its references.
unsafe fn release_pool(pool: *mut mcshm_pool) {
    // SAFETY: the caller's reference keeps the handle alive until here.
    if unsafe { (*pool).refs.fetch_sub(1, Ordering::AcqRel) } == 1 {
        // SAFETY: that was the last reference: nobody else uses the handle.
        unsafe { take_back(pool) };
    }
}

/// Options for `mcshm_pool_create`; fill with `mcshm_pool_options_init` first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mcshm_pool_options {
    /// Allocatable bytes (a 4 KiB header page comes on top).
    pub capacity: u64,
    /// Permission bits of the object (default 0600: owner only).
    pub mode: u32,
    /// `MCSHM_POOL_*` bits.
    pub flags: u32,
    /// NULL: /dev/shm via shm_open; otherwise a directory (hugetlbfs, DAX mount).
    pub dir: *const c_char,
    /// Arena metadata capacity, live plus free blocks (default 65536).
    pub max_blocks: u32,
    /// Independently locked arena shards, 1-16 (default 1; 0 means 1). N
    /// shards let N threads allocate at once, but one allocation must fit in
    /// one shard (about `capacity / shards`).
    pub shards: u32,
}

/// A snapshot of a pool's arena accounting.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mcshm_pool_stats {
    /// Allocatable bytes.
    pub capacity: u64,
    /// Bytes in live allocations (rounded to the arena's granule).
    pub in_use: u64,
    /// Bytes not in live allocations.
    pub free: u64,
    /// The largest single free block.
    pub largest_free: u64,
    /// Number of live allocations.
    pub live: u64,
}

impl From<ArenaStats> for mcshm_pool_stats {
    fn from(s: ArenaStats) -> Self {
        mcshm_pool_stats {
            capacity: s.capacity,
            in_use: s.in_use,
            free: s.free,
            largest_free: s.largest_free,
            live: s.live,
        }
    }
}

/// Fills `opts` with the defaults (64 MiB, mode 0600, no flags, /dev/shm, 65536 blocks,
/// 1 shard).
/// Does nothing when `opts` is NULL.
///
/// # Safety
/// `opts` is NULL or valid for a write of `mcshm_pool_options`.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_options_init(opts: *mut mcshm_pool_options) {
    let d = PoolOptions::default();
    let v = mcshm_pool_options {
        capacity: d.capacity,
        mode: d.mode,
        flags: 0,
        dir: core::ptr::null(),
        max_blocks: d.max_blocks,
        shards: d.shards,
    };
    // SAFETY: the caller passes NULL or a writable options struct; NULL is reported and ignored.
    let _ = unsafe { put(opts, v) };
}

/// Creates pool `name` exclusively (fails with `MCSHM_ERR_ALREADY_EXISTS`
/// without touching an existing object) and maps it; the caller owns it.
///
/// # Safety
/// `name` is a NUL-terminated string; `opts` is NULL (defaults) or a valid
/// options struct whose `dir` is NULL or NUL-terminated; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_create(
    name: *const c_char,
    opts: *const mcshm_pool_options,
    out: *mut *mut mcshm_pool,
) -> i32 {
    guard(|| {
        check_out(out)?;
        // SAFETY: per the function's contract.
        let name = unsafe { arg_str(name)? };
        // SAFETY: per the function's contract.
        let o = unsafe { pool_options(opts)? };
        let pool = Pool::create(name, &o)?;
        // SAFETY: `out` was checked non-null and aligned at entry.
        unsafe { hand_out(out, mcshm_pool::new(pool)) };
        Ok(())
    })
}

/// Converts C options (NULL = defaults) to `PoolOptions`.
///
/// # Safety
/// `opts` is NULL or a valid options struct whose `dir` is NULL or
/// NUL-terminated and outlives `'a`.
unsafe fn pool_options<'a>(opts: *const mcshm_pool_options) -> Result<PoolOptions<'a>, Fail> {
    let mut o = PoolOptions::default();
    if !opts.is_null() {
        // SAFETY: non-null; validity is the caller's contract.
        let c = unsafe { arg_ref(opts)? };
        o.capacity = c.capacity;
        o.mode = c.mode;
        o.prefault = c.flags & MCSHM_POOL_PREFAULT != 0;
        o.huge_pages = c.flags & MCSHM_POOL_HUGE_PAGES != 0;
        o.max_blocks = c.max_blocks;
        o.shards = c.shards;
        if c.flags & !(MCSHM_POOL_PREFAULT | MCSHM_POOL_HUGE_PAGES) != 0 {
            return Err(Error::InvalidArgument.into());
        }
        if !c.dir.is_null() {
            // SAFETY: non-null; NUL termination is the caller's contract.
            o.dir = Some(unsafe { arg_str(c.dir)? });
        }
    }
    Ok(o)
}

/// Creates an anonymous pool in a sealed memfd (no name; nothing to clean up
/// after a crash; its size can never change, so peers cannot be hit by
/// SIGBUS). Hand its descriptor (`mcshm_pool_fd`) to peers over a Unix
/// socket (`mcshm_send_fd`); they call `mcshm_pool_open_fd`. `opts->dir`
/// must be NULL and `opts->mode` is ignored.
///
/// # Safety
/// `opts` is NULL (defaults) or a valid options struct; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_create_memfd(
    opts: *const mcshm_pool_options,
    out: *mut *mut mcshm_pool,
) -> i32 {
    guard(|| {
        check_out(out)?;
        // SAFETY: per the function's contract.
        let o = unsafe { pool_options(opts)? };
        let pool = Pool::create_memfd(&o)?;
        // SAFETY: `out` was checked non-null and aligned at entry.
        unsafe { hand_out(out, mcshm_pool::new(pool)) };
        Ok(())
    })
}

/// Writes the sealed memfd of a pool made by `mcshm_pool_create_memfd` to
/// `out_fd`. The descriptor stays owned by the pool (do not close it); it
/// is valid until `mcshm_pool_destroy`. `MCSHM_ERR_INVALID_ARGUMENT` for a
/// named pool or a peer's handle.
///
/// # Safety
/// `pool` is a live handle; `out_fd` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_fd(pool: *const mcshm_pool, out_fd: *mut i32) -> i32 {
    guard(|| {
        check_out(out_fd)?;
        // SAFETY: per the function's contract.
        let p = unsafe { arg_ref(pool)? };
        let fd = p.pool.fd().ok_or(Error::InvalidArgument)?;
        // SAFETY: checked at entry.
        unsafe { out_fd.write(fd) };
        Ok(())
    })
}

/// Maps a memfd pool from a received descriptor, as a peer, after checking
/// that it is sealed against shrinking (`MCSHM_ERR_NOT_SEALED` otherwise)
/// and validating its header as `mcshm_pool_open` does. `fd` is borrowed:
/// the caller still owns it and may close it right after the call.
///
/// # Safety
/// `out` is writable. `fd` is any integer (a bad one gives `MCSHM_ERR_OS`).
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_open_fd(fd: i32, out: *mut *mut mcshm_pool) -> i32 {
    guard(|| {
        check_out(out)?;
        let pool = Pool::open_fd(fd)?;
        // SAFETY: `out` was checked non-null and aligned at entry.
        unsafe { hand_out(out, mcshm_pool::new(pool)) };
        Ok(())
    })
}

/// Sends descriptor `fd` over the connected Unix socket `sock`
/// (`SCM_RIGHTS`, one data byte). `fd` stays open in the caller.
#[no_mangle]
pub extern "C" fn mcshm_send_fd(sock: i32, fd: i32) -> i32 {
    guard(|| crate::sys::send_fd(sock, fd).map_err(Fail::from))
}

/// Receives one descriptor sent with `mcshm_send_fd` (blocking as `sock`
/// does) and writes it to `out_fd`; the caller owns it (`O_CLOEXEC` set).
/// `MCSHM_ERR_OS` with errno `ECONNRESET` if the sender closed the socket;
/// `MCSHM_ERR_NOT_FOUND` if a message carried no descriptor.
///
/// # Safety
/// `out_fd` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_recv_fd(sock: i32, out_fd: *mut i32) -> i32 {
    guard(|| {
        check_out(out_fd)?;
        let fd = crate::sys::recv_fd(sock)?;
        // SAFETY: checked at entry.
        unsafe { out_fd.write(fd.into_raw()) };
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Crash cleanup
// ---------------------------------------------------------------------------

/// Writes a fresh pool name `<prefix>.<pid>.<starttime>.<random>` for the
/// calling process, NUL-terminated, into `buf` (`buf_len` bytes;
/// `MCSHM_UNIQUE_NAME_BUF_LEN` always suffices). Name pools this way so
/// `mcshm_cleanup_stale` can tell whether their creator is still alive.
/// `MCSHM_ERR_INVALID_NAME` for a bad prefix (empty, '/', longer than 205
/// bytes); `MCSHM_ERR_INVALID_ARGUMENT` if `buf` is too small (then `buf`
/// is left untouched).
///
/// # Safety
/// `prefix` is NUL-terminated; `buf` is NULL or writable for `buf_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mcshm_unique_name(
    prefix: *const c_char,
    buf: *mut c_char,
    buf_len: usize,
) -> i32 {
    guard(|| {
        if buf.is_null() {
            return Err(ArgError::Null.into());
        }
        // SAFETY: per the function's contract.
        let prefix = unsafe { arg_str(prefix)? };
        let mut tmp = [0u8; cleanup::NAME_BUF_LEN];
        let name = cleanup::unique_name(prefix, &mut tmp)?;
        if name.len() >= buf_len {
            return Err(Error::InvalidArgument.into());
        }
        // SAFETY: `buf` is non-null and writable for `buf_len > name.len()`
        // bytes (caller's contract); `tmp` is a distinct local array.
        unsafe {
            core::ptr::copy_nonoverlapping(name.as_ptr(), buf.cast::<u8>(), name.len());
            buf.add(name.len()).write(0);
        }
        Ok(())
    })
}

/// Removes the stale objects named `<prefix>.<pid>.<starttime>.<random>` in
/// `dir` (NULL: /dev/shm): those whose creator is dead (no such process, or
/// the pid now belongs to a process with another start time) and on which
/// no live owner holds its lock. Writes how many were removed to
/// `out_removed` (may be NULL). Live pools are never touched; mappings of
/// removed objects stay valid.
///
/// # Safety
/// `prefix` (and `dir` when non-NULL) are NUL-terminated; `out_removed` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_cleanup_stale(
    prefix: *const c_char,
    dir: *const c_char,
    out_removed: *mut u64,
) -> i32 {
    guard(|| {
        if !out_removed.is_null() {
            check_out(out_removed)?;
        }
        // SAFETY: per the function's contract.
        let prefix = unsafe { arg_str(prefix)? };
        let dir = if dir.is_null() {
            None
        } else {
            // SAFETY: non-null; NUL termination is the caller's contract.
            Some(unsafe { arg_str(dir)? })
        };
        let n = cleanup::remove_stale(prefix, dir)?;
        if !out_removed.is_null() {
            // SAFETY: non-null, checked aligned above; writable per contract.
            unsafe { out_removed.write(n as u64) };
        }
        Ok(())
    })
}

/// Opens an existing pool as a peer: maps it after validating its header;
/// never creates. `dir` is NULL for /dev/shm.
///
/// # Safety
/// `name` (and `dir` when non-NULL) are NUL-terminated; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_open(
    name: *const c_char,
    dir: *const c_char,
    out: *mut *mut mcshm_pool,
) -> i32 {
    guard(|| {
        check_out(out)?;
        // SAFETY: per the function's contract.
        let name = unsafe { arg_str(name)? };
        let dir = if dir.is_null() {
            None
        } else {
            // SAFETY: non-null; NUL termination is the caller's contract.
            Some(unsafe { arg_str(dir)? })
        };
        let pool = Pool::open_in(dir, name)?;
        // SAFETY: `out` was checked non-null and aligned at entry.
        unsafe { hand_out(out, mcshm_pool::new(pool)) };
        Ok(())
    })
}

/// Destroys a pool handle: the owner unmaps and unlinks, a peer only unmaps.
/// If thread caches of the pool remain, that happens when the last of them
/// is destroyed; the handle must not be used again either way. NULL is a
/// no-op.
///
/// # Safety
/// `pool` is NULL or a handle from `mcshm_pool_create`/`mcshm_pool_open` not
/// yet destroyed, and no other thread is using it.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_destroy(pool: *mut mcshm_pool) {
    if !pool.is_null() {
        // SAFETY: per the function's contract, a live handle from
        // `hand_out`, whose own reference this gives up.
        unsafe { release_pool(pool) };
    }
}

/// Allocates `size` bytes aligned to `align` (0 = default) and writes the
/// offset from the mapping base to `out_offset`. Owner only.
///
/// # Safety
/// `pool` is a live handle; `out_offset` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_alloc(
    pool: *const mcshm_pool,
    size: u64,
    align: u64,
    out_offset: *mut u64,
) -> i32 {
    if !(ptr_ok(out_offset) & ptr_ok(pool)) {
        // The first bad one decides, `out_offset` before `pool`.
        return bad_pointer_pair(out_offset.addr(), pool.addr());
    }
    // SAFETY: non-null and aligned (checked above); live per the contract.
    let p = unsafe { &*pool };
    // Cannot panic (no calls, no checked arithmetic); see `Arena::alloc_quick`.
    if let Some(off) = p.pool.alloc_quick(size, align) {
        // SAFETY: non-null and aligned (checked above); writable per contract.
        unsafe { out_offset.write(off) };
        return MCSHM_OK;
    }
    // Tail calls: the quick-slot answer above sets up no frame.
    if p.pool.sharded() {
        // SAFETY: checked above; writable per contract.
        unsafe { pool_alloc_sharded(p, size, align, out_offset) }
    } else {
        // SAFETY: as above.
        unsafe { pool_alloc_full(p, size, align, out_offset) }
    }
}

/// [`bad_pointer`] for `mcshm_pool_alloc`'s `(out_offset, pool)`, out of
/// line so that the entry point reaches it with a tail call.
#[cold]
#[inline(never)]
extern "C" fn bad_pointer_pair(out_offset: usize, pool: usize) -> i32 {
    bad_pointer(&[
        (out_offset, align_of::<u64>()),
        (pool, align_of::<mcshm_pool>()),
    ])
}

/// [`mcshm_pool_alloc`] on a pool with several shards, after a miss of the
/// one-shard quick path: the quick path of several shards, which reads a
/// thread-local (a call in a shared library, which the frameless entry
/// point cannot make), then [`pool_alloc_full`].
///
/// # Safety
/// `out_offset` is non-null, aligned and writable.
#[inline(never)]
unsafe extern "C" fn pool_alloc_sharded(
    p: &mcshm_pool,
    size: u64,
    align: u64,
    out_offset: *mut u64,
) -> i32 {
    // Cannot panic; see `ShardedArena::alloc_quick_sharded`.
    if let Some(off) = p.pool.alloc_quick_sharded(size, align) {
        // SAFETY: per this function's contract.
        unsafe { out_offset.write(off) };
        return MCSHM_OK;
    }
    // SAFETY: per this function's contract.
    unsafe { pool_alloc_full(p, size, align, out_offset) }
}

/// [`mcshm_pool_alloc`] for everything the quick paths leave: allocations
/// from the free lists, and errors.
///
/// # Safety
/// `out_offset` is non-null, aligned and writable.
///
/// `extern "C"` (which cannot unwind) so that the callers above reach it
/// with a tail call: no landing pad, hence no stack frame, on the way.
#[inline(never)]
unsafe extern "C" fn pool_alloc_full(
    p: &mcshm_pool,
    size: u64,
    align: u64,
    out_offset: *mut u64,
) -> i32 {
    match caught(|| p.pool.alloc(size, align)) {
        Ok(off) => {
            // SAFETY: per this function's contract.
            unsafe { out_offset.write(off) };
            MCSHM_OK
        }
        Err(code) => code,
    }
}

/// Frees the allocation that starts at `offset`. Owner only.
///
/// # Safety
/// `pool` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_free(pool: *const mcshm_pool, offset: u64) -> i32 {
    if !ptr_ok(pool) {
        return bad_pool_pointer(pool.addr());
    }
    // SAFETY: non-null and aligned (checked above); live per the contract.
    let p = unsafe { &*pool };
    // Cannot panic (no calls, no checked arithmetic); see `Arena::free_quick`.
    if p.pool.free_quick(offset) {
        return MCSHM_OK;
    }
    // Tail calls, as in `mcshm_pool_alloc`.
    if p.pool.sharded() {
        pool_free_sharded(p, offset)
    } else {
        pool_free_full(p, offset)
    }
}

/// [`bad_pointer`] for a `pool` argument alone, out of line as
/// [`bad_pointer_pair`] is.
#[cold]
#[inline(never)]
extern "C" fn bad_pool_pointer(pool: usize) -> i32 {
    bad_pointer(&[(pool, align_of::<mcshm_pool>())])
}

/// [`mcshm_pool_free`] on a pool with several shards, after a miss of the
/// one-shard quick path; as [`pool_alloc_sharded`].
#[inline(never)]
extern "C" fn pool_free_sharded(p: &mcshm_pool, offset: u64) -> i32 {
    // Cannot panic; see `ShardedArena::free_quick_sharded`.
    if p.pool.free_quick_sharded(offset) {
        return MCSHM_OK;
    }
    pool_free_full(p, offset)
}

/// [`mcshm_pool_free`] for everything the quick paths leave; as
/// [`pool_alloc_full`].
#[inline(never)]
extern "C" fn pool_free_full(p: &mcshm_pool, offset: u64) -> i32 {
    match caught(|| p.pool.free(offset)) {
        Ok(()) => MCSHM_OK,
        Err(code) => code,
    }
}

// ---------------------------------------------------------------------------
// Thread caches
// ---------------------------------------------------------------------------

/// `max_bytes` of `mcshm_cache_create` when 0 is passed: 64 MiB.
pub const MCSHM_CACHE_DEFAULT_BYTES: u64 = 64 << 20;

/// A thread cache of an owner's pool: allocation and free without a lock,
/// for the thread that created it (see `mcshm_cache_create`).
pub struct mcshm_cache {
    /// [`thread_id`] of the creating thread; only it may use `cache`.
    thread: usize,
    /// Used only by the creating thread (checked on every call), hence
    /// never by two threads at once.
    cache: UnsafeCell<ThreadCache<'static, Pool>>,
    /// The pool handle, one of whose references this cache holds.
    pool: *mut mcshm_pool,
}

/// An identity of the calling thread, distinct among live threads and cheap
/// to read: the thread pointer on x86-64 and AArch64 (the TLS ABI keeps it
/// in `%fs:0` and `tpidr_el0`), `pthread_self()` elsewhere.
#[inline(always)]
fn thread_id() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: on x86-64 Linux the word at %fs:0 is the thread control
        // block's pointer to itself (ELF TLS ABI, variant II): always
        // mapped and readable, and reading it has no side effects.
        unsafe {
            core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
                             options(nostack, preserves_flags, readonly, pure))
        };
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: usize;
        // SAFETY: reading the thread pointer register has no side effects.
        unsafe {
            core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp,
                             options(nostack, preserves_flags, nomem, pure))
        };
        tp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // SAFETY: pthread_self has no preconditions.
        unsafe { libc::pthread_self() as usize }
    }
}

/// Creates a thread cache of `pool` (an owner's) for the calling thread:
/// `mcshm_cache_alloc` and `mcshm_cache_free` then work without a lock from
/// this thread, and fail with `MCSHM_ERR_WRONG_THREAD` from any other. The
/// cache owns up to 512 blocks of the pool and keeps up to `max_bytes` (0: 64 MiB)
/// of freed ones for reuse. (The check tells live threads apart; a thread
/// started after the creator has exited may be given its identity, and
/// with it the cache: destroy a cache when its thread is done.)
///
/// A block allocated through a cache must be freed through it:
/// `mcshm_pool_free` refuses it with `MCSHM_ERR_CACHE_OWNED` until the cache
/// is destroyed. The pool's statistics count the blocks a cache keeps as in
/// use. The pool stays alive until its handle and all its caches are
/// destroyed.
///
/// # Safety
/// `pool` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_cache_create(
    pool: *const mcshm_pool,
    max_bytes: u64,
    out: *mut *mut mcshm_cache,
) -> i32 {
    guard(|| {
        check_out(out)?;
        // SAFETY: per the function's contract.
        let p = unsafe { arg_ref(pool)? };
        if !p.pool.is_owner() {
            return Err(Error::NotOwner.into());
        }
        p.refs.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the reference just taken keeps `p` (and so its pool)
        // alive until `mcshm_cache_destroy` has dropped the cache, which is
        // the last use of this borrow.
        let pool_ref: &'static Pool = unsafe { &*core::ptr::addr_of!(p.pool) };
        let max = if max_bytes == 0 {
            MCSHM_CACHE_DEFAULT_BYTES
        } else {
            max_bytes
        };
        let cache = mcshm_cache {
            thread: thread_id(),
            cache: UnsafeCell::new(ThreadCache::new(pool_ref, max)),
            pool: pool.cast_mut(),
        };
        // SAFETY: `out` was checked non-null and aligned at entry.
        unsafe { hand_out(out, cache) };
        Ok(())
    })
}

/// Destroys a thread cache: the blocks it keeps go back to the pool, and the
/// ones still allocated through it become ordinary blocks of the pool (freed
/// with `mcshm_pool_free` from then on). May be called from any thread.
/// NULL is a no-op.
///
/// # Safety
/// `cache` is NULL or a handle from `mcshm_cache_create` not yet destroyed,
/// and no other thread is using it.
#[no_mangle]
pub unsafe extern "C" fn mcshm_cache_destroy(cache: *mut mcshm_cache) {
    if cache.is_null() {
        return;
    }
    // SAFETY: per the function's contract, a live handle.
    let pool = unsafe { (*cache).pool };
    // The cache gives its blocks back while the pool is alive...
    // SAFETY: per the function's contract, a handle from `hand_out` destroyed once.
    unsafe { take_back(cache) };
    // ...and then its reference to the pool, even if that panicked (so
    // the pool's name is never left behind).
    // SAFETY: the cache held this reference and is gone.
    unsafe { release_pool(pool) };
}

/// The calling thread's cache behind `cache`, if it is that thread's.
///
/// # Safety
/// `cache` is non-null, aligned and a live handle.
#[inline(always)]
unsafe fn own_cache<'a>(cache: *const mcshm_cache) -> Option<&'a mut ThreadCache<'static, Pool>> {
    // SAFETY: per this function's contract; `thread` is never written after
    // creation, so any thread may read it.
    let c = unsafe { &*cache };
    // In this order the compiler compares with `c.thread` in memory.
    if thread_id() != c.thread {
        return None;
    }
    // SAFETY: only the creating thread gets here, one call at a time (the
    // calls make no callbacks), so this is the only reference.
    Some(unsafe { &mut *c.cache.get() })
}

/// Allocates `size` bytes aligned to `align` (0 = default) through the
/// calling thread's cache and writes the offset from the mapping base to
/// `out_offset`. Errors as `mcshm_pool_alloc`, plus `MCSHM_ERR_WRONG_THREAD`.
/// The block may be larger than asked: a new one is rounded up to its size
/// class (at most 1/32 more) and to at least 512 bytes, the cache's
/// smallest block, so that a freed one serves every request of its class.
///
/// # Safety
/// `cache` is a live handle; `out_offset` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_cache_alloc(
    cache: *mut mcshm_cache,
    size: u64,
    align: u64,
    out_offset: *mut u64,
) -> i32 {
    if handle_and_out_ok(cache, out_offset) {
        // SAFETY: non-null and aligned (checked above); live per the contract.
        if let Some(c) = unsafe { own_cache(cache) } {
            // Cannot panic (no calls, no checked arithmetic); see
            // `ThreadCache::alloc_kept`.
            if let Some(off) = c.alloc_kept(size, align) {
                // SAFETY: non-null and aligned (checked above); writable per contract.
                unsafe { out_offset.write(off) };
                return MCSHM_OK;
            }
        }
    }
    // SAFETY: per this function's contract.
    unsafe { cache_alloc_slow(cache, size, align, out_offset) }
}

/// [`mcshm_cache_alloc`] past the kept blocks: bad arguments, the wrong
/// thread, and allocations from the pool. `extern "C"` for the reason
/// [`pool_alloc_full`] is.
///
/// # Safety
/// As [`mcshm_cache_alloc`].
#[inline(never)]
unsafe extern "C" fn cache_alloc_slow(
    cache: *mut mcshm_cache,
    size: u64,
    align: u64,
    out_offset: *mut u64,
) -> i32 {
    if !ptr_ok(out_offset) | !ptr_ok(cache) {
        return bad_pointer(&[
            (out_offset.addr(), align_of::<u64>()),
            (cache.addr(), align_of::<mcshm_cache>()),
        ]);
    }
    // SAFETY: non-null and aligned (checked above); live per the contract.
    let Some(c) = (unsafe { own_cache(cache) }) else {
        return MCSHM_ERR_WRONG_THREAD;
    };
    match caught(|| c.alloc(size, align)) {
        Ok(off) => {
            // SAFETY: non-null and aligned (checked above); writable per contract.
            unsafe { out_offset.write(off) };
            MCSHM_OK
        }
        Err(code) => code,
    }
}

/// Frees, through the calling thread's cache, a block allocated through it
/// (kept for reuse) or any other block of the pool (passed on to the pool).
/// Errors as `mcshm_pool_free`, plus `MCSHM_ERR_WRONG_THREAD`, and
/// `MCSHM_ERR_CACHE_OWNED` for a block of another cache.
///
/// # Safety
/// `cache` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mcshm_cache_free(cache: *mut mcshm_cache, offset: u64) -> i32 {
    if !ptr_ok(cache) {
        return bad_cache_pointer(cache.addr());
    }
    // SAFETY: non-null and aligned (checked above); live per the contract.
    if let Some(c) = unsafe { own_cache(cache) } {
        // Cannot panic (no calls, no checked arithmetic); see
        // `ThreadCache::free_kept_at_home`.
        if c.free_kept_at_home(offset) {
            return MCSHM_OK;
        }
    }
    // SAFETY: per this function's contract.
    unsafe { cache_free_slow(cache, offset) }
}

/// [`bad_pointer`] for a `cache` argument alone, out of line as
/// [`bad_pool_pointer`] is (and a target of its own, so that the fast path
/// tests the two halves of `ptr_ok` with two branches, not with four
/// instructions that combine them and one branch).
#[cold]
#[inline(never)]
extern "C" fn bad_cache_pointer(cache: usize) -> i32 {
    bad_pointer(&[(cache, align_of::<mcshm_cache>())])
}

/// [`mcshm_cache_free`] past the kept blocks; as [`cache_alloc_slow`].
///
/// # Safety
/// As [`mcshm_cache_free`].
#[inline(never)]
unsafe extern "C" fn cache_free_slow(cache: *mut mcshm_cache, offset: u64) -> i32 {
    // SAFETY: per this function's contract.
    unsafe { on_own_cache(cache, |c| c.free(offset)) }
}

/// The result code of `f` run on the calling thread's cache behind
/// `cache`: a bad pointer's, `MCSHM_ERR_WRONG_THREAD`, or `f`'s own (a
/// panic stopped here).
///
/// # Safety
/// `cache` is a live handle (if non-null and aligned).
unsafe fn on_own_cache(
    cache: *mut mcshm_cache,
    f: impl FnOnce(&mut ThreadCache<'static, Pool>) -> crate::Result<()>,
) -> i32 {
    if !ptr_ok(cache) {
        return bad_cache_pointer(cache.addr());
    }
    // SAFETY: non-null and aligned (checked above); live per the contract.
    let Some(c) = (unsafe { own_cache(cache) }) else {
        return MCSHM_ERR_WRONG_THREAD;
    };
    match caught(|| f(c)) {
        Ok(()) => MCSHM_OK,
        Err(code) => code,
    }
}

/// Gives every block the calling thread's cache keeps for reuse back to
/// the pool (blocks allocated through it stay its own).
///
/// # Safety
/// `cache` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mcshm_cache_flush(cache: *mut mcshm_cache) -> i32 {
    // SAFETY: per this function's contract.
    unsafe { on_own_cache(cache, |c| c.flush()) }
}

/// Turns `(offset, len)` into a pointer in this process's mapping,
/// bounds-checked against the pool's data area.
///
/// # Safety
/// `pool` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_ptr(
    pool: *const mcshm_pool,
    offset: u64,
    len: u64,
    out: *mut *mut c_void,
) -> i32 {
    guard(|| {
        // SAFETY: per the function's contract.
        let p = unsafe { arg_ref(pool)? };
        let ptr = p.pool.ptr(offset, len)?;
        // SAFETY: per the function's contract.
        unsafe { put(out, ptr.cast::<c_void>())? };
        Ok(())
    })
}

/// Turns a pointer into this process's mapping back into an offset.
///
/// # Safety
/// `pool` is a live handle; `out_offset` is writable. `ptr` is only compared.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_offset_of(
    pool: *const mcshm_pool,
    ptr: *const c_void,
    out_offset: *mut u64,
) -> i32 {
    guard(|| {
        // SAFETY: per the function's contract.
        let p = unsafe { arg_ref(pool)? };
        let off = p.pool.offset_of(ptr.cast::<u8>())?;
        // SAFETY: per the function's contract.
        unsafe { put(out_offset, off)? };
        Ok(())
    })
}

/// Reports the base address and length of this process's mapping of the pool.
///
/// # Safety
/// `pool` is a live handle; both out-parameters are writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_mapping(
    pool: *const mcshm_pool,
    out_base: *mut *mut c_void,
    out_len: *mut u64,
) -> i32 {
    guard(|| {
        check_out(out_base)?;
        check_out(out_len)?;
        // SAFETY: per the function's contract.
        let p = unsafe { arg_ref(pool)? };
        // SAFETY: both checked at entry.
        unsafe {
            out_base.write(p.pool.base().cast::<c_void>());
            out_len.write(p.pool.len());
        }
        Ok(())
    })
}

/// Copies the pool's arena statistics to `out` (owner only; a peer's are zero).
///
/// # Safety
/// `pool` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_pool_stats_get(
    pool: *const mcshm_pool,
    out: *mut mcshm_pool_stats,
) -> i32 {
    guard(|| {
        // SAFETY: per the function's contract.
        let p = unsafe { arg_ref(pool)? };
        // SAFETY: per the function's contract.
        unsafe { put(out, p.pool.stats().into())? };
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Translation table
// ---------------------------------------------------------------------------

/// A translation table; its metadata lives in a private anonymous mapping.
pub struct mcshm_table {
    table: Table<AnonMap<AtomicU64>>,
}

/// Capacities of a table; fill with `mcshm_table_config_init` first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mcshm_table_config {
    /// Local segment ids are `0 .. max_segments`.
    pub max_segments: u32,
    /// Peer ids are `0 .. max_peers`.
    pub max_peers: u32,
    /// Remote ranges registered across all peers.
    pub max_ranges: u32,
    /// Radix index nodes shared by all address spaces, each 4096 slots of
    /// one level (32 KiB). The table maps room for all of them at creation
    /// (the default 4096 nodes: 128 MiB of address space) but touches a
    /// node's pages only when an insert takes it; nodes are never reused.
    pub max_nodes: u32,
}

/// The defaults `mcshm_table_config_init` writes.
const DEFAULT_TABLE_CONFIG: mcshm_table_config = mcshm_table_config {
    max_segments: 4096,
    max_peers: 256,
    max_ranges: 65536,
    max_nodes: 4096,
};

/// Fills `cfg` with the defaults. Does nothing when `cfg` is NULL.
///
/// # Safety
/// `cfg` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_config_init(cfg: *mut mcshm_table_config) {
    // SAFETY: the caller passes NULL or a writable config; NULL is reported and ignored.
    let _ = unsafe { put(cfg, DEFAULT_TABLE_CONFIG) };
}

/// Creates a table with capacities from `cfg` (NULL = defaults).
///
/// # Safety
/// `cfg` is NULL or a valid config; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_create(
    cfg: *const mcshm_table_config,
    out: *mut *mut mcshm_table,
) -> i32 {
    guard(|| {
        check_out(out)?;
        let c = if cfg.is_null() {
            DEFAULT_TABLE_CONFIG
        } else {
            // SAFETY: non-null; validity is the caller's contract.
            *unsafe { arg_ref(cfg)? }
        };
        let cfg = TableConfig {
            max_segments: c.max_segments,
            max_peers: c.max_peers,
            max_ranges: c.max_ranges,
            max_nodes: c.max_nodes,
        };
        let words = AnonMap::zeroed(Table::<AnonMap<AtomicU64>>::words_for(&cfg))?;
        let table = Table::new(cfg, words)?;
        // SAFETY: `out` was checked non-null and aligned at entry.
        unsafe { hand_out(out, mcshm_table { table }) };
        Ok(())
    })
}

/// Destroys a table. NULL is a no-op. The table never unmapped anything, so
/// pointers it handed out stay as valid as the mappings they point into.
///
/// # Safety
/// `table` is NULL or a live handle no other thread is using.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_destroy(table: *mut mcshm_table) {
    // SAFETY: per the function's contract, a handle from `hand_out` destroyed once.
    unsafe { take_back(table) };
}

/// Registers local segment `id` at `[base, base + len)`.
///
/// # Safety
/// `t` is a live handle. `base` is only recorded, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_insert_segment(
    t: *const mcshm_table,
    id: u32,
    base: *mut c_void,
    len: u64,
) -> i32 {
    guard(|| {
        // SAFETY: per the function's contract.
        let t = unsafe { arg_ref(t)? };
        t.table
            .insert_segment(id, base.expose_provenance(), len)
            .map_err(Fail::from)
    })
}

/// Unregisters local segment `id`.
///
/// # Safety
/// `t` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_remove_segment(t: *const mcshm_table, id: u32) -> i32 {
    guard(|| {
        // SAFETY: per the function's contract.
        let t = unsafe { arg_ref(t)? };
        t.table.remove_segment(id).map_err(Fail::from)
    })
}

/// The shared fast path of the address lookups: check the handle and `out`
/// with one branch, run `lookup` on the table, write the local pointer.
///
/// The table's read path has no panicking operation (every index is checked
/// or an invariant, all arithmetic is checked or wrapping); the guard stays
/// as the safety net and costs nothing on the way through.
///
/// # Safety
/// A non-null, aligned `t` is a live handle; a non-null, aligned `out` is writable.
#[inline(always)]
unsafe fn lookup_into(
    t: *const mcshm_table,
    out: *mut *mut c_void,
    lookup: impl FnOnce(&Table<AnonMap<AtomicU64>>) -> crate::Result<usize>,
) -> i32 {
    if !handle_and_out_ok(t, out) {
        return bad_handle_or_out(t, out);
    }
    guard(|| {
        // SAFETY: non-null and aligned (checked above); live per the contract.
        let t = unsafe { &*t };
        let addr = lookup(&t.table)?;
        // SAFETY: non-null and aligned (checked above); writable per the contract.
        unsafe { out.write(core::ptr::with_exposed_provenance_mut(addr)) };
        Ok(())
    })
}

/// `(segment id, offset, len)` -> local pointer, bounds-checked. O(1), no lock.
///
/// # Safety
/// `t` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_resolve(
    t: *const mcshm_table,
    id: u32,
    offset: u64,
    len: u64,
    out: *mut *mut c_void,
) -> i32 {
    // SAFETY: per this function's contract.
    unsafe { lookup_into(t, out, |t| t.resolve(id, offset, len)) }
}

/// Local pointer -> `(segment id, offset)`. O(1), no lock.
///
/// # Safety
/// `t` is a live handle; the out-parameters are writable. `ptr` is only compared.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_locate(
    t: *const mcshm_table,
    ptr: *const c_void,
    out_id: *mut u32,
    out_offset: *mut u64,
) -> i32 {
    let i = out_id.addr();
    if !(handle_and_out_ok(t, out_offset) & (i != 0) & (i % align_of::<u32>() == 0)) {
        return bad_locate_args(t, out_id, out_offset);
    }
    // As in `mcshm_table_resolve`: no panic on the read path, guard kept.
    guard(|| {
        // SAFETY: non-null and aligned (checked above); live per the contract.
        let t = unsafe { &*t };
        let (id, off) = t.table.locate(ptr.addr())?;
        // SAFETY: both non-null and aligned (checked above); writable per
        // the contract.
        unsafe {
            out_id.write(id);
            out_offset.write(off);
        }
        Ok(())
    })
}

/// Registers peer `peer`'s range `[remote_base, remote_base + len)`, mapped
/// locally at `local_base`. Both bases page-aligned; a peer's ranges never overlap.
///
/// # Safety
/// `t` is a live handle. `local_base` is only recorded, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_insert_remote(
    t: *const mcshm_table,
    peer: u32,
    remote_base: u64,
    len: u64,
    local_base: *mut c_void,
) -> i32 {
    guard(|| {
        // SAFETY: per the function's contract.
        let t = unsafe { arg_ref(t)? };
        t.table
            .insert_remote(peer, remote_base, len, local_base.expose_provenance())
            .map_err(Fail::from)
    })
}

/// Unregisters the peer's range that starts at `remote_base`.
///
/// # Safety
/// `t` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_remove_remote(
    t: *const mcshm_table,
    peer: u32,
    remote_base: u64,
) -> i32 {
    guard(|| {
        // SAFETY: per the function's contract.
        let t = unsafe { arg_ref(t)? };
        t.table.remove_remote(peer, remote_base).map_err(Fail::from)
    })
}

/// `(peer, remote address, len)` -> local pointer: the O(1), lock-free
/// replacement for Mooncake's `relocateSharedMemoryAddress`.
///
/// # Safety
/// `t` is a live handle; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_relocate(
    t: *const mcshm_table,
    peer: u32,
    remote_addr: u64,
    len: u64,
    out: *mut *mut c_void,
) -> i32 {
    if handle_and_out_ok(t, out) {
        // SAFETY: non-null and aligned (checked above); live per the contract.
        let table = unsafe { &(*t).table };
        // Cannot panic: the direct path only does checked indexing-free
        // loads, compares and wrapping arithmetic.
        if let Ok(local) = table.relocate_direct(peer, remote_addr, len) {
            // SAFETY: non-null and aligned (checked above); writable per the contract.
            unsafe { out.write(core::ptr::with_exposed_provenance_mut(local)) };
            return MCSHM_OK;
        }
    }
    // SAFETY: per this function's contract.
    unsafe { relocate_slow(t, peer, remote_addr, len, out) }
}

/// [`mcshm_table_relocate`] for everything but a direct-entry answer: bad
/// pointers, errors, and answers that need the range record.
///
/// # Safety
/// As [`mcshm_table_relocate`].
///
/// `extern "C"` (which cannot unwind) so that the fast path reaches it with a
/// tail call: no landing pad, hence no stack frame, on the way.
#[cold]
#[inline(never)]
unsafe extern "C" fn relocate_slow(
    t: *const mcshm_table,
    peer: u32,
    remote_addr: u64,
    len: u64,
    out: *mut *mut c_void,
) -> i32 {
    // `relocate_by_record`: the caller has tried the direct path (or found
    // a bad pointer, which `lookup_into` reports before any lookup).
    // SAFETY: per this function's contract.
    unsafe { lookup_into(t, out, |t| t.relocate_by_record(peer, remote_addr, len)) }
}

/// One access for `mcshm_table_relocate_batch`: `len` bytes at the peer's
/// address `addr` (as one `mcshm_table_relocate` call takes them).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mcshm_span {
    /// The peer's address of the first byte.
    pub addr: u64,
    /// Bytes accessed from `addr` (0: only `addr` is checked).
    pub len: u64,
}

// `mcshm_table_relocate_batch` reads the caller's array as `RemoteSpan`s.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<mcshm_span>() == size_of::<RemoteSpan>());
    assert!(align_of::<mcshm_span>() == align_of::<RemoteSpan>());
    assert!(offset_of!(mcshm_span, addr) == offset_of!(RemoteSpan, addr));
    assert!(offset_of!(mcshm_span, len) == offset_of!(RemoteSpan, len));
};

/// The arrays of `mcshm_table_relocate_batch` as slices, after checking
/// them: empty for `n == 0` (whatever the pointers), else non-null,
/// aligned, of a size that fits the address space, and not overlapping.
///
/// # Safety
/// For `n > 0`, `spans` is readable and `out` writable for `n` elements,
/// both for `'a`.
unsafe fn batch_arrays<'a>(
    spans: *const mcshm_span,
    n: usize,
    out: *mut *mut c_void,
) -> Result<(&'a [RemoteSpan], &'a mut [usize]), Fail> {
    if n == 0 {
        return Ok((&[], &mut []));
    }
    // SAFETY: `arg_ref` only checks here; the arrays are borrowed below.
    unsafe { arg_ref(spans)? };
    // SAFETY: as above.
    unsafe { arg_ref(out.cast_const())? };
    let (s0, o0) = (spans.addr(), out.addr());
    let bytes = |size: usize, at: usize| {
        n.checked_mul(size)
            .filter(|&b| b <= isize::MAX as usize && at.checked_add(b).is_some())
    };
    let (Some(span_bytes), Some(out_bytes)) = (
        bytes(size_of::<mcshm_span>(), s0),
        bytes(size_of::<usize>(), o0),
    ) else {
        return Err(Error::InvalidArgument.into());
    };
    if s0 < o0 + out_bytes && o0 < s0 + span_bytes {
        return Err(Error::InvalidArgument.into());
    }
    // SAFETY: non-null and aligned (checked), readable for `n` elements
    // (the contract), not overlapping `out` (checked), and `mcshm_span` has
    // `RemoteSpan`'s layout (asserted above).
    let spans = unsafe { core::slice::from_raw_parts(spans.cast::<RemoteSpan>(), n) };
    // SAFETY: non-null and aligned (checked), writable for `n` elements (the
    // contract), not overlapping `spans` (checked). `*mut c_void` and
    // `usize` have one size and alignment; the integers written are the
    // pointers `mcshm_table_relocate` returns (their addresses).
    let out = unsafe { core::slice::from_raw_parts_mut(out.cast::<usize>(), n) };
    Ok((spans, out))
}

/// `mcshm_table_relocate` for `n` accesses to one peer in one call:
/// `out[i]` gets the local pointer of `spans[i]`. The same answers and
/// errors as `n` single calls, without their per-call cost: for translating
/// every slice of a transfer batch.
///
/// Stops at the first access that fails and returns its code; `out` is
/// written below that index and untouched from it. `*out_done`, if
/// `out_done` is not NULL, gets the number of accesses translated: `n` on
/// `MCSHM_OK`, else the failing index (0 for a bad argument). `spans` and
/// `out` may be NULL only when `n` is 0.
///
/// `MCSHM_ERR_INVALID_ARGUMENT` if `peer` is out of range, if the two arrays
/// overlap, or for a misaligned pointer; `MCSHM_ERR_NULL_ARGUMENT` for a
/// NULL `t`, or a NULL array with `n > 0`.
///
/// # Safety
/// `t` is a live handle; `spans` is readable and `out` writable for `n`
/// elements; `out_done` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mcshm_table_relocate_batch(
    t: *const mcshm_table,
    peer: u32,
    spans: *const mcshm_span,
    n: usize,
    out: *mut *mut c_void,
    out_done: *mut usize,
) -> i32 {
    let mut done = 0;
    let rc = guard(|| {
        // SAFETY: per the function's contract.
        let t = unsafe { arg_ref(t)? };
        if !out_done.is_aligned() {
            return Err(ArgError::Misaligned.into());
        }
        // SAFETY: per the function's contract.
        let (spans, out) = unsafe { batch_arrays(spans, n, out)? };
        match t.table.relocate_batch(peer, spans, out) {
            Ok(()) => {
                done = n;
                Ok(())
            }
            Err((i, e)) => {
                done = i;
                Err(e.into())
            }
        }
    });
    if !out_done.is_null() && out_done.is_aligned() {
        // SAFETY: non-null and aligned (checked), writable per the contract.
        unsafe { out_done.write(done) };
    }
    rc
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A static description of a result code; never NULL.
#[no_mangle]
pub extern "C" fn mcshm_strerror(code: i32) -> *const c_char {
    let s: &'static CStr = match code {
        MCSHM_OK => c"ok",
        MCSHM_ERR_NULL_ARGUMENT => c"a required pointer argument is NULL",
        MCSHM_ERR_ZERO_SIZE => c"zero-size allocation",
        MCSHM_ERR_TOO_LARGE => c"request larger than capacity",
        MCSHM_ERR_BAD_ALIGNMENT => c"alignment is not a power of two up to 4096",
        MCSHM_ERR_EXHAUSTED => c"no free block large enough",
        MCSHM_ERR_DOUBLE_FREE => c"offset already freed",
        MCSHM_ERR_INVALID_OFFSET => c"offset was never handed out",
        MCSHM_ERR_METADATA_FULL => c"allocator metadata storage is full",
        MCSHM_ERR_OUT_OF_BOUNDS => c"range out of bounds",
        MCSHM_ERR_NOT_FOUND => c"not found",
        MCSHM_ERR_ALREADY_EXISTS => c"already exists",
        MCSHM_ERR_TABLE_FULL => c"translation table is full",
        MCSHM_ERR_INVALID_ARGUMENT => c"invalid argument",
        MCSHM_ERR_INVALID_NAME => c"invalid shared-memory name",
        MCSHM_ERR_TRUNCATED => c"object is truncated",
        MCSHM_ERR_BAD_MAGIC => c"not a mooncake-shm pool (bad magic)",
        MCSHM_ERR_VERSION_MISMATCH => c"pool layout version mismatch",
        MCSHM_ERR_NOT_READY => c"pool is not initialized yet",
        MCSHM_ERR_NOT_OWNER => c"operation reserved to the pool owner",
        MCSHM_ERR_OS => c"system call failed (see mcshm_last_os_error)",
        MCSHM_ERR_PANIC => c"internal error caught at the C boundary",
        MCSHM_ERR_NOT_SEALED => c"descriptor is not sealed against shrinking",
        MCSHM_ERR_CACHE_OWNED => c"block belongs to a thread cache; free it through that cache",
        MCSHM_ERR_WRONG_THREAD => c"thread cache used from another thread",
        _ => c"unknown result code",
    };
    s.as_ptr()
}

/// The errno of the last `MCSHM_ERR_OS` returned on this thread (0 if none).
#[no_mangle]
pub extern "C" fn mcshm_last_os_error() -> i32 {
    LAST_OS_ERROR.with(|e| e.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_distinct_code_and_message() {
        let all = [
            Error::ZeroSize,
            Error::TooLarge,
            Error::BadAlignment,
            Error::Exhausted,
            Error::DoubleFree,
            Error::InvalidOffset,
            Error::MetadataFull,
            Error::OutOfBounds,
            Error::NotFound,
            Error::AlreadyExists,
            Error::TableFull,
            Error::InvalidArgument,
            Error::InvalidName,
            Error::Truncated,
            Error::BadMagic,
            Error::VersionMismatch,
            Error::NotReady,
            Error::NotOwner,
            Error::NotSealed,
            Error::CacheOwned,
            Error::Os(5),
        ];
        let mut codes: Vec<i32> = all.iter().map(|e| code_of(*e)).collect();
        codes.extend([
            MCSHM_ERR_NULL_ARGUMENT,
            MCSHM_ERR_PANIC,
            MCSHM_ERR_WRONG_THREAD,
        ]);
        let unknown = mcshm_strerror(9999);
        for &c in &codes {
            assert_ne!(c, MCSHM_OK);
            assert_ne!(mcshm_strerror(c), unknown, "code {c} has no message");
        }
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n, "codes collide");
        assert_eq!(mcshm_last_os_error(), 5);
    }

    #[test]
    fn panics_stop_at_the_boundary() {
        assert_eq!(guard(|| panic!("boom")), MCSHM_ERR_PANIC);
    }

    /// Random alloc/free sequences through the C entry points (quick paths
    /// and full paths, one and two shards) against a model of the live
    /// blocks: allocations are aligned, in bounds and disjoint from every
    /// live block; frees of live blocks succeed; a second free, or a free
    /// inside a block, never does; the pool is empty at the end.
    #[test]
    fn c_entry_points_match_a_model_of_live_blocks() {
        use rand::{Rng, SeedableRng};
        use std::collections::BTreeMap;
        for shards in [1, 2] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed + shards as u64);
            let mut opts = core::mem::MaybeUninit::<mcshm_pool_options>::uninit();
            // SAFETY: writes every field of `opts`.
            unsafe { mcshm_pool_options_init(opts.as_mut_ptr()) };
            // SAFETY: initialized just above.
            let mut opts = unsafe { opts.assume_init() };
            opts.capacity = 4 << 20;
            opts.shards = shards;
            let mut pool: *mut mcshm_pool = core::ptr::null_mut();
            // SAFETY: valid options and out pointer; a memfd pool leaves no name behind.
            assert_eq!(
                unsafe { mcshm_pool_create_memfd(&opts, &mut pool) },
                MCSHM_OK
            );
            let (mut base, mut len) = (core::ptr::null_mut(), 0u64);
            // SAFETY: `pool` is live; the out pointers are writable.
            assert_eq!(
                unsafe { mcshm_pool_mapping(pool, &mut base, &mut len) },
                MCSHM_OK
            );
            let mut live: BTreeMap<u64, u64> = BTreeMap::new();
            let mut gone: Vec<u64> = Vec::new();
            let mut last_freed = 4096;
            for step in 0..20_000 {
                match rng.random_range(0..10) {
                    0..=4 => {
                        // Often the size just freed (a quick-slot hit), else any.
                        let size = if rng.random_bool(0.5) {
                            last_freed
                        } else {
                            rng.random_range(1..=96 << 10)
                        };
                        let align = [0u64, 16, 64, 4096][rng.random_range(0..4)];
                        let mut off = u64::MAX;
                        // SAFETY: `pool` is live; `off` is writable.
                        let rc = unsafe { mcshm_pool_alloc(pool, size, align, &mut off) };
                        if rc != MCSHM_OK {
                            assert!(
                                rc == MCSHM_ERR_EXHAUSTED || rc == MCSHM_ERR_METADATA_FULL,
                                "step {step}: alloc({size}, {align}) -> {rc}"
                            );
                            continue;
                        }
                        assert_eq!(off % align.max(16), 0, "step {step}: misaligned");
                        assert!(off + size <= len, "step {step}: out of the mapping");
                        if let Some((&o, &n)) = live.range(..off + size).next_back() {
                            assert!(o + n <= off, "step {step}: overlaps [{o}, +{n})");
                        }
                        live.insert(off, size);
                        gone.retain(|&g| g != off);
                    }
                    5..=7 if !live.is_empty() => {
                        let k = rng.random_range(0..live.len());
                        let (&off, &size) = live.iter().nth(k).unwrap();
                        // SAFETY: `pool` is live.
                        assert_eq!(unsafe { mcshm_pool_free(pool, off) }, MCSHM_OK);
                        live.remove(&off);
                        gone.push(off);
                        last_freed = size;
                    }
                    8 if !gone.is_empty() => {
                        let off = gone[rng.random_range(0..gone.len())];
                        // SAFETY: `pool` is live.
                        let rc = unsafe { mcshm_pool_free(pool, off) };
                        assert!(
                            rc == MCSHM_ERR_DOUBLE_FREE || rc == MCSHM_ERR_INVALID_OFFSET,
                            "step {step}: second free of {off} -> {rc}"
                        );
                    }
                    _ if !live.is_empty() => {
                        let k = rng.random_range(0..live.len());
                        let (&off, &size) = live.iter().nth(k).unwrap();
                        if size > 16 {
                            // SAFETY: `pool` is live.
                            let rc = unsafe { mcshm_pool_free(pool, off + 16) };
                            // (DOUBLE_FREE if an earlier block started there.)
                            assert!(
                                rc == MCSHM_ERR_INVALID_OFFSET || rc == MCSHM_ERR_DOUBLE_FREE,
                                "step {step}: free inside a block -> {rc}"
                            );
                        }
                    }
                    _ => {}
                }
            }
            for &off in live.keys() {
                // SAFETY: `pool` is live.
                assert_eq!(unsafe { mcshm_pool_free(pool, off) }, MCSHM_OK);
            }
            let mut st = mcshm_pool_stats::default();
            // SAFETY: `pool` is live; `st` is writable.
            assert_eq!(unsafe { mcshm_pool_stats_get(pool, &mut st) }, MCSHM_OK);
            assert_eq!((st.live, st.in_use), (0, 0), "{shards} shard(s)");
            // SAFETY: created above, destroyed once.
            unsafe { mcshm_pool_destroy(pool) };
        }
    }
}
