//! Helpers shared by the Criterion benches: unique shm names, arena setup and
//! (feature `bench-baseline`) safe wrappers over the C++ baseline model,
//! reached through `benches/baseline_shim.cpp`.
#![allow(dead_code)]

use mooncake_shm::arena::{Arena, ArenaSlot};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every shm object the benches create (`/dev/shm/mcshm_crit_*`).
pub const NAME_PREFIX: &str = "mcshm_crit";

/// A name no other object of this process has used: `mcshm_crit_<pid>_<tag>_<n>`.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}_{}_{tag}_{n}", std::process::id())
}

/// A pure arena over `[0, capacity)` tracking up to `max_blocks` blocks, with
/// its metadata in a `Vec` (the arena never touches pool memory).
pub fn vec_arena(capacity: u64, max_blocks: usize) -> Arena<Vec<ArenaSlot>> {
    let slots = vec![ArenaSlot::EMPTY; Arena::<Vec<ArenaSlot>>::slots_for(max_blocks)];
    Arena::new(capacity, slots).expect("arena construction (is the real arena merged?)")
}

/// The seed's allocation size range, 4 KiB..=1 MiB.
pub const MIN_SIZE: u64 = 4 << 10;
pub const MAX_SIZE: u64 = 1 << 20;

/// `n` sizes drawn uniformly from `[MIN_SIZE, MAX_SIZE]` (fixed seed).
pub fn random_sizes(n: usize, seed: u64) -> Vec<u64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.random_range(MIN_SIZE..=MAX_SIZE))
        .collect()
}

#[cfg(feature = "bench-baseline")]
pub use baseline::*;

#[cfg(feature = "bench-baseline")]
mod baseline {
    use core::ffi::c_void;
    use core::ptr::NonNull;

    extern "C" {
        fn mcb_allocator_new(seed: u64) -> *mut c_void;
        fn mcb_allocator_delete(a: *mut c_void);
        fn mcb_allocator_allocate(a: *mut c_void, size: usize) -> *mut c_void;
        fn mcb_allocator_free(a: *mut c_void, addr: *mut c_void) -> i32;
        fn mcb_linear_new() -> *mut c_void;
        fn mcb_linear_delete(r: *mut c_void);
        fn mcb_linear_insert(r: *mut c_void, target: u64, base: u64, local: u64, len: u64) -> i32;
        fn mcb_linear_lookup(r: *const c_void, target: u64, addr: u64, len: u64) -> u64;
        fn mcb_map_new() -> *mut c_void;
        fn mcb_map_delete(r: *mut c_void);
        fn mcb_map_insert(r: *mut c_void, target: u64, base: u64, local: u64, len: u64) -> i32;
        fn mcb_map_lookup(r: *const c_void, target: u64, addr: u64, len: u64) -> u64;
    }

    /// Mooncake's per-buffer path: one shm object per buffer
    /// (`shm_open` + `ftruncate` + `mmap`, `munmap` + `shm_unlink`).
    pub struct BaselineAllocator(NonNull<c_void>);

    // SAFETY: the C++ allocator guards its state with a std::mutex; every
    // method is callable from any thread.
    unsafe impl Send for BaselineAllocator {}
    // SAFETY: as above.
    unsafe impl Sync for BaselineAllocator {}

    impl BaselineAllocator {
        pub fn new(seed: u64) -> Self {
            // SAFETY: no preconditions; null only on allocation failure.
            let p = unsafe { mcb_allocator_new(seed) };
            BaselineAllocator(NonNull::new(p).expect("baseline allocator"))
        }

        /// A fresh mapping of `size` bytes; panics on failure.
        pub fn allocate(&self, size: usize) -> NonNull<u8> {
            // SAFETY: `self.0` is a live allocator.
            let p = unsafe { mcb_allocator_allocate(self.0.as_ptr(), size) };
            NonNull::new(p.cast()).expect("baseline allocate")
        }

        /// Frees a mapping `allocate` returned; panics on failure.
        pub fn free(&self, p: NonNull<u8>) {
            // SAFETY: `self.0` is live; an unknown address is reported, not UB.
            let ok = unsafe { mcb_allocator_free(self.0.as_ptr(), p.as_ptr().cast()) };
            assert_eq!(ok, 1, "baseline free");
        }
    }

    impl Drop for BaselineAllocator {
        fn drop(&mut self) {
            // SAFETY: created by mcb_allocator_new, deleted once (frees and
            // unlinks whatever is still live).
            unsafe { mcb_allocator_delete(self.0.as_ptr()) };
        }
    }

    /// Which baseline relocator.
    #[derive(Clone, Copy, Debug)]
    pub enum RelocatorKind {
        /// Mooncake's scan of the target's mappings under a RW spinlock.
        Linear,
        /// `std::map::upper_bound` on the remote base under the same lock.
        Map,
    }

    /// A baseline relocator filled with synthetic mappings (never dereferenced).
    pub struct BaselineRelocator {
        kind: RelocatorKind,
        p: NonNull<c_void>,
    }

    impl BaselineRelocator {
        pub fn new(kind: RelocatorKind) -> Self {
            // SAFETY: no preconditions.
            let p = unsafe {
                match kind {
                    RelocatorKind::Linear => mcb_linear_new(),
                    RelocatorKind::Map => mcb_map_new(),
                }
            };
            BaselineRelocator {
                kind,
                p: NonNull::new(p).expect("baseline relocator"),
            }
        }

        pub fn insert(&mut self, target: u64, remote_base: u64, local: u64, len: u64) {
            // SAFETY: `self.p` is a live relocator of `self.kind`.
            let ok = unsafe {
                match self.kind {
                    RelocatorKind::Linear => {
                        mcb_linear_insert(self.p.as_ptr(), target, remote_base, local, len)
                    }
                    RelocatorKind::Map => {
                        mcb_map_insert(self.p.as_ptr(), target, remote_base, local, len)
                    }
                }
            };
            assert_eq!(ok, 1, "baseline insert");
        }

        /// The local address of `addr`, or 0 on a miss.
        #[inline]
        pub fn lookup(&self, target: u64, addr: u64, len: u64) -> u64 {
            // SAFETY: `self.p` is a live relocator of `self.kind`.
            unsafe {
                match self.kind {
                    RelocatorKind::Linear => mcb_linear_lookup(self.p.as_ptr(), target, addr, len),
                    RelocatorKind::Map => mcb_map_lookup(self.p.as_ptr(), target, addr, len),
                }
            }
        }
    }

    impl Drop for BaselineRelocator {
        fn drop(&mut self) {
            // SAFETY: created by the matching *_new, deleted once.
            unsafe {
                match self.kind {
                    RelocatorKind::Linear => mcb_linear_delete(self.p.as_ptr()),
                    RelocatorKind::Map => mcb_map_delete(self.p.as_ptr()),
                }
            }
        }
    }
}
