//! O(1) address translation (pure `core`, no `alloc`, lock-free reads).
//!
//! STUB: the interface is final; the implementation lands with the table work.
#![allow(missing_docs, unused)]

use crate::{Error, Result};
use core::ops::Deref;
use core::sync::atomic::AtomicU64;

/// Capacities of a [`Table`]; storage is sized from them by [`Table::words_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    pub max_segments: u32,
    pub max_peers: u32,
    pub max_ranges: u32,
    pub max_nodes: u32,
}

pub struct Table<S: Deref<Target = [AtomicU64]>> {
    storage: S,
    cfg: TableConfig,
}

impl<S: Deref<Target = [AtomicU64]>> Table<S> {
    pub const fn words_for(cfg: &TableConfig) -> usize {
        0
    }
    pub fn new(cfg: TableConfig, storage: S) -> Result<Self> {
        Err(Error::InvalidArgument)
    }
    pub fn insert_segment(&self, id: u32, base: usize, len: u64) -> Result<()> {
        Err(Error::TableFull)
    }
    pub fn remove_segment(&self, id: u32) -> Result<()> {
        Err(Error::NotFound)
    }
    pub fn resolve(&self, id: u32, offset: u64, len: u64) -> Result<usize> {
        Err(Error::NotFound)
    }
    pub fn locate(&self, addr: usize) -> Result<(u32, u64)> {
        Err(Error::NotFound)
    }
    pub fn insert_remote(
        &self,
        peer: u32,
        remote_base: u64,
        len: u64,
        local_base: usize,
    ) -> Result<()> {
        Err(Error::TableFull)
    }
    pub fn remove_remote(&self, peer: u32, remote_base: u64) -> Result<()> {
        Err(Error::NotFound)
    }
    pub fn relocate(&self, peer: u32, remote_addr: u64, len: u64) -> Result<usize> {
        Err(Error::NotFound)
    }
}
