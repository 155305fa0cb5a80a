//! [`ShardedArena`]: several [`Arena`]s side by side, one lock each.

use super::{alloc_result, request, Arena, ArenaStats, ArenaStorage, GRANULE};
use crate::{Error, Result};

/// Most shards a [`ShardedArena`] can have.
pub const MAX_SHARDS: usize = 16;

/// Keeps each shard (whose first field is its lock) on cache lines of its
/// own, so two threads on two shards never write to the same line (128:
/// adjacent-line prefetch pairs 64-byte lines on x86).
#[repr(align(128))]
struct Padded<T>(T);

/// Several [`Arena`]s side by side, one lock each, so that threads
/// allocating at once stop taking turns on one lock.
///
/// It splits `[0, capacity)` into `n` consecutive *shards*,
/// each an ordinary [`Arena`] over its own range with its own metadata
/// storage and its own lock (on its own cache lines):
///
/// - **Ranges.** Shards `0..n-1` span `2^k` bytes each (the largest power
///   of two `<= capacity / n`, at least [`Arena::MAX_ALIGN`]); the last one
///   takes the rest. A power of two makes the owner of an offset one shift
///   away, and shard starts are page aligned, so every alignment an arena
///   honours survives the translation to pool offsets.
/// - **Allocation.** A thread starts at its *preferred* shard and takes the
///   first shard whose lock is free right now, in order; if all are busy it
///   waits for them one by one. A shard that cannot satisfy the request
///   passes it on, so the arena fails only when every shard does. With the
///   `std` feature each thread gets a preferred shard when it first
///   allocates (spread evenly over the shards) and moves its preference to
///   wherever it last succeeded after finding its own busy or full; without
///   `std` every thread starts at shard 0 and the free-lock search spreads
///   them. [`ShardedArena::alloc_hinted`] lets a caller choose.
/// - **Free.** The shard is the one whose range holds the offset, so a
///   block may be freed by any thread. Double-free and invalid-offset
///   detection are each shard's.
/// - **The price.** A block never straddles two shards: a request larger
///   than every shard's largest free block fails with [`Error::Exhausted`]
///   even when the pool as a whole has room, and a fill to failure leaves
///   up to one request's worth unused per shard. One shard (`n = 1`) is
///   exactly one [`Arena`] and costs one predictable branch more.
///
/// `Sync` whenever `S` is `Send`, like [`Arena`].
pub struct ShardedArena<S: ArenaStorage> {
    /// Shard 0, outside the array so the one-shard paths reach it directly.
    first: Padded<Arena<S>>,
    /// Shards `1..n` are `rest[..n - 1]` (`Some`), the others `None`.
    rest: [Option<Padded<Arena<S>>>; MAX_SHARDS - 1],
    n: usize,
    /// log2 of the span of shards `0..n-1`; 63 for one shard (every offset
    /// is below 2^62, so everything routes to shard 0).
    span_log2: u32,
    capacity: u64,
}

impl<S: ArenaStorage> ShardedArena<S> {
    /// Splits `[0, capacity)` (rounded down to [`GRANULE`]) over one shard
    /// per element of `storages` (1 to [`MAX_SHARDS`] of them); each shard's
    /// metadata lives in its storage (size them with [`Arena::slots_for`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no storage or more than
    /// [`MAX_SHARDS`], for a capacity too small to give each shard
    /// [`Arena::MAX_ALIGN`] bytes, and for anything [`Arena::new`] rejects.
    pub fn new(capacity: u64, storages: impl IntoIterator<Item = S>) -> Result<Self> {
        let capacity = capacity & !(GRANULE - 1);
        let mut given: [Option<S>; MAX_SHARDS] = core::array::from_fn(|_| None);
        let mut n = 0;
        for s in storages {
            if n == MAX_SHARDS {
                return Err(Error::InvalidArgument);
            }
            given[n] = Some(s);
            n += 1;
        }
        if n == 0 {
            return Err(Error::InvalidArgument);
        }
        let span_log2 = if n == 1 {
            63
        } else {
            let per = capacity / n as u64;
            if per < Arena::<S>::MAX_ALIGN {
                return Err(Error::InvalidArgument);
            }
            63 - per.leading_zeros()
        };
        let mut shards = given.iter_mut().take(n).enumerate().map(|(k, s)| {
            let start = (k as u64) << span_log2;
            let end = if k + 1 == n {
                capacity
            } else {
                start + (1 << span_log2)
            };
            let storage = s.take().ok_or(Error::InvalidArgument)?;
            Ok(Padded(Arena::new(end - start, storage)?))
        });
        let first = shards.next().ok_or(Error::InvalidArgument)??;
        let mut rest: [Option<Padded<Arena<S>>>; MAX_SHARDS - 1] = core::array::from_fn(|_| None);
        for (slot, shard) in rest.iter_mut().zip(shards) {
            *slot = Some(shard?);
        }
        Ok(ShardedArena {
            first,
            rest,
            n,
            span_log2,
            capacity,
        })
    }

    /// Shard `k < n`.
    #[inline(always)]
    fn shard(&self, k: usize) -> &Arena<S> {
        debug_assert!(k < self.n);
        match self.shard_if_any(k) {
            Some(a) => a,
            // `new` fills `rest[..n - 1]` and every caller passes `k < n`.
            None => unreachable!("shard index out of range"),
        }
    }

    /// Shard `k`, or `None` if `k >= n`; for paths that must not panic.
    #[inline(always)]
    fn shard_if_any(&self, k: usize) -> Option<&Arena<S>> {
        if k == 0 {
            return Some(&self.first.0);
        }
        match self.rest.get(k.wrapping_sub(1)) {
            Some(Some(p)) => Some(&p.0),
            _ => None,
        }
    }

    /// First offset of shard `k` (`< n`). No branch for one shard: its
    /// only `k` is 0, and 0 shifted by any `span_log2` is 0.
    #[inline(always)]
    fn start(&self, k: usize) -> u64 {
        (k as u64) << self.span_log2
    }

    /// The shard whose range holds `offset` (`< capacity`).
    #[inline(always)]
    fn route(&self, offset: u64) -> usize {
        ((offset >> self.span_log2) as usize).min(self.n - 1)
    }

    /// Allocates `size` bytes aligned to `align`, starting at the calling
    /// thread's preferred shard (see [`ShardedArena`]). Otherwise as
    /// [`Arena::alloc`]; [`Error::Exhausted`] also when the request is larger
    /// than every shard's largest free block, [`Error::MetadataFull`] if a
    /// shard had room but no record to split it.
    #[inline(always)]
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        if self.n != 1 {
            return self.alloc_from(preferred::get(self.n), size, align, true);
        }
        self.first.0.alloc(size, align)
    }

    /// [`Arena::alloc_quick`] for a one-shard arena; `None` with several
    /// (see [`alloc_quick_sharded`](Self::alloc_quick_sharded)). No calls,
    /// no panics.
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn alloc_quick(&self, size: u64, align: u64) -> Option<u64> {
        if self.n != 1 {
            return None;
        }
        self.first.0.alloc_quick(size, align)
    }

    /// The quick path with several shards: [`Arena::try_alloc_quick`] on
    /// the calling thread's preferred shard, if the thread has one already
    /// (its first allocation takes the full path, which assigns it) and
    /// that shard's lock is free right now. `None` otherwise, and with one
    /// shard, having changed nothing: [`alloc`](Self::alloc) then does the
    /// rest. No panics; but it reads a thread-local, which costs a call in
    /// a position-independent library, so it is kept apart from the
    /// call-free one-shard path.
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn alloc_quick_sharded(&self, size: u64, align: u64) -> Option<u64> {
        if self.n == 1 {
            return None;
        }
        let k = preferred::peek(self.n)?;
        let off = self.shard_if_any(k)?.try_alloc_quick(size, align)?;
        Some(self.start(k) + off)
    }

    /// [`Arena::free_quick`] for a one-shard arena; `false` with several
    /// (see [`free_quick_sharded`](Self::free_quick_sharded)).
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn free_quick(&self, offset: u64) -> bool {
        self.n == 1 && self.first.0.free_quick(offset)
    }

    /// The quick path of a free with several shards: [`Arena::free_quick`]
    /// in the shard that owns `offset`; `false`, having changed nothing, if
    /// that shard does not take the block that way, and with one shard
    /// ([`free`](Self::free) then does the rest). No calls, no panics; kept
    /// apart so that the one-shard entry point stays as small as it was.
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn free_quick_sharded(&self, offset: u64) -> bool {
        if self.n == 1 || offset >= self.capacity {
            return false;
        }
        let k = self.route(offset);
        self.shard_if_any(k)
            .is_some_and(|a| a.free_quick(offset - self.start(k)))
    }

    /// [`alloc`](Self::alloc) starting at shard `hint % shards()` instead of
    /// the thread's preferred one (which it leaves unchanged).
    pub fn alloc_hinted(&self, hint: usize, size: u64, align: u64) -> Result<u64> {
        self.alloc_from(hint % self.n, size, align, false)
    }

    /// Tries shard `first` if its lock is free right now (the common case:
    /// one copy of [`Arena`]'s allocation path), else [`Self::alloc_search`].
    ///
    /// Inlined, as the one-shard path is: out of line, its frame and the
    /// fields it reloaded cost a single thread about 33 instructions (a
    /// fifth) per alloc+free pair on a two-shard arena.
    #[inline(always)]
    fn alloc_from(&self, first: usize, size: u64, align: u64, learn: bool) -> Result<u64> {
        let (rsize, align) = request(size, align, self.capacity)?;
        let err = match self.shard(first).try_lock() {
            Some(mut l) => match alloc_result(l.tlsf.alloc(rsize, align)) {
                Ok(off) => return Ok(self.start(first) + off),
                Err(e) => Some(e),
            },
            None => None,
        };
        self.alloc_search(first, rsize, align, learn, err)
    }

    /// The other shards, starting after `first`: those whose lock is free
    /// right now, then, waiting for each, the busy ones (`first` included
    /// unless it already answered `tried`).
    #[inline(never)]
    fn alloc_search(
        &self,
        first: usize,
        rsize: u64,
        align: u64,
        learn: bool,
        tried: Option<Error>,
    ) -> Result<u64> {
        let n = self.n;
        let mut err = tried.unwrap_or(Error::Exhausted);
        let mut busy = u32::from(tried.is_none()) << first;
        let next = |j: usize| {
            if first + j >= n {
                first + j - n
            } else {
                first + j
            }
        };
        // A block from shard `k`: the offset in the pool, and (for a thread
        // that moved) the new preference.
        let found = |k: usize, off: u64| {
            if learn && k != first {
                preferred::set(k, n);
            }
            Ok(self.start(k) + off)
        };
        for j in 1..n {
            let k = next(j);
            let Some(mut l) = self.shard(k).try_lock() else {
                busy |= 1 << k;
                continue;
            };
            match alloc_result(l.tlsf.alloc(rsize, align)) {
                Ok(off) => return found(k, off),
                Err(e) => err = worse(err, e),
            }
        }
        for j in 0..n {
            let k = next(j);
            if busy & (1 << k) == 0 {
                continue;
            }
            match alloc_result(self.shard(k).lock().tlsf.alloc(rsize, align)) {
                Ok(off) => return found(k, off),
                Err(e) => err = worse(err, e),
            }
        }
        Err(err)
    }

    /// Frees the block starting at `offset`, in the shard that owns it. As
    /// [`Arena::free`].
    #[inline(always)]
    pub fn free(&self, offset: u64) -> Result<()> {
        if self.n == 1 {
            // One shard: its range is the whole capacity, which it checks.
            return self.first.0.free(offset);
        }
        self.free_routed(offset)
    }

    /// [`free`](Self::free) with several shards; inlined for the reason
    /// [`Self::alloc_from`] is.
    #[inline(always)]
    fn free_routed(&self, offset: u64) -> Result<()> {
        if offset >= self.capacity {
            return Err(Error::InvalidOffset);
        }
        let k = self.route(offset);
        self.shard(k).free(offset - self.start(k))
    }

    /// As [`Arena::set_owned`], in the shard that holds `offset`.
    pub fn set_owned(&self, offset: u64, owned: bool) -> Result<()> {
        if offset >= self.capacity {
            return Err(Error::InvalidOffset);
        }
        let k = self.route(offset);
        self.shard(k).set_owned(offset - self.start(k), owned)
    }

    /// As [`Arena::alloc_owned`]: under one lock with one shard; with
    /// several, [`alloc`](Self::alloc) and then [`set_owned`](Self::set_owned).
    pub fn alloc_owned(&self, size: u64, align: u64) -> Result<u64> {
        if self.n == 1 {
            return self.first.0.alloc_owned(size, align);
        }
        let off = self.alloc(size, align)?;
        self.set_owned(off, true)?;
        Ok(off)
    }

    /// As [`Arena::free_owned`], in the shard that holds `offset`.
    pub fn free_owned(&self, offset: u64) -> Result<()> {
        if offset >= self.capacity {
            return Err(Error::InvalidOffset);
        }
        let k = self.route(offset);
        self.shard(k).free_owned(offset - self.start(k))
    }

    /// As [`Arena::usable_size`].
    pub fn usable_size(&self, offset: u64) -> Result<u64> {
        if offset >= self.capacity {
            return Err(Error::InvalidOffset);
        }
        let k = self.route(offset);
        self.shard(k).usable_size(offset - self.start(k))
    }

    /// The sum of the shards' accounting; `largest_free` is the largest of
    /// theirs (the largest request that can succeed). Each shard is a
    /// consistent snapshot; the sum is not taken atomically across shards.
    pub fn stats(&self) -> ArenaStats {
        let mut t = ArenaStats {
            capacity: self.capacity,
            ..ArenaStats::default()
        };
        for k in 0..self.n {
            let s = self.shard(k).stats();
            t.in_use += s.in_use;
            t.live += s.live;
            t.largest_free = t.largest_free.max(s.largest_free);
        }
        t.free = t.capacity - t.in_use;
        t
    }

    /// Bytes managed (the `capacity` given to [`new`](Self::new), rounded
    /// down to [`GRANULE`]).
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Number of shards.
    #[inline]
    pub fn shards(&self) -> usize {
        self.n
    }

    /// Offset range `[start, end)` of shard `k`, or `None` if `k >= shards()`.
    pub fn shard_range(&self, k: usize) -> Option<(u64, u64)> {
        (k < self.n).then(|| {
            let start = self.start(k);
            (start, start + self.shard(k).capacity())
        })
    }

    /// Block records over all shards (see [`Arena::max_blocks`]).
    pub fn max_blocks(&self) -> usize {
        (0..self.n).map(|k| self.shard(k).max_blocks()).sum()
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        for k in 0..self.n {
            self.shard(k).check_invariants();
        }
    }
}

/// Which error to report when shards fail differently: running out of
/// records says more (raise `max_blocks`) than running out of room.
fn worse(a: Error, b: Error) -> Error {
    if a == Error::MetadataFull || b == Error::MetadataFull {
        Error::MetadataFull
    } else {
        b
    }
}

/// The calling thread's preferred shard.
#[cfg(feature = "std")]
mod preferred {
    use core::cell::Cell;
    use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

    /// Threads numbered in order of their first allocation.
    static NEXT: AtomicU32 = AtomicU32::new(0);

    std::thread_local! {
        /// A point of `[0, 2^32)`; shard `(p * n) >> 32` of an arena with
        /// `n` shards. Threads take the golden-ratio sequence, which spreads
        /// any number of them evenly over any number of shards.
        static POINT: Cell<Option<u32>> = const { Cell::new(None) };
    }

    /// The thread's preferred shard of `n` if it has been assigned one,
    /// without assigning it (no calls, no panics: a fast path's probe).
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(super) fn peek(n: usize) -> Option<usize> {
        let p = POINT.try_with(Cell::get).ok().flatten()?;
        Some(((p as u64 * n as u64) >> 32) as usize)
    }

    #[inline(always)]
    pub(super) fn get(n: usize) -> usize {
        let p = POINT.with(|c| match c.get() {
            Some(p) => p,
            None => {
                let p = NEXT.fetch_add(1, Relaxed).wrapping_mul(0x9E37_79B9);
                c.set(Some(p));
                p
            }
        });
        ((p as u64 * n as u64) >> 32) as usize
    }

    /// Prefer shard `k` of `n` from now on.
    pub(super) fn set(k: usize, n: usize) {
        // The smallest point with `(p * n) >> 32 == k`.
        let p = (((k as u64) << 32).div_ceil(n as u64)) as u32;
        POINT.with(|c| c.set(Some(p)));
    }
}

/// Without `std` there is no thread-local storage: every thread starts at
/// shard 0 and the free-lock search spreads them.
#[cfg(not(feature = "std"))]
mod preferred {
    #[inline(always)]
    pub(super) fn get(_n: usize) -> usize {
        0
    }

    pub(super) fn set(_k: usize, _n: usize) {}
}

#[cfg(test)]
mod tests;
