//! Transfer: `memcpy` between two buffers carved from one pool (the Rust
//! core) against two page-aligned private buffers from the global allocator
//! (`anon`), two buffers of the raw-syscall path (one shm object each, the
//! crate's `segment` layer) and, with feature `bench-baseline`, two buffers
//! of the C++ baseline allocator.
//!
//! `transfer/<impl>/<size>` for 4 KiB, 64 KiB, 1 MiB and 16 MiB, reported as
//! bytes per second. Every buffer is written once before measuring, so page
//! faults are not part of the copy (see the C++ transfer bench for them).
//! All buffers are page-aligned. With THP `always`, the anonymous mappings may
//! get huge pages and the shm buffers not
//! (`/sys/kernel/mm/transparent_hugepage/shmem_enabled` is usually `never`);
//! that is part of what the comparison shows.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mooncake_shm::pool::{Pool, PoolOptions};
use mooncake_shm::segment::{Segment, SegmentOptions};
use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;

const SIZES: [usize; 4] = [4 << 10, 64 << 10, 1 << 20, 16 << 20];
const ALIGN: u64 = 4096;

fn label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else {
        format!("{}KiB", size >> 10)
    }
}

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
/// Both must be valid for `len` bytes and not overlap.
#[inline]
unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: upheld by the caller.
    unsafe { core::ptr::copy_nonoverlapping(black_box(src), black_box(dst), len) };
}

/// Fills `[p, p + len)` so every page is faulted in before measuring.
///
/// # Safety
/// `p` must be valid for writes of `len` bytes.
unsafe fn touch(p: *mut u8, len: usize) {
    // SAFETY: upheld by the caller.
    unsafe { core::ptr::write_bytes(p, 0x5a, len) };
}

fn transfer(c: &mut Criterion) {
    let max = *SIZES.iter().max().unwrap();
    let pool = Pool::create(
        &common::unique_name("xfer"),
        &PoolOptions {
            capacity: 2 * max as u64 + 2 * ALIGN,
            prefault: true,
            max_blocks: 64,
            ..PoolOptions::default()
        },
    )
    .expect("pool");
    #[cfg(feature = "bench-baseline")]
    let baseline = common::BaselineAllocator::new(4);

    let mut g = c.benchmark_group("transfer");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let id = |name: &str| BenchmarkId::new(name, label(size));

        // Rust core: two blocks of one pool.
        let a = pool.alloc(size as u64, ALIGN).unwrap();
        let b_ = pool.alloc(size as u64, ALIGN).unwrap();
        let (src, dst) = (
            pool.ptr(a, size as u64).unwrap(),
            pool.ptr(b_, size as u64).unwrap(),
        );
        // SAFETY: both come from `pool.ptr` for `size` bytes and stay mapped
        // while `pool` lives; distinct blocks do not overlap.
        unsafe {
            touch(src, size);
            touch(dst, size);
        }
        g.bench_function(id("pool"), |b| {
            // SAFETY: as above.
            b.iter(|| unsafe { copy(src, dst, size) })
        });
        pool.free(a).unwrap();
        pool.free(b_).unwrap();

        // Private anonymous memory.
        // Private anonymous memory from the global allocator, page-aligned
        // like the shm buffers (a plain `Vec` sits at a 16-byte offset, and
        // on some CPUs `rep movsb` is many times slower for such relative
        // misalignments: that would measure libc, not the memory). Not
        // `sys::AnonMap`: it asks for transparent huge pages from 2 MiB on,
        // which the shm buffers cannot get.
        let layout = Layout::from_size_align(size, 4096).unwrap();
        // SAFETY: `layout` has a non-zero size.
        let (src, dst) = unsafe { (alloc(layout), alloc(layout)) };
        assert!(!src.is_null() && !dst.is_null(), "out of memory");
        // SAFETY: fresh allocations of `size` bytes each, freed below.
        unsafe {
            touch(src, size);
            touch(dst, size);
        }
        g.bench_function(id("anon"), |b| {
            // SAFETY: two distinct live allocations of `size` bytes.
            b.iter(|| unsafe { copy(src, dst, size) })
        });
        // SAFETY: allocated above with `layout`, no longer used.
        unsafe {
            dealloc(src, layout);
            dealloc(dst, layout);
        }

        // Raw-syscall path: one shm object per buffer.
        let opts = SegmentOptions::with_len(size as u64);
        let s1 = Segment::create(&common::unique_name("xfer"), &opts).unwrap();
        let s2 = Segment::create(&common::unique_name("xfer"), &opts).unwrap();
        // SAFETY: each segment maps at least `size` bytes and lives until the
        // end of this iteration; they are different mappings.
        unsafe {
            touch(s1.as_ptr(), size);
            touch(s2.as_ptr(), size);
        }
        g.bench_function(id("segment"), |b| {
            // SAFETY: as above.
            b.iter(|| unsafe { copy(s1.as_ptr(), s2.as_ptr(), size) })
        });
        drop((s1, s2));

        // The C++ baseline allocator: one shm object per buffer, too.
        #[cfg(feature = "bench-baseline")]
        {
            let p1 = baseline.allocate(size);
            let p2 = baseline.allocate(size);
            // SAFETY: fresh mappings of `size` bytes each, freed below.
            unsafe {
                touch(p1.as_ptr(), size);
                touch(p2.as_ptr(), size);
            }
            g.bench_function(id("baseline"), |b| {
                // SAFETY: as above.
                b.iter(|| unsafe { copy(p1.as_ptr(), p2.as_ptr(), size) })
            });
            baseline.free(p1);
            baseline.free(p2);
        }
    }
    g.finish();
}

criterion_group!(benches, transfer);
criterion_main!(benches);
