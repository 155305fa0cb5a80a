//! A segment with a header peers can validate, plus its arena.
//!
//! Layout of a pool object (`DATA_OFFSET + capacity` bytes):
//!
//! ```text
//! [0, size_of::<PoolHeader>())   PoolHeader (repr(C), see its docs)
//! [.., DATA_OFFSET)              zero padding up to the first data page
//! [DATA_OFFSET, DATA_OFFSET + capacity)   data area handed out by the arena
//! ```
//!
//! The owner creates the object exclusively, writes the header, and publishes
//! it by storing [`PoolHeader::READY`] into `ready` with `Release` ordering,
//! last. A peer maps the object, loads `ready` with `Acquire`, and validates
//! the header before it trusts any field.
//!
//! The allocator's metadata lives in the owner's private memory (an
//! [`AnonMap`]), never in the shared object, so a peer cannot corrupt it.
//! Only the owner allocates and frees; peers read and write data through
//! offsets the owner sent them.
//!
//! **Offsets are from the mapping base**: `alloc` returns `arena_offset +
//! DATA_OFFSET`, so any process computes `its_base + offset`
//! (or calls [`Pool::ptr`]).
//!
//! # Named pools and memfd pools
//!
//! - [`Pool::create`] / [`Pool::open`]: a named object in `/dev/shm` (or a
//!   directory). Peers find it by name. Name it with [`unique_name`] so a
//!   crash cleaner (`crate::cleanup`) can tell whether its creator is still
//!   alive; the owner also holds a shared `flock` on it for its lifetime.
//!   Risk: anyone who may open the object read-write can shrink it, and every
//!   process that then touches the lost pages gets `SIGBUS`. Mode `0o600`
//!   (the default) limits that to the owner's user.
//! - [`Pool::create_memfd`] / [`Pool::open_fd`]: an anonymous memfd sealed
//!   against shrinking and growing, handed to peers as a descriptor over a
//!   Unix socket (`sys::send_fd` / `sys::recv_fd`). It has no name (nothing
//!   to clean up after a crash: the memory goes away with the last
//!   descriptor and mapping), and no process can change its size, so the
//!   `SIGBUS` risk is ruled out. A peer refuses a descriptor that is not
//!   sealed against shrinking (`NotSealed`).
//!
//! # Hostile peers
//!
//! Everything the owner relies on is private: the arena metadata and the
//! validated copy of the header ([`PoolInfo`]) used for bounds checks. A peer
//! that overwrites the shared header cannot corrupt the owner's allocator or
//! widen anyone's bounds; it only makes *new* opens fail validation.

use crate::arena::{Arena, ArenaSlot, ArenaStats, ShardedArena, MAX_SHARDS};
use crate::segment::{Segment, SegmentOptions};
use crate::sys::{self, AnonMap};
use crate::{Error, Result};
use core::ptr::addr_of;
use core::sync::atomic::{AtomicU32, Ordering};

/// Writes a fresh pool name `<prefix>.<pid>.<starttime>.<random>` for the
/// calling process into `buf` and returns it: the name scheme crash cleanup
/// relies on (see `crate::cleanup`, which has the details and the parser).
/// A buffer of `cleanup::NAME_BUF_LEN` bytes always suffices.
///
/// Errors: `InvalidName` for an empty prefix, one with `/` or NUL, or one
/// longer than `cleanup::MAX_PREFIX_LEN`; `InvalidArgument` if `buf` is too
/// small; `Os(errno)` if `/proc/self/stat` or `getrandom` fail.
pub fn unique_name<'b>(prefix: &str, buf: &'b mut [u8]) -> Result<&'b str> {
    crate::cleanup::unique_name(prefix, buf)
}

/// How to create a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions<'a> {
    /// Usable bytes for allocations (the header page comes on top).
    pub capacity: u64,
    /// Permission bits of the object (default 0o600).
    pub mode: u32,
    /// Fault every page in at creation (`posix_fallocate` + `MAP_POPULATE`);
    /// ENOMEM/ENOSPC become errors instead of a later SIGBUS.
    pub prefault: bool,
    /// Back the pool with huge pages (MAP_HUGETLB); fails clearly when none are
    /// available (needs `dir` on a hugetlbfs mount; `EINVAL` on /dev/shm).
    pub huge_pages: bool,
    /// Create the object in this directory (hugetlbfs, DAX mount) instead of /dev/shm.
    pub dir: Option<&'a str>,
    /// Maximum number of blocks (live + free) the arena tracks, over all shards.
    pub max_blocks: u32,
    /// Independently locked arena shards, 1 to [`MAX_SHARDS`] (0 means 1).
    /// More shards let that many threads allocate at once without waiting
    /// for each other, but one allocation must fit in one shard: the
    /// largest possible request drops to about `capacity / shards` (see
    /// [`ShardedArena`]).
    pub shards: u32,
}

impl Default for PoolOptions<'_> {
    fn default() -> Self {
        PoolOptions {
            capacity: 64 << 20,
            mode: 0o600,
            prefault: false,
            huge_pages: false,
            dir: None,
            max_blocks: 65536,
            shards: 1,
        }
    }
}

/// The header at offset 0 of every pool object. All integers are native
/// endian (pools are shared between processes of one machine).
///
/// | offset | field         | type      |
/// |-------:|---------------|-----------|
/// |      0 | `magic`       | u64       |
/// |      8 | `version`     | u32       |
/// |     12 | `header_size` | u32       |
/// |     16 | `total_size`  | u64       |
/// |     24 | `data_offset` | u64       |
/// |     32 | `capacity`    | u64       |
/// |     40 | `creator_pid` | u32       |
/// |     44 | `ready`       | AtomicU32 |
///
/// 48 bytes in all.
#[repr(C)]
#[derive(Debug)]
pub struct PoolHeader {
    /// [`PoolHeader::MAGIC`].
    pub magic: u64,
    /// [`PoolHeader::VERSION`].
    pub version: u32,
    /// `size_of::<PoolHeader>()` as written by the creator.
    pub header_size: u32,
    /// `data_offset + capacity`: the object is at least this long.
    pub total_size: u64,
    /// Offset of the data area from the mapping base ([`Pool::DATA_OFFSET`]).
    pub data_offset: u64,
    /// Bytes in the data area.
    pub capacity: u64,
    /// Process id of the creator.
    pub creator_pid: u32,
    /// [`PoolHeader::READY`] once the header is complete (stored last,
    /// `Release`); anything else means "not initialized yet".
    pub ready: AtomicU32,
}

impl PoolHeader {
    /// `b"MCSHMPL1"` read as a native-endian u64.
    pub const MAGIC: u64 = u64::from_ne_bytes(*b"MCSHMPL1");
    /// Layout version of this header and of the pool object.
    pub const VERSION: u32 = 1;
    /// The value of `ready` once the header is published (`b"RDY!"`).
    pub const READY: u32 = u32::from_ne_bytes(*b"RDY!");
    /// `size_of::<PoolHeader>()`.
    pub const SIZE: u64 = core::mem::size_of::<PoolHeader>() as u64;
}

/// A copy of a validated pool header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolInfo {
    /// Layout version.
    pub version: u32,
    /// `data_offset + capacity`.
    pub total_size: u64,
    /// Offset of the data area from the mapping base.
    pub data_offset: u64,
    /// Bytes in the data area.
    pub capacity: u64,
    /// Process id of the creator.
    pub creator_pid: u32,
}

/// A shared-memory pool: a [`Segment`] with a validated header, plus (for the
/// owner) an arena over its data area. See the module docs.
pub struct Pool {
    seg: Segment,
    info: PoolInfo,
    /// `Some` for the owner only.
    arena: Option<ShardedArena<AnonMap<ArenaSlot>>>,
}

impl Pool {
    /// Byte offset of the first allocatable byte (the header occupies `[0, DATA_OFFSET)`).
    pub const DATA_OFFSET: u64 = 4096;

    /// Creates the pool object `name` exclusively (`DATA_OFFSET + capacity`
    /// bytes), builds the arena, writes and publishes the header. The
    /// returned pool is the owner; dropping it unlinks the object.
    ///
    /// Errors: `InvalidArgument` for a zero or overflowing capacity; the
    /// arena's errors for `max_blocks`; everything [`Segment::create`]
    /// returns (`InvalidName`, `AlreadyExists`, `Os(ENOSPC)`, ...). Nothing is
    /// left behind on error.
    pub fn create(name: &str, opts: &PoolOptions<'_>) -> Result<Pool> {
        if opts.capacity == 0 {
            return Err(Error::InvalidArgument);
        }
        crate::segment::validate_name(name)?;
        Pool::build(opts, |sopts| Segment::create(name, sopts))
    }

    /// The common part of the two create paths: arena, segment, header.
    fn build(
        opts: &PoolOptions<'_>,
        make_segment: impl FnOnce(&SegmentOptions<'_>) -> Result<Segment>,
    ) -> Result<Pool> {
        if opts.capacity == 0 {
            return Err(Error::InvalidArgument);
        }
        let total = opts
            .capacity
            .checked_add(Self::DATA_OFFSET)
            .ok_or(Error::InvalidArgument)?;
        // The arena first: it has no side effects if it fails.
        let shards = opts.shards.max(1) as usize;
        if shards > MAX_SHARDS {
            return Err(Error::InvalidArgument);
        }
        let per_shard = (opts.max_blocks as usize).div_ceil(shards);
        let slots = Arena::<AnonMap<ArenaSlot>>::slots_for(per_shard);
        let mut storages: [Option<AnonMap<ArenaSlot>>; MAX_SHARDS] = core::array::from_fn(|_| None);
        for s in storages.iter_mut().take(shards) {
            *s = Some(AnonMap::<ArenaSlot>::zeroed(slots)?);
        }
        let arena = ShardedArena::new(opts.capacity, storages.into_iter().flatten())?;
        let seg = make_segment(&SegmentOptions {
            len: total,
            mode: opts.mode,
            prefault: opts.prefault,
            huge_pages: opts.huge_pages,
            dir: opts.dir,
        })?;
        let info = PoolInfo {
            version: PoolHeader::VERSION,
            total_size: total,
            data_offset: Self::DATA_OFFSET,
            capacity: opts.capacity,
            creator_pid: sys::getpid(),
        };
        let hdr = seg.as_ptr().cast::<PoolHeader>();
        // SAFETY: the mapping is at least DATA_OFFSET (> SIZE) bytes,
        // page-aligned, and was created by us a moment ago (O_EXCL, or a
        // memfd nobody else has a descriptor of yet); nobody
        // else has a reason to write it before `ready` is published. Volatile
        // because other processes may map it. `ready` is still 0 (fresh object).
        unsafe {
            write_field(addr_of!((*hdr).magic).cast_mut(), PoolHeader::MAGIC);
            write_field(addr_of!((*hdr).version).cast_mut(), info.version);
            write_field(
                addr_of!((*hdr).header_size).cast_mut(),
                PoolHeader::SIZE as u32,
            );
            write_field(addr_of!((*hdr).total_size).cast_mut(), info.total_size);
            write_field(addr_of!((*hdr).data_offset).cast_mut(), info.data_offset);
            write_field(addr_of!((*hdr).capacity).cast_mut(), info.capacity);
            write_field(addr_of!((*hdr).creator_pid).cast_mut(), info.creator_pid);
        }
        ready_of(&seg).store(PoolHeader::READY, Ordering::Release);
        Ok(Pool {
            seg,
            info,
            arena: Some(arena),
        })
    }

    /// Creates an anonymous pool in a sealed memfd (see the module docs):
    /// `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`, `ftruncate`, seals
    /// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, `mmap`, then the same
    /// header and arena as [`Pool::create`]. The pool keeps the descriptor;
    /// send [`Pool::fd`] to peers, who call [`Pool::open_fd`].
    ///
    /// `opts.mode` does not apply; `opts.dir` must be `None`
    /// (`InvalidArgument`). Errors otherwise as [`Pool::create`], minus the
    /// name-related ones.
    pub fn create_memfd(opts: &PoolOptions<'_>) -> Result<Pool> {
        if opts.dir.is_some() {
            return Err(Error::InvalidArgument);
        }
        Pool::build(opts, Segment::create_memfd)
    }

    /// Maps a memfd pool received from its owner, as a peer. `fd` is
    /// borrowed (neither kept nor closed; close it whenever you like).
    ///
    /// Errors: `NotSealed` if the descriptor is not sealed against shrinking
    /// (a plain shm or regular file, or an unsealed memfd); then as
    /// [`Pool::open_in`] (`Truncated`, `BadMagic`, `VersionMismatch`,
    /// `NotReady`, `Os(EBADF)`, ...).
    pub fn open_fd(fd: i32) -> Result<Pool> {
        let seg = Segment::open_fd(fd, PoolHeader::SIZE)?;
        let info = validate(&seg)?;
        Ok(Pool {
            seg,
            info,
            arena: None,
        })
    }

    /// The sealed memfd of a pool made by [`Pool::create_memfd`], to send to
    /// peers (`sys::send_fd`). Borrowed: it stays open, owned by the pool,
    /// until the pool is dropped. `None` for named pools and for peers.
    pub fn fd(&self) -> Option<i32> {
        if self.seg.is_memfd() {
            self.seg.fd()
        } else {
            None
        }
    }

    /// Whether the pool lives in a sealed memfd (created by
    /// [`Pool::create_memfd`] or opened with [`Pool::open_fd`]).
    pub fn is_memfd(&self) -> bool {
        self.seg.is_memfd()
    }

    /// Opens the pool `name` in /dev/shm as a peer; see [`Pool::open_in`].
    pub fn open(name: &str) -> Result<Pool> {
        Pool::open_in(None, name)
    }

    /// Opens an existing pool (in `dir`, or /dev/shm) as a peer and validates
    /// its header, in this order:
    ///
    /// 1. `NotFound` if there is no such object; `Truncated` if it is shorter
    ///    than the header;
    /// 2. `BadMagic` if the magic is wrong (an all-zero header whose `ready`
    ///    is 0 is a pool being created: `NotReady`);
    /// 3. `VersionMismatch` if the version differs, or the header's layout
    ///    fields (header size, data offset, `total_size == data_offset +
    ///    capacity`) are not this version's;
    /// 4. `NotReady` if `ready` is not published;
    /// 5. `Truncated` if the header's total size exceeds the object's size.
    pub fn open_in(dir: Option<&str>, name: &str) -> Result<Pool> {
        let seg = Segment::open_in(dir, name, PoolHeader::SIZE)?;
        let info = validate(&seg)?;
        Ok(Pool {
            seg,
            info,
            arena: None,
        })
    }

    /// Allocates `size` bytes aligned to `align` (a power of two up to the
    /// arena's maximum) and returns the offset **from the mapping base**.
    /// Owner only (`NotOwner` for peers); otherwise the arena's errors.
    ///
    /// (Always inlined, here and in [`free`](Self::free): the C entry
    /// points' slow paths and the thread cache's both call it, and a call
    /// of its own would cost the churn through the C ABI 13 instructions.)
    #[inline(always)]
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        let arena = self.arena.as_ref().ok_or(Error::NotOwner)?;
        let off = arena.alloc(size, align)?;
        Ok(off + Self::DATA_OFFSET)
    }

    /// [`alloc`](Self::alloc) when the arena's quick path serves it, else
    /// `None` having changed nothing (see `Arena::alloc_quick`).
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn alloc_quick(&self, size: u64, align: u64) -> Option<u64> {
        let off = self.arena.as_ref()?.alloc_quick(size, align)?;
        Some(off + Self::DATA_OFFSET)
    }

    /// [`alloc`](Self::alloc) when a pool with several shards serves it on
    /// its quick path, else `None` having changed nothing (see
    /// `ShardedArena::alloc_quick_sharded`).
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn alloc_quick_sharded(&self, size: u64, align: u64) -> Option<u64> {
        let off = self.arena.as_ref()?.alloc_quick_sharded(size, align)?;
        Some(off + Self::DATA_OFFSET)
    }

    /// Whether this is an owner whose arena has several shards (whose
    /// quick paths are [`Self::alloc_quick_sharded`] and
    /// [`Self::free_quick_sharded`]).
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn sharded(&self) -> bool {
        self.arena.as_ref().is_some_and(|a| a.shards() > 1)
    }

    /// [`free`](Self::free) when the arena's quick path takes the block,
    /// else `false` having changed nothing.
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn free_quick(&self, offset: u64) -> bool {
        self.arena
            .as_ref()
            .is_some_and(|a| a.free_quick(offset.wrapping_sub(Self::DATA_OFFSET)))
    }

    /// [`free`](Self::free) when a pool with several shards takes the block
    /// on its quick path, else `false` having changed nothing.
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn free_quick_sharded(&self, offset: u64) -> bool {
        self.arena
            .as_ref()
            .is_some_and(|a| a.free_quick_sharded(offset.wrapping_sub(Self::DATA_OFFSET)))
    }

    /// Frees a block by the offset `alloc` returned. Owner only.
    #[inline(always)]
    pub fn free(&self, offset: u64) -> Result<()> {
        let arena = self.arena.as_ref().ok_or(Error::NotOwner)?;
        // An offset below DATA_OFFSET wraps to at least 2^64 - DATA_OFFSET,
        // above any arena capacity (<= 2^62): the arena's own range check
        // reports it as `InvalidOffset`, so no separate branch is needed.
        arena.free(offset.wrapping_sub(Self::DATA_OFFSET))
    }

    /// As [`Arena::set_owned`](crate::arena::Arena::set_owned), by the
    /// offset `alloc` returned. Owner only.
    pub fn set_owned(&self, offset: u64, owned: bool) -> Result<()> {
        let arena = self.arena.as_ref().ok_or(Error::NotOwner)?;
        arena.set_owned(offset.wrapping_sub(Self::DATA_OFFSET), owned)
    }

    /// As [`Arena::alloc_owned`](crate::arena::Arena::alloc_owned): the
    /// offset from the mapping base. Owner only.
    pub fn alloc_owned(&self, size: u64, align: u64) -> Result<u64> {
        let arena = self.arena.as_ref().ok_or(Error::NotOwner)?;
        Ok(arena.alloc_owned(size, align)? + Self::DATA_OFFSET)
    }

    /// As [`Arena::free_owned`](crate::arena::Arena::free_owned), by the
    /// offset `alloc` returned. Owner only.
    pub fn free_owned(&self, offset: u64) -> Result<()> {
        let arena = self.arena.as_ref().ok_or(Error::NotOwner)?;
        arena.free_owned(offset.wrapping_sub(Self::DATA_OFFSET))
    }

    /// A local pointer to `[offset, offset + len)` (offsets from the mapping
    /// base). `OutOfBounds` unless the whole range lies in the data area
    /// (the header is not addressable this way); overflow-safe. `len` may be
    /// 0 (then `offset` may equal the end of the data area).
    pub fn ptr(&self, offset: u64, len: u64) -> Result<*mut u8> {
        let end = offset.checked_add(len).ok_or(Error::OutOfBounds)?;
        if offset < self.info.data_offset || end > self.data_end() {
            return Err(Error::OutOfBounds);
        }
        // SAFETY: offset <= data_end <= the mapping's length, so the result
        // stays inside (or one past the end of) the mapping.
        Ok(unsafe { self.seg.as_ptr().add(offset as usize) })
    }

    /// The offset (from the mapping base) of a local pointer into the data
    /// area; `OutOfBounds` if `ptr` is outside `[base + DATA_OFFSET, base +
    /// DATA_OFFSET + capacity)`.
    pub fn offset_of(&self, ptr: *const u8) -> Result<u64> {
        let off = (ptr as usize).wrapping_sub(self.seg.as_ptr() as usize) as u64;
        if off < self.info.data_offset || off >= self.data_end() {
            return Err(Error::OutOfBounds);
        }
        Ok(off)
    }

    /// Base of this process's mapping (the header is at `base`).
    pub fn base(&self) -> *mut u8 {
        self.seg.as_ptr()
    }

    /// Length of the whole mapping, header included.
    pub fn len(&self) -> u64 {
        self.seg.len()
    }

    /// Always false (a pool has at least a header and one data byte).
    pub fn is_empty(&self) -> bool {
        self.seg.is_empty()
    }

    /// Bytes in the data area (the capacity the pool was created with).
    pub fn data_len(&self) -> u64 {
        self.info.capacity
    }

    /// Whether this process created the pool (and may allocate).
    pub fn is_owner(&self) -> bool {
        self.arena.is_some()
    }

    /// The pool's name (without the leading `/`).
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Process id of the pool's creator, from the header.
    pub fn creator_pid(&self) -> u32 {
        self.info.creator_pid
    }

    /// The validated header fields.
    pub fn info(&self) -> PoolInfo {
        self.info
    }

    /// The arena's accounting. Peers do not see the owner's arena: they get
    /// `ArenaStats::default()` with only `capacity` filled in.
    pub fn stats(&self) -> ArenaStats {
        match &self.arena {
            Some(a) => a.stats(),
            None => ArenaStats {
                capacity: self.info.capacity,
                ..ArenaStats::default()
            },
        }
    }

    fn data_end(&self) -> u64 {
        // Validated at create/open: no overflow, within the mapping.
        self.info.data_offset + self.info.capacity
    }
}

impl crate::arena::CacheSource for Pool {
    fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        Pool::alloc(self, size, align)
    }
    fn free(&self, offset: u64) -> Result<()> {
        Pool::free(self, offset)
    }
    fn alloc_owned(&self, size: u64, align: u64) -> Result<u64> {
        Pool::alloc_owned(self, size, align)
    }
    fn set_owned(&self, offset: u64, owned: bool) -> Result<()> {
        Pool::set_owned(self, offset, owned)
    }
    fn free_owned(&self, offset: u64) -> Result<()> {
        Pool::free_owned(self, offset)
    }
}

impl core::fmt::Debug for Pool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pool")
            .field("segment", &self.seg)
            .field("info", &self.info)
            .field("owner", &self.is_owner())
            .finish()
    }
}

/// # Safety
/// `p` must be valid for a write of `T` and suitably aligned.
unsafe fn write_field<T>(p: *mut T, v: T) {
    // SAFETY: upheld by the caller.
    unsafe { core::ptr::write_volatile(p, v) }
}

/// # Safety
/// `p` must be valid for a read of `T` and suitably aligned; `T` must accept
/// any bit pattern.
unsafe fn read_field<T>(p: *const T) -> T {
    // SAFETY: upheld by the caller.
    unsafe { core::ptr::read_volatile(p) }
}

/// The header's `ready` word as an atomic.
fn ready_of(seg: &Segment) -> &AtomicU32 {
    let hdr = seg.as_ptr().cast::<PoolHeader>();
    // SAFETY: every pool segment is at least `PoolHeader::SIZE` bytes
    // (checked at open, guaranteed at create) and page-aligned, so `ready` is
    // in bounds and 4-byte aligned. The mapping lives as long as `seg`, and
    // the word is only ever accessed atomically by this crate.
    unsafe { &*addr_of!((*hdr).ready) }
}

/// Validates a peer's view of the header (see `Pool::open_in`).
fn validate(seg: &Segment) -> Result<PoolInfo> {
    let ready = ready_of(seg).load(Ordering::Acquire);
    let hdr = seg.as_ptr().cast::<PoolHeader>().cast_const();
    // SAFETY: the segment is at least `PoolHeader::SIZE` bytes (checked by
    // `Segment::open_in`) and page-aligned; all fields read are plain
    // integers (any bit pattern is valid). Volatile: another process may be
    // writing them; they are trusted only once `ready` was seen published
    // (Acquire above orders these reads after it).
    let (magic, version, header_size, total_size, data_offset, capacity, creator_pid) = unsafe {
        (
            read_field(addr_of!((*hdr).magic)),
            read_field(addr_of!((*hdr).version)),
            read_field(addr_of!((*hdr).header_size)),
            read_field(addr_of!((*hdr).total_size)),
            read_field(addr_of!((*hdr).data_offset)),
            read_field(addr_of!((*hdr).capacity)),
            read_field(addr_of!((*hdr).creator_pid)),
        )
    };
    if magic != PoolHeader::MAGIC {
        if magic == 0 && ready == 0 {
            return Err(Error::NotReady);
        }
        return Err(Error::BadMagic);
    }
    if version != PoolHeader::VERSION {
        return Err(Error::VersionMismatch);
    }
    if ready != PoolHeader::READY {
        return Err(Error::NotReady);
    }
    if u64::from(header_size) != PoolHeader::SIZE
        || data_offset != Pool::DATA_OFFSET
        || capacity == 0
        || data_offset.checked_add(capacity) != Some(total_size)
    {
        return Err(Error::VersionMismatch);
    }
    if total_size > seg.len() {
        return Err(Error::Truncated);
    }
    Ok(PoolInfo {
        version,
        total_size,
        data_offset,
        capacity,
        creator_pid,
    })
}
