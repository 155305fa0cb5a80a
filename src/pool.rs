//! A segment with a validated header plus its arena. STUB: interface final.
#![allow(missing_docs, unused)]
use crate::arena::ArenaStats;
use crate::{Error, Result};

/// How to create a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions<'a> {
    /// Usable bytes for allocations (the header page comes on top).
    pub capacity: u64,
    /// Permission bits of the object (default 0o600).
    pub mode: u32,
    /// Fault every page in at creation (MAP_POPULATE); ENOMEM/ENOSPC become errors.
    pub prefault: bool,
    /// Back the pool with huge pages (MAP_HUGETLB); fails clearly when none are available.
    pub huge_pages: bool,
    /// Create the object in this directory (hugetlbfs, DAX mount) instead of /dev/shm.
    pub dir: Option<&'a str>,
    /// Maximum number of blocks (live + free) the arena tracks.
    pub max_blocks: u32,
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
        }
    }
}

pub struct Pool {
    _p: (),
}

impl Pool {
    /// Byte offset of the first allocatable byte (the header occupies `[0, DATA_OFFSET)`).
    pub const DATA_OFFSET: u64 = 4096;
    pub fn create(name: &str, opts: &PoolOptions<'_>) -> Result<Pool> {
        Err(Error::InvalidArgument)
    }
    pub fn open(name: &str) -> Result<Pool> {
        Err(Error::NotFound)
    }
    pub fn open_in(dir: Option<&str>, name: &str) -> Result<Pool> {
        Err(Error::NotFound)
    }
    /// Offsets are from the mapping base, so a peer computes `its_base + offset`.
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        Err(Error::NotOwner)
    }
    pub fn free(&self, offset: u64) -> Result<()> {
        Err(Error::NotOwner)
    }
    pub fn ptr(&self, offset: u64, len: u64) -> Result<*mut u8> {
        Err(Error::OutOfBounds)
    }
    pub fn offset_of(&self, ptr: *const u8) -> Result<u64> {
        Err(Error::OutOfBounds)
    }
    pub fn base(&self) -> *mut u8 {
        core::ptr::null_mut()
    }
    /// Length of the whole mapping, header included.
    pub fn len(&self) -> u64 {
        0
    }
    pub fn is_owner(&self) -> bool {
        false
    }
    pub fn name(&self) -> &str {
        ""
    }
    pub fn stats(&self) -> ArenaStats {
        ArenaStats::default()
    }
}
