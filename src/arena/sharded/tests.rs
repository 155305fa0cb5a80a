//! Tests of the sharded arena (run under Miri too, with smaller counts).

use super::*;
use crate::arena::ArenaSlot;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::vec::Vec;

type Sh = ShardedArena<Vec<ArenaSlot>>;

fn storages(n: usize, max_blocks: usize) -> Vec<Vec<ArenaSlot>> {
    let slots = Arena::<Vec<ArenaSlot>>::slots_for(max_blocks);
    (0..n).map(|_| vec![ArenaSlot::EMPTY; slots]).collect()
}

fn sharded(cap: u64, n: usize, max_blocks: usize) -> Sh {
    Sh::new(cap, storages(n, max_blocks)).unwrap()
}

#[test]
fn new_rejects_bad_arguments() {
    assert_eq!(
        Sh::new(1 << 20, storages(0, 8)).err(),
        Some(Error::InvalidArgument)
    );
    assert_eq!(
        Sh::new(1 << 30, storages(MAX_SHARDS + 1, 8)).err(),
        Some(Error::InvalidArgument)
    );
    // Each shard needs at least a page.
    assert_eq!(
        Sh::new(3 * 4096, storages(4, 8)).err(),
        Some(Error::InvalidArgument)
    );
    // Storage a single arena would reject.
    let short = vec![vec![ArenaSlot::EMPTY; 1]; 2];
    assert_eq!(Sh::new(1 << 20, short).err(), Some(Error::InvalidArgument));
    assert!(Sh::new(4 * 4096, storages(4, 8)).is_ok());
}

#[test]
fn shards_cover_the_capacity_in_order() {
    for (cap, n) in [
        (1u64 << 30, 2usize),
        (3 << 30, 3),
        ((3 << 29) + 4096, 2),
        (64 << 20, 5),
        (1 << 20, 1),
        (1 << 24, MAX_SHARDS),
    ] {
        let a = sharded(cap, n, 8);
        assert_eq!((a.shards(), a.capacity()), (n, cap));
        let mut end = 0;
        for k in 0..n {
            let (s, e) = a.shard_range(k).unwrap();
            assert_eq!(s, end, "contiguous");
            assert!(e > s && s % 4096 == 0);
            assert_eq!(a.route(s), k);
            assert_eq!(a.route(e - 1), k);
            end = e;
        }
        assert_eq!(end, cap);
        assert_eq!(a.shard_range(n), None);
        assert_eq!(a.max_blocks(), n * 8);
    }
}

#[test]
fn hinted_allocations_land_in_their_shard() {
    let a = sharded(4 << 20, 4, 64);
    for k in 0..4 {
        let (s, e) = a.shard_range(k).unwrap();
        let o = a.alloc_hinted(k + 4, 1000, 256).unwrap();
        assert!(
            s <= o && o + 1000 <= e && o % 256 == 0,
            "offset {o} in shard {k}"
        );
        assert_eq!(a.usable_size(o), Ok(1008));
        a.free(o).unwrap();
        assert_eq!(a.free(o), Err(Error::DoubleFree));
        assert_eq!(a.usable_size(o), Err(Error::DoubleFree));
    }
    assert_eq!(a.free(4 << 20), Err(Error::InvalidOffset));
    assert_eq!(a.free(u64::MAX), Err(Error::InvalidOffset));
    assert_eq!(a.free((1 << 20) + 8), Err(Error::InvalidOffset));
    assert_eq!(a.alloc(0, 0), Err(Error::ZeroSize));
    assert_eq!(a.alloc(1, 3), Err(Error::BadAlignment));
    assert_eq!(a.alloc((4 << 20) + 1, 0), Err(Error::TooLarge));
    a.check_invariants();
}

#[test]
fn a_full_shard_passes_the_request_on() {
    let a = sharded(4 << 20, 2, 64);
    // Fill shard 1 completely, then ask it first again.
    let whole = a.alloc_hinted(1, 2 << 20, 0).unwrap();
    assert_eq!(whole, 2 << 20);
    let o = a.alloc_hinted(1, 4096, 0).unwrap();
    assert!(o < 2 << 20, "served by shard 0");
    // A request no single shard can hold fails although the total could.
    a.free(o).unwrap();
    a.free(whole).unwrap();
    assert_eq!(a.alloc((2 << 20) + 16, 0), Err(Error::Exhausted));
    assert_eq!(a.alloc(2 << 20, 0).map(|o| o % (2 << 20)), Ok(0));
}

#[test]
fn metadata_full_is_reported_over_exhausted() {
    // One record per shard: the first allocation needs a split, which needs
    // a second record. Every shard has room but no record.
    let a = Sh::new(1 << 20, storages(2, 1)).unwrap();
    assert_eq!(a.alloc(4096, 0), Err(Error::MetadataFull));
    // A whole-shard request needs no split.
    assert_eq!(a.alloc(1 << 19, 0).map(|o| o % (1 << 19)), Ok(0));
}

#[test]
fn fill_to_failure_uses_every_shard() {
    let (cap, n, size) = (8u64 << 20, 4usize, 100_000u64);
    let a = sharded(cap, n, 256);
    let mut offs = Vec::new();
    loop {
        match a.alloc(size, 0) {
            Ok(o) => offs.push(o),
            Err(Error::Exhausted) => break,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    // At most one request's worth is stranded per shard.
    let st = a.stats();
    assert!(st.in_use + n as u64 * size > cap, "in use {}", st.in_use);
    for k in 0..n {
        let (s, e) = a.shard_range(k).unwrap();
        assert!(offs.iter().any(|&o| s <= o && o < e), "shard {k} unused");
    }
    a.check_invariants();
    for o in offs {
        a.free(o).unwrap();
    }
    let st = a.stats();
    assert_eq!((st.in_use, st.live, st.free), (0, 0, cap));
    assert_eq!(st.largest_free, cap / n as u64);
}

#[test]
fn preferred_point_maps_back_to_its_shard() {
    for n in 1..=MAX_SHARDS {
        for k in 0..n {
            preferred::set(k, n);
            assert_eq!(preferred::get(n), k, "shard {k} of {n}");
        }
    }
}

/// Random allocations and frees against a shadow map of live ranges.
#[test]
fn model_property() {
    let (seeds, steps) = if cfg!(miri) { (2, 120) } else { (16, 3000) };
    for seed in 0..seeds {
        let n = 1 + (seed as usize % 4);
        let cap = (1u64 << 20) + 4096 * seed;
        let a = sharded(cap, n, 48);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        for step in 0..steps {
            if live.is_empty() || rng.random_bool(0.55) {
                let size = rng.random_range(1..cap / 8);
                let align = 1u64 << rng.random_range(0..=12);
                let hint = rng.random_range(0..8);
                match a.alloc_hinted(hint, size, align) {
                    Ok(o) => {
                        assert_eq!(o % align.max(GRANULE), 0);
                        let k = a.route(o);
                        let (s, e) = a.shard_range(k).unwrap();
                        assert!(s <= o && o + size <= e, "block crosses its shard");
                        if let Some((&po, &ps)) = live.range(..o).next_back() {
                            assert!(po + ps <= o, "overlap");
                        }
                        if let Some((&no, _)) = live.range(o..).next() {
                            assert!(o + size <= no, "overlap");
                        }
                        live.insert(o, size);
                    }
                    Err(Error::Exhausted) | Err(Error::MetadataFull) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            } else {
                let i = rng.random_range(0..live.len());
                let (&o, _) = live.iter().nth(i).unwrap();
                live.remove(&o);
                a.free(o).unwrap();
                assert!(a.free(o).is_err());
            }
            let st = a.stats();
            assert_eq!(st.live, live.len() as u64);
            if step % 64 == 0 {
                a.check_invariants();
            }
        }
        for (o, _) in live {
            a.free(o).unwrap();
        }
        a.check_invariants();
        assert_eq!(a.stats().in_use, 0);
    }
}

/// Threads allocate on their preferred shards and free each other's
/// blocks too.
#[test]
fn concurrent_cross_thread_frees() {
    let (threads, iters) = if cfg!(miri) { (3, 30) } else { (4, 20_000) };
    let cap = 1u64 << 24;
    let a = sharded(cap, 2, 2048);
    let shared: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
    let live: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|sc| {
        for t in 0..threads {
            let (a, shared, live) = (&a, &shared, &live);
            sc.spawn(move || {
                let mut rng = StdRng::seed_from_u64(t as u64);
                for _ in 0..iters {
                    if rng.random_bool(0.5) {
                        let size = rng.random_range(1..65536);
                        let Ok(o) = a.alloc(size, 64) else { continue };
                        {
                            let mut m = live.lock().unwrap();
                            if let Some((&po, &ps)) = m.range(..o).next_back() {
                                assert!(po + ps <= o, "overlap");
                            }
                            if let Some((&no, _)) = m.range(o..).next() {
                                assert!(o + size <= no, "overlap");
                            }
                            m.insert(o, size);
                        }
                        shared.lock().unwrap().push((o, size));
                    } else {
                        // Frees whichever block is last, whoever allocated it.
                        let Some((o, _)) = shared.lock().unwrap().pop() else {
                            continue;
                        };
                        live.lock().unwrap().remove(&o);
                        a.free(o).unwrap();
                    }
                }
            });
        }
    });
    for (o, _) in shared.into_inner().unwrap() {
        a.free(o).unwrap();
    }
    a.check_invariants();
    let st = a.stats();
    assert_eq!((st.in_use, st.live, st.free), (0, 0, cap));
}

#[test]
fn sharded_arena_is_sync_and_send() {
    fn is_sync<T: Sync + Send>() {}
    is_sync::<Sh>();
}
