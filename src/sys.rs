//! Thin, safe wrappers over the POSIX shared-memory syscalls.
//!
//! Only `libc` is used (no `std`): names travel as [`CStr`]s built in fixed
//! stack buffers, file descriptors are owned by [`Fd`] (closed on drop), and
//! every failing call becomes [`Error::Os`] carrying its `errno`. Mapping the
//! errno to a friendlier variant (`ENOENT` -> `NotFound`, ...) is the job of
//! the layers above.

use crate::{Error, Result, ZeroValid};
use core::ffi::{c_int, CStr};
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// Longest shared-memory / file name accepted, in bytes, without the leading
/// `/` that `shm_open` wants (`NAME_MAX` = 255 minus one).
pub const MAX_NAME_LEN: usize = 254;

/// Longest directory path accepted for directory mode, in bytes (`PATH_MAX`
/// minus the terminating NUL).
pub const MAX_DIR_LEN: usize = 4095;

/// The calling thread's current `errno`.
pub fn errno() -> i32 {
    // SAFETY: `__errno_location` always returns a valid pointer to the
    // calling thread's errno; reading an int through it is sound.
    unsafe { *libc::__errno_location() }
}

/// `Error::Os(errno)` for the syscall that just failed.
pub fn last_error() -> Error {
    Error::Os(errno())
}

/// The size of a memory page (`sysconf(_SC_PAGESIZE)`; 4096 if unknown).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ps > 0 {
        ps as usize
    } else {
        4096
    }
}

/// The calling process's id.
pub fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    pid as u32
}

/// A NUL-terminated string in a fixed stack buffer of `N` bytes.
///
/// Used to hand names and paths to libc without an allocator.
#[derive(Clone, Copy)]
pub struct CBuf<const N: usize> {
    buf: [u8; N],
    /// Length without the NUL.
    len: usize,
}

impl<const N: usize> CBuf<N> {
    /// Concatenates `parts` and appends a NUL.
    ///
    /// Fails with `InvalidArgument` if a part contains a NUL byte or the
    /// result (NUL included) does not fit in `N` bytes.
    pub fn concat(parts: &[&[u8]]) -> Result<Self> {
        let mut buf = [0u8; N];
        let mut len = 0usize;
        for part in parts {
            if part.contains(&0) {
                return Err(Error::InvalidArgument);
            }
            let end = len
                .checked_add(part.len())
                .filter(|&e| e < N)
                .ok_or(Error::InvalidArgument)?;
            buf[len..end].copy_from_slice(part);
            len = end;
        }
        // buf[len] is already 0 and len < N.
        Ok(CBuf { buf, len })
    }

    /// The string as a `CStr` (terminating NUL included).
    pub fn as_cstr(&self) -> &CStr {
        match CStr::from_bytes_with_nul(&self.buf[..=self.len]) {
            Ok(s) => s,
            // `concat` rejects interior NULs and always terminates, so this
            // cannot happen; fall back to the empty string rather than panic.
            Err(_) => c"",
        }
    }

    /// The bytes without the terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(c_int);

impl Fd {
    /// Takes ownership of a raw descriptor.
    ///
    /// # Safety
    /// `fd` must be an open descriptor that nothing else will close: the
    /// returned `Fd` closes it on drop.
    pub unsafe fn from_raw(fd: c_int) -> Fd {
        Fd(fd)
    }

    /// Gives up ownership: returns the raw descriptor without closing it.
    pub fn into_raw(self) -> c_int {
        let fd = self.0;
        core::mem::forget(self);
        fd
    }

    /// The raw descriptor (still owned by `self`).
    pub fn raw(&self) -> c_int {
        self.0
    }

    /// Closes the descriptor now, reporting the error `close` returns.
    pub fn close(self) -> Result<()> {
        let fd = self.0;
        core::mem::forget(self);
        // SAFETY: `fd` is a descriptor this `Fd` owned; ownership ended with
        // `forget`, so it is closed exactly once.
        if unsafe { libc::close(fd) } == 0 {
            Ok(())
        } else {
            Err(last_error())
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a descriptor this `Fd` owns and nobody else
        // closes; it is closed exactly once here. Errors are ignored (the
        // descriptor is released either way on Linux).
        unsafe { libc::close(self.0) };
    }
}

fn check_fd(fd: c_int) -> Result<Fd> {
    if fd >= 0 {
        Ok(Fd(fd))
    } else {
        Err(last_error())
    }
}

fn check_zero(rc: c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// `shm_open(name, oflag, mode)`. `name` must start with `/`.
pub fn shm_open(name: &CStr, oflag: c_int, mode: u32) -> Result<Fd> {
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    check_fd(unsafe { libc::shm_open(name.as_ptr(), oflag, mode as libc::mode_t) })
}

/// `shm_unlink(name)`.
pub fn shm_unlink(name: &CStr) -> Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    check_zero(unsafe { libc::shm_unlink(name.as_ptr()) })
}

/// Opens a directory as an `O_PATH` handle for the `*at` calls below.
pub fn open_dir(path: &CStr) -> Result<Fd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: `path` is a valid NUL-terminated string for the whole call.
    check_fd(unsafe { libc::open(path.as_ptr(), flags) })
}

/// `openat(dir, name, oflag, mode)`.
pub fn openat(dir: &Fd, name: &CStr, oflag: c_int, mode: u32) -> Result<Fd> {
    // SAFETY: `name` is a valid NUL-terminated string; `dir` is an open
    // descriptor owned by the caller for the whole call.
    check_fd(unsafe { libc::openat(dir.0, name.as_ptr(), oflag, mode as libc::c_uint) })
}

/// `unlinkat(dir, name, 0)`: removes a file (not a directory).
pub fn unlinkat(dir: &Fd, name: &CStr) -> Result<()> {
    // SAFETY: as for `openat`.
    check_zero(unsafe { libc::unlinkat(dir.0, name.as_ptr(), 0) })
}

/// `ftruncate(fd, len)`.
pub fn ftruncate(fd: &Fd, len: u64) -> Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| Error::InvalidArgument)?;
    // SAFETY: plain syscall on a descriptor we own; no memory is passed.
    check_zero(unsafe { libc::ftruncate(fd.0, len) })
}

/// Reserves backing store for `[0, len)` (`posix_fallocate`), so that lack of
/// space is reported now (`ENOSPC`) instead of as a `SIGBUS` on first touch.
pub fn fallocate(fd: &Fd, len: u64) -> Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| Error::InvalidArgument)?;
    // SAFETY: plain syscall on a descriptor we own; no memory is passed.
    // posix_fallocate returns the error number instead of setting errno.
    match unsafe { libc::posix_fallocate(fd.0, 0, len) } {
        0 => Ok(()),
        e => Err(Error::Os(e)),
    }
}

/// What [`fstat`] reports about a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// Size in bytes.
    pub size: u64,
    /// Preferred I/O block size (the huge page size on hugetlbfs).
    pub block_size: u64,
    /// Whether it is a regular file (shm objects are).
    pub is_regular: bool,
}

/// `fstat(fd)`, reduced to what the segment layer needs.
pub fn fstat(fd: &Fd) -> Result<FileInfo> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for writes of one `stat`; `fd` is open.
    check_zero(unsafe { libc::fstat(fd.0, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    Ok(FileInfo {
        size: u64::try_from(st.st_size).unwrap_or(0),
        block_size: u64::try_from(st.st_blksize).unwrap_or(0),
        is_regular: (st.st_mode & libc::S_IFMT) == libc::S_IFREG,
    })
}

/// Extra flags for [`mmap_shared`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapFlags {
    /// `MAP_POPULATE`: fault every page in now.
    pub populate: bool,
    /// `MAP_HUGETLB`: huge pages (only valid on a hugetlbfs descriptor).
    pub huge_pages: bool,
}

/// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED|flags, fd, 0)`.
///
/// Returns the base of a fresh mapping the caller must release with
/// [`munmap`]. A zero `len` is `InvalidArgument`.
pub fn mmap_shared(fd: &Fd, len: usize, flags: MapFlags) -> Result<NonNull<u8>> {
    if len == 0 {
        return Err(Error::InvalidArgument);
    }
    let mut mflags = libc::MAP_SHARED;
    if flags.populate {
        mflags |= libc::MAP_POPULATE;
    }
    if flags.huge_pages {
        mflags |= libc::MAP_HUGETLB;
    }
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a NULL hint without MAP_FIXED lets the kernel pick an unused
    // range, so no existing memory is affected; `fd` is open.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, mflags, fd.0, 0) };
    if p == libc::MAP_FAILED {
        return Err(last_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or(Error::Os(libc::EINVAL))
}

/// `munmap(ptr, len)`.
///
/// # Safety
/// `[ptr, ptr + len)` must be a mapping (or part of one) that nothing will
/// access afterwards: every pointer and reference into it dies here.
pub unsafe fn munmap(ptr: NonNull<u8>, len: usize) -> Result<()> {
    // SAFETY: the caller guarantees the range is ours to unmap and unused.
    check_zero(unsafe { libc::munmap(ptr.as_ptr().cast(), len) })
}

/// `madvise(ptr, len, advice)` (e.g. `libc::MADV_DONTDUMP`).
///
/// # Safety
/// `[ptr, ptr + len)` must be a page-aligned part of a mapping the caller
/// owns; destructive advice (`MADV_DONTNEED`, `MADV_REMOVE`, ...) discards
/// contents, so the caller must hold no live data there.
pub unsafe fn madvise(ptr: NonNull<u8>, len: usize, advice: c_int) -> Result<()> {
    // SAFETY: upheld by the caller as documented.
    check_zero(unsafe { libc::madvise(ptr.as_ptr().cast(), len, advice) })
}

/// Mappings at least this large ask for transparent huge pages.
const HUGE_PAGE_HINT_MIN: usize = 2 << 20;

/// A fresh private anonymous read-write mapping of `bytes` bytes (zeroed).
fn map_anon(bytes: usize) -> Result<NonNull<u8>> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: NULL hint without MAP_FIXED: the kernel picks an unused range;
    // nothing existing is affected.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), bytes, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(last_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or(Error::Os(libc::EINVAL))
}

/// [`map_anon`] of `bytes` bytes starting on an `align` boundary (a power
/// of two above the page size): maps `bytes + align`, then unmaps the
/// unaligned head and the tail.
fn map_aligned(bytes: usize, align: usize) -> Result<NonNull<u8>> {
    let reserve = bytes.checked_add(align).ok_or(Error::InvalidArgument)?;
    let p = map_anon(reserve)?;
    let start = p.as_ptr().addr();
    let head = start.next_multiple_of(align) - start;
    let tail = reserve - head - bytes;
    if head != 0 {
        // SAFETY: the first `head` bytes of the mapping just made; nothing
        // refers to them.
        let _ = unsafe { munmap(p, head) };
    }
    // SAFETY: `head < align <= reserve - bytes`, so `p + head` lies inside
    // the mapping, with `bytes` mapped bytes after it.
    let aligned = unsafe { p.add(head) };
    if tail != 0 {
        // SAFETY: the last `tail` bytes of the mapping; nothing refers to
        // them. `aligned + bytes` is inside or one past it.
        let _ = unsafe { munmap(aligned.add(bytes), tail) };
    }
    Ok(aligned)
}

/// A zeroed, private, anonymous mapping of `len` values of `T`: metadata
/// storage for the pure layers (`MAP_PRIVATE | MAP_ANONYMOUS`, unmapped on
/// drop). Behaves like a `Box<[T]>` that needs no allocator.
pub struct AnonMap<T: ZeroValid> {
    ptr: NonNull<T>,
    len: usize,
    /// Bytes mapped at `ptr` (at least `len * size_of::<T>()`).
    mapped: usize,
    _t: PhantomData<T>,
}

// SAFETY: owns its mapping exclusively, like a Box<[T]>: sending it sends
// the `T`s.
unsafe impl<T: ZeroValid + Send> Send for AnonMap<T> {}
// SAFETY: `&AnonMap` only gives `&[T]`, so sharing it shares `&T`s.
unsafe impl<T: ZeroValid + Sync> Sync for AnonMap<T> {}

impl<T: ZeroValid> AnonMap<T> {
    /// Maps `len` zeroed `T`s.
    ///
    /// `InvalidArgument` if `len` is 0, the byte size overflows, `T` is
    /// zero-sized or needs more than page alignment; `Os(ENOMEM)` etc. if the
    /// kernel refuses.
    pub fn zeroed(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(core::mem::size_of::<T>())
            .ok_or(Error::InvalidArgument)?;
        if bytes == 0 || core::mem::align_of::<T>() > page_size() {
            return Err(Error::InvalidArgument);
        }
        // Metadata lookups (arena index, translation table nodes) land on
        // scattered pages; transparent huge pages keep them in a few TLB
        // entries (a miss costs a two-dimensional page walk under a
        // hypervisor). THP only backs whole aligned 2 MiB extents, so a
        // large map is placed on a 2 MiB boundary and rounded up to a
        // multiple of 2 MiB: otherwise which part of it gets huge pages
        // depends on where the kernel happened to put it.
        let (ptr, mapped) = if bytes >= HUGE_PAGE_HINT_MIN {
            let mapped = bytes
                .checked_next_multiple_of(HUGE_PAGE_HINT_MIN)
                .ok_or(Error::InvalidArgument)?;
            let p = map_aligned(mapped, HUGE_PAGE_HINT_MIN)?;
            // Best effort: THP may be disabled, which is fine.
            // SAFETY: `p` is the start of the `mapped`-long mapping just
            // made, and MADV_HUGEPAGE changes no content.
            let _ = unsafe { madvise(p, mapped, libc::MADV_HUGEPAGE) };
            (p, mapped)
        } else {
            (map_anon(bytes)?, bytes)
        };
        Ok(AnonMap {
            ptr: ptr.cast::<T>(),
            len,
            mapped,
            _t: PhantomData,
        })
    }

    /// Number of `T`s.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (a zero-length map cannot be created).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: ZeroValid> Deref for AnonMap<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds `len` page-aligned (hence T-aligned) `T`s,
        // valid because anonymous memory starts zeroed and `T: ZeroValid`; it
        // lives as long as `self`, and `&self` forbids concurrent `&mut`.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: ZeroValid> DerefMut for AnonMap<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`; `&mut self` makes the access exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: ZeroValid> Drop for AnonMap<T> {
    fn drop(&mut self) {
        let elems = core::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
        // SAFETY: the `len` elements are initialized (see `deref`) and owned
        // by `self`; they are dropped exactly once, here (a no-op for the
        // usual plain-integer `ZeroValid` types).
        unsafe { core::ptr::drop_in_place(elems) };
        // SAFETY: we own this mapping of `mapped` bytes, its elements were
        // just dropped, and no borrow of it can outlive `self`.
        let _ = unsafe { munmap(self.ptr.cast::<u8>(), self.mapped) };
    }
}

impl<T: ZeroValid> core::fmt::Debug for AnonMap<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AnonMap")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Locks, memfd and seals, descriptor passing, /proc, randomness, directories
// ---------------------------------------------------------------------------

/// `flock(fd, op)` (`LOCK_SH`, `LOCK_EX`, optionally `| LOCK_NB`, or
/// `LOCK_UN`), retried on `EINTR`. A held lock belongs to the open file
/// description and is released when its last descriptor closes.
pub fn flock(fd: &Fd, op: c_int) -> Result<()> {
    loop {
        // SAFETY: plain syscall on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(fd.0, op) };
        if rc == 0 {
            return Ok(());
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(Error::Os(e));
        }
    }
}

/// `memfd_create(name, flags)`: an anonymous shmem file, reachable only
/// through descriptors.
pub fn memfd_create(name: &CStr, flags: u32) -> Result<Fd> {
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    check_fd(unsafe { libc::memfd_create(name.as_ptr(), flags) })
}

/// `fcntl(fd, F_ADD_SEALS, seals)`.
pub fn add_seals(fd: &Fd, seals: c_int) -> Result<()> {
    add_seals_raw(fd.0, seals)
}

/// `fcntl(fd, F_ADD_SEALS, seals)` on a borrowed raw descriptor.
pub fn add_seals_raw(fd: c_int, seals: c_int) -> Result<()> {
    // SAFETY: F_ADD_SEALS takes an int argument and touches no memory of
    // ours; an invalid `fd` is reported as EBADF.
    check_zero(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) })
}

/// `fcntl(fd, F_GET_SEALS)` on a borrowed raw descriptor: the seal bits
/// (`EINVAL` if the file does not support sealing).
pub fn get_seals(fd: c_int) -> Result<c_int> {
    // SAFETY: F_GET_SEALS takes no argument and touches no memory of ours;
    // an invalid `fd` is reported as EBADF.
    let rc = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if rc >= 0 {
        Ok(rc)
    } else {
        Err(last_error())
    }
}

/// [`fstat`] on a borrowed raw descriptor.
pub fn fstat_raw(fd: c_int) -> Result<FileInfo> {
    let borrowed = core::mem::ManuallyDrop::new(Fd(fd));
    fstat(&borrowed)
}

/// [`mmap_shared`] on a borrowed raw descriptor.
pub fn mmap_shared_raw(fd: c_int, len: usize, flags: MapFlags) -> Result<NonNull<u8>> {
    let borrowed = core::mem::ManuallyDrop::new(Fd(fd));
    mmap_shared(&borrowed, len, flags)
}

/// Room for one `cmsghdr` carrying one descriptor, 8-byte aligned as
/// `cmsghdr` requires.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Sends descriptor `fd` over the connected Unix socket `sock` as
/// `SCM_RIGHTS` ancillary data, with a one-byte payload (a stream socket
/// carries ancillary data only along with data). The receiver gets its own
/// descriptor for the same open file; `fd` stays open here. Retries on
/// `EINTR`; never raises `SIGPIPE` (`MSG_NOSIGNAL`).
pub fn send_fd(sock: c_int, fd: c_int) -> Result<()> {
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic on their argument.
    let (space, clen) = unsafe {
        (
            libc::CMSG_SPACE(core::mem::size_of::<c_int>() as u32) as usize,
            libc::CMSG_LEN(core::mem::size_of::<c_int>() as u32) as usize,
        )
    };
    let mut cbuf = CmsgBuf([0; 64]);
    if space > cbuf.0.len() {
        return Err(Error::InvalidArgument);
    }
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is valid.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points to a control buffer of `space` bytes (checked to
    // fit in `cbuf`, 8-byte aligned), so CMSG_FIRSTHDR returns a pointer to
    // its start, valid for a `cmsghdr` followed by `clen - header` data bytes;
    // CMSG_DATA points inside the same buffer, where one `c_int` fits
    // (`space >= clen`). The write is unaligned-safe.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return Err(Error::InvalidArgument);
        }
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = clen as _;
        core::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<c_int>(), fd);
    }
    loop {
        // SAFETY: `msg` and everything it points to (`iov`, `byte`, `cbuf`)
        // live until the call returns; the kernel only reads them.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 1 {
            return Ok(());
        }
        let e = errno();
        if n < 0 && e == libc::EINTR {
            continue;
        }
        return Err(if n < 0 {
            Error::Os(e)
        } else {
            Error::Os(libc::EIO)
        });
    }
}

/// Receives one descriptor sent with [`send_fd`] from the Unix socket
/// `sock` (blocking as the socket does). The descriptor is created with
/// `O_CLOEXEC`. Extra descriptors in the same message are closed.
///
/// Errors: `Os(ECONNRESET)` if the peer closed the socket; `NotFound` if a
/// message arrived without a descriptor; `Os(errno)` otherwise.
pub fn recv_fd(sock: c_int) -> Result<Fd> {
    let mut cbuf = CmsgBuf([0; 64]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is a plain C struct for which all-zero is valid.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len() as _;
    let n = loop {
        // SAFETY: `msg` points to `iov` (1 writable byte) and to `cbuf`
        // (`msg_controllen` writable bytes), all live for the call.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(Error::Os(e));
        }
    };
    let mut got: Option<Fd> = None;
    // SAFETY: after a successful recvmsg, the kernel has written
    // `msg_controllen` bytes of well-formed cmsg records into `cbuf`; the
    // CMSG_* helpers walk exactly those records and stay inside the buffer
    // (they return NULL past the end). Each SCM_RIGHTS record holds
    // `(cmsg_len - CMSG_LEN(0)) / 4` descriptors now owned by this process;
    // every one is either kept (the first) or closed, exactly once.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<c_int>();
                let bytes = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..bytes / core::mem::size_of::<c_int>() {
                    let fd = Fd(core::ptr::read_unaligned(data.add(i)));
                    if got.is_none() {
                        got = Some(fd);
                    } // else: dropped, i.e. closed.
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    match got {
        Some(fd) => Ok(fd),
        None if n == 0 => Err(Error::Os(libc::ECONNRESET)),
        None => Err(Error::NotFound),
    }
}

/// Formats `v` in decimal into `buf`, returning the digits.
pub fn fmt_u64(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Parses a non-empty run of ASCII decimal digits (no sign, no overflow).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3, the state letter (`R`, `S`, `Z` for a zombie, ...).
    pub state: u8,
    /// Field 22, the start time in clock ticks since boot.
    pub starttime: u64,
}

/// Reads and parses `/proc/<pid>/stat` (`pid = None`: `/proc/self/stat`).
///
/// Errors: `NotFound` if there is no such process (`ENOENT`/`ESRCH`);
/// `InvalidArgument` if the contents do not parse; `Os(errno)` otherwise.
pub fn proc_stat(pid: Option<u32>) -> Result<ProcStat> {
    let mut num = [0u8; 20];
    let path: CBuf<40> = match pid {
        None => CBuf::concat(&[b"/proc/self/stat"])?,
        Some(p) => CBuf::concat(&[b"/proc/", fmt_u64(u64::from(p), &mut num), b"/stat"])?,
    };
    let flags = libc::O_RDONLY | libc::O_CLOEXEC;
    // SAFETY: `path` is a valid NUL-terminated string for the whole call.
    let fd =
        check_fd(unsafe { libc::open(path.as_cstr().as_ptr(), flags) }).map_err(|e| match e {
            Error::Os(libc::ENOENT) | Error::Os(libc::ESRCH) => Error::NotFound,
            e => e,
        })?;
    // 52 fields of at most 20 digits plus a 64-byte comm fit in 2 KiB.
    let mut buf = [0u8; 2048];
    let mut len = 0usize;
    while len < buf.len() {
        let rest = &mut buf[len..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        let n = unsafe { libc::read(fd.0, rest.as_mut_ptr().cast(), rest.len()) };
        if n == 0 {
            break;
        }
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                libc::ESRCH => return Err(Error::NotFound),
                e => return Err(Error::Os(e)),
            }
        }
        len += n as usize;
    }
    parse_proc_stat(&buf[..len]).ok_or(Error::InvalidArgument)
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the *last* `)`.
pub fn parse_proc_stat(text: &[u8]) -> Option<ProcStat> {
    let close = text.iter().rposition(|&c| c == b')')?;
    let mut fields = text[close + 1..]
        .split(|&c| c == b' ' || c == b'\n')
        .filter(|f| !f.is_empty());
    // Field 3 comes first after the `)`; field 22 is 19 further.
    let state = *fields.next()?.first()?;
    let starttime = parse_u64(fields.nth(18)?)?;
    Some(ProcStat { state, starttime })
}

/// Fills `buf` with random bytes from the kernel (`getrandom`).
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(Error::Os(e));
        }
        done += n as usize;
    }
    Ok(())
}

/// An open directory stream (`opendir`), closed on drop.
pub struct Dir {
    dir: NonNull<libc::DIR>,
}

impl Dir {
    /// `opendir(path)` (with `O_CLOEXEC`, as glibc does).
    pub fn open(path: &CStr) -> Result<Dir> {
        // SAFETY: `path` is a valid NUL-terminated string for the whole call.
        let d = unsafe { libc::opendir(path.as_ptr()) };
        NonNull::new(d)
            .map(|dir| Dir { dir })
            .ok_or_else(last_error)
    }

    /// Calls `f` with the name of every entry except `.` and `..`, in
    /// directory order. Stops early, returning its error, if `f` fails.
    /// The name is only valid during the call.
    pub fn for_each(&mut self, mut f: impl FnMut(&CStr) -> Result<()>) -> Result<()> {
        loop {
            // readdir reports errors only through errno, so clear it first.
            // SAFETY: `__errno_location` points to this thread's errno.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `self.dir` is an open stream we own exclusively
            // (`&mut self`).
            let ent = unsafe { libc::readdir(self.dir.as_ptr()) };
            if ent.is_null() {
                return match errno() {
                    0 => Ok(()),
                    e => Err(Error::Os(e)),
                };
            }
            // SAFETY: a non-NULL dirent from readdir is valid until the next
            // readdir/closedir on this stream, which cannot happen while
            // `name` is borrowed; `d_name` is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            let b = name.to_bytes();
            if b == b"." || b == b".." {
                continue;
            }
            f(name)?;
        }
    }

    /// A borrowed descriptor of the directory, for the `*at` calls. It stays
    /// owned by the stream (do not close it).
    pub fn fd(&self) -> core::mem::ManuallyDrop<Fd> {
        // SAFETY: `self.dir` is an open stream.
        core::mem::ManuallyDrop::new(Fd(unsafe { libc::dirfd(self.dir.as_ptr()) }))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: `self.dir` is an open stream we own, closed exactly once.
        unsafe { libc::closedir(self.dir.as_ptr()) };
    }
}

impl core::fmt::Debug for Dir {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Dir").field("dir", &self.dir).finish()
    }
}

// SAFETY: an `AnonMap` derefs to its one private mapping with its fixed
// length on every call, and nothing but the owner's borrows writes to it.
unsafe impl crate::arena::ArenaStorage for AnonMap<crate::arena::ArenaSlot> {}

// SAFETY: as above: one mapping, one fixed length, on every call.
unsafe impl crate::table::TableStorage for AnonMap<core::sync::atomic::AtomicU64> {}
