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
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// Only `ffi` is part of the C ABI: cbindgen skips every other module.
/// cbindgen:ignore
pub mod error;
pub use error::{Error, Result};

/// cbindgen:ignore
pub mod arena;
/// cbindgen:ignore
pub mod table;

#[cfg(feature = "os")]
/// cbindgen:ignore
pub mod sys;

#[cfg(feature = "os")]
/// cbindgen:ignore
pub mod segment;

#[cfg(feature = "os")]
/// cbindgen:ignore
pub mod pool;

#[cfg(feature = "os")]
/// cbindgen:ignore
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
