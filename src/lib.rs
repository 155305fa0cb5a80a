//! # mooncake-shm
//!
//! Shared memory for Mooncake's transfer engine: an arena allocator over
//! pre-created POSIX shared-memory pools (allocation is bookkeeping, not a
//! syscall) and O(1) address translation between processes.
//!
//! Layers, each depending only on those above it:
//!
//! | module    | needs               | owns |
//! |-----------|---------------------|------|
//! | [`arena`] | `core`              | offset allocator over `[0, capacity)`; never touches pool memory |
//! | [`table`] | `core`              | segment id / address -> mapping, O(1), lock-free reads |
//! | `sys`     | `libc`              | thin wrappers over the syscalls, errno -> [`Error`] |
//! | `segment` | `sys`               | one named shm object: create-exclusive / open-existing / map / unlink |
//! | `pool`    | `segment`, `arena`  | a segment with a validated header, plus its arena |
//! | `cleanup` | `sys`               | crash cleanup: name scheme, creator liveness, stale-object removal |
//! | `ffi`     | all (feature `capi`)| the C ABI behind `include/mooncake_shm.h` |
//!
//! `arena` and `table` are pure: they build for `x86_64-unknown-none` with
//! `--no-default-features`, take their metadata storage from the caller, and
//! run under Miri.
//!
//! # Example
//!
//! An owner creates a pool once, then allocating is bookkeeping; a peer maps
//! the same pool by name and reaches the data through the offset; a table
//! turns the peer's view of an address into a local pointer in O(1).
//!
//! ```
//! # #[cfg(feature = "os")] fn main() -> mooncake_shm::Result<()> {
//! use core::sync::atomic::AtomicU64;
//! use mooncake_shm::pool::{unique_name, Pool, PoolOptions};
//! use mooncake_shm::table::{Table, TableConfig};
//!
//! // Owner: one pool (one shm_open + ftruncate + mmap), many allocations.
//! let mut buf = [0u8; 255];
//! let name = unique_name("example", &mut buf)?;
//! let owner = Pool::create(name, &PoolOptions { capacity: 1 << 20, ..Default::default() })?;
//! let offset = owner.alloc(4096, 64)?; // nanoseconds, no syscall
//! let p = owner.ptr(offset, 4096)?;
//! // SAFETY: `ptr` checked that [offset, offset + 4096) lies in the pool.
//! unsafe { p.write_bytes(0xAB, 4096) };
//!
//! // Peer (normally another process): map by name, read by offset.
//! let peer = Pool::open(name)?;
//! // SAFETY: as above, in the peer's own mapping.
//! assert_eq!(unsafe { *peer.ptr(offset, 1)? }, 0xAB);
//!
//! // Translation: the owner's address, as the peer was told it, -> the peer's address.
//! let cfg = TableConfig { max_segments: 16, max_peers: 4, max_ranges: 64, max_nodes: 16 };
//! let words: Vec<AtomicU64> =
//!     (0..Table::<&[AtomicU64]>::words_for(&cfg)).map(|_| AtomicU64::new(0)).collect();
//! let table = Table::new(cfg, &words[..])?;
//! let owner_id = 0; // the peer's id for the owner process
//! table.insert_remote(owner_id, owner.base() as u64, owner.len(), peer.base() as usize)?;
//! let local = table.relocate(owner_id, p as u64, 4096)?;
//! assert_eq!(local, peer.ptr(offset, 4096)? as usize);
//!
//! owner.free(offset)?;
//! drop(peer); // a peer only unmaps
//! drop(owner); // the owner unmaps and unlinks: nothing is left in /dev/shm
//! # Ok(()) }
//! # #[cfg(not(feature = "os"))] fn main() {}
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod error;
pub use error::{Error, Result};

pub mod arena;
pub mod table;

#[cfg(feature = "os")]
pub mod sys;

#[cfg(feature = "os")]
pub mod segment;

#[cfg(feature = "os")]
pub mod pool;

#[cfg(feature = "os")]
pub mod cleanup;

#[cfg(feature = "capi")]
pub mod ffi;

/// Types for which the all-zero bit pattern is a valid, initialized value.
///
/// The OS layer hands the pure layers their metadata storage as a zeroed
/// private anonymous mapping (`sys::AnonMap<T>`); this trait is what makes
/// that sound without an allocator.
///
/// # Safety
/// Implement only for types whose every field accepts all-zero bytes
/// (integers, atomics of integers, arrays and `repr(C)` structs of those).
pub unsafe trait ZeroValid {}

// SAFETY: integers and integer atomics are valid when zeroed.
unsafe impl ZeroValid for u8 {}
// SAFETY: as above.
unsafe impl ZeroValid for u32 {}
// SAFETY: as above.
unsafe impl ZeroValid for u64 {}
// SAFETY: as above.
unsafe impl ZeroValid for core::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl ZeroValid for core::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl ZeroValid for core::sync::atomic::AtomicUsize {}
