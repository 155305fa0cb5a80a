//! The sharded arena against a shadow map of its live blocks.
//!
//! The input decodes into a shard count (1-4), a capacity (whole pages, up
//! to 16 MiB), a record budget per shard and a sequence of operations, run
//! on a real [`ShardedArena`] and on a map `start -> size rounded up to the
//! granule`. Checked after every operation:
//!
//! - the shards cover `[0, capacity)` in order, without gaps;
//! - a successful `alloc` / `alloc_hinted` is aligned, lies inside one
//!   shard, overlaps no live block, and `usable_size` reports its rounded
//!   size;
//! - a failed one returns the error its arguments call for (`ZeroSize`,
//!   `BadAlignment`, `TooLarge`, in that order) or, for valid arguments,
//!   `Exhausted` / `MetadataFull`, and changes nothing;
//! - freeing a live block succeeds and a second free of it fails;
//!   freeing anything that is not the start of a live block fails and
//!   changes nothing;
//! - the stats equal the model's (`live`, `in_use`, `free`), and
//!   `largest_free` never exceeds the largest shard;
//! - after freeing everything, every shard is one free block again.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{align_ok, align_up, request_error};
use mooncake_shm::arena::{Arena, ArenaSlot, ShardedArena, GRANULE};
use mooncake_shm::Error;
use std::collections::BTreeMap;

const PAGE: u64 = 4096;

#[derive(Arbitrary, Debug)]
struct Input {
    shards: u8,
    pages: u16,
    records: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Alloc {
        size: u32,
        align: u8,
        hint: Option<u8>,
    },
    /// Frees the live block with this index (mod the count), twice.
    Free(u16),
    /// Frees an arbitrary offset (near a live block, or anything).
    FreeRaw {
        near: u16,
        delta: i16,
        raw: Option<u64>,
    },
}

fuzz_target!(|input: Input| {
    let n = 1 + input.shards as usize % 4;
    let cap = (1 + input.pages as u64 % 4096) * PAGE;
    let records = 1 + input.records as usize % 32;
    let slots = Arena::<Vec<ArenaSlot>>::slots_for(records);
    let a = match ShardedArena::new(cap, (0..n).map(|_| vec![ArenaSlot::EMPTY; slots])) {
        Ok(a) => a,
        Err(e) => {
            assert_eq!(e, Error::InvalidArgument);
            assert!(
                cap / (n as u64) < PAGE,
                "rejected {cap} bytes in {n} shards"
            );
            return;
        }
    };
    assert_eq!((a.shards(), a.capacity()), (n, cap));
    let ranges: Vec<(u64, u64)> = (0..n).map(|k| a.shard_range(k).unwrap()).collect();
    let mut end = 0;
    for &(s, e) in &ranges {
        assert!(s == end && e > s && s % PAGE == 0, "shards {ranges:?}");
        end = e;
    }
    assert_eq!(end, cap);
    let largest_shard = ranges.iter().map(|&(s, e)| e - s).max().unwrap();
    let shard_of = |o: u64| ranges.iter().position(|&(s, e)| s <= o && o < e);

    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    for op in input.ops.iter().take(512) {
        let before = a.stats();
        match *op {
            Op::Alloc { size, align, hint } => {
                let size = size as u64 % (cap + 2 * GRANULE);
                let align = match align % 16 {
                    14 => 3,
                    15 => 2 * Arena::<Vec<ArenaSlot>>::MAX_ALIGN,
                    k => 1u64 << k,
                };
                let align_ok = align_ok(align);
                let res = match hint {
                    Some(h) => a.alloc_hinted(h as usize, size, align),
                    None => a.alloc(size, align),
                };
                match res {
                    Ok(o) => {
                        assert!(size != 0 && align_ok && size <= cap, "bad args accepted");
                        let rs = align_up(size, GRANULE);
                        assert_eq!(o % align.max(GRANULE), 0, "misaligned");
                        let k = shard_of(o).expect("offset outside every shard");
                        assert!(o + rs <= ranges[k].1, "block crosses the end of shard {k}");
                        if let Some((&po, &ps)) = live.range(..o).next_back() {
                            assert!(po + ps <= o, "overlaps the block at {po}");
                        }
                        if let Some((&no, _)) = live.range(o..).next() {
                            assert!(o + rs <= no, "overlaps the block at {no}");
                        }
                        assert_eq!(a.usable_size(o), Ok(rs));
                        live.insert(o, rs);
                    }
                    Err(e) => {
                        match request_error(size, align, cap) {
                            Some(x) => assert_eq!(e, x),
                            None => assert!(
                                e == Error::Exhausted || e == Error::MetadataFull,
                                "unexpected {e:?}"
                            ),
                        }
                        assert_eq!(a.stats(), before, "a failed alloc changed the stats");
                    }
                }
            }
            Op::Free(i) => {
                if !live.is_empty() {
                    let (&o, _) = live.iter().nth(i as usize % live.len()).unwrap();
                    live.remove(&o);
                    a.free(o).unwrap();
                    let after = a.stats();
                    let e = a.free(o).unwrap_err();
                    assert!(e == Error::DoubleFree || e == Error::InvalidOffset, "{e:?}");
                    assert_eq!(a.stats(), after, "a second free changed the stats");
                }
            }
            Op::FreeRaw { near, delta, raw } => {
                let o = match raw {
                    Some(r) => r,
                    None if live.is_empty() => delta as u16 as u64,
                    None => {
                        let (&b, _) = live.iter().nth(near as usize % live.len()).unwrap();
                        b.wrapping_add(delta as i64 as u64)
                    }
                };
                if !live.contains_key(&o) {
                    assert!(a.free(o).is_err(), "freed {o}, not a live block");
                    assert!(a.usable_size(o).is_err());
                    assert_eq!(a.stats(), before, "a failed free changed the stats");
                }
            }
        }
        let st = a.stats();
        let in_use: u64 = live.values().sum();
        assert_eq!(
            (st.live, st.in_use, st.free),
            (live.len() as u64, in_use, cap - in_use)
        );
        assert!(st.largest_free <= largest_shard.min(st.free));
    }
    for &o in live.keys() {
        a.free(o).unwrap();
    }
    let st = a.stats();
    assert_eq!((st.live, st.in_use, st.largest_free), (0, 0, largest_shard));
});
