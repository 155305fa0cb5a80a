//! One named shared-memory object: create-exclusive / open-existing / map /
//! unlink.
//!
//! A [`Segment`] is either the **owner** (it created the object with
//! `O_CREAT | O_EXCL`; dropping it unmaps *and unlinks*) or a **peer** (it
//! opened an existing object; dropping it only unmaps). The file descriptor is
//! closed as soon as the object is mapped, so a segment costs one mapping and
//! no descriptor (except an owner in directory mode, see below).
//!
//! Two backings:
//! - **POSIX shm** (default): `shm_open("/" + name)`, i.e. a file in
//!   `/dev/shm`, removed with `shm_unlink`.
//! - **Directory mode** (`dir = Some(path)`): `openat(dir, name,
//!   O_NOFOLLOW | ...)` inside `path` (a hugetlbfs or DAX mount, or any
//!   directory whose file system supports shared mappings), removed with
//!   `unlinkat`. An owner keeps an `O_PATH` handle on the directory so that
//!   its drop removes the right file even if the process changes directory.
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

/// One mapped, named shared-memory object. See the module docs.
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    name: NameBuf,
    owner: bool,
    /// Whether the object lives in a directory rather than POSIX shm.
    in_dir: bool,
    /// Owner in directory mode: the directory, for `unlinkat` on drop.
    dir: Option<Fd>,
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
        // From here on the name exists: undo on any failure.
        match size_and_map(&fd, opts) {
            Ok((ptr, len)) => {
                drop(fd);
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
                    dir,
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
            dir: None,
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
}

/// Sizes the freshly created object and maps it: `ftruncate`, optional
/// `posix_fallocate`, `mmap`. Returns the mapping and its length.
fn size_and_map(fd: &Fd, opts: &SegmentOptions<'_>) -> Result<(NonNull<u8>, usize)> {
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
        if self.owner {
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
            .finish()
    }
}
