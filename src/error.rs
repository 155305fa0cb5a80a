//! The one error type of the crate, shared by every layer and mirrored 1:1 by
//! the C ABI's result codes (see `ffi`).

use core::fmt;

/// Everything that can go wrong, from the pure arena up to the syscalls.
///
/// Pure layers (`arena`, `table`) only produce the variants that need no OS;
/// `Os` carries the `errno` of a failed syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    // ---- arena ----
    /// A zero-byte allocation was requested.
    ZeroSize,
    /// The request can never fit: larger than the arena's capacity (or it overflowed while rounding).
    TooLarge,
    /// The alignment is not a power of two, or exceeds the supported maximum.
    BadAlignment,
    /// No free block is large enough right now.
    Exhausted,
    /// The offset was handed out once but has already been freed.
    DoubleFree,
    /// The offset was never handed out by this arena (or is not the start of a block).
    InvalidOffset,
    /// The caller-provided metadata storage has no room for another record.
    MetadataFull,
    /// The block belongs to a thread cache: free it through that cache.
    CacheOwned,
    // ---- table ----
    /// An (offset, len) pair does not fit inside the range, or its end overflows.
    OutOfBounds,
    /// No segment, peer or range matches the request.
    NotFound,
    /// The id, range or name is already in use (or a range overlaps an existing one).
    AlreadyExists,
    /// The table's caller-provided storage (ids, ranges or index nodes) is exhausted.
    TableFull,
    /// An argument is outside the documented domain (id too large, zero length, unaligned range...).
    InvalidArgument,
    // ---- segment / pool ----
    /// A shared-memory name is empty, too long, contains '/' or NUL.
    InvalidName,
    /// The object is shorter than the header says or than the caller expects.
    Truncated,
    /// The object does not start with this crate's pool magic.
    BadMagic,
    /// The pool was written with a different layout version.
    VersionMismatch,
    /// The pool's creator has not finished initializing it (ready marker not set).
    NotReady,
    /// The operation is reserved to the pool's owner (peers never allocate).
    NotOwner,
    /// A descriptor offered as a memfd pool is not sealed against shrinking
    /// (`F_SEAL_SHRINK`), so mapping it would risk `SIGBUS`.
    NotSealed,
    /// A syscall failed; the payload is its `errno`.
    Os(i32),
}

/// Shorthand used throughout the crate.
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// A short, static, human-readable description.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Error::ZeroSize => "zero-size allocation",
            Error::TooLarge => "request larger than capacity",
            Error::BadAlignment => "alignment is not a supported power of two",
            Error::Exhausted => "no free block large enough",
            Error::DoubleFree => "offset already freed",
            Error::InvalidOffset => "offset was never handed out",
            Error::MetadataFull => "allocator metadata storage is full",
            Error::CacheOwned => "block belongs to a thread cache; free it through that cache",
            Error::OutOfBounds => "range out of bounds",
            Error::NotFound => "not found",
            Error::AlreadyExists => "already exists",
            Error::TableFull => "translation table is full",
            Error::InvalidArgument => "invalid argument",
            Error::InvalidName => "invalid shared-memory name",
            Error::Truncated => "object is truncated",
            Error::BadMagic => "not a mooncake-shm pool (bad magic)",
            Error::VersionMismatch => "pool layout version mismatch",
            Error::NotReady => "pool is not initialized yet",
            Error::NotOwner => "operation reserved to the pool owner",
            Error::NotSealed => "descriptor is not sealed against shrinking",
            Error::Os(_) => "system call failed",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os(errno) => write!(f, "{} (errno {})", self.as_str(), errno),
            _ => f.write_str(self.as_str()),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
