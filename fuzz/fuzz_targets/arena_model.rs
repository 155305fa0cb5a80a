//! The arena against a shadow model.
//!
//! The input decodes into a capacity, a record budget (`max_blocks`) and a
//! sequence of operations. Every operation runs on a real [`Arena`] and on a
//! model of its allocated blocks: `start -> (rounded size, extent end)`. The
//! arena carves allocations from the *end* of a free block and keeps the
//! alignment slack (under `align` bytes) with the allocated block, and it
//! never leaves two free blocks adjacent, so the model knows its free blocks
//! exactly: the maximal gaps between allocated extents. It also keeps the
//! last [`RECENT_FREES`] freed offsets, as the arena does for double frees.
//! That makes every answer checkable:
//!
//! - a successful `alloc` is aligned, inside the capacity, overlaps no
//!   allocated extent, ends within `align` bytes of the free block's end, and
//!   `usable_size` reports the request rounded up to the granule;
//! - a failed `alloc` returns the error its arguments call for (`ZeroSize`,
//!   `BadAlignment`, `TooLarge`, checked in that order), or `Exhausted` /
//!   `MetadataFull` and then leaves the stats untouched; `MetadataFull` only
//!   when no record is spare; a default-aligned `Exhausted` only when no free
//!   block reaches the request rounded up to its size class (TLSF good fit);
//! - `free` / `usable_size` of an allocated start succeed; of anything else
//!   report `DoubleFree` if it is one of the last `RECENT_FREES` freed
//!   offsets, `InvalidOffset` otherwise, and never change anything;
//! - after every operation the stats equal the model's (`live`, `in_use`,
//!   `free`, and `largest_free` = the largest gap);
//! - after freeing everything, `largest_free == capacity` and a
//!   whole-capacity allocation lands at 0.
//!
//! `stats` returns the arena's quick blocks (freed blocks kept whole for
//! reuse) to the free lists, so with a `stats` after every operation the
//! arena is exactly the TLSF this model describes; the quick slots
//! themselves are covered by the arena's own property test (`model_run`).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{align_ok, align_up, class_ceil, new_arena, Align, Capacity, Size};
use mooncake_shm::arena::{Arena, ArenaSlot, ArenaStats, GRANULE, RECENT_FREES};
use mooncake_shm::Error;
use std::collections::{BTreeMap, VecDeque};

#[derive(Arbitrary, Debug)]
enum Op {
    Alloc(Size, Align),
    /// Free the n-th live block (by address order).
    FreeLive(u16),
    /// Free an arbitrary offset (mostly not a live start).
    FreeOffset(u64),
    /// Free a granule-aligned offset inside the capacity.
    FreeGranule(u32),
    /// Free the most recently freed offset again.
    FreeAgain,
    /// Free an older freed offset again (from the model's history, which
    /// reaches past the arena's window).
    FreeRecent(u8),
    UsableSize(u64),
    /// `usable_size` of the n-th live block.
    UsableLive(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    capacity: Capacity,
    max_blocks: u8,
    ops: Vec<Op>,
}

struct Model {
    cap: u64,
    /// Allocated blocks: start -> (rounded size, end of the extent).
    live: BTreeMap<u64, (u64, u64)>,
    /// The last `2 * RECENT_FREES` offsets freed, newest last (the arena
    /// remembers the newer half).
    recent: VecDeque<u64>,
}

impl Model {
    /// Free blocks as `(start, len)`: the maximal gaps between extents.
    fn gaps(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut end = 0;
        for (&o, &(_, e)) in &self.live {
            if o > end {
                out.push((end, o - end));
            }
            end = e;
        }
        if self.cap > end {
            out.push((end, self.cap - end));
        }
        out
    }

    fn in_use(&self) -> u64 {
        self.live.values().map(|v| v.0).sum()
    }

    /// Records in use: allocated plus free blocks.
    fn records_used(&self) -> usize {
        self.live.len() + self.gaps().len()
    }

    fn expected_stats(&self) -> ArenaStats {
        let in_use = self.in_use();
        ArenaStats {
            capacity: self.cap,
            in_use,
            free: self.cap - in_use,
            largest_free: self.gaps().iter().map(|g| g.1).max().unwrap_or(0),
            live: self.live.len() as u64,
        }
    }

    /// What `free(offset)` / `usable_size(offset)` must answer.
    fn expected_lookup(&self, offset: u64) -> Result<u64, Error> {
        if let Some(&(s, _)) = self.live.get(&offset) {
            return Ok(s);
        }
        let mut window = self.recent.iter().rev().take(RECENT_FREES);
        if offset < self.cap && offset % GRANULE == 0 && window.any(|&r| r == offset) {
            Err(Error::DoubleFree)
        } else {
            Err(Error::InvalidOffset)
        }
    }

    fn freed(&mut self, o: u64) {
        self.live.remove(&o).expect("freed a live block");
        if self.recent.len() == 2 * RECENT_FREES {
            self.recent.pop_front();
        }
        self.recent.push_back(o);
    }

    fn nth_live(&self, n: u16) -> Option<u64> {
        if self.live.is_empty() {
            return None;
        }
        self.live.keys().nth(n as usize % self.live.len()).copied()
    }
}

fuzz_target!(|input: Input| {
    let raw_cap = input.capacity.bytes();
    let max_blocks = (input.max_blocks as usize % 64) + 1;
    let mut storage = vec![ArenaSlot::EMPTY; Arena::<&mut [ArenaSlot]>::slots_for(max_blocks)];
    let cap = raw_cap & !(GRANULE - 1);
    let Some(arena) = new_arena(raw_cap, &mut storage[..]) else {
        return;
    };
    let records = arena.max_blocks();
    assert!(records >= max_blocks);

    let mut m = Model {
        cap,
        live: BTreeMap::new(),
        recent: VecDeque::new(),
    };
    let mut last_freed: Option<u64> = None;

    for op in input.ops.iter().take(512) {
        match *op {
            Op::Alloc(size, align) => {
                let (size, align) = (size.bytes(cap), align.bytes());
                let before = arena.stats();
                let res = arena.alloc(size, align);
                let eff_align = align.max(GRANULE);
                let align_ok = align_ok(align);
                match res {
                    Ok(o) => {
                        assert!(size != 0 && size <= cap && align_ok, "bad args accepted");
                        let rsize = align_up(size, GRANULE);
                        assert_eq!(o % eff_align, 0, "misaligned: {o} for align {align}");
                        assert!(o < cap && rsize <= cap - o, "outside capacity");
                        if let Some((&po, &(_, pe))) = m.live.range(..o).next_back() {
                            assert!(pe <= o, "overlaps the block at {po}");
                        }
                        // The free block ends where the next block starts.
                        let next = m.live.range(o..).next().map_or(cap, |(&n, _)| n);
                        assert!(o + rsize <= next, "overlaps the block at {next}");
                        assert!(
                            next - (o + rsize) < eff_align,
                            "not carved from the end: {o}+{rsize}, free block ends at {next}"
                        );
                        m.live.insert(o, (rsize, next));
                        assert!(m.records_used() <= records, "more blocks than records");
                        assert_eq!(arena.usable_size(o), Ok(rsize));
                    }
                    Err(Error::ZeroSize) => assert_eq!(size, 0),
                    // Checked in this order: size, alignment, capacity.
                    Err(Error::BadAlignment) => assert!(size != 0 && !align_ok),
                    Err(Error::TooLarge) => assert!(size != 0 && align_ok && size > cap),
                    Err(e @ (Error::Exhausted | Error::MetadataFull)) => {
                        assert!(size != 0 && size <= cap && align_ok, "{e:?} for bad args");
                        assert_eq!(arena.stats(), before, "failed alloc changed state");
                        if e == Error::MetadataFull {
                            let used = m.records_used();
                            assert_eq!(used, records, "MetadataFull with spare records");
                        } else if align <= GRANULE {
                            let rsize = align_up(size, GRANULE);
                            assert!(
                                before.largest_free < class_ceil(rsize),
                                "Exhausted for {rsize} with a free block of {}",
                                before.largest_free
                            );
                        }
                    }
                    Err(e) => panic!("alloc({size}, {align}): unexpected {e:?}"),
                }
            }
            Op::FreeLive(n) => {
                if let Some(o) = m.nth_live(n) {
                    assert_eq!(arena.free(o), Ok(()));
                    m.freed(o);
                    last_freed = Some(o);
                }
            }
            Op::FreeOffset(o) => check_free(&arena, &mut m, o, &mut last_freed),
            Op::FreeGranule(g) => {
                let o = (g as u64 * GRANULE) % cap;
                check_free(&arena, &mut m, o, &mut last_freed)
            }
            Op::FreeAgain => {
                if let Some(o) = last_freed {
                    check_free(&arena, &mut m, o, &mut last_freed)
                }
            }
            Op::FreeRecent(k) => {
                if !m.recent.is_empty() {
                    let o = m.recent[k as usize % m.recent.len()];
                    check_free(&arena, &mut m, o, &mut last_freed)
                }
            }
            Op::UsableSize(o) => {
                assert_eq!(
                    arena.usable_size(o),
                    m.expected_lookup(o),
                    "usable_size({o})"
                )
            }
            Op::UsableLive(n) => {
                if let Some(o) = m.nth_live(n) {
                    assert_eq!(arena.usable_size(o), m.expected_lookup(o));
                }
            }
        }
        assert_eq!(arena.stats(), m.expected_stats(), "after {op:?}");
    }

    for o in core::mem::take(&mut m.live).into_keys() {
        assert_eq!(arena.free(o), Ok(()));
    }
    let st = arena.stats();
    assert_eq!(
        (st.live, st.in_use, st.free, st.largest_free),
        (0, 0, cap, cap)
    );
    assert_eq!(arena.alloc(cap, 0), Ok(0), "whole-capacity allocation");
    assert_eq!(arena.free(0), Ok(()));
});

/// `free(o)` must do exactly what the model says, and change nothing on error.
fn check_free(
    arena: &Arena<&mut [ArenaSlot]>,
    m: &mut Model,
    o: u64,
    last_freed: &mut Option<u64>,
) {
    let expected = m.expected_lookup(o);
    let before = arena.stats();
    let got = arena.free(o);
    match expected {
        Ok(_) => {
            assert_eq!(got, Ok(()), "free({o}) of a live block");
            m.freed(o);
            *last_freed = Some(o);
        }
        Err(e) => {
            assert_eq!(got, Err(e), "free({o})");
            assert_eq!(arena.stats(), before, "failed free changed state");
        }
    }
}
