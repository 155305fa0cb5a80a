//! Thread caches over an arena, against a shadow model of the user's blocks.
//!
//! The input decodes into a capacity, a record budget, the byte budgets of
//! up to two [`ThreadCache`]s and a sequence of operations: allocations
//! through a cache or through the arena directly (one, or a burst that
//! reaches [`CACHE_BLOCKS`]), frees through the path that allocated the
//! block or through another one, frees of stale or arbitrary offsets,
//! `flush`, dropping and recreating a cache, `stats`. The model maps every
//! block the user holds to `(request, usable size, path, owned)`, where
//! *path* is the cache that allocated it (or the arena) and *owned* says
//! whether the arena marks it as a cache's ([`Arena::set_owned`] probes
//! this without changing anything: `CacheOwned`, or set and cleared again).
//! Per cache it counts the owned blocks handed out, so `owned_blocks()`
//! minus that count is the number of blocks the cache keeps for reuse.
//!
//! Checked:
//!
//! - a successful `alloc` is aligned (`align.max(GRANULE)`), inside the
//!   capacity, overlaps no block the user holds, and `usable_size` is the
//!   request rounded up to the granule (a plain block) or to its size
//!   class (a cache's owned block, at most 1/32 more, and at least
//!   [`CACHE_MIN_BLOCK`]: see [`cache_block`]), or the smallest
//!   size of one of the 4 classes above for a kept block the cache hands
//!   out on a low budget (room for fewer than 8 blocks of the class); a
//!   block from the
//!   arena is never owned; a plain block from a cache only when the cache
//!   owns `CACHE_BLOCKS` blocks and keeps none, or when the class rounding
//!   could not be served;
//! - a failed `alloc` returns the error its arguments call for (`ZeroSize`,
//!   `BadAlignment`, `TooLarge`, in that order, the arena's answers) or, for
//!   valid arguments, `Exhausted` / `MetadataFull`; an allocation never adds
//!   kept blocks, a cache's `Exhausted` leaves it keeping nothing, and a
//!   default-aligned `Exhausted` means no free block reaches the request's
//!   class;
//! - freeing a block through its own cache succeeds: an owned block is kept
//!   exactly when the byte budget allows (`kept_bytes` grows by its size),
//!   else given back (`owned_blocks` drops by one); a second free right
//!   after is `DoubleFree` through that cache and `CacheOwned` through the
//!   arena or the other cache if the block was kept, else `DoubleFree`
//!   whatever the path (the arena's quick slots or its ring of recent frees
//!   know it), and changes nothing; the same request right after a kept free
//!   gets the kept block back if the block is of the request's own size
//!   class (one of a class above goes back to that class's stack);
//! - an owned block freed through the arena or the other cache is
//!   `CacheOwned` and nothing changes (it is still freeable through its
//!   cache); a block that is not owned frees through any path;
//! - a free of an offset the user does not hold (a stale one, or anything)
//!   fails with `DoubleFree` / `InvalidOffset` / `CacheOwned` and changes
//!   nothing;
//! - `flush` leaves nothing kept; dropping a cache turns its handed-out
//!   blocks into plain ones;
//! - each cache: `owned_blocks() <= CACHE_BLOCKS`, `kept_bytes() <=
//!   max_bytes`, and it keeps blocks iff it keeps bytes;
//! - `stats()` agrees with the model: `live` = held + kept blocks, `in_use`
//!   = held usable bytes + kept bytes;
//! - at the end, after dropping the caches, every held block frees through
//!   the arena, `live == 0`, and `largest_free == capacity`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{align_up, class_ceil, new_arena, request_error, Align, Capacity, Size};
use mooncake_shm::arena::{Arena, ArenaSlot, ThreadCache, CACHE_BLOCKS, CACHE_MIN_BLOCK, GRANULE};
use mooncake_shm::Error;
use std::collections::{BTreeMap, VecDeque};

/// The size of a new owned block for a request of `rsize` bytes (a granule
/// multiple): the smallest size of its class, rounded up from at least
/// [`CACHE_MIN_BLOCK`].
fn cache_block(rsize: u64) -> u64 {
    class_ceil(rsize.max(CACHE_MIN_BLOCK))
}

type A = Arena<Vec<ArenaSlot>>;

/// Cache slots (a slot may be empty: never created, or dropped).
const CACHES: usize = 2;
/// Operations run per input.
const MAX_OPS: usize = 512;
/// Allocations attempted per input, bursts included: keeps a run fast, and
/// still lets one cache fill up and go past its `CACHE_BLOCKS` entries.
const MAX_ALLOCS: usize = 3 * CACHE_BLOCKS;
/// Freed offsets remembered for stale frees.
const RECENT: usize = 128;

#[derive(Arbitrary, Debug)]
enum Records {
    /// 1-64 records: `MetadataFull` comes soon.
    Few(u8),
    /// 1-2048 records: room for `CACHE_BLOCKS` owned blocks and more.
    Many(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Budget {
    Zero,
    Bytes(u16),
    Pow2(u8),
    /// A fraction (of 256) of the capacity.
    Frac(u8),
    Unlimited,
}

/// Who allocates: `k % 8` is 0-5 for cache `k % 2` (the arena if that
/// cache does not exist), 6-7 for the arena.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Who(u8);

/// A free's path: `k % 3` is 0 for the arena, 1-2 for cache 0-1 (the arena
/// if that cache does not exist).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Via(u8);

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Stale {
    /// An offset freed earlier (from the model's history), unless held again.
    Recent(u8),
    /// A granule-aligned offset inside the capacity.
    Granule(u32),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Alloc(Who, Size, Align),
    /// `1 + count` allocations of the same request (reaches
    /// `CACHE_BLOCKS` owned blocks in two steps).
    AllocMany(Who, u8, Size, Align),
    /// Free the n-th held block through the path that allocated it; then
    /// maybe free it again through `again`, and, if the cache kept it, maybe
    /// ask for the same request again (`realloc`).
    Free {
        n: u16,
        again: Option<Via>,
        realloc: bool,
    },
    /// Free `1 + count` held blocks, from the n-th on, through their paths.
    FreeMany(u16, u8),
    /// Free the n-th held block through `via`; if that is refused
    /// (`CacheOwned`), maybe free it through its own cache right after.
    FreeVia {
        n: u16,
        via: Via,
        then_own: bool,
    },
    /// Free an offset the user does not hold.
    FreeStale(Stale, Via),
    Flush(u8),
    /// Drop cache `k % 2` (if it exists).
    Drop(u8),
    /// Replace cache `k % 2` (dropping the old one, if any) with a new one.
    New(u8, Budget),
    UsableLive(u16),
    Stats,
}

#[derive(Arbitrary, Debug)]
struct Input {
    capacity: Capacity,
    records: Records,
    budgets: [Budget; CACHES],
    two_caches: bool,
    ops: Vec<Op>,
}

fn budget(b: Budget, cap: u64) -> u64 {
    match b {
        Budget::Zero => 0,
        Budget::Bytes(n) => n as u64,
        Budget::Pow2(k) => 1u64 << (k % 64),
        Budget::Frac(f) => ((cap as u128 * f as u128) >> 8) as u64,
        Budget::Unlimited => u64::MAX,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Arena,
    Cache(usize),
}

/// A block the user holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// The request as made (for a repeat).
    size: u64,
    align: u64,
    /// `usable_size` at allocation.
    usable: u64,
    /// Who allocated it; `Arena` also for blocks of a dropped cache.
    path: Path,
    /// Marked as the cache's in the arena (only with `Path::Cache`).
    owned: bool,
}

struct Slot<'a> {
    cache: ThreadCache<'a, A>,
    max_bytes: u64,
    /// Owned blocks of this cache the user holds.
    out_owned: usize,
}

struct Harness<'a> {
    arena: &'a A,
    cap: u64,
    caches: [Option<Slot<'a>>; CACHES],
    held: BTreeMap<u64, Held>,
    /// Sum of `usable` over `held`.
    held_bytes: u64,
    recent: VecDeque<u64>,
    allocs: usize,
}

impl<'a> Harness<'a> {
    fn who(&self, w: Who) -> Path {
        match w.0 % 8 {
            6 | 7 => Path::Arena,
            k => self.path_if_alive(k as usize % CACHES),
        }
    }

    fn via(&self, v: Via) -> Path {
        match v.0 % 3 {
            0 => Path::Arena,
            k => self.path_if_alive(k as usize - 1),
        }
    }

    fn path_if_alive(&self, k: usize) -> Path {
        if self.caches[k].is_some() {
            Path::Cache(k)
        } else {
            Path::Arena
        }
    }

    fn slot(&mut self, k: usize) -> &mut Slot<'a> {
        self.caches[k].as_mut().expect("a live cache")
    }

    /// `(owned_blocks, kept_bytes)` of cache `k`.
    fn counts(&self, k: usize) -> (usize, u64) {
        let s = self.caches[k].as_ref().expect("a live cache");
        (s.cache.owned_blocks(), s.cache.kept_bytes())
    }

    /// Every cache's counts, to check that something changed nothing.
    fn snapshot(&self) -> [Option<(usize, u64)>; CACHES] {
        core::array::from_fn(|k| self.caches[k].as_ref().map(|_| self.counts(k)))
    }

    /// Blocks cache `k` keeps for reuse: the owned ones the user does not hold.
    fn kept_blocks(&self, k: usize) -> usize {
        let s = self.caches[k].as_ref().expect("a live cache");
        let owned = s.cache.owned_blocks();
        assert!(
            owned >= s.out_owned,
            "cache {k} owns {owned} blocks, the user holds {} of them",
            s.out_owned
        );
        owned - s.out_owned
    }

    fn check_caches(&self) {
        for k in 0..CACHES {
            let Some(s) = &self.caches[k] else { continue };
            let (owned, kept) = self.counts(k);
            assert!(owned <= CACHE_BLOCKS, "cache {k} owns {owned} blocks");
            assert!(
                kept <= s.max_bytes,
                "cache {k} keeps {kept} > {}",
                s.max_bytes
            );
            let n = self.kept_blocks(k);
            assert_eq!(
                n == 0,
                kept == 0,
                "cache {k} keeps {n} blocks, {kept} bytes"
            );
            assert!(
                kept >= n as u64 * GRANULE,
                "cache {k}: {n} blocks in {kept} bytes"
            );
        }
    }

    /// Whether the arena marks the allocated block at `o` as a cache's,
    /// changing nothing.
    fn is_owned(&self, o: u64) -> bool {
        match self.arena.set_owned(o, true) {
            Err(Error::CacheOwned) => true,
            Ok(()) => {
                assert_eq!(self.arena.set_owned(o, false), Ok(()), "unmarking {o}");
                false
            }
            Err(e) => panic!("set_owned({o}) of an allocated block: {e:?}"),
        }
    }

    fn check_stats(&self) {
        let st = self.arena.stats();
        let (mut kept_blocks, mut kept_bytes) = (0u64, 0u64);
        for k in 0..CACHES {
            if self.caches[k].is_some() {
                kept_blocks += self.kept_blocks(k) as u64;
                kept_bytes += self.counts(k).1;
            }
        }
        assert_eq!(
            (st.live, st.in_use),
            (
                self.held.len() as u64 + kept_blocks,
                self.held_bytes + kept_bytes
            ),
            "stats {st:?} vs {} held blocks ({} bytes), {kept_blocks} kept ({kept_bytes} bytes)",
            self.held.len(),
            self.held_bytes
        );
        assert_eq!(st.free, self.cap - st.in_use);
        assert!(st.largest_free <= st.free);
    }

    fn nth_held(&self, n: u16) -> Option<u64> {
        if self.held.is_empty() {
            return None;
        }
        self.held.keys().nth(n as usize % self.held.len()).copied()
    }

    /// Allocates through `path`, checks the answer and records the block.
    fn alloc(&mut self, path: Path, size: u64, align: u64) -> Result<u64, Error> {
        self.allocs += 1;
        let cap = self.cap;
        let bad = request_error(size, align, cap);
        let rsize = align_up(size, GRANULE);
        let before = match path {
            Path::Cache(k) => Some((self.counts(k), self.kept_blocks(k))),
            Path::Arena => None,
        };
        let res = match path {
            Path::Cache(k) => self.slot(k).cache.alloc(size, align),
            Path::Arena => self.arena.alloc(size, align),
        };
        let o = match res {
            Ok(o) => o,
            Err(e) => {
                match bad {
                    Some(x) => assert_eq!(e, x, "alloc({size}, {align}) via {path:?}"),
                    None => assert!(
                        matches!(e, Error::Exhausted | Error::MetadataFull),
                        "alloc({size}, {align}) via {path:?}: unexpected {e:?}"
                    ),
                }
                if let (Path::Cache(k), Some(((ob, kb), nkb))) = (path, before) {
                    let (oa, ka) = self.counts(k);
                    let nka = self.kept_blocks(k);
                    if matches!(e, Error::ZeroSize | Error::BadAlignment) {
                        assert_eq!((oa, ka), (ob, kb), "a rejected request changed cache {k}");
                    }
                    assert!(nka <= nkb && ka <= kb, "a failed alloc added kept blocks");
                    // Running out of space or records gives every kept
                    // block back before the cache reports it.
                    if matches!(e, Error::Exhausted | Error::MetadataFull) {
                        assert_eq!(ka, 0, "Exhausted while cache {k} keeps {ka} bytes");
                    }
                }
                if bad.is_none() && e == Error::Exhausted && align <= GRANULE {
                    let largest = self.arena.stats().largest_free;
                    assert!(
                        largest < class_ceil(rsize),
                        "Exhausted for {rsize} via {path:?} with a free block of {largest}"
                    );
                }
                return Err(e);
            }
        };
        assert!(
            bad.is_none(),
            "alloc({size}, {align}) via {path:?}: bad args accepted"
        );
        assert_eq!(
            o % align.max(GRANULE),
            0,
            "misaligned: {o} for align {align}"
        );
        let usable = match self.arena.usable_size(o) {
            Ok(u) => u,
            Err(e) => panic!("usable_size({o}) of a new block: {e:?}"),
        };
        assert!(
            o < cap && usable >= rsize && usable <= cap - o,
            "block {o}+{usable} (asked {rsize}) outside the capacity {cap}"
        );
        if let Some((&p, h)) = self.held.range(..o).next_back() {
            assert!(p + h.usable <= o, "{o} overlaps the block at {p} ({h:?})");
        }
        if let Some((&n, h)) = self.held.range(o..).next() {
            assert!(
                o + usable <= n,
                "{o}+{usable} overlaps the block at {n} ({h:?})"
            );
        }
        let owned = self.is_owned(o);
        match path {
            Path::Arena => {
                assert!(!owned, "the arena handed out an owned block at {o}");
                assert_eq!(usable, rsize, "usable_size of a plain block");
            }
            Path::Cache(k) => {
                let ((ob, kb), nkb) = before.unwrap();
                let want = cache_block(rsize);
                if owned && usable != want {
                    // A kept block of one of the 4 classes above, taken on a
                    // low budget (room for fewer than 8 blocks of the class).
                    let mut top = want;
                    for _ in 0..4 {
                        top = class_ceil(top + GRANULE);
                    }
                    self.slot(k).out_owned += 1;
                    let (oa, ka) = self.counts(k);
                    let room = self.slot(k).max_bytes - kb;
                    assert!(
                        usable == class_ceil(usable)
                            && usable > want
                            && usable <= top
                            && (oa, ka) == (ob, kb - usable)
                            && self.kept_blocks(k) + 1 == nkb
                            && room < 8 * want,
                        "owned block of {usable} for {rsize} (room {room}, cache {k}: \
                         ({ob}, {kb}) -> ({oa}, {ka}))"
                    );
                } else if owned {
                    self.slot(k).out_owned += 1;
                } else {
                    assert_eq!(usable, rsize, "usable_size of a cache's plain block");
                }
                let (oa, ka) = self.counts(k);
                let nka = self.kept_blocks(k);
                assert!(
                    nka <= nkb && ka <= kb,
                    "an alloc added kept blocks: ({ob}, {kb}) -> ({oa}, {ka})"
                );
                if !owned {
                    assert!(
                        (oa == CACHE_BLOCKS && nka == 0) || want > rsize,
                        "plain block from cache {k} owning {oa}, keeping {nka}"
                    );
                }
            }
        }
        let owned = owned && path != Path::Arena;
        self.held.insert(
            o,
            Held {
                size,
                align,
                usable,
                path,
                owned,
            },
        );
        self.held_bytes += usable;
        Ok(o)
    }

    fn forget(&mut self, o: u64) -> Held {
        let h = self.held.remove(&o).expect("a held block");
        self.held_bytes -= h.usable;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(o);
        h
    }

    fn free_via(&mut self, path: Path, o: u64) -> Result<(), Error> {
        match path {
            Path::Arena => self.arena.free(o),
            Path::Cache(k) => self.slot(k).cache.free(o),
        }
    }

    /// Frees held block `o` through the path that allocated it.
    fn free_own(&mut self, o: u64, again: Option<Via>, realloc: bool) {
        let h = self.held[&o];
        // The cache that keeps `o` after the free, if any.
        let mut kept_by = None;
        match h.path {
            Path::Arena => assert_eq!(self.arena.free(o), Ok(()), "free({o}) of {h:?}"),
            Path::Cache(k) => {
                let (ob, kb) = self.counts(k);
                assert_eq!(
                    self.slot(k).cache.free(o),
                    Ok(()),
                    "free({o}) of {h:?} through its cache"
                );
                let (oa, ka) = self.counts(k);
                if h.owned {
                    let s = self.slot(k);
                    s.out_owned -= 1;
                    if kb + h.usable <= s.max_bytes {
                        assert_eq!((oa, ka), (ob, kb + h.usable), "free({o}): not kept");
                        kept_by = Some(k);
                    } else {
                        assert_eq!((oa, ka), (ob - 1, kb), "free({o}): not given back");
                    }
                } else {
                    assert_eq!(
                        (oa, ka),
                        (ob, kb),
                        "free({o}) of a plain block changed cache {k}"
                    );
                }
            }
        }
        self.forget(o);
        // A kept block is still allocated (and owned) in the arena; any
        // other is free there, and known as just freed.
        match kept_by {
            Some(_) => {
                assert_eq!(self.arena.usable_size(o), Ok(h.usable), "kept block {o}");
                assert!(self.is_owned(o), "kept block {o} not owned");
            }
            None => assert_eq!(
                self.arena.usable_size(o),
                Err(Error::DoubleFree),
                "usable_size({o}) right after its free"
            ),
        }
        if let Some(v) = again {
            let path = self.via(v);
            let want = match (kept_by, path) {
                (Some(k), Path::Cache(j)) if j == k => Error::DoubleFree,
                (Some(_), _) => Error::CacheOwned,
                (None, _) => Error::DoubleFree,
            };
            let snap = self.snapshot();
            let got = self.free_via(path, o);
            assert_eq!(
                got,
                Err(want),
                "second free({o}) via {path:?}, kept by {kept_by:?}"
            );
            assert_eq!(self.snapshot(), snap, "a second free changed a cache");
        }
        if let (Some(k), true) = (kept_by, realloc) {
            if self.allocs < MAX_ALLOCS {
                let got = self.alloc(Path::Cache(k), h.size, h.align);
                // Its class's stack has it on top. A block of a class above
                // (handed out on a low budget) went back to that class, and
                // the request looks at its own class first.
                if h.usable == cache_block(align_up(h.size, GRANULE)) {
                    assert_eq!(got, Ok(o), "the same request after a kept free");
                }
            }
        }
    }

    /// Drops cache `k`, if it exists: its held blocks become plain ones.
    fn drop_cache(&mut self, k: usize) {
        let Some(s) = self.caches[k].take() else {
            return;
        };
        drop(s);
        let mine: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.path == Path::Cache(k))
            .map(|(&o, _)| o)
            .collect();
        for o in mine {
            let h = self.held.get_mut(&o).unwrap();
            h.path = Path::Arena;
            h.owned = false;
            let usable = h.usable;
            assert!(
                !self.is_owned(o),
                "block {o} still owned after its cache dropped"
            );
            assert_eq!(self.arena.usable_size(o), Ok(usable));
        }
    }

    fn new_cache(&mut self, k: usize, max_bytes: u64) {
        self.drop_cache(k);
        self.caches[k] = Some(Slot {
            cache: ThreadCache::new(self.arena, max_bytes),
            max_bytes,
            out_owned: 0,
        });
        assert_eq!(self.counts(k), (0, 0));
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Alloc(w, size, align) => {
                if self.allocs < MAX_ALLOCS {
                    let path = self.who(w);
                    let _ = self.alloc(path, size.bytes(self.cap), align.bytes());
                }
            }
            Op::AllocMany(w, count, size, align) => {
                let path = self.who(w);
                let (size, align) = (size.bytes(self.cap), align.bytes());
                for _ in 0..=count {
                    if self.allocs >= MAX_ALLOCS || self.alloc(path, size, align).is_err() {
                        break;
                    }
                }
            }
            Op::Free { n, again, realloc } => {
                if let Some(o) = self.nth_held(n) {
                    self.free_own(o, again, realloc);
                }
            }
            Op::FreeMany(n, count) => {
                let Some(mut o) = self.nth_held(n) else {
                    return;
                };
                for _ in 0..=count {
                    let next = self.held.range(o + 1..).next().map(|(&p, _)| p);
                    self.free_own(o, None, false);
                    match next.or_else(|| self.held.keys().next().copied()) {
                        Some(p) => o = p,
                        None => break,
                    }
                }
            }
            Op::FreeVia { n, via, then_own } => {
                let Some(o) = self.nth_held(n) else { return };
                let h = self.held[&o];
                let path = self.via(via);
                if path == h.path {
                    return self.free_own(o, None, false);
                }
                let snap = self.snapshot();
                let got = self.free_via(path, o);
                assert_eq!(
                    self.snapshot(),
                    snap,
                    "free({o}) via {path:?} changed a cache"
                );
                if h.owned {
                    assert_eq!(
                        got,
                        Err(Error::CacheOwned),
                        "free({o}) of {h:?} via {path:?}"
                    );
                    assert_eq!(self.arena.usable_size(o), Ok(h.usable));
                    if then_own {
                        self.free_own(o, None, false);
                    }
                } else {
                    assert_eq!(got, Ok(()), "free({o}) of {h:?} via {path:?}");
                    self.forget(o);
                }
            }
            Op::FreeStale(stale, via) => {
                let o = match stale {
                    Stale::Recent(i) => match self.recent.len() {
                        0 => return,
                        n => self.recent[i as usize % n],
                    },
                    Stale::Granule(g) => (g as u64 * GRANULE) % self.cap,
                    Stale::Raw(r) => r,
                };
                if self.held.contains_key(&o) {
                    return;
                }
                let path = self.via(via);
                let snap = self.snapshot();
                let before = self.arena.stats();
                let got = self.free_via(path, o);
                assert!(
                    matches!(
                        got,
                        Err(Error::DoubleFree | Error::InvalidOffset | Error::CacheOwned)
                    ),
                    "free({o}) via {path:?} of a block the user does not hold: {got:?}"
                );
                assert_eq!(self.snapshot(), snap, "a failed free changed a cache");
                assert_eq!(
                    self.arena.stats(),
                    before,
                    "a failed free changed the arena"
                );
            }
            Op::Flush(k) => {
                let k = k as usize % CACHES;
                if self.caches[k].is_some() {
                    assert_eq!(self.slot(k).cache.flush(), Ok(()));
                    let out = self.slot(k).out_owned;
                    assert_eq!(self.counts(k), (out, 0), "cache {k} after flush");
                }
            }
            Op::Drop(k) => self.drop_cache(k as usize % CACHES),
            Op::New(k, b) => self.new_cache(k as usize % CACHES, budget(b, self.cap)),
            Op::UsableLive(n) => {
                if let Some(o) = self.nth_held(n) {
                    assert_eq!(self.arena.usable_size(o), Ok(self.held[&o].usable));
                }
            }
            Op::Stats => self.check_stats(),
        }
        self.check_caches();
    }
}

fuzz_target!(|input: Input| {
    let raw_cap = input.capacity.bytes();
    let max_blocks = match input.records {
        Records::Few(n) => 1 + n as usize % 64,
        Records::Many(n) => 1 + n as usize % 2048,
    };
    let cap = raw_cap & !(GRANULE - 1);
    let Some(arena) = new_arena(raw_cap, vec![ArenaSlot::EMPTY; A::slots_for(max_blocks)]) else {
        return;
    };

    let mut h = Harness {
        arena: &arena,
        cap,
        caches: [None, None],
        held: BTreeMap::new(),
        held_bytes: 0,
        recent: VecDeque::new(),
        allocs: 0,
    };
    h.new_cache(0, budget(input.budgets[0], cap));
    if input.two_caches {
        h.new_cache(1, budget(input.budgets[1], cap));
    }

    for op in input.ops.iter().take(MAX_OPS) {
        h.run(op);
    }

    h.check_stats();
    for k in 0..CACHES {
        h.drop_cache(k);
    }
    // Dropped caches keep nothing: the arena holds just the user's blocks.
    h.check_stats();
    for (o, b) in core::mem::take(&mut h.held) {
        assert_eq!(arena.free(o), Ok(()), "final free({o}) of {b:?}");
    }
    let st = arena.stats();
    assert_eq!(
        (st.live, st.in_use, st.free, st.largest_free),
        (0, 0, cap, cap),
        "after freeing everything"
    );
    assert_eq!(arena.alloc(cap, 0), Ok(0), "whole-capacity allocation");
    assert_eq!(arena.free(0), Ok(()));
});
