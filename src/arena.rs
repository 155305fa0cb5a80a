//! Offset allocator over `[0, capacity)` (pure `core`, no `alloc`).
//!
//! STUB: the interface is final; the implementation lands with the arena work.
#![allow(missing_docs, unused)]

use crate::{Error, Result, ZeroValid};
use core::ops::DerefMut;

/// One unit of caller-provided arena metadata. All-zero is a valid value.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct ArenaSlot {
    words: [u64; 4],
}
// SAFETY: plain integers.
unsafe impl ZeroValid for ArenaSlot {}

impl ArenaSlot {
    /// An empty slot, for `[ArenaSlot::EMPTY; N]` in no_std callers.
    pub const EMPTY: ArenaSlot = ArenaSlot { words: [0; 4] };
}

/// A snapshot of the arena's accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArenaStats {
    pub capacity: u64,
    pub in_use: u64,
    pub free: u64,
    pub largest_free: u64,
    pub live: u64,
}

pub struct Arena<S: DerefMut<Target = [ArenaSlot]>> {
    storage: core::cell::UnsafeCell<S>,
    capacity: u64,
}

// SAFETY: stub; the real arena serializes access to `storage` with its lock.
unsafe impl<S: DerefMut<Target = [ArenaSlot]> + Send> Sync for Arena<S> {}

impl<S: DerefMut<Target = [ArenaSlot]>> Arena<S> {
    pub const MAX_ALIGN: u64 = 4096;
    pub const fn slots_for(max_blocks: usize) -> usize {
        max_blocks * 2
    }
    pub fn new(capacity: u64, storage: S) -> Result<Self> {
        Err(Error::InvalidArgument)
    }
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        Err(Error::Exhausted)
    }
    pub fn free(&self, offset: u64) -> Result<()> {
        Err(Error::InvalidOffset)
    }
    pub fn stats(&self) -> ArenaStats {
        ArenaStats::default()
    }
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}
