//! One named shared-memory object: create-exclusive / open-existing / map /
//! unlink.
//!
//! A [`Segment`] is either the **owner** (it created the object with
//! `O_CREAT | O_EXCL`; dropping it unmaps *and unlinks*) or a **peer** (it
//! opened an existing object; dropping it only unmaps). A peer closes its
//! descriptor as soon as the object is mapped. The owner keeps its
//! descriptor for the segment's lifetime and holds a shared `flock`
//! (`LOCK_SH`) on it: a crash cleaner (`crate::cleanup`) removes an object
//! only if it can take the exclusive lock, i.e. only if no live owner holds
//! it. The lock goes away with the descriptor, on drop or on process death.
//!
//! Three backings:
//! - **POSIX shm** (default): `shm_open("/" + name)`, i.e. a file in
//!   `/dev/shm`, removed with `shm_unlink`.
//! - **Directory mode** (`dir = Some(path)`): `openat(dir, name,
//!   O_NOFOLLOW | ...)` inside `path` (a hugetlbfs or DAX mount, or any
//!   directory whose file system supports shared mappings), removed with
//!   `unlinkat`. An owner keeps an `O_PATH` handle on the directory so that
//!   its drop removes the right file even if the process changes directory.
//! - **Sealed memfd** ([`Segment::create_memfd`]): an anonymous shmem file
//!   with no name at all, sealed with `F_SEAL_SHRINK | F_SEAL_GROW |
//!   F_SEAL_SEAL` before it is mapped, and handed to peers as a descriptor
//!   (see `sys::send_fd`). A peer ([`Segment::open_fd`]) refuses a
//!   descriptor without `F_SEAL_SHRINK`.
//!
//! # Safety against other processes
//!
//! - **Other users**: objects are created with mode `0o600` by default
//!   (filtered by the umask), exclusively (`O_EXCL`: an existing object,
//!   perhaps planted by someone else, is never reused). `/dev/shm` is
//!   sticky (`1777`), so only an object's owner (or root) can unlink or
//!   rename it. Directory mode adds `O_NOFOLLOW`, so a symbolic link planted
//!   under the name is refused (`ELOOP`) instead of followed; pick a
//!   directory only trusted users can write.
//! - **SIGBUS**: a mapping of a named object faults with `SIGBUS` on any
//!   page beyond the object's *current* size. Anyone allowed to open the
//!   object read-write (the same user, with the default mode) can
//!   `ftruncate` it smaller and crash every process that touches the lost
//!   pages; this crate cannot prevent that for named objects (`open` checks
//!   the size once, before mapping). The memfd backing rules it out: the
//!   kernel refuses any size change once `F_SEAL_SHRINK | F_SEAL_GROW` is set
//!   (`EPERM`), and seals can never be removed.
//!
//! Creation is all-or-nothing: if anything fails after the name came into
//! existence (`ftruncate`, `fallocate`, `mmap`), the name is unlinked and the
//! descriptor closed before the error is returned.

use crate::sys::{self, CBuf, Fd, MapFlags};
use crate::{Error, Result};
use core::ffi::CStr;
use core::ptr::NonNull;

/// `"/" + name + NUL`, at most 1 + 254 + 1 bytes.
type NameBuf = CBuf<{ sys::MAX_NAME_LEN + 2 }>;
/// A directory path + NUL.
type DirBuf = CBuf<{ sys::MAX_DIR_LEN + 1 }>;

/// How to create a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentOptions<'a> {
    /// Size of the object in bytes (must be > 0). With `huge_pages` it is
    /// rounded up to a multiple of the file system's block (huge page) size.
    pub len: u64,
    /// Permission bits of the new object (default `0o600`), filtered by the
    /// process umask as with any `open`.
    pub mode: u32,
    /// Reserve and fault in every page at creation: `posix_fallocate` over the
    /// whole object (so `ENOSPC`/`ENOMEM` is returned as `Error::Os` instead
    /// of a later `SIGBUS`), then `MAP_POPULATE`.
    pub prefault: bool,
    /// Map with `MAP_HUGETLB`. The kernel accepts it only for a hugetlbfs
    /// file, i.e. with `dir` pointing to a hugetlbfs mount; on `/dev/shm`
    /// (tmpfs) `mmap` fails with `EINVAL`. The error is returned as is
    /// (`Error::Os`), never masked by a silent fallback to small pages.
    pub huge_pages: bool,
    /// Create the object as a file in this directory instead of `/dev/shm`.
    pub dir: Option<&'a str>,
}

impl Default for SegmentOptions<'_> {
    fn default() -> Self {
        SegmentOptions {
            len: 0,
            mode: 0o600,
            prefault: false,
            huge_pages: false,
            dir: None,
        }
    }
}

impl SegmentOptions<'_> {
    /// Defaults (mode `0o600`, `/dev/shm`, no prefault, small pages) with
    /// the given size.
    pub fn with_len(len: u64) -> Self {
        SegmentOptions {
            len,
            ..Default::default()
        }
    }
}

/// Where objects live: POSIX shm or a directory.
enum Place {
    Shm,
    Dir(Fd),
}

impl Place {
    fn new(dir: Option<&str>) -> Result<Place> {
        match dir {
            None => Ok(Place::Shm),
            Some(d) => {
                if d.is_empty() || d.len() > sys::MAX_DIR_LEN {
                    return Err(Error::InvalidArgument);
                }
                let path = DirBuf::concat(&[d.as_bytes()])?;
                let fd = sys::open_dir(path.as_cstr()).map_err(map_errno)?;
                Ok(Place::Dir(fd))
            }
        }
    }

    fn open(&self, name: &NameBuf, oflag: i32, mode: u32) -> Result<Fd> {
        match self {
            Place::Shm => sys::shm_open(name.as_cstr(), oflag, mode),
            Place::Dir(d) => sys::openat(d, file_name(name), oflag | libc::O_NOFOLLOW, mode),
        }
        .map_err(map_errno)
    }

    fn unlink(&self, name: &NameBuf) -> Result<()> {
        match self {
            Place::Shm => sys::shm_unlink(name.as_cstr()),
            Place::Dir(d) => sys::unlinkat(d, file_name(name)),
        }
        .map_err(map_errno)
    }
}

/// The name without its leading `/`, for the `*at` calls.
fn file_name(name: &NameBuf) -> &CStr {
    let bytes = name.as_cstr().to_bytes_with_nul();
    // `bytes` is "/name\0" with no interior NUL, so the tail is a valid CStr.
    CStr::from_bytes_with_nul(&bytes[1..]).unwrap_or(c"")
}

/// Errno -> the crate's named variants where one fits.
fn map_errno(e: Error) -> Error {
    match e {
        Error::Os(libc::ENOENT) => Error::NotFound,
        Error::Os(libc::EEXIST) => Error::AlreadyExists,
        Error::Os(libc::ENAMETOOLONG) => Error::InvalidName,
        other => other,
    }
}

/// Checks a segment name and builds `"/" + name`.
///
/// Valid: 1..=254 bytes, no `/`, no NUL, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    shm_name(name).map(|_| ())
}

fn shm_name(name: &str) -> Result<NameBuf> {
    let b = name.as_bytes();
    if b.is_empty()
        || b.len() > sys::MAX_NAME_LEN
        || b.contains(&b'/')
        || b.contains(&0)
        || b == b"."
        || b == b".."
    {
        return Err(Error::InvalidName);
    }
    NameBuf::concat(&[b"/", b]).map_err(|_| Error::InvalidName)
}

/// The seals a memfd segment gets, and (`F_SEAL_SHRINK`) the one a peer
/// insists on.
pub const MEMFD_SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// The name memfd segments are created with (visible only in
/// `/proc/<pid>/fd` as `/memfd:mooncake-shm`).
const MEMFD_NAME: &CStr = c"mooncake-shm";

/// One mapped shared-memory object (named, in a directory, or a sealed
/// memfd). See the module docs.
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    /// `"/" + name`; just `"/"` for a memfd.
    name: NameBuf,
    owner: bool,
    /// Whether the object lives in a directory rather than POSIX shm.
    in_dir: bool,
    /// Whether the object is a memfd (no name; nothing to unlink).
    memfd: bool,
    /// Owner in directory mode: the directory, for `unlinkat` on drop.
    dir: Option<Fd>,
    /// Owner only: the object's descriptor. For a named object it holds the
    /// shared `flock` that tells cleaners the owner is alive; for a memfd it
    /// is what peers are sent. Closed after the unlink on drop.
    fd: Option<Fd>,
}

// SAFETY: a `Segment` owns its mapping (like a `Box<[u8]>` that other
// processes can also see) and an optional descriptor; nothing in it is tied to
// the creating thread. Shared access only hands out a raw pointer, so data
// races on the bytes are the user's responsibility, as with any raw pointer.
unsafe impl Send for Segment {}
// SAFETY: all `&self` methods only read immutable fields.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates `name` exclusively, sizes it to `opts.len`, maps it shared
    /// read-write and closes the descriptor. The returned segment is the owner.
    ///
    /// Errors: `InvalidName`; `InvalidArgument` for `len == 0` or an unusable
    /// `dir`; `AlreadyExists` if the name is taken (the existing object is not
    /// touched); `NotFound` if `dir` does not exist; `Os(errno)` otherwise
    /// (e.g. `ENOSPC` with `prefault`, `EINVAL` for `huge_pages` off
    /// hugetlbfs). On error nothing is left behind.
    pub fn create(name: &str, opts: &SegmentOptions<'_>) -> Result<Segment> {
        let cname = shm_name(name)?;
        if opts.len == 0 || usize::try_from(opts.len).is_err() {
            return Err(Error::InvalidArgument);
        }
        let place = Place::new(opts.dir)?;
        let oflag = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC;
        let fd = place.open(&cname, oflag, opts.mode)?;
        // From here on the name exists: undo on any failure. The shared lock
        // comes first, so the object is never visible unlocked for long
        // (a cleaner would also need our name to look dead, which it does not).
        match sys::flock(&fd, libc::LOCK_SH | libc::LOCK_NB)
            .and_then(|()| size_and_map(&fd, opts, false))
        {
            Ok((ptr, len)) => {
                let dir = match place {
                    Place::Dir(d) => Some(d),
                    Place::Shm => None,
                };
                Ok(Segment {
                    ptr,
                    len,
                    name: cname,
                    owner: true,
                    in_dir: dir.is_some(),
                    memfd: false,
                    dir,
                    fd: Some(fd),
                })
            }
            Err(e) => {
                let _ = place.unlink(&cname);
                drop(fd);
                Err(e)
            }
        }
    }

    /// Opens an existing `/dev/shm` object; see [`Segment::open_in`].
    pub fn open(name: &str, expected_min_len: u64) -> Result<Segment> {
        Segment::open_in(None, name, expected_min_len)
    }

    /// Opens an existing object (never creates it), checks its size with
    /// `fstat` *before* mapping, maps all of it shared read-write and closes
    /// the descriptor. The returned segment is a peer.
    ///
    /// Errors: `InvalidName`; `NotFound` if it does not exist; `Truncated` if
    /// it is shorter than `expected_min_len` or empty; `InvalidArgument` if it
    /// is not a regular file; `Os(ELOOP)` if, in directory mode, the name is a
    /// symbolic link; `Os(errno)` otherwise.
    pub fn open_in(dir: Option<&str>, name: &str, expected_min_len: u64) -> Result<Segment> {
        let cname = shm_name(name)?;
        let place = Place::new(dir)?;
        let fd = place.open(&cname, libc::O_RDWR | libc::O_CLOEXEC, 0)?;
        let info = sys::fstat(&fd)?;
        if !info.is_regular {
            return Err(Error::InvalidArgument);
        }
        if info.size == 0 || info.size < expected_min_len {
            return Err(Error::Truncated);
        }
        let len = usize::try_from(info.size).map_err(|_| Error::InvalidArgument)?;
        let ptr = sys::mmap_shared(&fd, len, MapFlags::default())?;
        drop(fd);
        Ok(Segment {
            ptr,
            len,
            name: cname,
            owner: false,
            in_dir: dir.is_some(),
            memfd: false,
            dir: None,
            fd: None,
        })
    }

    /// Creates an anonymous, sealed memfd segment: `memfd_create` with
    /// `MFD_CLOEXEC | MFD_ALLOW_SEALING` (plus `MFD_HUGETLB` with
    /// `huge_pages`), sized to `opts.len` (and `posix_fallocate`d with
    /// `prefault`), sealed with [`MEMFD_SEALS`] so its size can never change
    /// again, then mapped. The segment keeps the descriptor ([`Segment::fd`])
    /// to hand to peers; `opts.mode` does not apply (the object has no name;
    /// only holders of the descriptor, or processes allowed to open
    /// `/proc/<pid>/fd/<n>`, reach it).
    ///
    /// Errors: `InvalidArgument` for `len == 0` or a `dir`; `Os(errno)` from
    /// any step. Nothing is left behind on error (the memory goes away with
    /// the descriptor).
    pub fn create_memfd(opts: &SegmentOptions<'_>) -> Result<Segment> {
        if opts.len == 0 || usize::try_from(opts.len).is_err() || opts.dir.is_some() {
            return Err(Error::InvalidArgument);
        }
        let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        if opts.huge_pages {
            flags |= libc::MFD_HUGETLB;
        }
        let fd = sys::memfd_create(MEMFD_NAME, flags)?;
        // Sealing happens in `size_and_map`, after sizing, before mapping.
        let (ptr, len) = size_and_map(&fd, opts, true)?;
        Ok(Segment {
            ptr,
            len,
            name: NameBuf::concat(&[b"/"])?,
            owner: true,
            in_dir: false,
            memfd: true,
            dir: None,
            fd: Some(fd),
        })
    }

    /// Maps a memfd segment received from its owner, as a peer. `fd` is
    /// borrowed: it is neither kept nor closed (the mapping does not need it
    /// once this returns).
    ///
    /// Errors, in this order: `NotSealed` unless the descriptor's seals
    /// (`F_GET_SEALS`) include `F_SEAL_SHRINK` (also for files that cannot be
    /// sealed at all); `Os(EBADF)` for a bad descriptor; `InvalidArgument`
    /// if it is not a regular file; `Truncated` if it is empty or shorter
    /// than `expected_min_len`; `Os(errno)` if `mmap` fails.
    pub fn open_fd(fd: i32, expected_min_len: u64) -> Result<Segment> {
        match sys::get_seals(fd) {
            Ok(seals) if seals & libc::F_SEAL_SHRINK != 0 => {}
            Ok(_) | Err(Error::Os(libc::EINVAL)) => return Err(Error::NotSealed),
            Err(e) => return Err(e),
        }
        let info = sys::fstat_raw(fd)?;
        if !info.is_regular {
            return Err(Error::InvalidArgument);
        }
        if info.size == 0 || info.size < expected_min_len {
            return Err(Error::Truncated);
        }
        let len = usize::try_from(info.size).map_err(|_| Error::InvalidArgument)?;
        let ptr = sys::mmap_shared_raw(fd, len, MapFlags::default())?;
        Ok(Segment {
            ptr,
            len,
            name: NameBuf::concat(&[b"/"])?,
            owner: false,
            in_dir: false,
            memfd: true,
            dir: None,
            fd: None,
        })
    }

    /// Removes the name `name` (in `dir`, or `/dev/shm`) without mapping it:
    /// cleanup of objects left by a crashed owner. Existing mappings stay
    /// valid. `NotFound` if there is no such object.
    pub fn remove(dir: Option<&str>, name: &str) -> Result<()> {
        let cname = shm_name(name)?;
        Place::new(dir)?.unlink(&cname)
    }

    /// Base of the mapping (page-aligned). The pointer is valid for
    /// `len()` bytes until the segment is dropped; other processes may read
    /// and write the same bytes concurrently.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes (the object's size).
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Always false: empty objects can be neither created nor opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The name, without the leading `/`.
    pub fn name(&self) -> &str {
        let b = self.name.as_bytes();
        // Built from a `&str` plus a leading ASCII '/', so always UTF-8.
        core::str::from_utf8(&b[1..]).unwrap_or("")
    }

    /// Whether this segment created the object (and unlinks it on drop).
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// Whether the object lives in a directory (directory mode) rather than
    /// POSIX shm.
    pub fn in_dir(&self) -> bool {
        self.in_dir
    }

    /// Whether the object is a sealed memfd (no name; [`Segment::name`] is
    /// empty).
    pub fn is_memfd(&self) -> bool {
        self.memfd
    }

    /// The owner's descriptor of the object (borrowed: it stays open and
    /// owned by the segment until the drop). `None` for peers. For a memfd
    /// this is what to send to peers (`sys::send_fd`).
    pub fn fd(&self) -> Option<i32> {
        self.fd.as_ref().map(Fd::raw)
    }
}

/// Sizes the freshly created object and maps it: `ftruncate`, optional
/// `posix_fallocate`, `mmap`. Returns the mapping and its length.
/// With `seal`, adds [`MEMFD_SEALS`] after sizing and before mapping.
fn size_and_map(fd: &Fd, opts: &SegmentOptions<'_>, seal: bool) -> Result<(NonNull<u8>, usize)> {
    let mut len = opts.len;
    if opts.huge_pages {
        // hugetlbfs reports the huge page size as its block size and refuses
        // sizes that are not a multiple of it.
        let bs = sys::fstat(fd)?.block_size;
        if bs.is_power_of_two() {
            len = len.checked_add(bs - 1).ok_or(Error::InvalidArgument)? & !(bs - 1);
        }
    }
    let ulen = usize::try_from(len).map_err(|_| Error::InvalidArgument)?;
    sys::ftruncate(fd, len)?;
    if opts.prefault {
        sys::fallocate(fd, len)?;
    }
    if seal {
        sys::add_seals(fd, MEMFD_SEALS)?;
    }
    let flags = MapFlags {
        populate: opts.prefault,
        huge_pages: opts.huge_pages,
    };
    let ptr = sys::mmap_shared(fd, ulen, flags)?;
    Ok((ptr, ulen))
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: we own this mapping of `len` bytes and unmap it exactly
        // once; `Segment` hands out only raw pointers, documented (`as_ptr`)
        // as valid only until the drop.
        let _ = unsafe { sys::munmap(self.ptr, self.len) };
        // The owner's descriptor (and its lock) closes after this body, when
        // the fields drop: the name is gone before the lock is released.
        if self.owner && !self.memfd {
            let _ = match &self.dir {
                Some(d) => sys::unlinkat(d, file_name(&self.name)),
                None => sys::shm_unlink(self.name.as_cstr()),
            };
        }
    }
}

impl core::fmt::Debug for Segment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name())
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("owner", &self.owner)
            .field("in_dir", &self.in_dir)
            .field("memfd", &self.memfd)
            .field("fd", &self.fd())
            .finish()
    }
}
