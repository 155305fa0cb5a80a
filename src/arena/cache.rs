//! A thread's own cache of blocks: allocation and free with no lock.
//!
//! Every [`Arena`] call takes the arena's lock, an atomic exchange that
//! costs about as much as the rest of a quick allocation. A
//! [`ThreadCache`] belongs to one thread (it is used through `&mut`) and
//! keeps up to [`CACHE_BLOCKS`] blocks of the arena *owned*: allocated in
//! the arena's eyes and marked so ([`Arena::set_owned`]). The cache hands
//! them out and takes them back by itself, touching only its own memory
//! (about 41 KiB, of which a call reads a few lines): a freed block waits
//! in a stack per size class for the next request it holds, exactly as the
//! arena's quick slots do, but without the lock.
//!
//! Why the mark: the cache checks every free it takes against its own
//! table (a second free of a kept block is [`Error::DoubleFree`]), and the
//! arena refuses to free an owned block ([`Error::CacheOwned`]), so a block
//! can never be free in the arena while the cache still holds it. Hence
//! the one rule for users: **a block allocated through a cache is freed
//! through that cache** (or after the cache is dropped, which gives the
//! blocks still out back to plain allocation).
//!
//! Bounds: at most [`CACHE_BLOCKS`] owned blocks (an allocation beyond
//! that, with none kept to give back, is a plain arena block), and at most
//! `max_bytes` kept for reuse (a free beyond that gives the block back to
//! the arena). An allocation the arena turns away for lack of space or of
//! records first gives back everything the cache keeps and tries again
//! (kept blocks hold both), so the cache never
//! causes a failure by itself; blocks kept by *other* threads' caches stay
//! theirs until they flush or drop.

use super::{
    align_mask, checked_request, class_ceil, class_of, class_search, request, Arena, ArenaStorage,
    ShardedArena, CLASSES, GRANULE, GRANULE_LOG2, MAX_CAPACITY, SL_COUNT, SL_LOG2,
};
use crate::{Error, Result};

/// Most blocks a [`ThreadCache`] owns at once, kept or handed out.
pub const CACHE_BLOCKS: usize = 512;
/// The smallest block a [`ThreadCache`] hands out: smaller requests take
/// one of these. (Requests below it would need exact small classes, which
/// cost the fast path's class computation three instructions more.)
pub const CACHE_MIN_BLOCK: u64 = SL_COUNT as u64 * GRANULE;
/// A block's *reference*: its index in `blocks` times [`BLOCK_BYTES`],
/// which is its record's byte offset there, so the hot paths reach a
/// record with one mask and no multiply.
type BlockRef = u16;
/// Bytes of a [`Block`] record (a power of two).
const BLOCK_BYTES: usize = size_of::<Block>();
/// The bits of a reference: masked with it, any `u16` is some block's.
const REF_MASK: usize = (CACHE_BLOCKS - 1) * BLOCK_BYTES;
/// An empty class stack or end of one (no block's reference).
const NONE: BlockRef = u16::MAX;
const _: () = assert!(
    BLOCK_BYTES.is_power_of_two() && CACHE_BLOCKS * BLOCK_BYTES <= NONE as usize,
    "every reference fits a u16 below NONE"
);
/// [`Block::lent`] of a kept block: above any `room` (the budget is at
/// most `MAX_CAPACITY`), so one compare tells a free it cannot keep the
/// block, whether it is kept already or over the budget.
const KEPT: u64 = u64::MAX;
/// log2 of the offset table's size: twice [`CACHE_BLOCKS`], so that linear
/// probing stays short and always finds an empty entry. An entry is
/// `class << 16 | reference` (0 = empty: every block is at least a granule,
/// of class 1 or above): a free learns the class of the block from the
/// same load that finds it, so where it pushes the block does not wait for
/// a second load (the block's record).
const TABLE_LOG2: u32 = 10;
const TABLE: usize = 1 << TABLE_LOG2;
const _: () = assert!(TABLE >= 2 * CACHE_BLOCKS && CACHE_BLOCKS % 64 == 0);
/// How many classes above its own a request may take a kept block from
/// when its own stack is empty and the budget is low (see
/// [`ThreadCache::alloc`]): at most 5/32 more than asked, with the
/// rounding of a new block.
const REACH: usize = 4;
/// "Low budget" for that: room for fewer than this many more blocks of the
/// request's size.
const LOW_ROOM: u64 = 8;
/// Words of the bit set of used entries.
const USED_WORDS: usize = CACHE_BLOCKS / 64;

/// The allocator behind a [`ThreadCache`]: plain allocation, and the owned
/// mark that keeps the cache's blocks out of anyone else's free (see
/// [`Arena::set_owned`](Arena::set_owned)). Implemented by
/// [`Arena`], [`ShardedArena`] and
/// [`Pool`](crate::pool::Pool).
pub trait CacheSource {
    /// As [`Arena::alloc`](Arena::alloc).
    fn alloc(&self, size: u64, align: u64) -> Result<u64>;
    /// As [`Arena::free`](Arena::free).
    fn free(&self, offset: u64) -> Result<()>;
    /// As [`Arena::alloc_owned`](Arena::alloc_owned).
    fn alloc_owned(&self, size: u64, align: u64) -> Result<u64>;
    /// As [`Arena::set_owned`](Arena::set_owned).
    fn set_owned(&self, offset: u64, owned: bool) -> Result<()>;
    /// As [`Arena::free_owned`](Arena::free_owned).
    fn free_owned(&self, offset: u64) -> Result<()>;
}

/// One owned block.
#[derive(Clone, Copy)]
#[repr(C)]
struct Block {
    offset: u64,
    /// Usable bytes (the size the arena allocated, a granule multiple).
    size: u64,
    /// `size` while handed out to the user, [`KEPT`] while kept for reuse.
    lent: u64,
    /// Next kept block of the same class, or [`NONE`].
    next: BlockRef,
}

const UNUSED: Block = Block {
    offset: u64::MAX,
    size: 0,
    lent: 0,
    next: NONE,
};

/// A cache of arena blocks for one thread; see the module docs.
///
/// Invariants: `used` marks the entries of `blocks` in use; each used
/// entry's offset sits in `table` (as `entry(reference, class)`) on the
/// probe path from its home; the kept ones (`lent == KEPT`, the others'
/// `lent` is their size) are on the stack `heads[class]` of their class,
/// whose top block's offset is `head_offsets[class]`, and their sizes add
/// up to `max_bytes - room`; `max_bytes <= MAX_CAPACITY`; every used entry
/// is owned in the source.
pub struct ThreadCache<'a, A: CacheSource + ?Sized> {
    src: &'a A,
    max_bytes: u64,
    /// `max_bytes` less the bytes kept: what a free may still keep (one
    /// compare on the free path, where a sum would take two steps).
    room: u64,
    used: [u64; USED_WORDS],
    /// Where [`give_back_one`](Self::give_back_one) looks first.
    cursor: u16,
    /// Owned blocks (a count of `used`).
    owned: usize,
    heads: [BlockRef; CLASSES],
    /// The offset of each non-empty stack's top block (stale for an empty
    /// stack): an allocation has its answer after one load, and reads the
    /// block's record off that path.
    head_offsets: [u64; CLASSES],
    table: [u32; TABLE],
    blocks: [Block; CACHE_BLOCKS],
}

/// The offset table's entry for block `b` of class `class`.
#[inline(always)]
fn entry(b: BlockRef, class: u16) -> u32 {
    debug_assert!(class > 0);
    (class as u32) << 16 | b as u32
}

/// The block reference and class of a non-empty table entry.
#[inline(always)]
fn entry_parts(e: u32) -> (BlockRef, u16) {
    (e as u16, (e >> 16) as u16)
}

/// The reference of the block at index `i` of `blocks`.
#[inline(always)]
fn block_ref(i: usize) -> BlockRef {
    ((i % CACHE_BLOCKS) * BLOCK_BYTES) as BlockRef
}

/// The word of `used` and the bit in it of the block at index `i`.
#[inline(always)]
fn used_bit(i: usize) -> (usize, u64) {
    (i / 64 % USED_WORDS, 1 << (i % 64))
}

/// The word of `used` and the bit in it of the block `b` refers to.
#[inline(always)]
fn used_bit_of(b: BlockRef) -> (usize, u64) {
    used_bit((b as usize & REF_MASK) / BLOCK_BYTES)
}

/// The class a request of `size` bytes takes its block from (a request
/// rounds up to [`CACHE_MIN_BLOCK`] first): for `1 <= size <= 2^57`,
/// [`class_search`]`(max(size, CACHE_MIN_BLOCK) rounded up to the
/// granule)`; for a larger valid size, that class or the next. Any other
/// `size` (zero, or above `MAX_CAPACITY`) maps above
/// [`class_of`]`(MAX_CAPACITY)`, a class no block's size reaches, so the
/// fast path, which only takes kept blocks, needs no size check.
///
/// How: with `w` the request's granules less one, that class is `s * 32 +
/// (w >> s) + 1` for `s = max(log2(w), 5) - 5` (`class_search`'s
/// `ceil(u / 2^s)` is `(w >> s) + 1`; where `log2(w + 1)` exceeds
/// `log2(w)`, the carry gives the same class). A double's bits from bit 47
/// up are `exponent * 32 + the top 5 mantissa bits`: from 32 granules up,
/// that form plus a constant, so one conversion replaces a bit scan and a
/// variable shift. Below 32 granules it is not (the classes there are one
/// granule wide, not 1/32 of an octave); flooring `w` at 31.5 (the class
/// of 32 granules) costs one instruction where exact small classes cost
/// three, hence the smallest block. Below `2^53` the conversion is exact.
/// Above, it rounds off bits far below the top six, in whichever rounding
/// mode: down keeps the class, up may carry into the next one (whose
/// blocks hold more). `size - 1` is where the rounding starts, so nothing
/// overflows, and zero lands at the top.
#[inline(always)]
fn request_class(size: u64) -> usize {
    /// The exponent bias, less the 4 that makes `(log2(w) - 4) * 32`, and
    /// less the class's `+ 1`.
    const BIAS: u64 = ((1023 + SL_LOG2 as u64 - 1) << SL_LOG2) - 1;
    /// `w` of a request of [`CACHE_MIN_BLOCK`] bytes, plus a half: it has
    /// that request's class.
    const FLOOR: f64 = (CACHE_MIN_BLOCK >> GRANULE_LOG2) as f64 - 0.5;
    let w = size.wrapping_sub(1) >> GRANULE_LOG2;
    // `w < 2^60`: the signed conversion is the unsigned one.
    let x = (w as i64 as f64).max(FLOOR);
    let c = ((x.to_bits() >> (52 - SL_LOG2)) - BIAS) as usize;
    // SAFETY: `31.5 <= x <= 2^60` (after rounding), so the exponent is
    // `1023 + 4 ..= 1023 + 60` and `c` is `32 ..= 56 * 32 + 31 + 1`, below
    // `CLASSES` (and the subtraction cannot wrap).
    unsafe { core::hint::assert_unchecked(c < CLASSES) };
    c
}

/// The home entry of `offset` in the offset table (Fibonacci hashing).
#[inline(always)]
fn home(offset: u64) -> usize {
    (offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - TABLE_LOG2)) as usize
}

impl<'a, A: CacheSource + ?Sized> ThreadCache<'a, A> {
    /// An empty cache over `src` that keeps at most `max_bytes` for reuse
    /// (more than `MAX_CAPACITY` is no limit at all).
    pub fn new(src: &'a A, max_bytes: u64) -> Self {
        let max_bytes = max_bytes.min(MAX_CAPACITY);
        ThreadCache {
            src,
            max_bytes,
            room: max_bytes,
            used: [0; USED_WORDS],
            cursor: 0,
            owned: 0,
            heads: [NONE; CLASSES],
            head_offsets: [0; CLASSES],
            table: [0; TABLE],
            blocks: [UNUSED; CACHE_BLOCKS],
        }
    }

    /// Bytes kept for reuse right now.
    pub fn kept_bytes(&self) -> u64 {
        self.max_bytes - self.room
    }

    /// Blocks the cache owns right now, kept or handed out.
    pub fn owned_blocks(&self) -> usize {
        self.owned
    }

    // A reference is the record's byte offset in `blocks`; masked, it is
    // one of the `CACHE_BLOCKS` records' (the hot paths then need no
    // index arithmetic, which the compiler does not always fold away).
    #[inline(always)]
    fn blk(&self, b: BlockRef) -> &Block {
        let at = b as usize & REF_MASK;
        // SAFETY: `at` is a multiple of `BLOCK_BYTES` below
        // `CACHE_BLOCKS * BLOCK_BYTES`: the start of a record of `blocks`.
        unsafe { &*self.blocks.as_ptr().byte_add(at) }
    }

    #[inline(always)]
    fn blk_mut(&mut self, b: BlockRef) -> &mut Block {
        let at = b as usize & REF_MASK;
        // SAFETY: as in `blk`.
        unsafe { &mut *self.blocks.as_mut_ptr().byte_add(at) }
    }

    /// Whether block `b` is kept for reuse (else handed out or unused).
    fn is_kept(&self, b: BlockRef) -> bool {
        self.blk(b).lent == KEPT
    }

    /// The table position, block reference and class of the owned block at
    /// `offset`, if any. Ends: the table is at most half full, so the probe
    /// meets an empty entry.
    #[inline(always)]
    fn find(&self, offset: u64) -> Option<(usize, BlockRef, u16)> {
        let mut h = home(offset);
        loop {
            let e = self.table[h];
            if e == 0 {
                return None;
            }
            if let Some((b, class)) = self.entry_for(e, offset) {
                return Some((h, b, class));
            }
            h = (h + 1) & (TABLE - 1);
        }
    }

    /// The block reference and class of table entry `e` if the entry is
    /// `offset`'s; `None` for an empty entry or another block's.
    #[inline(always)]
    fn entry_for(&self, e: u32, offset: u64) -> Option<(BlockRef, u16)> {
        let (b, class) = entry_parts(e);
        (e != 0 && self.blk(b).offset == offset).then_some((b, class))
    }

    /// Allocates from the kept blocks only: `None`, changing nothing, if
    /// none serves the request (or the request is invalid). Every owned
    /// block is the smallest size of its class (see [`alloc`](Self::alloc)),
    /// so the top block of the request's class ([`request_class`]), if any,
    /// holds the request: one stack to look at, no size to compare. A bad
    /// size needs no check: it maps to a class no block reaches, whose
    /// stack is empty. No calls, no panics.
    #[inline(always)]
    pub(crate) fn alloc_kept(&mut self, size: u64, align: u64) -> Option<u64> {
        let mask = align_mask(align)?;
        let off = self.take_kept(request_class(size), mask)?;
        debug_assert!(
            checked_request(size, align, MAX_CAPACITY).is_some_and(|(rsize, _)| {
                request_class(size) >= class_search(rsize.max(CACHE_MIN_BLOCK))
            })
        );
        Some(off)
    }

    /// The top block of class `c`'s stack, handed out, if there is one and
    /// its offset has no bit of `mask` set; `None`, changing nothing,
    /// otherwise. No calls, no panics.
    #[inline(always)]
    fn take_kept(&mut self, c: usize, mask: u64) -> Option<u64> {
        let b = self.heads[c];
        if b == NONE {
            return None;
        }
        let offset = self.head_offsets[c];
        if offset & mask != 0 {
            return None;
        }
        let Block { size, next, .. } = *self.blk(b);
        debug_assert!(class_of(size) == c && self.blk(b).offset == offset);
        self.pop(c, next);
        self.blk_mut(b).lent = size;
        self.room += size;
        Some(offset)
    }

    /// A kept block of one of the [`REACH`] classes above `class` (the
    /// first that has one aligned to `align`, a power of two) for a request
    /// of that class. The block stays in its own class: freed, it goes back
    /// to that class's stack.
    fn alloc_kept_above(&mut self, class: usize, align: u64) -> Option<u64> {
        (class + 1..=(class + REACH).min(CLASSES - 1)).find_map(|c| self.take_kept(c, align - 1))
    }

    /// Takes a free of an owned, handed-out block into its class stack if
    /// the byte budget allows; `false`, changing nothing, otherwise. No
    /// calls, no panics.
    #[inline(always)]
    pub(crate) fn free_kept(&mut self, offset: u64) -> bool {
        match self.find(offset) {
            Some((_, b, class)) => self.keep(b, class, offset),
            None => false,
        }
    }

    /// [`free_kept`](Self::free_kept) for a block whose table entry sits at
    /// its home position (most do: the table is at most half full); `false`
    /// for any other, which [`free`](Self::free) then takes. The C ABI's
    /// fast path: it has no probe loop, whose alignment padding (the C
    /// ABI's build aligns loops to 64 bytes) would run on every call.
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn free_kept_at_home(&mut self, offset: u64) -> bool {
        match self.entry_for(self.table[home(offset)], offset) {
            Some((b, class)) => self.keep(b, class, offset),
            None => false,
        }
    }

    /// [`free_kept`](Self::free_kept) for the owned block `b` of class
    /// `class` at `offset`, found in the table.
    #[inline(always)]
    fn keep(&mut self, b: BlockRef, class: u16, offset: u64) -> bool {
        // Kept already (`KEPT`), or over the budget.
        let lent = self.blk(b).lent;
        if lent > self.room {
            return false;
        }
        self.room -= lent;
        let c = class as usize & (CLASSES - 1);
        let next = self.heads[c];
        let blk = self.blk_mut(b);
        blk.lent = KEPT;
        blk.next = next;
        self.heads[c] = b;
        self.head_offsets[c] = offset;
        true
    }

    /// Allocates `size` bytes aligned to `align`: a kept block if one
    /// serves, else a new owned block from the source (giving a kept one
    /// back first if every entry is in use). As
    /// [`Arena::alloc`](Arena::alloc) otherwise, errors included.
    ///
    /// A new owned block has the smallest size of the size class above
    /// the request's (at most 1/32 more than asked, as a block from the
    /// arena's quick slots may be), so that once freed it serves every
    /// request that rounds up to that class; and at least
    /// [`CACHE_MIN_BLOCK`] bytes.
    ///
    /// When the request's own class keeps no block and the budget has room
    /// for fewer than 8 more blocks of its size (`LOW_ROOM`), a kept block of
    /// one of the 4 classes above (`REACH`) serves it first: a new block
    /// would then most likely go back to the source when freed (over the
    /// budget), two locked calls instead of none. Such a block is larger
    /// than asked (by at most 5/32 of the request or of
    /// [`CACHE_MIN_BLOCK`]), and [`Arena::usable_size`] says by how much.
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<u64> {
        if let Some(off) = self.alloc_kept(size, align) {
            return Ok(off);
        }
        let (rsize, ralign) = request(size, align, MAX_CAPACITY)?;
        let rmin = rsize.max(CACHE_MIN_BLOCK);
        let want = class_ceil(rmin);
        if self.room < LOW_ROOM.saturating_mul(want) {
            if let Some(off) = self.alloc_kept_above(class_search(rmin), ralign) {
                return Ok(off);
            }
        }
        if self.owned == CACHE_BLOCKS {
            self.give_back_one()?;
        }
        if self.owned == CACHE_BLOCKS {
            // Every entry is handed out: a plain block, freed by the source.
            return self.alloc_from_source(size, align, false);
        }
        debug_assert_eq!(class_of(want), class_search(rmin));
        let off = match self.alloc_from_source(want, align, true) {
            Ok(off) => off,
            // The rounding did not fit: the exact size, as a plain block.
            Err(Error::TooLarge | Error::Exhausted) if want > rsize => {
                return self.alloc_from_source(size, align, false)
            }
            Err(e) => return Err(e),
        };
        self.track(off, want);
        Ok(off)
    }

    /// The source's allocation (of an owned block if `owned`), retried once
    /// after giving back the kept blocks if the source had no room (no
    /// space, or no record to split a block with).
    fn alloc_from_source(&mut self, size: u64, align: u64, owned: bool) -> Result<u64> {
        let src = self.src;
        let alloc = |size, align| {
            if owned {
                src.alloc_owned(size, align)
            } else {
                src.alloc(size, align)
            }
        };
        match alloc(size, align) {
            // Kept blocks hold space and records: either may be the lack.
            Err(Error::Exhausted | Error::MetadataFull) if self.room < self.max_bytes => {
                self.flush()?;
                alloc(size, align)
            }
            r => r,
        }
    }

    /// Frees the block at `offset`: kept for reuse if the cache owns it and
    /// the budget allows, given back to the source if it owns it otherwise,
    /// and passed to the source's `free` if it does not own it.
    ///
    /// # Errors
    /// [`Error::DoubleFree`] for a block kept already; otherwise the
    /// source's (for a block another cache owns, [`Error::CacheOwned`]).
    pub fn free(&mut self, offset: u64) -> Result<()> {
        if self.free_kept(offset) {
            return Ok(());
        }
        let Some((h, b, _)) = self.find(offset) else {
            return self.src.free(offset);
        };
        if self.is_kept(b) {
            return Err(Error::DoubleFree);
        }
        // Over the byte budget: the block goes back to the arena.
        self.untrack(h);
        self.src.free_owned(offset)
    }

    /// Gives every kept block back to the source (merged with its free
    /// neighbours there). Blocks handed out stay owned.
    ///
    /// # Errors
    /// The first error of the source (none unless someone else freed an
    /// owned block, which the arena refuses); every block is untracked
    /// regardless.
    pub fn flush(&mut self) -> Result<()> {
        let mut first = Ok(());
        for b in (0..CACHE_BLOCKS).map(block_ref) {
            if self.is_used(b) && self.is_kept(b) {
                first = first.and(self.give_back(b));
            }
        }
        self.heads.fill(NONE);
        debug_assert_eq!(self.room, self.max_bytes);
        first
    }

    /// Gives back one kept block to make room for a new entry: the top of
    /// the class of the next kept block found, round robin from where the
    /// last search stopped. `Ok` with nothing given back if no block is
    /// kept (the next allocation is then plain).
    fn give_back_one(&mut self) -> Result<()> {
        let start = self.cursor as usize;
        let Some(i) = (0..CACHE_BLOCKS)
            .map(|k| (start + k) % CACHE_BLOCKS)
            .find(|&i| self.is_kept(block_ref(i)))
        else {
            return Ok(());
        };
        self.cursor = ((i + 1) % CACHE_BLOCKS) as u16;
        let b = block_ref(i);
        // The class of a block is in its table entry; this rare path
        // computes it rather than probe for the entry.
        let c = class_of(self.blk(b).size);
        let top = self.heads[c];
        self.pop(c, self.blk(top).next);
        self.give_back(top)
    }

    /// Untracks kept block `b`, already off its class stack (or about to
    /// have the stacks cleared), and frees it in the source.
    fn give_back(&mut self, b: BlockRef) -> Result<()> {
        let offset = self.blk(b).offset;
        self.room += self.blk(b).size;
        let found = self.find(offset);
        debug_assert!(found.is_some(), "a used block is in the table");
        if let Some((h, ..)) = found {
            self.untrack(h);
        }
        self.src.free_owned(offset)
    }

    /// Makes `next` (the top block's successor) the top of class `c`'s
    /// stack.
    #[inline(always)]
    fn pop(&mut self, c: usize, next: BlockRef) {
        self.heads[c] = next;
        self.head_offsets[c] = self.blk(next).offset;
    }

    fn is_used(&self, b: BlockRef) -> bool {
        let (w, bit) = used_bit_of(b);
        self.used[w] & bit != 0
    }

    /// Adds a handed-out block to the first unused entry and the table.
    fn track(&mut self, offset: u64, size: u64) {
        let w = self.used.iter().position(|&u| u != u64::MAX).unwrap_or(0);
        let i = w * 64 + (!self.used[w]).trailing_zeros() as usize;
        let b = block_ref(i);
        debug_assert!(!self.is_used(b));
        let (w, bit) = used_bit(i);
        self.used[w] |= bit;
        self.owned += 1;
        *self.blk_mut(b) = Block {
            offset,
            size,
            lent: size,
            next: NONE,
        };
        let mut h = home(offset);
        while self.table[h] != 0 {
            h = (h + 1) & (TABLE - 1);
        }
        self.table[h] = entry(b, class_of(size) as u16);
    }

    /// Removes the entry at table position `hole` (backward-shift
    /// deletion: no tombstones) and frees its block entry.
    fn untrack(&mut self, mut hole: usize) {
        let (b, _) = entry_parts(self.table[hole]);
        let (w, bit) = used_bit_of(b);
        self.used[w] &= !bit;
        self.owned -= 1;
        *self.blk_mut(b) = UNUSED;
        let mut j = hole;
        loop {
            j = (j + 1) & (TABLE - 1);
            let e = self.table[j];
            if e == 0 {
                break;
            }
            // `e` may fill the hole iff its home is not cyclically within
            // `(hole, j]`.
            let dist_home = j.wrapping_sub(home(self.blk(entry_parts(e).0).offset)) & (TABLE - 1);
            if dist_home >= j.wrapping_sub(hole) & (TABLE - 1) {
                self.table[hole] = e;
                hole = j;
            }
        }
        self.table[hole] = 0;
    }
}

impl<A: CacheSource + ?Sized> Drop for ThreadCache<'_, A> {
    /// Gives the kept blocks back and the handed-out ones to plain
    /// allocation (their users free them through the source from now on).
    fn drop(&mut self) {
        let _ = self.flush();
        for b in (0..CACHE_BLOCKS).map(block_ref) {
            if self.is_used(b) {
                let _ = self.src.set_owned(self.blk(b).offset, false);
            }
        }
    }
}

impl<S: ArenaStorage> CacheSource for Arena<S> {
    fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        Arena::alloc(self, size, align)
    }
    fn free(&self, offset: u64) -> Result<()> {
        Arena::free(self, offset)
    }
    fn alloc_owned(&self, size: u64, align: u64) -> Result<u64> {
        Arena::alloc_owned(self, size, align)
    }
    fn set_owned(&self, offset: u64, owned: bool) -> Result<()> {
        Arena::set_owned(self, offset, owned)
    }
    fn free_owned(&self, offset: u64) -> Result<()> {
        Arena::free_owned(self, offset)
    }
}

impl<S: ArenaStorage> CacheSource for ShardedArena<S> {
    fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        ShardedArena::alloc(self, size, align)
    }
    fn free(&self, offset: u64) -> Result<()> {
        ShardedArena::free(self, offset)
    }
    fn alloc_owned(&self, size: u64, align: u64) -> Result<u64> {
        ShardedArena::alloc_owned(self, size, align)
    }
    fn set_owned(&self, offset: u64, owned: bool) -> Result<()> {
        ShardedArena::set_owned(self, offset, owned)
    }
    fn free_owned(&self, offset: u64) -> Result<()> {
        ShardedArena::free_owned(self, offset)
    }
}

#[cfg(test)]
impl<A: CacheSource + ?Sized> ThreadCache<'_, A> {
    /// Panics on any broken invariant (see [`ThreadCache`]).
    fn check(&self) {
        let mut owned = 0;
        let mut kept = (0usize, 0u64);
        for b in (0..CACHE_BLOCKS).map(block_ref) {
            if !self.is_used(b) {
                continue;
            }
            owned += 1;
            let blk = *self.blk(b);
            assert_eq!(
                self.find(blk.offset).map(|(_, i, c)| (i, c as usize)),
                Some((b, class_of(blk.size))),
                "block not in the table (or with another class)"
            );
            assert_eq!(
                blk.size,
                class_ceil(blk.size),
                "not a class's smallest size"
            );
            if blk.lent == KEPT {
                kept.0 += 1;
                kept.1 += blk.size;
            } else {
                assert_eq!(blk.lent, blk.size, "a handed-out block lends its size");
            }
        }
        assert_eq!(owned, self.owned);
        assert_eq!(self.table.iter().filter(|&&e| e != 0).count(), owned);
        let mut on_stacks = 0;
        for (c, &head) in self.heads.iter().enumerate() {
            if head != NONE {
                assert_eq!(
                    self.head_offsets[c],
                    self.blk(head).offset,
                    "stale top offset"
                );
            }
            let mut b = head;
            while b != NONE {
                let blk = *self.blk(b);
                assert!(
                    self.is_used(b) && blk.lent == KEPT,
                    "stack holds a block not kept"
                );
                assert_eq!(class_of(blk.size), c, "block on the wrong class stack");
                on_stacks += 1;
                b = blk.next;
            }
        }
        assert_eq!(on_stacks, kept.0);
        assert!(self.room <= self.max_bytes && self.max_bytes <= MAX_CAPACITY);
        assert_eq!(self.kept_bytes(), kept.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{ArenaSlot, GRANULE};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    use std::vec::Vec;

    type A = Arena<Vec<ArenaSlot>>;

    fn arena(cap: u64, max_blocks: usize) -> A {
        A::new(cap, vec![ArenaSlot::EMPTY; A::slots_for(max_blocks)]).unwrap()
    }

    #[test]
    fn reuse_and_ownership() {
        let a = arena(1 << 20, 256);
        let mut c = ThreadCache::new(&a, 1 << 20);
        let x = c.alloc(1000, 64).unwrap();
        assert_eq!(c.owned_blocks(), 1);
        // Owned: the arena refuses it, and nothing changes.
        assert_eq!(a.free(x), Err(Error::CacheOwned));
        assert_eq!(a.usable_size(x), Ok(1008));
        c.free(x).unwrap();
        assert_eq!(c.kept_bytes(), 1008);
        assert_eq!(c.free(x), Err(Error::DoubleFree));
        assert_eq!(a.free(x), Err(Error::CacheOwned));
        // The same size comes back from the cache, and so does a smaller
        // one of the same class.
        assert_eq!(c.alloc(1000, 0), Ok(x));
        c.free(x).unwrap();
        let z = c.alloc(100_000, 0).unwrap();
        c.free(z).unwrap();
        assert_eq!(c.alloc(99_000, 16), Ok(z));
        c.free(z).unwrap();
        assert_eq!(c.alloc(1000, 0), Ok(x));
        c.check();
        a.check_invariants();
        // A plain arena block freed through the cache goes to the arena.
        let y = a.alloc(64, 0).unwrap();
        c.free(y).unwrap();
        assert_eq!(a.free(y), Err(Error::DoubleFree));
        // Bad requests report the arena's errors.
        assert_eq!(c.alloc(0, 0), Err(Error::ZeroSize));
        assert_eq!(c.alloc(16, 3), Err(Error::BadAlignment));
        assert_eq!(c.alloc(2 << 20, 0), Err(Error::TooLarge));
        assert_eq!(c.free(12345), Err(Error::InvalidOffset));
        // Dropping the cache gives `x` (handed out) to plain allocation.
        drop(c);
        a.check_invariants();
        a.free(x).unwrap();
        assert_eq!(a.stats().live, 0);
        assert_eq!(a.set_owned(x, true), Err(Error::DoubleFree));
    }

    #[test]
    fn request_class_is_class_search_of_the_rounded_request() {
        let top = class_of(MAX_CAPACITY);
        let mut sizes = std::vec![0, 1, u64::MAX, MAX_CAPACITY, MAX_CAPACITY + 1, 1 << 57];
        for k in 0..64 {
            for d in [0u64, 1, 2, 15, 16, 17] {
                sizes.extend([(1u64 << k).wrapping_add(d), (1u64 << k).wrapping_sub(d)]);
            }
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..if cfg!(miri) { 500 } else { 100_000 } {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sizes.push(x >> (x % 64));
        }
        for size in sizes {
            let c = request_class(size);
            assert!(c < CLASSES, "{size}");
            if size == 0 || size > MAX_CAPACITY {
                assert!(c > top, "bad size {size} maps to class {c}");
                continue;
            }
            let exact = class_search(crate::arena::align_up(size.max(CACHE_MIN_BLOCK), GRANULE));
            if size <= 1 << 57 {
                assert_eq!(c, exact, "{size}");
            } else {
                assert!(c == exact || c == exact + 1, "{size}");
            }
        }
    }

    #[test]
    fn kept_blocks_go_to_valid_requests_only() {
        // The fast path checks no size: a bad one must find no block.
        let a = arena(1 << 20, 256);
        let mut c = ThreadCache::new(&a, u64::MAX);
        let x = c.alloc(4096, 4096).unwrap();
        c.free(x).unwrap();
        for (size, align, err) in [
            (0, 0, Error::ZeroSize),
            (4096, 3, Error::BadAlignment),
            (4096, 8192, Error::BadAlignment),
            (4096, 1 << 63, Error::BadAlignment),
            (4096, u64::MAX, Error::BadAlignment),
            (MAX_CAPACITY + 1, 0, Error::TooLarge),
            (u64::MAX, 0, Error::TooLarge),
            (u64::MAX - 15, 0, Error::TooLarge),
        ] {
            assert_eq!(c.alloc(size, align), Err(err), "size {size} align {align}");
            assert_eq!(c.kept_bytes(), 4096);
        }
        // Every valid alignment up to the block's takes it.
        for align in [0, 1, 2, 16, 64, 4096] {
            assert_eq!(c.alloc(4096, align), Ok(x), "align {align}");
            c.free(x).unwrap();
        }
        assert_eq!(c.alloc(4081, 0), Ok(x));
        c.free(x).unwrap();
        c.check();
    }

    #[test]
    fn two_caches_keep_to_their_own() {
        let a = arena(1 << 20, 256);
        let mut c1 = ThreadCache::new(&a, 1 << 20);
        let mut c2 = ThreadCache::new(&a, 1 << 20);
        let x = c1.alloc(4096, 0).unwrap();
        assert_eq!(c2.free(x), Err(Error::CacheOwned));
        c1.free(x).unwrap();
        // Kept by c1: c2 cannot have it.
        assert_ne!(c2.alloc(4096, 0), Ok(x));
        assert_eq!(c2.free(x), Err(Error::CacheOwned));
        c1.flush().unwrap();
        assert_eq!(c1.kept_bytes(), 0);
        assert_eq!(c1.owned_blocks(), 0);
        a.check_invariants();
    }

    #[test]
    fn budget_and_block_limit() {
        let a = arena(64 << 20, 4096);
        // A budget of two 4 KiB blocks: the third free goes to the arena.
        let mut c = ThreadCache::new(&a, 8192);
        let xs: Vec<u64> = (0..3).map(|_| c.alloc(4096, 0).unwrap()).collect();
        for &x in &xs {
            c.free(x).unwrap();
        }
        assert_eq!(c.kept_bytes(), 8192);
        assert_eq!(c.owned_blocks(), 2);
        assert_eq!(a.stats().live, 2);
        c.check();
        drop(c);
        // Past CACHE_BLOCKS owned blocks, allocations are plain blocks.
        let mut c = ThreadCache::new(&a, u64::MAX);
        let n = CACHE_BLOCKS + 8;
        let xs: Vec<u64> = (0..n).map(|_| c.alloc(64, 0).unwrap()).collect();
        assert_eq!(c.owned_blocks(), CACHE_BLOCKS);
        for &x in &xs[..CACHE_BLOCKS] {
            assert_eq!(a.free(x), Err(Error::CacheOwned));
        }
        for &x in &xs {
            c.free(x).unwrap();
        }
        c.check();
        // With every entry kept, a new size gives one back to make room.
        let y = c.alloc(1 << 20, 0).unwrap();
        assert_eq!(c.owned_blocks(), CACHE_BLOCKS);
        c.free(y).unwrap();
        c.check();
        drop(c);
        assert_eq!(a.stats().live, 0);
        a.check_invariants();
    }

    #[test]
    fn low_budget_takes_a_kept_block_from_above() {
        let a = arena(64 << 20, 256);
        // Puts the cache's first block off page alignment.
        let pad = a.alloc(64, 0).unwrap();
        // 32-64 KiB: one class per KiB. A 40 KiB block, kept.
        let block = class_ceil(40 << 10);
        let setup = |c: &mut ThreadCache<'_, A>| {
            let x = c.alloc(40 << 10, 0).unwrap();
            c.free(x).unwrap();
            assert_eq!(c.kept_bytes(), block);
            x
        };
        // Budget for one block: low. Two classes below takes the kept
        // block; it goes back to its own stack when freed.
        let mut c = ThreadCache::new(&a, block);
        let x = setup(&mut c);
        assert_ne!(x % 4096, 0);
        assert_eq!(c.alloc(38 << 10, 0), Ok(x));
        assert_eq!((c.owned_blocks(), a.stats().live), (1, 2));
        c.free(x).unwrap();
        assert_eq!(c.alloc(40 << 10, 0), Ok(x));
        c.free(x).unwrap();
        // Misaligned, or more than REACH classes below: a new block.
        let y = c.alloc(38 << 10, 4096).unwrap();
        assert_ne!(y, x);
        c.free(y).unwrap();
        let y = c.alloc(34 << 10, 0).unwrap();
        assert_ne!(y, x);
        assert_eq!(c.owned_blocks(), 2);
        c.free(y).unwrap();
        c.check();
        drop(c);
        // Room for LOW_ROOM more such blocks: a new block of its own class.
        let mut c = ThreadCache::new(&a, block * (LOW_ROOM + 1));
        let x = setup(&mut c);
        let y = c.alloc(38 << 10, 0).unwrap();
        assert_ne!(y, x);
        assert_eq!(a.usable_size(y), Ok(class_ceil(38 << 10)));
        c.free(y).unwrap();
        c.check();
        drop(c);
        a.free(pad).unwrap();
        assert_eq!(a.stats().live, 0);
        a.check_invariants();
    }

    #[test]
    fn exhaustion_gives_kept_blocks_back() {
        let a = arena(1 << 20, 256);
        let mut c = ThreadCache::new(&a, u64::MAX);
        let xs: Vec<u64> = (0..4).map(|_| c.alloc(256 << 10, 0).unwrap()).collect();
        for &x in &xs {
            c.free(x).unwrap();
        }
        // Only a merge of the kept blocks can serve this.
        let big = c.alloc(1 << 20, 0).unwrap();
        assert_eq!(big, 0);
        assert_eq!(c.kept_bytes(), 0);
        assert_eq!(c.alloc(16, 0), Err(Error::Exhausted));
        c.free(big).unwrap();
        c.check();
        a.check_invariants();
    }

    #[test]
    fn metadata_full_gives_kept_blocks_back() {
        // Four records: three blocks and the free rest use them all.
        let a = arena(1 << 20, 4);
        let mut c = ThreadCache::new(&a, u64::MAX);
        let xs: Vec<u64> = (0..3).map(|_| c.alloc(4096, 0).unwrap()).collect();
        c.free(xs[0]).unwrap();
        c.free(xs[1]).unwrap();
        // A new size needs a record to split the free rest: only giving
        // the kept blocks back (and merging them) frees one.
        c.alloc(100, 0).unwrap();
        assert_eq!(c.kept_bytes(), 0);
        c.check();
        a.check_invariants();
    }

    #[test]
    fn sharded_source() {
        let cap = 4u64 << 20;
        let per = A::slots_for(256);
        let s = ShardedArena::new(cap, (0..2).map(|_| vec![ArenaSlot::EMPTY; per])).unwrap();
        let mut c = ThreadCache::new(&s, u64::MAX);
        let xs: Vec<u64> = (0..8)
            .map(|k| c.alloc(512 << 10, 4096 >> k).unwrap())
            .collect();
        for &x in &xs {
            assert_eq!(s.free(x), Err(Error::CacheOwned));
            c.free(x).unwrap();
        }
        c.check();
        drop(c);
        assert_eq!(s.stats().live, 0);
    }

    /// Random allocations and frees through a cache, against a model of
    /// the live blocks: no two overlap, and every structure stays sound.
    fn model_run(seed: u64, steps: usize) {
        let cap = 16u64 << 20;
        let a = arena(cap, 2048);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut c = ThreadCache::new(&a, rng.random_range(0..cap / 2));
        let mut live: BTreeMap<u64, u64> = BTreeMap::new(); // offset -> size asked
        for step in 0..steps {
            let r = rng.random_range(0..100);
            if r < 50 || live.is_empty() {
                // A few sizes, so that freed blocks serve later requests.
                let size = match rng.random_range(0..3) {
                    0 => 1u64 << rng.random_range(4..20),
                    1 => rng.random_range(1..8) * 1000,
                    _ => rng.random_range(1..cap / 16),
                };
                let align = 1u64 << rng.random_range(0..=12);
                match c.alloc(size, align) {
                    Ok(o) => {
                        assert_eq!(o % align.max(GRANULE), 0);
                        assert!(o + size <= cap);
                        if let Some((&p, &ps)) = live.range(..=o).next_back() {
                            assert!(p + ps <= o, "overlaps the block before");
                        }
                        if let Some((&n, _)) = live.range(o..).next() {
                            assert!(o + size <= n, "overlaps the block after");
                        }
                        live.insert(o, size);
                    }
                    Err(e) => assert!(matches!(e, Error::Exhausted | Error::MetadataFull)),
                }
            } else if r < 95 {
                let k = rng.random_range(0..live.len());
                let o = *live.keys().nth(k).unwrap();
                live.remove(&o);
                c.free(o).unwrap();
                // Kept by the cache, or given back to the arena: either
                // knows it was freed.
                assert_eq!(c.free(o), Err(Error::DoubleFree));
            } else {
                c.flush().unwrap();
            }
            if step % 16 == 0 {
                c.check();
                a.check_invariants();
            }
        }
        drop(c);
        for &o in live.keys() {
            a.free(o).unwrap();
        }
        a.check_invariants();
        assert_eq!(a.stats().live, 0);
    }

    #[test]
    fn model_property() {
        let (seeds, steps) = if cfg!(miri) { (1, 150) } else { (16, 3000) };
        for seed in 0..seeds {
            model_run(seed, steps);
        }
    }
}
