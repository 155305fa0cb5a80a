//! Lookup: address translation by the Rust table against, with feature
//! `bench-baseline`, the C++ model of Mooncake's linear relocator and the
//! seed's `std::map` relocator, swept over 1..100,000 registered segments.
//!
//! The registered ranges are synthetic (1 MiB each, every 2 MiB, at
//! Linux-like user addresses): lookups never dereference them, so no memory
//! is mapped. Queries are 4 KiB accesses at random segments and offsets,
//! drawn once with a fixed seed and replayed round-robin.
//!
//! Groups (`<count>` is the number of registered segments):
//! - `relocate/<impl>/<count>`: `(peer, remote address, len)` -> local
//!   address; impl is `table`, `baseline_linear`, `baseline_map`.
//! - `relocate_batch/table/<count>`: the same queries, `BATCH` per
//!   `Table::relocate_batch` call; the time is per call, the throughput
//!   line gives addresses per second.
//! - `resolve/table/<count>`: `(segment id, offset, len)` -> local address.
//! - `locate/table/<count>`: local address -> `(segment id, offset)`.
//! - `miss/segment`: the raw-syscall path a relocate miss takes (open an
//!   existing object + `fstat` + `mmap`, then `munmap`), count-independent.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mooncake_shm::segment::{Segment, SegmentOptions};
use mooncake_shm::table::{RemoteSpan, Table, TableConfig};
use std::hint::black_box;
use std::sync::atomic::AtomicU64;

const COUNTS: [u32; 6] = [1, 10, 100, 1_000, 10_000, 100_000];
/// Length of every registered range.
const RANGE_LEN: u64 = 1 << 20;
/// Distance between consecutive range starts (ranges are not adjacent).
const STRIDE: u64 = 2 << 20;
/// First remote (peer) address, as a peer's mmap area would hand out.
const REMOTE_BASE: u64 = 0x7f00_0000_0000;
/// First local address the ranges are "mapped" at.
const LOCAL_BASE: u64 = 0x5500_0000_0000;
/// Bytes per access.
const ACCESS: u64 = 4096;
/// Number of pre-drawn queries (a power of two).
const QUERIES: usize = 4096;
/// Accesses per `relocate_batch` call (divides `QUERIES`).
const BATCH: usize = 256;

struct Query {
    seg: u32,
    offset: u64,
}

fn queries(count: u32) -> Vec<Query> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x100c + u64::from(count));
    (0..QUERIES)
        .map(|_| Query {
            seg: rng.random_range(0..count),
            offset: rng.random_range(0..=(RANGE_LEN - ACCESS) / 64) * 64,
        })
        .collect()
}

fn remote(seg: u32) -> u64 {
    REMOTE_BASE + u64::from(seg) * STRIDE
}

fn local(seg: u32) -> u64 {
    LOCAL_BASE + u64::from(seg) * STRIDE
}

/// A table with `count` local segments (ids 0..count) and the same number of
/// remote ranges of peer 0.
fn table(count: u32) -> Table<Vec<AtomicU64>> {
    // Granule = 1 MiB, so a 4096-entry leaf covers 4 GiB = 2048 ranges; two
    // interior levels above it. Generous slack for both spaces.
    let cfg = TableConfig {
        max_segments: count,
        max_peers: 1,
        max_ranges: count,
        max_nodes: 16 + 2 * (count / 1024),
    };
    let words = Table::<Vec<AtomicU64>>::words_for(&cfg);
    let storage: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
    let t = Table::new(cfg, storage).expect("table construction (is the real table merged?)");
    for s in 0..count {
        t.insert_segment(s, local(s) as usize, RANGE_LEN)
            .expect("insert_segment");
        t.insert_remote(0, remote(s), RANGE_LEN, local(s) as usize)
            .expect("insert_remote");
    }
    t
}

fn lookups(c: &mut Criterion) {
    for count in COUNTS {
        let qs = queries(count);
        let t = table(count);
        for q in &qs {
            let want = (local(q.seg) + q.offset) as usize;
            assert_eq!(t.relocate(0, remote(q.seg) + q.offset, ACCESS), Ok(want));
            assert_eq!(t.resolve(q.seg, q.offset, ACCESS), Ok(want));
            assert_eq!(t.locate(want), Ok((q.seg, q.offset)));
        }

        let mut g = c.benchmark_group("relocate");
        g.bench_with_input(BenchmarkId::new("table", count), &qs, |b, qs| {
            let mut i = 0usize;
            b.iter(|| {
                let q = &qs[i % QUERIES];
                i += 1;
                black_box(t.relocate(0, black_box(remote(q.seg) + q.offset), ACCESS))
            })
        });
        #[cfg(feature = "bench-baseline")]
        for kind in [common::RelocatorKind::Linear, common::RelocatorKind::Map] {
            let mut r = common::BaselineRelocator::new(kind);
            for s in 0..count {
                r.insert(0, remote(s), local(s), RANGE_LEN);
            }
            for q in &qs {
                let got = r.lookup(0, remote(q.seg) + q.offset, ACCESS);
                assert_eq!(got, local(q.seg) + q.offset, "{kind:?}");
            }
            let name = match kind {
                common::RelocatorKind::Linear => "baseline_linear",
                common::RelocatorKind::Map => "baseline_map",
            };
            g.bench_with_input(BenchmarkId::new(name, count), &qs, |b, qs| {
                let mut i = 0usize;
                b.iter(|| {
                    let q = &qs[i % QUERIES];
                    i += 1;
                    black_box(r.lookup(0, black_box(remote(q.seg) + q.offset), ACCESS))
                })
            });
        }
        g.finish();

        let spans: Vec<RemoteSpan> = qs
            .iter()
            .map(|q| RemoteSpan {
                addr: remote(q.seg) + q.offset,
                len: ACCESS,
            })
            .collect();
        let mut out = vec![0usize; BATCH];
        let mut g = c.benchmark_group("relocate_batch");
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_with_input(BenchmarkId::new("table", count), &spans, |b, spans| {
            let mut i = 0usize;
            b.iter(|| {
                let batch = &spans[i % QUERIES..][..BATCH];
                i += BATCH;
                black_box(t.relocate_batch(0, black_box(batch), &mut out)).unwrap();
                black_box(&out);
            })
        });
        g.finish();

        let mut g = c.benchmark_group("resolve");
        g.bench_with_input(BenchmarkId::new("table", count), &qs, |b, qs| {
            let mut i = 0usize;
            b.iter(|| {
                let q = &qs[i % QUERIES];
                i += 1;
                black_box(t.resolve(black_box(q.seg), black_box(q.offset), ACCESS))
            })
        });
        g.finish();

        let mut g = c.benchmark_group("locate");
        g.bench_with_input(BenchmarkId::new("table", count), &qs, |b, qs| {
            let mut i = 0usize;
            b.iter(|| {
                let q = &qs[i % QUERIES];
                i += 1;
                black_box(t.locate(black_box((local(q.seg) + q.offset) as usize)))
            })
        });
        g.finish();
    }
}

/// What a relocate miss costs on the raw-syscall path: open the peer's
/// existing object, `fstat` it, map it (and unmap it again on drop).
fn miss(c: &mut Criterion) {
    let name = common::unique_name("miss");
    let owner = Segment::create(&name, &SegmentOptions::with_len(RANGE_LEN)).expect("segment");
    let mut g = c.benchmark_group("miss");
    g.bench_function("segment", |b| {
        b.iter(|| drop(black_box(Segment::open(&name, RANGE_LEN).unwrap())))
    });
    g.finish();
    drop(owner);
}

criterion_group!(benches, lookups, miss);
criterion_main!(benches);
