//! Offset allocator over `[0, capacity)` (pure `core`, no `alloc`).
//!
//! # Design
//!
//! A TLSF (two-level segregated fit) allocator whose every byte of metadata
//! lives in caller-provided [`ArenaSlot`] storage, *out of band*: the arena
//! deals in offsets only and never reads or writes the memory it manages, so
//! a freshly created pool is not faulted in by bookkeeping, and the same
//! arena serves every process that maps the pool at whatever address.
//!
//! - **Granule.** Sizes are rounded up to [`GRANULE`] (16 bytes) and every
//!   offset is a multiple of it. Small, so fill-to-full utilization stays
//!   above 0.99 for odd sizes like `2^k + 17`.
//! - **Size classes.** First level = `log2(size)`, second level = 32 linear
//!   subdivisions of each power of two (below `32 * GRANULE` the classes are
//!   exact). A 64-bit and 32-bit bitmaps find the smallest non-empty class
//!   that can satisfy a request in O(1) (two `trailing_zeros`).
//! - **Good fit, not best fit.** The search size is rounded up to the next
//!   class boundary so *any* block of the class found is big enough (the
//!   classic TLSF trade: O(1) for up to 1/32 of search slack). Because that
//!   rounding can hide the one block that would fit exactly, a failed search
//!   falls back to the first few blocks of the request's own class before
//!   reporting [`Error::Exhausted`]. Blocks are split exactly, so the slack
//!   costs nothing once a block is chosen.
//! - **Carving from the end.** An allocation takes the *end* of the free
//!   block found: the free block keeps its start, its record and its list
//!   position and merely shrinks (it changes lists only when it drops below
//!   its class), and the allocated block gets a fresh record. Freeing a
//!   block whose predecessor is free just grows that predecessor; freeing
//!   one followed by a free block moves that block's start back. So the
//!   common alloc/free touches no free list at all.
//! - **Zones.** The capacity is cut into 16 equal address zones, and each
//!   class's free list is one list per zone (the zone of the block's
//!   start), with bitmaps per zone beside the global ones. A *small*
//!   request, under 1/32 of a zone (4 MiB in a 2 GiB arena), takes the
//!   smallest fitting class of the lowest zone that has one (at most 16
//!   two-bitmap probes); a larger one takes the smallest fitting class of
//!   any zone, as plain TLSF does. So small blocks gather at low addresses
//!   and leave the high zones to large ones, whose frees leave holes a
//!   large request can use again: with random evictions
//!   (`examples/utilization.rs`: 1 KiB-64 MiB log-uniform sizes in 2 GiB)
//!   the mean utilization at a failure went from 0.834 (what exact best
//!   fit gets) to 0.878 (exact first fit for small requests, best fit for
//!   large: 0.884). The price: 128 KiB of list heads, and a few
//!   instructions on the paths through the free lists (the quick paths pay
//!   nothing).
//! - **Block records.** One record per block (free or allocated): offset,
//!   extent, physical prev/next record index (the neighbours in address
//!   order, for O(1) coalescing) and free-list links, which an allocated
//!   block does not need and reuses for its alignment slack. No two free
//!   blocks are ever physically adjacent: `free` merges with both
//!   neighbours. Unused records sit on a record free list; an allocation
//!   that must split a block but finds no spare record fails with
//!   [`Error::MetadataFull`] *before* changing anything.
//! - **Free by offset.** An open-addressed hash table (Fibonacci hashing,
//!   linear probing, backward-shift deletion, no tombstones) maps the start
//!   offset of every *allocated* block to its record: one insert per
//!   allocation, one lookup-and-remove per free, nothing for free blocks.
//!   It has a power-of-two size of at least twice the record count, so its
//!   load factor never exceeds 1/2 and probes stay short.
//! - **Alignment.** Any power of two up to [`Arena::MAX_ALIGN`]. For
//!   `align > GRANULE` the search asks for `size + align - GRANULE`, which
//!   guarantees that `align_down(block_end - size, align)` lies inside any
//!   block found. The allocation starts there; the gap between its end and
//!   the block end (under `align` bytes) stays part of the allocated block
//!   as *slack* (as does the excess of a quick block, below): recorded in
//!   its record, not reported by
//!   [`Arena::usable_size`] nor counted in [`ArenaStats::in_use`], and
//!   returned with the block.
//! - **Quick slots.** Per class, one freed block can be kept whole (still
//!   indexed, flagged in its record) instead of merged, and the next
//!   request whose size it holds takes it back: no search, split, merge or
//!   index update. Freeing and then allocating a similar size again (a KV
//!   cache's steady state) costs about half a TLSF round trip. The request
//!   tries its own class's slot (a block at least as large) and then the
//!   next class's (any block). The slots hold at most 2 GiB in all (so
//!   that a block's excess fits its record), and every allocation that
//!   would fail first returns them to the free lists ([`Arena::trim`]) and
//!   tries again, so they never cause a failure. (A tighter bound, half
//!   the capacity, made slots filled with sizes no longer asked for turn
//!   every later miss away until a failure trimmed them: a 2-shard pool
//!   running the benchmark's alloc+free pattern missed 28% of the time.)
//!   The price is internal: a block taken from the next class is up to
//!   1/32 larger than the request, and the excess is slack until the block
//!   is freed.
//! - **Back slots.** A second kept block per class, out of the quick
//!   paths' sight: a free whose class's quick slot is taken puts the block
//!   there (if the budget allows), and an allocation the quick slots miss
//!   looks there before the free lists. With mixed sizes (free one size,
//!   allocate another, as an evicting cache does) fewer blocks take the
//!   trip through the free lists and the index: in the allocation
//!   benchmark's churn (64 live blocks of 4 KiB-1 MiB) the frees that
//!   reach the lists fell from 27% of the operations to 8%. The quick
//!   paths stay as they were. A failing allocation returns the back slots
//!   first (a bitmap makes that visit only the full ones), and the quick
//!   slots only if that was not enough.
//! - **Owned blocks.** A third flag marks an allocated block as owned by
//!   a [`ThreadCache`], which hands it out and takes it back without the
//!   lock: [`Arena::free`] refuses such a block ([`Error::CacheOwned`]) and
//!   the quick paths pass it by, so it is never free here while the cache
//!   may still hand it out (see [`ThreadCache`]).
//! - **Double frees.** A quick block's flag makes a second free of it an
//!   exact [`Error::DoubleFree`]. Blocks freed to the free lists leave their
//!   offset in a ring of the last [`RECENT_FREES`], consulted only when an
//!   offset is not the start of a block: such an offset is reported as
//!   [`Error::DoubleFree`] if it is in the ring, [`Error::InvalidOffset`]
//!   otherwise. Detection is thus exact for a second free within the next
//!   64 frees to the lists, whatever merged since; a stale free after the
//!   range was handed out again at the same offset cannot be told from a
//!   legitimate one.
//! - **Locking.** A test-and-test-and-set spinlock guards the whole state;
//!   argument checks happen before it is taken and every critical section is
//!   O(1) (except [`Arena::stats`], which walks the largest class' list).
//!   Threads that allocate at once take turns on it; a [`ShardedArena`]
//!   puts several arenas side by side so that they need not.
//! - **Unchecked access.** Record and table indices stored in the metadata
//!   are in bounds by construction, and [`ArenaStorage`] promises the
//!   storage keeps its length, so the hot paths index without bounds checks
//!   (every such access `debug_assert!`s its bound).
//!
//! # Storage layout
//!
//! `[control | records (max_blocks) | hash table (2 entries per slot)]`,
//! see [`Arena::slots_for`]. The control block holds the bitmaps, the
//! free-list heads, the counters and the ring of recent frees.

use crate::{Error, Result, ZeroValid};
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::size_of;
use core::ops::DerefMut;
use core::sync::atomic::{AtomicBool, Ordering};

mod cache;
mod sharded;
pub use cache::{CacheSource, ThreadCache, CACHE_BLOCKS, CACHE_MIN_BLOCK};
pub use sharded::{ShardedArena, MAX_SHARDS};

/// Allocation granule in bytes: every size is rounded up to it and every
/// offset handed out is a multiple of it (also the default alignment).
pub const GRANULE: u64 = 1 << GRANULE_LOG2;
const GRANULE_LOG2: u32 = 4;

/// Largest supported capacity (4 EiB; offsets are plain `u64`).
pub const MAX_CAPACITY: u64 = 1 << 62;

/// How many recently freed offsets the arena remembers to tell a double
/// free from an invalid offset (see [`Arena::free`]).
pub const RECENT_FREES: usize = 64;

/// log2 of the number of second-level classes per power of two.
const SL_LOG2: u32 = 5;
const SL_COUNT: usize = 1 << SL_LOG2;
/// First-level classes: class 0 holds the exact small sizes below
/// `SL_COUNT` granules, class `f - SL_LOG2 + 1` the sizes of `[2^f, 2^(f+1))`
/// granules. Any `u64` size maps below 64 (`MAX_CAPACITY` needs 55); the
/// spare classes stay empty and let `& 63` replace bounds checks.
const FL_COUNT: usize = 64;
/// Number of (flat) classes `fl * SL_COUNT + sl`.
const CLASSES: usize = FL_COUNT * SL_COUNT;

/// log2 of the number of address zones (see "Zones" in the module docs).
const ZONE_LOG2: u32 = 4;
const ZONES: usize = 1 << ZONE_LOG2;
/// A set of zones, bit `z` for zone `z`.
type ZoneSet = u16;
/// Requests under `zone size >> SMALL_LOG2` bytes are *small*: they take
/// the lowest zone that can hold them.
const SMALL_LOG2: u32 = 5;

/// A table of `$n` masks, entry `k` being `$e`.
macro_rules! mask_table {
    ($t:ty, $n:expr, |$k:ident| $e:expr) => {{
        let mut table: [$t; $n] = [0; $n];
        let mut $k = 0;
        while $k < $n {
            table[$k] = $e;
            $k += 1;
        }
        table
    }};
}

// The bitmap code reads its masks from these tables rather than shifting
// by a variable count, which on x86 must first be moved into `cl` (and a
// clear mask then inverted): one load replaces two or three instructions.
/// `1 << k`.
static BIT32: [u32; 32] = mask_table!(u32, 32, |k| 1 << k);
/// `!(1 << k)`.
static NBIT32: [u32; 32] = mask_table!(u32, 32, |k| !(1 << k));
/// `!0 << k`: bits `k` and up.
static FROM32: [u32; 32] = mask_table!(u32, 32, |k| !0 << k);
/// `1 << k`.
static BIT64: [u64; 64] = mask_table!(u64, 64, |k| 1 << k);
/// `!(1 << k)`.
static NBIT64: [u64; 64] = mask_table!(u64, 64, |k| !(1 << k));
/// `!1 << k`: the bits above `k`.
static ABOVE64: [u64; 64] = mask_table!(u64, 64, |k| !1 << k);

/// "No record" in every link field. `2^31 - 1` rather than `u32::MAX`: x86
/// compares a link (zero-extended to 64 bits for indexing) with it as an
/// immediate, where `u32::MAX` first has to be loaded into a register. It
/// caps the record count at about 2^31 (64 GiB of records), far beyond any
/// real storage.
const NIL: u32 = i32::MAX as u32;
/// Largest record count (indices must stay below [`NIL`]).
const MAX_RECORDS: usize = (NIL - 1) as usize;
/// Free flag, kept in the lowest bit of a record's size (sizes are
/// multiples of the granule; a small immediate masks it off).
const FREE_BIT: u64 = 1;
/// Quick flag, kept in the second lowest bit of a record's size: the block
/// was freed by the user but sits whole in a quick slot (see
/// [`Tlsf::quick_put`]).
const QUICK_BIT: u64 = 2;
/// Owned flag, kept in the third lowest bit of an *allocated* block's
/// size: the block belongs to a [`ThreadCache`], so [`Arena::free`]
/// refuses it ([`Error::CacheOwned`]) until the cache gives it back
/// ([`Arena::free_owned`] or [`Arena::set_owned`]).
const OWNED_BIT: u64 = 4;
/// Every flag a record's size may carry.
const FLAG_BITS: u64 = FREE_BIT | QUICK_BIT | OWNED_BIT;
/// Key of an empty hash entry (never a valid offset: offsets are < 2^62).
const EMPTY_KEY: u64 = u64::MAX;
/// Most bytes the quick slots hold in all (see [`Tlsf::quick_put`]); a
/// quick block's excess over a request, and the slack of a block carved
/// to refill a slot, are below it and so fit a record's `u32` slack field.
const QUICK_MAX: u64 = 1 << 31;
/// How many blocks of the request's own class the exhaustion fallback looks at.
const FALLBACK_SCAN: usize = 4;

/// One unit of caller-provided arena metadata (32 bytes). All-zero is a
/// valid value, and so is any other bit pattern: [`Arena::new`] initializes
/// whatever it is given.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct ArenaSlot {
    words: [u64; 4],
}
// SAFETY: plain integers.
unsafe impl ZeroValid for ArenaSlot {}

impl ArenaSlot {
    /// An empty slot, for `[ArenaSlot::EMPTY; N]` in no_std callers.
    pub const EMPTY: ArenaSlot = ArenaSlot { words: [0; 4] };
}

/// Metadata storage an [`Arena`] can own: a slice of [`ArenaSlot`]s behind
/// `DerefMut`.
///
/// # Safety
/// Every `deref_mut` (and `deref`) call must return a slice of the same
/// length, holding exactly what the arena last wrote through the previous
/// one (the same memory, never touched by anyone else while the arena owns
/// the storage). The arena keeps record and table indices in that memory
/// across calls and follows them without bounds checks.
pub unsafe trait ArenaStorage: DerefMut<Target = [ArenaSlot]> {}

// SAFETY: a reborrow of the same slice every time.
unsafe impl ArenaStorage for &mut [ArenaSlot] {}

// SAFETY: the arena owns the vector and never resizes it, so every deref
// returns its one buffer with its one length.
#[cfg(feature = "std")]
unsafe impl ArenaStorage for std::vec::Vec<ArenaSlot> {}

// SAFETY: as for `Vec`; a boxed slice cannot change length at all.
#[cfg(feature = "std")]
unsafe impl ArenaStorage for std::boxed::Box<[ArenaSlot]> {}

/// A snapshot of the arena's accounting, in bytes (except `live`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// Bytes managed by the arena.
    pub capacity: u64,
    /// Bytes in allocated blocks (requests rounded up to [`GRANULE`]).
    pub in_use: u64,
    /// `capacity - in_use`.
    pub free: u64,
    /// Size of the largest free block: the largest request that can succeed
    /// with default alignment.
    pub largest_free: u64,
    /// Number of allocated blocks.
    pub live: u64,
}

// ---------------------------------------------------------------------------
// Metadata overlays. Each is `repr(C)`, made of integers only and has no
// padding, so it may be viewed in place over `ArenaSlot` words (any bit
// pattern is valid, and writing it never de-initializes a byte).
// ---------------------------------------------------------------------------

/// Global state: bitmaps, free-list heads, counters.
#[repr(C)]
struct Control {
    /// Sum of the usable sizes of allocated blocks.
    in_use: u64,
    /// Bit `f` set iff `sl_bitmap[f] != 0`. (Between `in_use` and `live`:
    /// two adjacent counters tempt LLVM into one SSE add of both, which
    /// takes five instructions where two scalar ones do.)
    fl_bitmap: u64,
    /// Number of allocated blocks.
    live: u64,
    /// Head of the list of unused records (linked through `next_free`).
    spare_head: u32,
    /// Length of that list.
    spare_count: u32,
    /// Number of blocks freed to the free lists so far (wrapping); the
    /// next one goes to `recent[frees % RECENT_FREES]`.
    frees: u64,
    /// The offsets of the last [`RECENT_FREES`] blocks freed to the free
    /// lists ([`EMPTY_KEY`] if unused).
    recent: [u64; RECENT_FREES],
    /// Bit `s` of `sl_bitmap[f]` set iff `zones[f * SL_COUNT + s] != 0`
    /// (the class has a free block in some zone).
    sl_bitmap: [u32; FL_COUNT],
    /// Per zone, its own `fl_bitmap`: bit `f` set iff `zone_sl[z][f] != 0`.
    zone_fl: [u64; ZONES],
    /// Per zone, its own `sl_bitmap`: bit `s` of `zone_sl[z][f]` set iff
    /// `heads[f * SL_COUNT + s][z] != NIL`.
    zone_sl: [[u32; FL_COUNT]; ZONES],
    /// Per class, bit `z` set iff `heads[class][z] != NIL`.
    zones: [ZoneSet; CLASSES],
    /// Free-list heads per (flat) class and zone (the zone of a block's
    /// start); a class's heads share one cache line.
    heads: [[u32; ZONES]; CLASSES],
    /// Bytes the quick slots may still hold (see [`Tlsf::quick_put`]).
    quick_room: u64,
    /// `quick_room` when every slot is empty.
    quick_budget: u64,
    /// Per class, one freed block kept whole for the next request of that
    /// class, or [`NIL`].
    quick: [u32; CLASSES],
    /// Per class, a second such block, or [`NIL`]: the *back* slots, which
    /// only the slow paths use (see [`Tlsf::free_to_back_or_lists`]).
    quick_back: [u32; CLASSES],
    /// Bit `c % 64` of word `c / 64` set iff `quick_back[c] != NIL`, so that
    /// a trim of the back slots visits only the full ones.
    back_bits: [u64; CLASSES / 64],
}

const CTL_SLOTS: usize =
    core::mem::size_of::<Control>().div_ceil(core::mem::size_of::<ArenaSlot>());

/// One block (free or allocated), or an unused record (`size == 0`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Record {
    offset: u64,
    /// Extent in bytes (allocated: usable size plus slack), with
    /// [`FREE_BIT`] set for free blocks.
    size: u64,
    prev_phys: u32,
    next_phys: u32,
    /// Free blocks: previous block of the class list. Allocated blocks: the
    /// alignment slack in bytes (`< MAX_ALIGN`) at the end of the extent.
    prev_free: u32,
    /// Free blocks: next block of the class list. Unused records: next
    /// unused record.
    next_free: u32,
}

/// One entry of the offset index.
#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    key: u64,
    idx: u32,
    /// `class_of` the block's extent, fixed while it is indexed: a free
    /// finds its quick slot from the entry, without waiting for the record.
    class: u32,
}

/// Bytes per table entry (a power of two).
const ENTRY_BYTES: usize = size_of::<Entry>();

const _: () = {
    use core::mem::align_of;
    assert!(ENTRY_BYTES.is_power_of_two());
    assert!(size_of::<Record>() == size_of::<ArenaSlot>());
    assert!(2 * size_of::<Entry>() == size_of::<ArenaSlot>());
    assert!(
        size_of::<Control>()
            == 8 * 4
                + 4 * 2
                + 8 * RECENT_FREES
                + 4 * FL_COUNT * (SL_COUNT + 1)
                + 8 * ZONES
                + 4 * FL_COUNT * ZONES
                + size_of::<ZoneSet>() * CLASSES
                + 4 * CLASSES * (ZONES - 1)
                + 8 * 2
                + 4 * CLASSES * 2
                + 8 * (CLASSES / 64)
    );
    assert!(RECENT_FREES.is_power_of_two());
    assert!(ZONES <= ZoneSet::BITS as usize);
    assert!(align_of::<Control>() <= align_of::<ArenaSlot>());
    assert!(align_of::<Record>() <= align_of::<ArenaSlot>());
    assert!(align_of::<Entry>() <= align_of::<ArenaSlot>());
    // Every u64 size maps to a first-level class below FL_COUNT.
    assert!((((63 - GRANULE_LOG2) - SL_LOG2 + 1) as usize) < FL_COUNT);
};

/// log2 of the width, in granules, of the class holding `u` granules: 0
/// below `SL_COUNT` granules (exact classes), `log2(u) - SL_LOG2` above.
#[inline(always)]
fn class_shift(u: u64) -> u32 {
    // The top bit of `u | SL_COUNT` is at max(log2(u), SL_LOG2).
    63 - SL_LOG2 - (u | SL_COUNT as u64).leading_zeros()
}

/// Flat class `fl * SL_COUNT + sl` whose range contains `size` (a multiple
/// of the granule): `fl = 0` holds the exact sizes below `SL_COUNT`
/// granules, `fl = f - SL_LOG2 + 1` the sizes of `[2^f, 2^(f+1))` granules
/// in `SL_COUNT` linear steps. Branchless; always `< CLASSES`.
#[inline(always)]
fn class_of(size: u64) -> usize {
    let u = size >> GRANULE_LOG2;
    let s = class_shift(u);
    // Below SL_COUNT granules: s = 0 and this is `u`. Above: the top
    // SL_LOG2 + 1 bits of `u` are SL_COUNT + sl.
    let c = (((s as u64) << SL_LOG2) + (u >> s)) as usize;
    // SAFETY: `u < 2^60`, so `s <= 60 - 1 - SL_LOG2 = 54` and `u >> s <
    // 2 * SL_COUNT`: `c <= 54 * 32 + 63 < CLASSES`. Telling the compiler
    // spares the hot paths the `& (CLASSES - 1)` they would otherwise
    // need to index `heads` and the bitmaps without bounds checks.
    unsafe { core::hint::assert_unchecked(c < CLASSES) };
    c
}

/// The smallest class all of whose sizes are `>= size`: the class of
/// `size` rounded up to the next class boundary (the carry out of the last
/// `sl` lands on the next `fl`, as it should).
#[inline(always)]
fn class_search(size: u64) -> usize {
    let u = size >> GRANULE_LOG2;
    let s = class_shift(u);
    // `u / 2^s` rounded up (no overflow: `u < 2^60`).
    let up = (u + ((1u64 << s) - 1)) >> s;
    let c = (((s as u64) << SL_LOG2) + up) as usize;
    // SAFETY: as in `class_of`, `s <= 54` and `up <= 2 * SL_COUNT`:
    // `c <= 54 * 32 + 64 < CLASSES`.
    unsafe { core::hint::assert_unchecked(c < CLASSES) };
    c
}

/// The alignment mask of a request's `align` (0 = the default), or `None`
/// for a bad one (neither 0 nor a power of two up to [`MAX_ALIGN`]). Every
/// offset is a granule multiple, so a mask below the granule asks nothing.
#[inline(always)]
fn align_mask(align: u64) -> Option<u64> {
    let mask = align.saturating_sub(1);
    // `align` has no bit of `mask` iff zero or a power of two, none above
    // `MAX_ALIGN`'s iff at most `MAX_ALIGN`.
    if align & (mask | !(2 * MAX_ALIGN - 1)) != 0 {
        return None;
    }
    Some(mask)
}

/// `size` (a multiple of the granule) rounded up to the next class
/// boundary: the smallest size of [`class_search`]`(size)`.
#[inline(always)]
fn class_ceil(size: u64) -> u64 {
    let u = size >> GRANULE_LOG2;
    let m = (1u64 << class_shift(u)) - 1;
    ((u + m) & !m) << GRANULE_LOG2
}

/// `None` if sizes `a` and `b` (multiples of the granule) share a class,
/// else `Some(class_of(a))`, computed from the same class width.
#[inline(always)]
fn class_change(a: u64, b: u64) -> Option<usize> {
    let (ua, ub) = (a >> GRANULE_LOG2, b >> GRANULE_LOG2);
    let s = class_shift(ua);
    // Same class iff they agree on every bit from `a`'s class width up.
    if (ua ^ ub) >> s == 0 {
        None
    } else {
        // `class_of(a)`, reusing `s`.
        let c = (((s as u64) << SL_LOG2) + (ua >> s)) as usize;
        // SAFETY: as in `class_of`.
        unsafe { core::hint::assert_unchecked(c < CLASSES) };
        Some(c)
    }
}

/// log2 of the zone size for `capacity` (at least 1): the smallest that
/// puts every offset below `capacity` in one of the [`ZONES`] zones, and at
/// least the granule.
fn zone_shift(capacity: u64) -> u32 {
    // ceil(log2(capacity)), so that `(capacity - 1) >> zone_shift < ZONES`.
    let bits = 64 - (capacity - 1).leading_zeros();
    bits.saturating_sub(ZONE_LOG2).max(GRANULE_LOG2)
}

/// Reference two-level mapping (the classic TLSF formulation) for tests.
#[cfg(test)]
fn mapping(size: u64) -> (usize, usize) {
    let u = size >> GRANULE_LOG2;
    if u < SL_COUNT as u64 {
        (0, u as usize)
    } else {
        let f = 63 - u.leading_zeros();
        let fl = (f - SL_LOG2 + 1) as usize;
        let sl = (u >> (f - SL_LOG2)) as usize - SL_COUNT;
        (fl, sl)
    }
}

/// `size` rounded up to the next class boundary (reference for tests).
#[cfg(test)]
fn round_to_class(size: u64) -> u64 {
    let u = size >> GRANULE_LOG2;
    if u < SL_COUNT as u64 {
        size
    } else {
        let f = 63 - u.leading_zeros();
        let m = (1u64 << (f - SL_LOG2)) - 1;
        ((u + m) & !m) << GRANULE_LOG2
    }
}

#[inline(always)]
fn align_up(x: u64, align: u64) -> u64 {
    (x + (align - 1)) & !(align - 1)
}

/// Checks an allocation request against `capacity` and returns it as
/// `(size rounded up to the granule, effective alignment)`.
#[inline(always)]
fn request(size: u64, align: u64, capacity: u64) -> Result<(u64, u64)> {
    match checked_request(size, align, capacity) {
        Some(r) => Ok(r),
        // `request_error` says which check failed.
        None => Err(request_error(size, align)),
    }
}

/// [`request`] without the error (and without a call): `None` if it is
/// rejected. One branch for the three checks: `size - 1 >= capacity` iff
/// the size is zero or above the capacity; `align & (align - 1)` is nonzero
/// iff `align` is neither zero nor a power of two.
#[inline(always)]
fn checked_request(size: u64, align: u64, capacity: u64) -> Option<(u64, u64)> {
    let bad_size = size.wrapping_sub(1) >= capacity;
    let bad_align = (align & align.wrapping_sub(1) != 0) | (align > MAX_ALIGN);
    if bad_size | bad_align {
        return None;
    }
    // No overflow: size <= capacity <= 2^62.
    Some((align_up(size, GRANULE), align.max(GRANULE)))
}

/// The error of a request [`request`] rejected, in the order the checks
/// are documented: zero size, then bad alignment, then too large.
#[cold]
#[inline(never)]
fn request_error(size: u64, align: u64) -> Error {
    if size == 0 {
        Error::ZeroSize
    } else if align > MAX_ALIGN || (align != 0 && !align.is_power_of_two()) {
        Error::BadAlignment
    } else {
        Error::TooLarge
    }
}

/// [`Tlsf::alloc`] found no block that fits ([`Error::Exhausted`]).
const FAIL_EXHAUSTED: u64 = u64::MAX;
/// [`Tlsf::alloc`] needed a record to split a block and found none
/// ([`Error::MetadataFull`]).
const FAIL_METADATA_FULL: u64 = u64::MAX - 1;

/// The result of [`Tlsf::alloc`], whose failures are values no offset
/// takes (offsets are below [`MAX_CAPACITY`]). A plain `u64` leaves the lock
/// holder's code one path to the unlock, where a `Result` built inside
/// makes the compiler merge the paths and test the variant again after.
#[inline(always)]
fn alloc_result(raw: u64) -> Result<u64> {
    // Offsets are below 2^62, the failures above 2^63: a sign test.
    if (raw as i64) >= 0 {
        debug_assert!(raw < MAX_CAPACITY);
        Ok(raw)
    } else {
        Err(alloc_failure(raw))
    }
}

#[cold]
#[inline(never)]
fn alloc_failure(raw: u64) -> Error {
    debug_assert!(raw == FAIL_EXHAUSTED || raw == FAIL_METADATA_FULL);
    if raw == FAIL_METADATA_FULL {
        Error::MetadataFull
    } else {
        Error::Exhausted
    }
}

/// Largest supported alignment (the page size), [`Arena::MAX_ALIGN`].
const MAX_ALIGN: u64 = 4096;

/// Records and hash-table entries that fit in `len` slots, as
/// `(max_blocks, table_len)`, or `None` if not even one record fits.
fn layout_for_len(len: usize) -> Option<(usize, usize)> {
    let avail = len.checked_sub(CTL_SLOTS)?;
    // `p` slots hold a table of `2p` entries; `m <= p` keeps the load <= 1/2.
    let mut best = (0usize, 0usize);
    let mut p = 1usize;
    while p <= avail {
        let m = p.min(avail - p).min(MAX_RECORDS);
        if m > best.0 {
            best = (m, p);
        }
        match p.checked_mul(2) {
            Some(n) => p = n,
            None => break,
        }
    }
    if best.0 == 0 {
        None
    } else {
        Some((best.0, 2 * best.1))
    }
}

/// Mutable view of the metadata, valid while the lock is held.
///
/// Invariants the unchecked accessors rely on: every record index stored
/// anywhere in the metadata (links, list heads, the spare list, table
/// entries) is either [`NIL`] or `< recs.len()`, and the accessors are
/// never called with `NIL`; `tab.len()` is a power of two and every table
/// position is reduced modulo it. `init` establishes the first, and every
/// later write stores an index read from the metadata or taken from the
/// spare list.
struct Tlsf<'a> {
    ctl: &'a mut Control,
    /// `geo.nrec` records, disjoint from `ctl`, borrowed for `'a`, and
    /// right after them the `geo.ntab` table entries (see `tab_ptr`).
    recs: *mut Record,
    /// Read where used rather than copied into the view: the hot paths
    /// then need no register (or stack slot) for these sizes in between.
    geo: &'a Geometry,
    _borrow: PhantomData<&'a mut [ArenaSlot]>,
}

/// The sizes of the metadata parts, fixed by [`Arena::new`].
#[derive(Clone, Copy)]
struct Geometry {
    /// Number of records.
    nrec: usize,
    /// `nrec * size_of::<Record>()`: where the table starts, in bytes
    /// from the first record (saves the hot paths a shift).
    tab_bytes: usize,
    /// Number of table entries (a power of two).
    ntab: usize,
    /// `(ntab - 1) * ENTRY_BYTES`, to wrap probe positions (in bytes).
    mask: usize,
    /// `64 - log2(ntab) - log2(ENTRY_BYTES)`: the Fibonacci hash shifted
    /// by this holds the home index in its top bits, already times
    /// `ENTRY_BYTES` once its low bits are cleared.
    shift: u32,
    /// log2 of the zone size: offset `o` lies in zone `o >> zone_shift`,
    /// below [`ZONES`] for every offset of the capacity.
    zone_shift: u32,
    /// Requests of fewer bytes are small (see "Zones" in the module docs).
    small: u64,
}

impl Tlsf<'_> {
    // ---- unchecked access ----

    #[inline(always)]
    fn rec(&self, i: u32) -> &Record {
        debug_assert!((i as usize) < self.geo.nrec);
        // SAFETY: record indices in the metadata are < nrec and never NIL
        // here (struct invariant), so this is one of the `nrec` records
        // `recs` points to, which `self` borrows (shared here).
        unsafe { &*self.recs.add(i as usize) }
    }

    #[inline(always)]
    fn rec_mut(&mut self, i: u32) -> &mut Record {
        debug_assert!((i as usize) < self.geo.nrec);
        // SAFETY: as in `rec`; `&mut self` makes the access exclusive.
        unsafe { &mut *self.recs.add(i as usize) }
    }

    /// The first table entry.
    #[inline(always)]
    fn tab_ptr(&self) -> *mut Entry {
        debug_assert_eq!(self.geo.tab_bytes, self.geo.nrec * size_of::<Record>());
        // SAFETY: the table starts right after the `nrec` records (see
        // `Arena::view`), `tab_bytes` bytes on, inside the same borrowed
        // slots.
        unsafe { self.recs.byte_add(self.geo.tab_bytes).cast::<Entry>() }
    }

    /// The entry at table position `pos`. Positions are kept in bytes
    /// (`index * size_of::<Entry>()`), which spares every access a shift.
    #[inline(always)]
    fn ent(&self, pos: usize) -> &Entry {
        debug_assert!(pos < self.geo.ntab * ENTRY_BYTES && pos % ENTRY_BYTES == 0);
        // SAFETY: positions are `home()` (a multiple of ENTRY_BYTES below
        // ntab * ENTRY_BYTES, by the shift and mask) or reduced with
        // `& mask` (struct invariant): one of the `ntab` entries `tab_ptr`
        // points to, which `self` borrows.
        unsafe { &*self.tab_ptr().byte_add(pos) }
    }

    #[inline(always)]
    fn ent_mut(&mut self, pos: usize) -> &mut Entry {
        debug_assert!(pos < self.geo.ntab * ENTRY_BYTES && pos % ENTRY_BYTES == 0);
        // SAFETY: as in `ent`; `&mut self` makes the access exclusive.
        unsafe { &mut *self.tab_ptr().byte_add(pos) }
    }

    /// All records (for initialization and checks).
    fn recs(&mut self) -> &mut [Record] {
        // SAFETY: `recs` points to `nrec` records borrowed by `self`.
        unsafe { core::slice::from_raw_parts_mut(self.recs, self.geo.nrec) }
    }

    /// The whole table (for initialization and checks).
    fn tab(&mut self) -> &mut [Entry] {
        // SAFETY: `tab_ptr` points to `ntab` entries borrowed by `self`.
        unsafe { core::slice::from_raw_parts_mut(self.tab_ptr(), self.geo.ntab) }
    }

    // ---- records ----

    #[inline(always)]
    fn is_free(&self, i: u32) -> bool {
        self.rec(i).size & FREE_BIT != 0
    }

    #[inline(always)]
    fn size(&self, i: u32) -> u64 {
        self.rec(i).size & !FREE_BIT
    }

    #[inline(always)]
    fn take_record(&mut self) -> u32 {
        let i = self.ctl.spare_head;
        debug_assert!(i != NIL && self.ctl.spare_count > 0);
        self.ctl.spare_head = self.rec(i).next_free;
        self.ctl.spare_count -= 1;
        i
    }

    #[inline(always)]
    fn release_record(&mut self, i: u32) {
        let head = self.ctl.spare_head;
        let r = self.rec_mut(i);
        r.size = 0;
        r.next_free = head;
        self.ctl.spare_head = i;
        self.ctl.spare_count += 1;
    }

    // ---- free lists ----

    /// The zone of `offset`.
    #[inline(always)]
    fn zone(&self, offset: u64) -> usize {
        (offset >> self.geo.zone_shift) as usize & (ZONES - 1)
    }

    /// Marks block `i` free and pushes it on the list of class `c`, which
    /// must be `class_of(size)`, in the zone of its offset.
    #[inline(always)]
    fn push_free(&mut self, i: u32, size: u64, c: usize) {
        let c = c & (CLASSES - 1); // no-op: elides the bounds checks
        let z = self.zone(self.rec(i).offset);
        let head = self.ctl.heads[c][z];
        {
            let r = self.rec_mut(i);
            r.size = size | FREE_BIT;
            r.prev_free = NIL;
            r.next_free = head;
        }
        if head != NIL {
            self.rec_mut(head).prev_free = i;
        }
        self.ctl.heads[c][z] = i;
        self.ctl.zones[c] |= 1 << z;
        let (fl, sl) = (c >> SL_LOG2, c & (SL_COUNT - 1));
        self.ctl.zone_sl[z][fl] |= BIT32[sl];
        self.ctl.zone_fl[z] |= BIT64[fl];
        self.ctl.sl_bitmap[fl] |= BIT32[sl];
        self.ctl.fl_bitmap |= BIT64[fl];
    }

    /// Unlinks free block `i` from the list of its class `c` (its flag,
    /// size and offset stay; the offset must be the one it was pushed
    /// with, which names its zone).
    #[inline(always)]
    fn unlink_free(&mut self, i: u32, c: usize) {
        let c = c & (CLASSES - 1); // no-op: elides the bounds checks
        let Record {
            offset,
            prev_free,
            next_free,
            ..
        } = *self.rec(i);
        if next_free != NIL {
            self.rec_mut(next_free).prev_free = prev_free;
        }
        if prev_free != NIL {
            self.rec_mut(prev_free).next_free = next_free;
        } else {
            let z = self.zone(offset);
            self.ctl.heads[c][z] = next_free;
            if next_free == NIL {
                let (fl, sl) = (c >> SL_LOG2, c & (SL_COUNT - 1));
                self.ctl.zone_sl[z][fl] &= NBIT32[sl];
                if self.ctl.zone_sl[z][fl] == 0 {
                    self.ctl.zone_fl[z] &= NBIT64[fl];
                }
                self.ctl.zones[c] &= !(1 << z);
                if self.ctl.zones[c] == 0 {
                    self.ctl.sl_bitmap[fl] &= NBIT32[sl];
                    if self.ctl.sl_bitmap[fl] == 0 {
                        self.ctl.fl_bitmap &= NBIT64[fl];
                    }
                }
            }
        }
    }

    /// Resizes free block `i` from `old_size` to `new_size`, moving it to
    /// another list only if its class changes (usually it does not).
    #[inline(always)]
    fn resize_free(&mut self, i: u32, old_size: u64, new_size: u64) {
        match class_change(old_size, new_size) {
            None => self.rec_mut(i).size = new_size | FREE_BIT,
            Some(old_class) => {
                self.unlink_free(i, old_class);
                self.push_free(i, new_size, class_of(new_size));
            }
        }
    }

    /// Shrinks free block `i`, of class `class`, to `new_size`: as
    /// [`resize_free`](Self::resize_free), but the old class is known.
    #[inline(always)]
    fn shrink_free(&mut self, i: u32, class: usize, new_size: u64) {
        let new_class = class_of(new_size);
        if new_class == class {
            self.rec_mut(i).size = new_size | FREE_BIT;
        } else {
            self.unlink_free(i, class);
            self.push_free(i, new_size, new_class);
        }
    }

    /// The smallest class at or above class `c` with a bit in the bitmaps
    /// `fl_bitmap` and `sl_bitmap` (all zones', or one zone's); `None` if
    /// there is none.
    #[inline(always)]
    fn smallest_at_or_above(
        c: usize,
        fl_bitmap: u64,
        sl_bitmap: &[u32; FL_COUNT],
    ) -> Option<usize> {
        let c = c & (CLASSES - 1); // no-op: elides the bounds checks
        let (fl, sl) = (c >> SL_LOG2, c & (SL_COUNT - 1));
        let sl_map = sl_bitmap[fl] & FROM32[sl];
        if sl_map != 0 {
            return Some((fl << SL_LOG2) | sl_map.trailing_zeros() as usize);
        }
        // The classes above `fl`.
        let fl_map = fl_bitmap & ABOVE64[fl];
        if fl_map == 0 {
            return None;
        }
        let fl = fl_map.trailing_zeros() as usize & (FL_COUNT - 1);
        Some((fl << SL_LOG2) | (sl_bitmap[fl].trailing_zeros() as usize & (SL_COUNT - 1)))
    }

    /// Head of the smallest non-empty class at or above class `c`, in the
    /// lowest zone that has one; and that class. [`NIL`] (and any class)
    /// if there is none.
    #[inline(always)]
    fn find_suitable(&self, c: usize) -> (u32, usize) {
        let Some(found) = Self::smallest_at_or_above(c, self.ctl.fl_bitmap, &self.ctl.sl_bitmap)
        else {
            return (NIL, 0);
        };
        let found = found & (CLASSES - 1); // no-op: elides the bounds checks
        let z = self.ctl.zones[found].trailing_zeros() as usize & (ZONES - 1);
        (self.ctl.heads[found][z], found)
    }

    /// As [`find_suitable`](Self::find_suitable), but the lowest zone that
    /// holds a block of class `c` or above first, and the smallest such
    /// class in that zone: the placement of small requests.
    #[inline(always)]
    fn find_suitable_low(&self, c: usize) -> (u32, usize) {
        for z in 0..ZONES {
            let map = &self.ctl.zone_sl[z];
            if let Some(found) = Self::smallest_at_or_above(c, self.ctl.zone_fl[z], map) {
                let found = found & (CLASSES - 1); // no-op: elides the bounds checks
                return (self.ctl.heads[found][z], found);
            }
        }
        (NIL, 0)
    }

    /// A free block whose end can hold `rsize` bytes starting at an
    /// `align`-aligned offset (`align_down(block_end - rsize, align)` lies
    /// inside it), and its class (`class_of` its size, known from the list
    /// it was found in); [`NIL`] (and any class) if there is none.
    #[inline(always)]
    fn find_block(&self, rsize: u64, align: u64) -> (u32, usize) {
        // Every block of the class found holds `search` bytes, so aligning
        // `end - rsize` down (by at most `align - GRANULE`) stays inside.
        let search = class_search(rsize + (align - GRANULE));
        let found = if rsize < self.geo.small {
            self.find_suitable_low(search)
        } else {
            self.find_suitable(search)
        };
        if found.0 != NIL {
            return found;
        }
        Self::find_block_fallback(self.ctl, self.recs, self.geo.nrec, rsize, align)
    }

    /// The rounded search failed; a block that fits may still sit in the
    /// class of the request itself (or of `search`, when aligning). Look at
    /// the first few blocks of those lists. (Takes the parts it needs rather
    /// than `&self`, so that the hot path keeps the view in registers.)
    #[cold]
    #[inline(never)]
    fn find_block_fallback(
        ctl: &Control,
        recs: *const Record,
        nrec: usize,
        rsize: u64,
        align: u64,
    ) -> (u32, usize) {
        let search = rsize + (align - GRANULE);
        let first = class_of(rsize);
        let second = class_of(search);
        for (k, &class) in [first, second].iter().enumerate() {
            if k == 1 && second == first {
                break;
            }
            // The first FALLBACK_SCAN blocks of the class, lowest zone first.
            let mut n = 0;
            let mut zones = ctl.zones[class];
            while zones != 0 && n < FALLBACK_SCAN {
                let z = zones.trailing_zeros() as usize & (ZONES - 1);
                zones &= zones - 1;
                let mut i = ctl.heads[class][z];
                while i != NIL && n < FALLBACK_SCAN {
                    debug_assert!((i as usize) < nrec);
                    // SAFETY: list links are record indices < nrec (the
                    // `Tlsf` invariant), and `recs` points to the view's
                    // nrec records.
                    let r = unsafe { &*recs.add(i as usize) };
                    let size = r.size & !FREE_BIT;
                    if size >= rsize && (r.offset + size - rsize) & !(align - 1) >= r.offset {
                        return (i, class);
                    }
                    i = r.next_free;
                    n += 1;
                }
            }
        }
        (NIL, 0)
    }

    // ---- offset index ----

    /// The position (in bytes, see [`ent`](Self::ent)) where `key`'s
    /// probe starts: the top `log2(ntab)` bits of its Fibonacci hash, times
    /// the entry size.
    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.geo.shift;
        h as usize & !(ENTRY_BYTES - 1)
    }

    /// Table position holding `key`.
    #[inline(always)]
    fn index_find(&self, key: u64) -> Option<usize> {
        let mask = self.geo.mask;
        let mut pos = self.home(key);
        // The load factor is <= 1/2 (at most one entry per record), so an
        // empty entry ends every probe.
        loop {
            let k = self.ent(pos).key;
            if k == key {
                return Some(pos);
            }
            if k == EMPTY_KEY {
                return None;
            }
            pos = (pos + ENTRY_BYTES) & mask;
        }
    }

    #[inline(always)]
    fn index_insert(&mut self, key: u64, idx: u32, class: usize) {
        let mask = self.geo.mask;
        let mut pos = self.home(key);
        while self.ent(pos).key != EMPTY_KEY {
            pos = (pos + ENTRY_BYTES) & mask;
        }
        *self.ent_mut(pos) = Entry {
            key,
            idx,
            class: class as u32,
        };
    }

    /// Empties position `pos`, shifting back the entries of its probe run.
    #[inline(always)]
    fn index_remove_at(&mut self, mut hole: usize) {
        let mask = self.geo.mask;
        let mut pos = (hole + ENTRY_BYTES) & mask;
        loop {
            let e = *self.ent(pos);
            if e.key == EMPTY_KEY {
                break;
            }
            // Move `e` into the hole unless its home lies cyclically in
            // (hole, pos]: then it would end up before its home.
            let home = self.home(e.key);
            if (pos.wrapping_sub(home) & mask) >= (pos.wrapping_sub(hole) & mask) {
                *self.ent_mut(hole) = e;
                hole = pos;
            }
            pos = (pos + ENTRY_BYTES) & mask;
        }
        self.ent_mut(hole).key = EMPTY_KEY;
    }

    /// The error for an offset that is not the start of an allocated block:
    /// the start of a quick block or a recent free is a double free.
    #[cold]
    #[inline(never)]
    fn not_allocated(&self, offset: u64) -> Error {
        let flags = self
            .index_find(offset)
            .map_or(0, |pos| self.rec(self.ent(pos).idx).size & FLAG_BITS);
        if flags & OWNED_BIT != 0 {
            Error::CacheOwned
        } else if flags & QUICK_BIT != 0 || self.ctl.recent.contains(&offset) {
            Error::DoubleFree
        } else {
            Error::InvalidOffset
        }
    }

    // ---- operations ----

    fn init(&mut self, capacity: u64) {
        let m = self.geo.nrec;
        self.ctl.fl_bitmap = 0;
        self.ctl.in_use = 0;
        self.ctl.live = 0;
        self.ctl.frees = 0;
        self.ctl.recent = [EMPTY_KEY; RECENT_FREES];
        self.ctl.sl_bitmap = [0; FL_COUNT];
        self.ctl.zone_fl = [0; ZONES];
        self.ctl.zone_sl = [[0; FL_COUNT]; ZONES];
        self.ctl.zones = [0; CLASSES];
        self.ctl.heads = [[NIL; ZONES]; CLASSES];
        self.ctl.quick_budget = capacity.min(QUICK_MAX);
        self.ctl.quick_room = self.ctl.quick_budget;
        self.ctl.quick = [NIL; CLASSES];
        self.ctl.quick_back = [NIL; CLASSES];
        self.ctl.back_bits = [0; CLASSES / 64];
        for e in self.tab().iter_mut() {
            *e = Entry {
                key: EMPTY_KEY,
                idx: NIL,
                class: 0,
            };
        }
        for (i, r) in self.recs().iter_mut().enumerate() {
            let next = if i + 1 < m { (i + 1) as u32 } else { NIL };
            *r = Record {
                offset: 0,
                size: 0,
                prev_phys: NIL,
                next_phys: NIL,
                prev_free: NIL,
                next_free: next,
            };
        }
        self.ctl.spare_head = 0;
        self.ctl.spare_count = m as u32;
        let whole = self.take_record();
        self.push_free(whole, capacity, class_of(capacity));
    }

    /// Allocates `rsize` bytes at an `align`-aligned offset and returns the
    /// offset, or one of the `FAIL_*` values (see [`alloc_result`]): the
    /// block in the quick slot of the request's class if there is one and
    /// it is aligned, else the end of a free block. Before failing, the
    /// quick slots are emptied and the search repeated.
    #[inline(always)]
    fn alloc(&mut self, rsize: u64, align: u64) -> u64 {
        match self.quick_take(rsize, align) {
            Some(offset) => offset,
            None => Self::alloc_free_lists(self.reborrow(), rsize, align),
        }
    }

    /// The quick slots (`BACK = false`) or the back slots (`true`).
    #[inline(always)]
    fn slots<const BACK: bool>(&mut self) -> &mut [u32; CLASSES] {
        if BACK {
            &mut self.ctl.quick_back
        } else {
            &mut self.ctl.quick
        }
    }

    /// The quick block that serves the request, taken out of its slot and
    /// counted as allocated; `None` (changing nothing) if there is none.
    #[inline(always)]
    fn quick_take(&mut self, rsize: u64, align: u64) -> Option<u64> {
        self.take_kept::<false>(rsize, align)
    }

    /// [`quick_take`](Self::quick_take) from the quick slots (`BACK =
    /// false`) or the back slots (`true`).
    #[inline(always)]
    fn take_kept<const BACK: bool>(&mut self, rsize: u64, align: u64) -> Option<u64> {
        // The request's own class first (where a block of the same size
        // went when freed), if its quick block is large enough; else the
        // next class, every block of which holds `rsize`.
        let mut c = class_of(rsize);
        let mut q = self.slots::<BACK>()[c];
        if q == NIL || self.rec(q).size < rsize {
            c = class_search(rsize);
            q = self.slots::<BACK>()[c];
        }
        if q != NIL {
            let Record { offset, size, .. } = *self.rec(q);
            // (`size` has QUICK_BIT, below the granule: `>=` is unaffected.)
            if offset & (align - 1) == 0 && size >= rsize {
                let extent = size & !QUICK_BIT;
                self.slots::<BACK>()[c] = NIL;
                if BACK {
                    self.ctl.back_bits[c / 64] &= !(1 << (c % 64));
                }
                self.ctl.quick_room += extent;
                let r = self.rec_mut(q);
                r.size = extent;
                // Quick blocks hold at most QUICK_MAX bytes: fits a u32.
                r.prev_free = (extent - rsize) as u32;
                self.ctl.in_use += rsize;
                self.ctl.live += 1;
                return Some(offset);
            }
        }
        None
    }

    /// The part of [`alloc`](Self::alloc) past the quick slots, out of
    /// line so that the quick path, inlined into every caller, stays small.
    #[inline(never)]
    fn alloc_free_lists(mut t: Tlsf<'_>, rsize: u64, align: u64) -> u64 {
        if let Some(offset) = t.take_kept::<true>(rsize, align) {
            return offset;
        }
        let want = t.refill_size(rsize);
        let mut raw = t.carve(want, rsize, align);
        if (raw as i64) < 0 && want != rsize {
            raw = t.carve(rsize, rsize, align);
        }
        if (raw as i64) < 0 && t.ctl.quick_room != t.ctl.quick_budget {
            return Self::trim_and_carve(t, rsize, align);
        }
        raw
    }

    /// How much to carve for a request of `rsize` bytes the quick slots
    /// did not serve: up to the next class boundary if the request's own
    /// slot holds a smaller block and the next class's slot is empty, else
    /// `rsize`. An exact block would find its own slot taken when freed and
    /// go to the free lists, and the next request of its size would miss
    /// again, forever; the rounded one refills the next slot, which serves
    /// every request of the class. (The excess, under 1/32, is slack.)
    #[inline(always)]
    fn refill_size(&self, rsize: u64) -> u64 {
        let (own, next) = (class_of(rsize), class_search(rsize));
        if own == next || self.ctl.quick[own] == NIL || self.ctl.quick[next] != NIL {
            return rsize;
        }
        let want = class_ceil(rsize);
        if want > self.ctl.quick_room {
            return rsize;
        }
        want
    }

    /// A second view of the same metadata, passed by value to the cold
    /// paths so that the hot path need not keep `self` in memory.
    #[inline(always)]
    fn reborrow(&mut self) -> Tlsf<'_> {
        Tlsf {
            ctl: &mut *self.ctl,
            recs: self.recs,
            geo: self.geo,
            _borrow: PhantomData,
        }
    }

    /// A failed carve's second chance: the back slots go back to the free
    /// lists first (they are few to visit, see `back_bits`), and only if
    /// that does not make room the quick slots too (a scan of every class).
    #[cold]
    #[inline(never)]
    fn trim_and_carve(mut t: Tlsf<'_>, rsize: u64, align: u64) -> u64 {
        if t.ctl.back_bits.iter().any(|&w| w != 0) {
            t.trim_back();
            let raw = t.carve(rsize, rsize, align);
            if (raw as i64) >= 0 || t.ctl.quick_room == t.ctl.quick_budget {
                return raw;
            }
        }
        t.trim_quick();
        t.carve(rsize, rsize, align)
    }

    /// Puts freed block `i` (`extent` bytes, still indexed) in the quick
    /// slot of its class if that slot is empty and the budget allows;
    /// `false` if it did not.
    ///
    /// A quick block stays whole and indexed, so the next request of its
    /// class takes it back with no search, split, merge or index update:
    /// the common "free, then allocate the same size again" costs a
    /// fraction of a TLSF round trip. It is not merged with its neighbours
    /// meanwhile; [`trim`](Self::trim) returns all quick blocks to the
    /// free lists, which every failing allocation does before it fails, so
    /// a request never fails for want of the bytes the slots hold.
    ///
    /// `BACK` puts it in the back slot of its class instead.
    #[inline(always)]
    fn quick_put<const BACK: bool>(&mut self, i: u32, extent: u64) -> bool {
        self.quick_put_in::<BACK>(i, extent, class_of(extent))
    }

    /// [`quick_put`](Self::quick_put) for a caller that knows the class
    /// `c` of `extent` already (from the block's index entry).
    #[inline(always)]
    fn quick_put_in<const BACK: bool>(&mut self, i: u32, extent: u64, c: usize) -> bool {
        debug_assert_eq!(c, class_of(extent));
        if self.slots::<BACK>()[c] != NIL || extent > self.ctl.quick_room {
            return false;
        }
        self.slots::<BACK>()[c] = i;
        if BACK {
            self.ctl.back_bits[c / 64] |= 1 << (c % 64);
        }
        self.ctl.quick_room -= extent;
        self.rec_mut(i).size = extent | QUICK_BIT;
        true
    }

    /// Returns every kept block (quick and back slots) to the free lists,
    /// merging it with its free neighbours. O(classes) at most.
    fn trim(&mut self) {
        self.trim_back();
        self.trim_quick();
    }

    /// [`trim`](Self::trim) for the back slots: O(full back slots).
    fn trim_back(&mut self) {
        for w in 0..CLASSES / 64 {
            while self.ctl.back_bits[w] != 0 {
                let bits = self.ctl.back_bits[w];
                self.ctl.back_bits[w] = bits & (bits - 1);
                let c = w * 64 + bits.trailing_zeros() as usize;
                let i = self.ctl.quick_back[c];
                self.ctl.quick_back[c] = NIL;
                self.release_kept(i);
            }
        }
    }

    /// [`trim`](Self::trim) for the quick slots: a scan of the classes (a
    /// bitmap would cost the quick paths an update each), which stops once
    /// no block is kept.
    fn trim_quick(&mut self) {
        for c in 0..CLASSES {
            if self.ctl.quick_room == self.ctl.quick_budget {
                break;
            }
            let i = self.ctl.quick[c];
            if i != NIL {
                self.ctl.quick[c] = NIL;
                self.release_kept(i);
            }
        }
    }

    /// Returns kept block `i`, just taken out of its slot, to the free lists.
    fn release_kept(&mut self, i: u32) {
        let Record { offset, size, .. } = *self.rec(i);
        let extent = size & !QUICK_BIT;
        self.ctl.quick_room += extent;
        self.rec_mut(i).size = extent;
        match self.index_find(offset) {
            Some(pos) => Self::free_to_lists(self.reborrow(), pos, i, offset),
            None => debug_assert!(false, "quick block not indexed"),
        }
    }

    /// Carves `[start, start + want)` (plus alignment slack up to the block
    /// end) out of the end of a free block and returns `start`, or one of
    /// the `FAIL_*` values. The user asked for `rsize <= want` bytes; the
    /// rest of the block is slack.
    #[inline(always)]
    fn carve(&mut self, want: u64, rsize: u64, align: u64) -> u64 {
        debug_assert!(rsize <= want && want - rsize <= QUICK_MAX);
        let (i, class) = self.find_block(want, align);
        if i == NIL {
            return FAIL_EXHAUSTED;
        }
        let Record {
            offset,
            size,
            next_phys,
            ..
        } = *self.rec(i);
        let size = size & !FREE_BIT;
        debug_assert_eq!(class, class_of(size));
        let end = offset + size;
        let start = (end - want) & !(align - 1);
        let extent = end - start;
        // < want - rsize + align <= QUICK_MAX + MAX_ALIGN: fits a u32.
        let slack = (extent - rsize) as u32;
        let (n, prev_phys) = if start == offset {
            // The whole block: no split, no record needed.
            self.unlink_free(i, class);
            (i, self.rec(i).prev_phys)
        } else {
            if self.ctl.spare_head == NIL {
                return FAIL_METADATA_FULL;
            }
            // `i` keeps [offset, start) and stays free (usually in its
            // class); its successor, if any, is allocated.
            self.shrink_free(i, class, start - offset);
            let n = self.take_record();
            if next_phys != NIL {
                self.rec_mut(next_phys).prev_phys = n;
            }
            self.rec_mut(i).next_phys = n;
            (n, i)
        };
        *self.rec_mut(n) = Record {
            offset: start,
            size: extent,
            prev_phys,
            next_phys,
            prev_free: slack,
            next_free: NIL,
        };
        self.index_insert(start, n, class_of(extent));
        self.ctl.in_use += rsize;
        self.ctl.live += 1;
        start
    }

    /// Frees the block at `offset`, whose table entry is at `pos`
    /// (`index_find(offset)`), into its quick slot or the free lists;
    /// `false` (changing nothing) if it is a quick block, freed already.
    #[inline(always)]
    fn free_at(&mut self, pos: usize, offset: u64) -> bool {
        let i = self.ent(pos).idx;
        if self.free_to_quick(pos) {
            return true;
        }
        let Record {
            size: extent,
            prev_free: slack,
            ..
        } = *self.rec(i);
        if extent & (QUICK_BIT | OWNED_BIT) != 0 {
            return false;
        }
        self.count_free(extent - slack as u64);
        Self::free_to_back_or_lists(self.reborrow(), pos, i, offset, extent);
        true
    }

    /// The rest of a free whose quick slot was taken: the back slot of the
    /// block's class if that is empty (and the budget allows), else the
    /// free lists. `extent` is the block's (unflagged) size.
    ///
    /// A second block per class spares many frees and allocations of
    /// mixed sizes (a free and then an allocation of another size, as a
    /// cache that evicts does) the merge and split through the free lists
    /// and the index (see the module docs). Only this slow path and
    /// [`alloc_free_lists`](Self::alloc_free_lists) look at the back
    /// slots, so the quick paths cost what they did.
    #[inline(never)]
    fn free_to_back_or_lists(mut t: Tlsf<'_>, pos: usize, i: u32, offset: u64, extent: u64) {
        if !t.quick_put::<true>(i, extent) {
            Self::free_to_lists(t, pos, i, offset);
        }
    }

    /// Frees the block at `offset` into its quick slot if it is allocated
    /// and the slot takes it; `false`, changing nothing, otherwise.
    #[cfg(feature = "capi")]
    #[inline(always)]
    fn free_quick(&mut self, offset: u64) -> bool {
        match self.index_find(offset) {
            Some(pos) => self.free_to_quick(pos),
            None => false,
        }
    }

    /// Frees the block of the table entry at `pos` into the quick slot of
    /// its class if it is not a quick block already and the slot takes it
    /// (see [`quick_put`](Self::quick_put)); `false`, changing nothing,
    /// otherwise.
    #[inline(always)]
    fn free_to_quick(&mut self, pos: usize) -> bool {
        let Entry { idx: i, class, .. } = *self.ent(pos);
        let Record {
            size: extent,
            prev_free: slack,
            ..
        } = *self.rec(i);
        debug_assert!(extent & FREE_BIT == 0, "indexed block is free");
        let c = class as usize & (CLASSES - 1); // no-op: elides the bounds checks
        if extent & (QUICK_BIT | OWNED_BIT) != 0 || !self.quick_put_in::<false>(i, extent, c) {
            return false;
        }
        self.count_free(extent - slack as u64);
        true
    }

    /// Accounts for the user's free of a block of `usable` bytes.
    #[inline(always)]
    fn count_free(&mut self, usable: u64) {
        self.ctl.in_use -= usable;
        self.ctl.live -= 1;
    }

    /// Unindexes freed block `i` (entry at `pos`) and releases it, keeping
    /// `offset` in the ring of recent frees: once merged, only the ring
    /// tells a second free of it from a bad offset. Out of line, as
    /// [`alloc_free_lists`](Self::alloc_free_lists).
    #[inline(never)]
    fn free_to_lists(mut t: Tlsf<'_>, pos: usize, i: u32, offset: u64) {
        let slot = (t.ctl.frees as usize) & (RECENT_FREES - 1);
        t.ctl.recent[slot] = offset;
        t.ctl.frees = t.ctl.frees.wrapping_add(1);
        t.index_remove_at(pos);
        t.release(i, offset);
    }

    /// Turns block `i` at `offset` (no longer indexed or counted) into free
    /// space, merged with its free neighbours.
    #[inline(always)]
    fn release(&mut self, i: u32, offset: u64) {
        let Record {
            size: extent,
            prev_phys: prev,
            next_phys: next,
            ..
        } = *self.rec(i);
        debug_assert!(extent & (FREE_BIT | QUICK_BIT) == 0);
        let next_free = next != NIL && self.is_free(next);
        if prev != NIL && self.is_free(prev) {
            // Grow the free predecessor over `i` (and a free successor).
            let psize = self.size(prev);
            let mut merged = psize + extent;
            let mut after = next;
            if next_free {
                let nsize = self.size(next);
                self.unlink_free(next, class_of(nsize));
                merged += nsize;
                after = self.rec(next).next_phys;
                self.release_record(next);
            }
            self.rec_mut(prev).next_phys = after;
            if after != NIL {
                self.rec_mut(after).prev_phys = prev;
            }
            self.release_record(i);
            self.resize_free(prev, psize, merged);
        } else if next_free {
            // Move the free successor's start back over `i`. Its list is
            // that of its start's zone: leave it (with its old start) if
            // the zone changes.
            let nsize = self.size(next);
            let moves = self.zone(offset) != self.zone(self.rec(next).offset);
            if moves {
                self.unlink_free(next, class_of(nsize));
            }
            {
                let r = self.rec_mut(next);
                r.offset = offset;
                r.prev_phys = prev;
            }
            if prev != NIL {
                self.rec_mut(prev).next_phys = next;
            }
            self.release_record(i);
            if moves {
                self.push_free(next, nsize + extent, class_of(nsize + extent));
            } else {
                self.resize_free(next, nsize, nsize + extent);
            }
        } else {
            self.push_free(i, extent, class_of(extent));
        }
    }

    fn largest_free(&self) -> u64 {
        if self.ctl.fl_bitmap == 0 {
            return 0;
        }
        let fl = (63 - self.ctl.fl_bitmap.leading_zeros()) as usize;
        let sl = (31 - self.ctl.sl_bitmap[fl].leading_zeros()) as usize;
        let c = (fl << SL_LOG2) | sl;
        let mut best = 0;
        for z in 0..ZONES {
            let mut i = self.ctl.heads[c][z];
            while i != NIL {
                best = best.max(self.size(i));
                i = self.rec(i).next_free;
            }
        }
        best
    }
}

/// A TLSF offset allocator over `[0, capacity)` whose metadata lives in the
/// caller's `storage` (see the [module docs](self)).
///
/// All methods take `&self`; a spinlock serializes them, so the arena is
/// `Sync` whenever the storage is `Send`.
pub struct Arena<S: ArenaStorage> {
    lock: AtomicBool,
    storage: UnsafeCell<S>,
    capacity: u64,
    geo: Geometry,
}

// SAFETY: every access to `storage` goes through `Arena::locked`, which holds
// `lock` (acquire on lock, release on unlock) for the duration of the
// access, so the metadata is never touched by two threads at once; the
// remaining fields are immutable after `new`. `S: Send` because the storage
// is effectively used from whichever thread holds the lock.
unsafe impl<S: ArenaStorage + Send> Sync for Arena<S> {}

/// The metadata view plus the lock that guards it. Fields drop in order:
/// the view's borrow of the storage ends before the guard unlocks.
struct Locked<'a> {
    tlsf: Tlsf<'a>,
    _guard: Guard<'a>,
}

/// Releases the arena's spinlock when dropped (also on unwind).
struct Guard<'a>(&'a AtomicBool);

impl Drop for Guard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl<S: ArenaStorage> Arena<S> {
    /// Largest supported alignment (the page size).
    pub const MAX_ALIGN: u64 = MAX_ALIGN;

    /// How many [`ArenaSlot`]s [`Arena::new`] needs to track up to
    /// `max_blocks` blocks, allocated and free together (free blocks never
    /// touch, so `2 * live + 1` is always enough). The cost is
    /// `32 + 16..32` bytes per block plus ~153 KiB (the control block, most
    /// of it the free-list heads of 16 zones).
    pub const fn slots_for(max_blocks: usize) -> usize {
        let table_slots = match max_blocks.checked_next_power_of_two() {
            Some(p) => p,
            None => usize::MAX,
        };
        CTL_SLOTS
            .saturating_add(max_blocks)
            .saturating_add(table_slots)
    }

    /// Creates an arena managing `[0, capacity)`, with every byte free.
    ///
    /// `capacity` is rounded down to a multiple of [`GRANULE`]; `storage` may
    /// hold anything (it is initialized here) and determines
    /// [`max_blocks`](Self::max_blocks). Costs O(`storage.len()`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the rounded capacity is zero or above
    /// [`MAX_CAPACITY`], or if `storage` is shorter than `slots_for(1)`.
    pub fn new(capacity: u64, mut storage: S) -> Result<Self> {
        let capacity = capacity & !(GRANULE - 1);
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(Error::InvalidArgument);
        }
        let (max_blocks, table_len) =
            layout_for_len(storage.len()).ok_or(Error::InvalidArgument)?;
        let geo = Geometry {
            nrec: max_blocks,
            tab_bytes: max_blocks * size_of::<Record>(),
            ntab: table_len,
            mask: (table_len - 1) * ENTRY_BYTES,
            shift: 64 - table_len.trailing_zeros() - ENTRY_BYTES.trailing_zeros(),
            zone_shift: zone_shift(capacity),
            small: 1 << zone_shift(capacity).saturating_sub(SMALL_LOG2),
        };
        Self::view(&mut storage, &geo).init(capacity);
        Ok(Arena {
            lock: AtomicBool::new(false),
            storage: UnsafeCell::new(storage),
            capacity,
            geo,
        })
    }

    /// Reinterprets `slots` as `[Control | Record; max_blocks | Entry; table_len]`.
    ///
    /// `slots` must be the arena's storage (or the slice `new` measured):
    /// [`ArenaStorage`] guarantees it still has the length `new` saw, which
    /// `layout_for_len` fitted the three parts into.
    #[inline(always)]
    fn view<'a>(slots: &'a mut [ArenaSlot], geo: &'a Geometry) -> Tlsf<'a> {
        let Geometry {
            nrec: max_blocks,
            ntab: table_len,
            shift,
            ..
        } = *geo;
        let tab_at = CTL_SLOTS + max_blocks;
        debug_assert!(slots.len() >= tab_at + table_len / 2);
        debug_assert!(
            table_len.is_power_of_two()
                && shift == 64 - table_len.trailing_zeros() - ENTRY_BYTES.trailing_zeros()
        );
        let base = slots.as_mut_ptr();
        // SAFETY: slots [0, CTL_SLOTS) span CTL_SLOTS * 32 >=
        // size_of::<Control>() bytes (in bounds: `layout_for_len` fitted the
        // layout into this length, which `ArenaStorage` keeps), aligned to
        // 8 >= align_of::<Control>() (const-asserted). Control is repr(C)
        // integers without padding, so every bit pattern is a valid value
        // and writes keep every byte of the slots initialized. The three
        // parts cover disjoint slot ranges and live no longer than `slots`,
        // an exclusive borrow.
        let ctl = unsafe { &mut *base.cast::<Control>() };
        // SAFETY: in bounds as above: slots [CTL_SLOTS, tab_at) hold the
        // records (Record has the size and alignment of ArenaSlot) and
        // slots [tab_at, tab_at + table_len / 2) the entries (two 16-byte
        // Entries per 32-byte slot, table_len is even), which `tab_ptr`
        // finds right after the records.
        let recs = unsafe { base.add(CTL_SLOTS).cast::<Record>() };
        Tlsf {
            ctl,
            recs,
            geo,
            _borrow: PhantomData,
        }
    }

    /// Runs `f` on the metadata with the lock held.
    #[inline(always)]
    fn locked<R>(&self, f: impl FnOnce(&mut Tlsf<'_>) -> R) -> R {
        f(&mut self.lock().tlsf)
    }

    /// Takes the lock if it is free right now (see [`lock`](Self::lock)).
    #[inline(always)]
    fn try_lock(&self) -> Option<Locked<'_>> {
        if self.lock.load(Ordering::Relaxed)
            || self
                .lock
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        Some(self.locked_view(Guard(&self.lock)))
    }

    /// The metadata view for the holder of `guard`.
    #[inline(always)]
    fn locked_view<'a>(&'a self, guard: Guard<'a>) -> Locked<'a> {
        // SAFETY: `guard` proves we hold the lock, so no other reference to
        // the storage exists (only a lock holder creates one, and
        // `new`/`into_storage` own the arena); it lives in the `Locked`,
        // which drops it before its guard releases the lock.
        let storage = unsafe { &mut *self.storage.get() };
        Locked {
            tlsf: Self::view(storage, &self.geo),
            _guard: guard,
        }
    }

    /// Takes the lock; the metadata view lives as long as the result, whose
    /// drop releases the lock. (Hot paths use it directly rather than
    /// through a closure so that everything inlines into the caller.)
    #[inline(always)]
    fn lock(&self) -> Locked<'_> {
        // `swap` (one `xchg`) rather than a compare-exchange, which needs
        // its expected value set up in a fixed register: storing `true`
        // over a held lock's `true` changes nothing.
        while self.lock.swap(true, Ordering::Acquire) {
            while self.lock.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
        self.locked_view(Guard(&self.lock))
    }

    /// Allocates `size` bytes aligned to `align` and returns the offset of
    /// the block, in `[0, capacity)`. O(1).
    ///
    /// `align` must be a power of two up to [`MAX_ALIGN`](Self::MAX_ALIGN);
    /// `0` and anything up to [`GRANULE`] mean the granule. The block really
    /// holds `size` rounded up to [`GRANULE`] (see
    /// [`usable_size`](Self::usable_size)).
    ///
    /// # Errors
    /// [`Error::ZeroSize`], [`Error::TooLarge`] (`size > capacity`),
    /// [`Error::BadAlignment`], [`Error::Exhausted`] (no free block fits),
    /// [`Error::MetadataFull`] (a fitting block exists but splitting it needs
    /// a record the storage does not have; nothing is changed).
    #[inline(always)]
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64> {
        let (rsize, align) = request(size, align, self.capacity)?;
        let raw = self.lock().tlsf.alloc(rsize, align);
        alloc_result(raw)
    }

    /// Frees the block starting at `offset`. O(1); keeps the block whole in
    /// the quick slot of its class if that is empty, else merges it with
    /// free neighbours (see the module docs).
    ///
    /// # Errors
    /// [`Error::DoubleFree`] if the block sits in a quick slot, or if
    /// `offset` is not the start of a block but is one of the last
    /// [`RECENT_FREES`] offsets freed to the free lists: exact for a repeated
    /// free within that window, whatever merged since. Older double frees
    /// report [`Error::InvalidOffset`], and once the range is handed out
    /// again at the same offset, a stale second free releases the new block.
    /// [`Error::InvalidOffset`] if `offset >= capacity` or is not the start
    /// of an allocated block (nor recently freed).
    #[inline(always)]
    pub fn free(&self, offset: u64) -> Result<()> {
        if offset >= self.capacity || offset & (GRANULE - 1) != 0 {
            return Err(Error::InvalidOffset);
        }
        let mut l = self.lock();
        match l.tlsf.index_find(offset) {
            Some(pos) if l.tlsf.free_at(pos, offset) => Ok(()),
            // Out of line, unlocking there: the success path alone reaches
            // the unlock here and returns a constant.
            _ => Err(Self::not_allocated_unlock(l, offset)),
        }
    }

    /// Marks the allocated block at `offset` as owned by a [`ThreadCache`]
    /// (`owned`), or gives it back to plain allocation (`!owned`): while
    /// owned, [`free`](Self::free) refuses it with [`Error::CacheOwned`],
    /// so a block the cache keeps for reuse can never be freed under it.
    ///
    /// # Errors
    /// As [`free`](Self::free) for an offset that is not an allocated
    /// block; [`Error::CacheOwned`] if it is owned already (`owned`), and
    /// [`Error::InvalidArgument`] if it is not owned (`!owned`).
    pub fn set_owned(&self, offset: u64, owned: bool) -> Result<()> {
        self.with_allocated(offset, |t, _, i, size| {
            match (size & OWNED_BIT != 0, owned) {
                (true, true) => Err(Error::CacheOwned),
                (false, false) => Err(Error::InvalidArgument),
                _ => {
                    t.rec_mut(i).size = size ^ OWNED_BIT;
                    Ok(())
                }
            }
        })
    }

    /// Runs `f(tlsf, table position, record, flagged size)` on the
    /// allocated block at `offset` under the lock; the error
    /// [`free`](Self::free) would give if there is none (a quick block is
    /// a [`Error::DoubleFree`]).
    fn with_allocated<R>(
        &self,
        offset: u64,
        f: impl FnOnce(&mut Tlsf<'_>, usize, u32, u64) -> Result<R>,
    ) -> Result<R> {
        if offset >= self.capacity || offset & (GRANULE - 1) != 0 {
            return Err(Error::InvalidOffset);
        }
        self.locked(|t| {
            let Some(pos) = t.index_find(offset) else {
                return Err(t.not_allocated(offset));
            };
            let i = t.ent(pos).idx;
            let size = t.rec(i).size;
            if size & QUICK_BIT != 0 {
                return Err(Error::DoubleFree);
            }
            f(t, pos, i, size)
        })
    }

    /// [`alloc`](Self::alloc) of a block owned by a [`ThreadCache`] from
    /// the start (see [`set_owned`](Self::set_owned)), under one lock.
    ///
    /// # Errors
    /// As [`alloc`](Self::alloc).
    pub fn alloc_owned(&self, size: u64, align: u64) -> Result<u64> {
        let (rsize, align) = request(size, align, self.capacity)?;
        self.locked(|t| {
            let off = alloc_result(t.alloc(rsize, align))?;
            let pos = t.index_find(off);
            debug_assert!(pos.is_some(), "an allocated block is indexed");
            if let Some(pos) = pos {
                let i = t.ent(pos).idx;
                t.rec_mut(i).size |= OWNED_BIT;
            }
            Ok(off)
        })
    }

    /// Frees a block that a [`ThreadCache`] owns (see
    /// [`set_owned`](Self::set_owned)), under one lock.
    ///
    /// # Errors
    /// As [`set_owned`](Self::set_owned)`(offset, false)`.
    pub fn free_owned(&self, offset: u64) -> Result<()> {
        self.with_allocated(offset, |t, pos, i, size| {
            if size & OWNED_BIT == 0 {
                return Err(Error::InvalidArgument);
            }
            t.rec_mut(i).size = size & !OWNED_BIT;
            let freed = t.free_at(pos, offset);
            debug_assert!(freed, "an allocated block frees");
            Ok(())
        })
    }

    /// [`alloc`](Self::alloc) if a quick block serves the request (see
    /// the module docs), else `None`, having changed nothing: the caller
    /// then calls `alloc`, which also reports any error. It makes no calls
    /// and cannot panic, so a C entry point whose fast path it is needs no
    /// stack frame and no unwind guard.
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn alloc_quick(&self, size: u64, align: u64) -> Option<u64> {
        let (rsize, align) = checked_request(size, align, self.capacity)?;
        self.lock().tlsf.quick_take(rsize, align)
    }

    /// [`alloc_quick`](Self::alloc_quick), but `None` also if the lock is
    /// busy right now: a sharded arena then looks at its other shards.
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn try_alloc_quick(&self, size: u64, align: u64) -> Option<u64> {
        let (rsize, align) = checked_request(size, align, self.capacity)?;
        self.try_lock()?.tlsf.quick_take(rsize, align)
    }

    /// [`free`](Self::free) if the block goes to a quick slot, else `false`,
    /// having changed nothing (the caller then calls `free`). As
    /// [`alloc_quick`](Self::alloc_quick): no calls, no panics.
    #[cfg(feature = "capi")]
    #[inline(always)]
    pub(crate) fn free_quick(&self, offset: u64) -> bool {
        if offset >= self.capacity || offset & (GRANULE - 1) != 0 {
            return false;
        }
        self.lock().tlsf.free_quick(offset)
    }

    /// [`Tlsf::not_allocated`] for a lock holder, who gives up the lock.
    #[cold]
    #[inline(never)]
    fn not_allocated_unlock(l: Locked<'_>, offset: u64) -> Error {
        l.tlsf.not_allocated(offset)
    }

    /// Returns the blocks kept whole for reuse (see the module docs) to the
    /// free lists, merging each with its free neighbours. Allocation does
    /// this by itself before it would fail, and [`stats`](Self::stats)
    /// before it measures, so callers need it only to shape the free space
    /// by hand. O(classes) at most.
    pub fn trim(&self) {
        self.locked(|t| t.trim());
    }

    /// Size in bytes of the allocated block at `offset` (the request rounded
    /// up to [`GRANULE`]); all of it may be used.
    ///
    /// # Errors
    /// As [`free`](Self::free), without freeing anything.
    pub fn usable_size(&self, offset: u64) -> Result<u64> {
        self.with_allocated(offset, |t, _, i, size| {
            Ok((size & !OWNED_BIT) - t.rec(i).prev_free as u64)
        })
    }

    /// A consistent snapshot of the accounting. Returns the quick blocks to
    /// the free lists first ([`trim`](Self::trim)), then scans the list of
    /// the largest non-empty class for `largest_free`.
    pub fn stats(&self) -> ArenaStats {
        self.locked(|t| {
            // `largest_free` is what a request could get, quick blocks
            // included.
            t.trim();
            ArenaStats {
                capacity: self.capacity,
                in_use: t.ctl.in_use,
                free: self.capacity - t.ctl.in_use,
                largest_free: t.largest_free(),
                live: t.ctl.live,
            }
        })
    }

    /// Bytes managed: the `capacity` given to [`new`](Self::new), rounded
    /// down to [`GRANULE`].
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Number of block records (allocated plus free blocks) the storage
    /// holds; at least the `max_blocks` given to [`slots_for`](Self::slots_for).
    #[inline]
    pub fn max_blocks(&self) -> usize {
        self.geo.nrec
    }

    /// Gives the storage back (its content is meaningless to the caller).
    pub fn into_storage(self) -> S {
        self.storage.into_inner()
    }

    /// Walks every structure and panics on any broken invariant.
    #[cfg(test)]
    fn check_invariants(&self) {
        self.locked(|t| {
            let m = t.geo.nrec;
            // Physical chain from offset 0: the in-use record without a
            // physical predecessor.
            let mut i = (0..m)
                .find(|&k| t.recs()[k].size != 0 && t.recs()[k].prev_phys == NIL)
                .expect("no first block") as u32;
            let (mut end, mut blocks, mut free_blocks, mut in_use, mut live) = (0u64, 0, 0, 0, 0);
            let (mut quick_blocks, mut quick_bytes) = (0usize, 0u64);
            let mut prev_free = false;
            let mut prev = NIL;
            while i != NIL {
                let r = t.recs()[i as usize];
                assert_eq!(r.offset, end, "blocks must be contiguous");
                assert_eq!(r.prev_phys, prev);
                let size = r.size & !FLAG_BITS;
                assert!(size > 0 && size % GRANULE == 0);
                let free = t.is_free(i);
                let quick = r.size & QUICK_BIT != 0;
                assert!(!(free && quick));
                assert!(
                    r.size & OWNED_BIT == 0 || !(free || quick),
                    "owned block not allocated"
                );
                assert!(!(free && prev_free), "adjacent free blocks");
                let p = t.index_find(r.offset);
                if free {
                    assert!(p.is_none(), "free block indexed");
                    free_blocks += 1;
                } else {
                    let p = p.expect("allocated block not indexed");
                    assert_eq!(t.tab()[p / ENTRY_BYTES].idx, i);
                    assert_eq!(t.tab()[p / ENTRY_BYTES].class as usize, class_of(size));
                    if quick {
                        let c = class_of(size);
                        assert!(
                            t.ctl.quick[c] == i || t.ctl.quick_back[c] == i,
                            "quick block not in a slot of its class"
                        );
                        quick_blocks += 1;
                        quick_bytes += size;
                    } else {
                        let slack = r.prev_free as u64;
                        assert!(slack % GRANULE == 0 && slack < size);
                        in_use += size - slack;
                        live += 1;
                    }
                }
                blocks += 1;
                end += size;
                prev_free = free;
                prev = i;
                i = r.next_phys;
            }
            assert_eq!(end, self.capacity);
            assert_eq!(in_use, t.ctl.in_use);
            assert_eq!(live, t.ctl.live);
            assert_eq!(blocks + t.ctl.spare_count as usize, m);
            // Free lists agree with the bitmaps (all zones' and each
            // zone's) and the block flags, and hold the blocks of their
            // zone. Under Miri, which runs this often, only the lists the
            // zone sets name are read (not the ~32k empty heads).
            let mut listed = 0;
            let mut zone_sl = [[0u32; FL_COUNT]; ZONES];
            for c in 0..CLASSES {
                let (fl, sl) = (c >> SL_LOG2, c & (SL_COUNT - 1));
                let zones = t.ctl.zones[c];
                assert_eq!(t.ctl.sl_bitmap[fl] >> sl & 1 == 1, zones != 0);
                #[cfg(not(miri))]
                for z in 0..ZONES {
                    assert_eq!(zones >> z & 1 == 1, t.ctl.heads[c][z] != NIL);
                }
                let mut bits = zones;
                while bits != 0 {
                    let z = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    zone_sl[z][fl] |= 1 << sl;
                    let mut j = t.ctl.heads[c][z];
                    assert_ne!(j, NIL);
                    let mut back = NIL;
                    while j != NIL {
                        assert!(t.is_free(j));
                        assert_eq!(mapping(t.size(j)), (fl, sl));
                        assert_eq!(class_of(t.size(j)), c);
                        assert_eq!(t.zone(t.rec(j).offset), z);
                        assert_eq!(t.recs()[j as usize].prev_free, back);
                        back = j;
                        j = t.recs()[j as usize].next_free;
                        listed += 1;
                    }
                }
            }
            for fl in 0..FL_COUNT {
                assert_eq!(t.ctl.fl_bitmap >> fl & 1 == 1, t.ctl.sl_bitmap[fl] != 0);
            }
            assert_eq!(t.ctl.zone_sl, zone_sl);
            for (&fl_map, sl_maps) in t.ctl.zone_fl.iter().zip(&zone_sl) {
                for (fl, &sl_map) in sl_maps.iter().enumerate() {
                    assert_eq!(fl_map >> fl & 1 == 1, sl_map != 0);
                }
            }
            assert_eq!(listed, free_blocks);
            let keys = t.tab().iter().filter(|e| e.key != EMPTY_KEY).count();
            assert_eq!(keys, live as usize + quick_blocks);
            // One pass (Miri runs this often): kept blocks, and the back map.
            let mut kept = 0;
            for c in 0..CLASSES {
                let back = t.ctl.quick_back[c] != NIL;
                kept += usize::from(t.ctl.quick[c] != NIL) + usize::from(back);
                assert_eq!(t.ctl.back_bits[c / 64] >> (c % 64) & 1 == 1, back);
            }
            assert_eq!(kept, quick_blocks);
            assert!(t.ctl.quick_budget <= QUICK_MAX);
            assert_eq!(t.ctl.quick_budget - t.ctl.quick_room, quick_bytes);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    type A<'a> = Arena<&'a mut [ArenaSlot]>;

    fn slots(max_blocks: usize) -> Vec<ArenaSlot> {
        vec![ArenaSlot::EMPTY; A::slots_for(max_blocks)]
    }

    #[test]
    fn mask_tables() {
        for k in 0..32 {
            assert_eq!(BIT32[k], 1u32 << k);
            assert_eq!(NBIT32[k], !(1u32 << k));
            assert_eq!(FROM32[k], u32::MAX << k);
        }
        for k in 0..64 {
            assert_eq!(BIT64[k], 1u64 << k);
            assert_eq!(NBIT64[k], !(1u64 << k));
            assert_eq!(ABOVE64[k], u64::MAX.checked_shl(k as u32 + 1).unwrap_or(0));
        }
    }

    #[test]
    fn classes_stay_below_classes() {
        // The extremes behind the `assert_unchecked`s in the class maps.
        for k in 0..64 {
            for size in [1u64 << k, (1u64 << k) - 1, u64::MAX >> k] {
                let size = size & !(GRANULE - 1);
                assert!(class_of(size) < CLASSES);
                assert!(class_search(size) < CLASSES);
                assert!(class_change(size, size ^ (1 << 63)).unwrap() < CLASSES);
            }
        }
        assert!(class_search(u64::MAX) < CLASSES);
    }

    #[test]
    fn mapping_is_consistent() {
        let mut last = (0, 0);
        let mut size = GRANULE;
        while size < 1 << 20 {
            let c = mapping(size);
            assert!(c >= last, "classes grow with size");
            last = c;
            assert_eq!(class_of(size), c.0 * SL_COUNT + c.1);
            let r = round_to_class(size);
            assert_eq!(class_search(size), class_of(r));
            assert_eq!(class_ceil(size), r);
            for other in [size - GRANULE, size + GRANULE, r, r - GRANULE, size * 2] {
                if other > 0 {
                    let change = class_change(size, other);
                    assert_eq!(change.is_none(), mapping(other) == c);
                    assert!(change.is_none() || change == Some(class_of(size)));
                }
            }
            assert!(r >= size);
            // Every size of the rounded class is >= size.
            let (fl, sl) = mapping(r);
            let lo = if fl == 0 {
                (sl as u64) << GRANULE_LOG2
            } else {
                let f = fl as u32 + SL_LOG2 - 1;
                ((1u64 << f) + ((sl as u64) << (f - SL_LOG2))) << GRANULE_LOG2
            };
            assert_eq!(lo, r);
            size += GRANULE * (1 + size / 512);
        }
        assert!(mapping(MAX_CAPACITY).0 < FL_COUNT);
        assert!(mapping(!(GRANULE - 1)).0 < FL_COUNT);
        assert!(class_search(!(GRANULE - 1)) < CLASSES);
        assert_eq!(class_of(MAX_CAPACITY), mapping(MAX_CAPACITY).0 * SL_COUNT);
    }

    #[test]
    fn new_rejects_bad_arguments() {
        let mut s = slots(8);
        assert_eq!(A::new(0, &mut s[..]).err(), Some(Error::InvalidArgument));
        assert_eq!(
            A::new(GRANULE - 1, &mut s[..]).err(),
            Some(Error::InvalidArgument)
        );
        assert_eq!(
            A::new(MAX_CAPACITY + GRANULE, &mut s[..]).err(),
            Some(Error::InvalidArgument)
        );
        let mut short = vec![ArenaSlot::EMPTY; A::slots_for(1) - 1];
        assert_eq!(
            A::new(4096, &mut short[..]).err(),
            Some(Error::InvalidArgument)
        );
        let mut none: [ArenaSlot; 0] = [];
        assert_eq!(
            A::new(4096, &mut none[..]).err(),
            Some(Error::InvalidArgument)
        );
        // Rounded down to the granule.
        let a = A::new(4096 + 7, &mut s[..]).unwrap();
        assert_eq!(a.capacity(), 4096);
    }

    #[test]
    fn slots_for_gives_max_blocks() {
        for n in [1usize, 2, 3, 5, 8, 100, 1000, 4097] {
            let mut s = slots(n);
            let a = A::new(1 << 20, &mut s[..]).unwrap();
            assert_eq!(a.max_blocks(), n);
        }
        assert_eq!(A::slots_for(usize::MAX), usize::MAX);
    }

    #[test]
    fn new_initializes_garbage_storage() {
        let mut s = vec![
            ArenaSlot {
                words: [0xDEAD_BEEF_0BAD_F00D; 4]
            };
            A::slots_for(16)
        ];
        let a = A::new(1 << 16, &mut s[..]).unwrap();
        let x = a.alloc(100, 0).unwrap();
        let y = a.alloc(100, 0).unwrap();
        a.free(x).unwrap();
        a.free(y).unwrap();
        assert_eq!(a.stats().largest_free, 1 << 16);
        a.check_invariants();
    }

    #[test]
    fn errors() {
        let mut s = slots(8);
        let a = A::new(1 << 16, &mut s[..]).unwrap();
        assert_eq!(a.alloc(0, 0), Err(Error::ZeroSize));
        assert_eq!(a.alloc((1 << 16) + 1, 0), Err(Error::TooLarge));
        assert_eq!(a.alloc(u64::MAX, 0), Err(Error::TooLarge));
        assert_eq!(a.alloc(16, 3), Err(Error::BadAlignment));
        assert_eq!(a.alloc(16, 24), Err(Error::BadAlignment));
        assert_eq!(a.alloc(16, 8192), Err(Error::BadAlignment));
        assert_eq!(a.alloc(16, u64::MAX), Err(Error::BadAlignment));

        let x = a.alloc(1000, 0).unwrap();
        assert_eq!(a.alloc(1 << 16, 0), Err(Error::Exhausted));
        assert_eq!(a.free(1 << 16), Err(Error::InvalidOffset));
        assert_eq!(a.free(u64::MAX), Err(Error::InvalidOffset));
        assert_eq!(a.free(x + 1), Err(Error::InvalidOffset));
        assert_eq!(a.free(x + 16), Err(Error::InvalidOffset));
        assert_eq!(a.usable_size(x), Ok(1008));
        // Carved from the end; the free remainder [0, x) was never handed
        // out, so it is not a block anyone may free.
        assert_eq!(x, (1 << 16) - 1008);
        assert_eq!(a.free(0), Err(Error::InvalidOffset));
        assert_eq!(a.usable_size(0), Err(Error::InvalidOffset));
        a.free(x).unwrap();
        assert_eq!(a.free(x), Err(Error::DoubleFree));
        assert_eq!(a.usable_size(x), Err(Error::DoubleFree));

        // Merged into a neighbour: no longer a block start, still reported
        // as a double free while in the ring of recent frees.
        let x = a.alloc(64, 0).unwrap();
        let y = a.alloc(64, 0).unwrap();
        let z = a.alloc(64, 0).unwrap();
        assert_eq!((y, z), (x - 64, x - 128));
        a.free(x).unwrap();
        a.free(y).unwrap(); // absorbs x
        assert_eq!(a.free(y), Err(Error::DoubleFree));
        assert_eq!(a.free(x), Err(Error::DoubleFree));
        assert_eq!(a.usable_size(x), Err(Error::DoubleFree));
        a.check_invariants();
        // Allocated again at the same offset: a legitimate free.
        assert_eq!(a.alloc(64, 0), Ok(x));
        a.free(x).unwrap();
        // Beyond the ring, a merged offset is just invalid (precision limit;
        // x sits in a quick slot until trimmed, see `quick_slots`).
        a.trim();
        for _ in 0..RECENT_FREES {
            // Three blocks: the quick and back slots take one each, the
            // third is merged and remembered.
            let o = a.alloc(16, 0).unwrap();
            let p = a.alloc(16, 0).unwrap();
            let q = a.alloc(16, 0).unwrap();
            a.free(o).unwrap();
            a.free(p).unwrap();
            a.free(q).unwrap();
        }
        assert_eq!(a.free(x), Err(Error::InvalidOffset));
        a.free(z).unwrap();
        assert_eq!(a.stats().largest_free, 1 << 16);
        a.check_invariants();
    }

    #[test]
    fn quick_slots() {
        let mut s = slots(16);
        let a = A::new(1 << 16, &mut s[..]).unwrap();
        // Freed whole into the slot of its class, handed back to the next
        // request of that class: the same offset, sized to the request.
        // (10000 bytes = 625 granules, in the class [624, 640) granules;
        // 9800 rounds up to 613 granules, whose search class is that one.)
        let x = a.alloc(10000, 0).unwrap();
        a.free(x).unwrap();
        a.check_invariants();
        assert_eq!(a.alloc(9800, 0), Ok(x));
        assert_eq!(a.usable_size(x), Ok(9808));
        a.check_invariants();
        a.free(x).unwrap();
        // The block is whole again: 10000 bytes for the next request.
        assert_eq!(a.alloc(9984, 0), Ok(x));
        a.free(x).unwrap();
        // A quick block is a freed block: a second free is a double free
        // however many frees later, and its size is not readable.
        for _ in 0..2 * RECENT_FREES {
            let o = a.alloc(16, 0).unwrap();
            a.free(o).unwrap();
        }
        assert_eq!(a.free(x), Err(Error::DoubleFree));
        assert_eq!(a.usable_size(x), Err(Error::DoubleFree));
        a.check_invariants();
        // A request that needs more alignment than the quick block has is
        // served from the free lists; the block stays.
        let y = a.alloc(10000, 0).unwrap();
        assert_ne!(y % 4096, 0, "test needs a misaligned quick block");
        a.free(y).unwrap();
        let z = a.alloc(10000, 4096).unwrap();
        assert_ne!(z, y);
        a.free(z).unwrap();
        a.check_invariants();

        // An allocation that would fail first returns the quick blocks.
        let mut s = slots(64);
        let b = A::new(1 << 16, &mut s[..]).unwrap();
        let offs: Vec<u64> = (0..16).map(|_| b.alloc(4096, 0).unwrap()).collect();
        for &o in offs.iter().step_by(2) {
            // The first stays whole in its quick slot, the second in its
            // back slot.
            b.free(o).unwrap();
        }
        b.check_invariants();
        let (mut raw_largest, mut kept) = (0, 0);
        b.locked(|t| {
            raw_largest = t.largest_free();
            kept = t.ctl.quick_budget - t.ctl.quick_room;
        });
        assert_eq!((raw_largest, kept), (4096, 8192));
        for &o in offs.iter().skip(1).step_by(2) {
            b.free(o).unwrap();
        }
        assert_eq!(b.alloc(1 << 16, 0), Ok(0));
        b.check_invariants();
        b.free(0).unwrap();
        let st = b.stats();
        assert_eq!((st.in_use, st.live, st.largest_free), (0, 0, 1 << 16));
        b.check_invariants();
    }

    /// A 64 KiB arena of sixteen 4 KiB blocks (zone `k` holds the block at
    /// `k * 4096`), with the blocks at `holes` freed to the free lists.
    fn zoned_arena<'a>(s: &'a mut [ArenaSlot], holes: &[u64]) -> A<'a> {
        let a = A::new(1 << 16, s).unwrap();
        a.locked(|t| assert_eq!((t.geo.zone_shift, t.geo.small), (12, 128)));
        let mut offs: Vec<u64> = (0..16).map(|_| a.alloc(4096, 0).unwrap()).collect();
        offs.sort_unstable();
        assert_eq!(offs, (0..16).map(|k| k * 4096).collect::<Vec<_>>());
        for &h in holes {
            a.free(h).unwrap();
        }
        a.trim();
        a.check_invariants();
        a
    }

    #[test]
    fn small_requests_take_the_lowest_zone() {
        let mut s = slots(64);
        // Zone 10's hole first, shrunk to 2 KiB by a large request (best
        // fit, from the hole's end); then a 4 KiB hole in zone 2.
        let a = zoned_arena(&mut s, &[10 * 4096]);
        assert_eq!(a.alloc(2048, 0), Ok(10 * 4096 + 2048));
        a.free(2 * 4096).unwrap();
        a.trim();
        a.check_invariants();
        // Small (under 128 bytes here): the lowest zone with room, though
        // zone 10's hole is the tighter fit.
        let small = a.alloc(64, 0).unwrap();
        assert_eq!(small, 3 * 4096 - 64);
        // Large: the tightest fit, wherever it is.
        let large = a.alloc(1024, 0).unwrap();
        assert_eq!(large, 10 * 4096 + 1024);
        a.check_invariants();
        // With no room in the low zones, the next zone up that has some.
        let mut s = slots(64);
        let b = zoned_arena(&mut s, &[7 * 4096, 12 * 4096]);
        assert_eq!(b.alloc(16, 0), Ok(8 * 4096 - 16));
        b.check_invariants();
    }

    #[test]
    fn a_free_block_whose_start_moves_down_changes_zone() {
        let mut s = slots(64);
        // Free: zone 3's block. Freeing zone 2's then moves that free
        // block's start back into zone 2 (its predecessor stays allocated).
        let a = zoned_arena(&mut s, &[3 * 4096]);
        a.free(2 * 4096).unwrap();
        a.trim();
        a.check_invariants();
        a.locked(|t| {
            let c = class_of(8192);
            assert_eq!(t.ctl.zones[c], 1 << 2);
            assert_eq!(t.rec(t.ctl.heads[c][2]).offset, 2 * 4096);
        });
        // A small request finds it there; a request for all of it too.
        let small = a.alloc(16, 0).unwrap();
        assert_eq!(small, 4 * 4096 - 16);
        a.free(small).unwrap();
        a.trim();
        assert_eq!(a.alloc(8192, 0), Ok(2 * 4096));
        a.check_invariants();
        // Merging across more zones: free everything but zone 0's block.
        let mut s = slots(64);
        let b = zoned_arena(&mut s, &(1..16).rev().map(|k| k * 4096).collect::<Vec<_>>());
        assert_eq!(b.stats().largest_free, 15 * 4096);
        b.locked(|t| assert_eq!(t.ctl.zones[class_of(15 * 4096)], 1 << 1));
        b.check_invariants();
    }

    #[test]
    fn back_slots() {
        let mut s = slots(64);
        let a = A::new(1 << 20, &mut s[..]).unwrap();
        let kept = |a: &A<'_>| {
            let mut k = (NIL, NIL);
            a.locked(|t| {
                let c = class_of(4096);
                k = (t.ctl.quick[c], t.ctl.quick_back[c]);
            });
            k
        };
        let x = a.alloc(4096, 0).unwrap();
        let y = a.alloc(4096, 0).unwrap();
        let z = a.alloc(4096, 0).unwrap();
        a.free(x).unwrap(); // the quick slot
        a.free(y).unwrap(); // its class's quick slot is taken: the back slot
        let (q, b) = kept(&a);
        assert!(q != NIL && b != NIL);
        a.check_invariants();
        // A kept block is a freed block, in either slot.
        assert_eq!(a.free(y), Err(Error::DoubleFree));
        assert_eq!(a.usable_size(y), Err(Error::DoubleFree));
        let mut live = 0;
        a.locked(|t| live = t.ctl.live); // (`stats` would trim)
        assert_eq!(live, 1);
        // The quick slot serves first, then the back slot (a request of the
        // class below, all of whose sizes the 4 KiB block holds).
        assert_eq!(a.alloc(4096, 0), Ok(x));
        assert_eq!(a.alloc(4080, 0), Ok(y));
        assert_eq!(a.usable_size(y), Ok(4080));
        assert_eq!(kept(&a), (NIL, NIL));
        a.check_invariants();
        // Trim empties both kinds of slot; nothing is lost.
        a.free(x).unwrap();
        a.free(y).unwrap();
        assert!(kept(&a).0 != NIL && kept(&a).1 != NIL);
        a.trim();
        assert_eq!(kept(&a), (NIL, NIL));
        a.free(z).unwrap();
        let st = a.stats();
        assert_eq!((st.in_use, st.live, st.largest_free), (0, 0, 1 << 20));
        a.check_invariants();
    }

    #[test]
    fn quick_slots_may_hold_most_of_the_capacity() {
        // Blocks of three classes, 36 KiB of a 64 KiB arena, all kept whole:
        // a budget of half the capacity would turn the third away (and every
        // later block of a class not kept yet, until a failure trims).
        let sizes = [8192, 12288, 16384];
        let mut s = slots(64);
        let a = A::new(1 << 16, &mut s[..]).unwrap();
        let offs: Vec<u64> = sizes.iter().map(|&n| a.alloc(n, 0).unwrap()).collect();
        for &o in &offs {
            a.free(o).unwrap();
        }
        let mut kept = 0;
        a.locked(|t| kept = t.ctl.quick_budget - t.ctl.quick_room);
        assert_eq!(kept, 36 << 10);
        a.check_invariants();
        // Each comes back to the next request of its size.
        for (&o, n) in offs.iter().zip(sizes) {
            assert_eq!(a.alloc(n, 0), Ok(o));
        }
        a.check_invariants();
    }

    #[test]
    fn alignment_slack_is_returned() {
        let mut s = slots(16);
        let a = A::new(1 << 16, &mut s[..]).unwrap();
        // [0, 65536): the end minus 48 bytes, aligned down to 4096, leaves
        // 4048 bytes of slack after the request.
        let x = a.alloc(48, 4096).unwrap();
        assert_eq!(x, (1 << 16) - 4096);
        assert_eq!(a.usable_size(x), Ok(48));
        let st = a.stats();
        assert_eq!(
            (st.in_use, st.live, st.largest_free),
            (48, 1, (1 << 16) - 4096)
        );
        a.check_invariants();
        // A default-aligned request cannot reach into the slack.
        let y = a.alloc(16, 0).unwrap();
        assert_eq!(y, x - 16);
        a.free(x).unwrap();
        a.free(y).unwrap();
        let st = a.stats();
        assert_eq!((st.in_use, st.live, st.largest_free), (0, 0, 1 << 16));
        a.check_invariants();
    }

    #[test]
    fn exhausted_and_exact_fill() {
        let mut s = slots(64);
        let a = A::new(1 << 16, &mut s[..]).unwrap();
        let offs: Vec<u64> = (0..16).map(|_| a.alloc(4096, 0).unwrap()).collect();
        assert_eq!(a.alloc(1, 0), Err(Error::Exhausted));
        let st = a.stats();
        assert_eq!(
            (st.in_use, st.free, st.largest_free, st.live),
            (1 << 16, 0, 0, 16)
        );
        for o in offs {
            a.free(o).unwrap();
        }
        // A whole-capacity request finds the single block even though the
        // rounded class search cannot (exact-fit fallback), at any alignment.
        assert_eq!(a.alloc(1 << 16, 4096), Ok(0));
        a.free(0).unwrap();
        // Odd capacity: the last block is smaller than its class boundary.
        let mut s2 = slots(8);
        let b = A::new(1000 * 16, &mut s2[..]).unwrap();
        assert_eq!(b.alloc(1000 * 16, 0), Ok(0));
        b.free(0).unwrap();
        assert_eq!(b.alloc(1000 * 16 - 5, 0), Ok(0));
    }

    #[test]
    fn metadata_full_changes_nothing() {
        let mut s = slots(2);
        let a = A::new(1 << 16, &mut s[..]).unwrap();
        let x = a.alloc(100, 0).unwrap(); // 2 records: x + remainder
        let before = a.stats();
        assert_eq!(a.alloc(100, 0), Err(Error::MetadataFull));
        assert_eq!(a.stats(), before);
        a.check_invariants();
        // Taking the whole remainder needs no split.
        let y = a.alloc((1 << 16) - 112, 0).unwrap();
        a.free(x).unwrap();
        a.free(y).unwrap();
        assert_eq!(a.stats().largest_free, 1 << 16);

        // One record: only whole-arena allocations.
        let mut s1 = slots(1);
        let b = A::new(4096, &mut s1[..]).unwrap();
        assert_eq!(b.alloc(16, 0), Err(Error::MetadataFull));
        assert_eq!(b.alloc(4096, 0), Ok(0));
        b.free(0).unwrap();

        // An aligned request needing a split, with every record taken.
        let mut s2 = slots(2);
        let c = A::new(1 << 16, &mut s2[..]).unwrap();
        let x = c.alloc(16, 0).unwrap();
        let before = c.stats();
        assert_eq!(c.alloc(16, 4096), Err(Error::MetadataFull));
        assert_eq!(c.stats(), before);
        c.check_invariants();
        c.free(x).unwrap();
        // Alignment slack stays inside the allocated block: an aligned
        // split needs one record, like any other.
        let mut s3 = slots(3);
        let c = A::new(1 << 16, &mut s3[..]).unwrap();
        let x = c.alloc(16, 0).unwrap();
        let y = c.alloc(16, 4096).unwrap();
        assert_eq!(c.alloc(16, 0), Err(Error::MetadataFull));
        c.check_invariants();
        c.free(x).unwrap();
        c.free(y).unwrap();
        assert_eq!(c.stats().largest_free, 1 << 16);
    }

    #[test]
    fn alignment_all_powers_of_two() {
        let mut s = slots(256);
        let a = A::new(1 << 20, &mut s[..]).unwrap();
        let mut live = Vec::new();
        for round in 0..2 {
            for k in 0..=12 {
                let align = 1u64 << k;
                let size = 1 + round * 4000 + k as u64 * 7;
                let o = a.alloc(size, align).unwrap();
                assert_eq!(o % align, 0, "align {align}");
                assert_eq!(o % GRANULE, 0);
                live.push(o);
            }
        }
        assert_eq!(a.alloc(8, 0).unwrap() % GRANULE, 0);
        a.check_invariants();
        for o in live {
            a.free(o).unwrap();
        }
        a.check_invariants();
    }

    /// Random alloc/free against a shadow model.
    fn model_run(seed: u64, steps: usize, cap: u64, max_blocks: usize) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut s = slots(max_blocks);
        let a = A::new(cap, &mut s[..]).unwrap();
        let mut model: BTreeMap<u64, u64> = BTreeMap::new(); // offset -> rounded size
        let mut in_use = 0u64;
        let mut last_freed: Option<u64> = None;
        // The size of the last block freed: requests near it exercise the
        // quick slots, which `stats` (it trims) would empty, so only every
        // eighth step measures with it.
        let mut last_size = GRANULE;
        for step in 0..steps {
            let measured = step % 8 == 0;
            let r = rng.random_range(0..100);
            if r < 55 || model.is_empty() {
                let size = match rng.random_range(0..5) {
                    0 => rng.random_range(1..64),
                    1 => rng.random_range(1..4096),
                    2 => rng.random_range(1..cap / 8),
                    3 => 1u64 << rng.random_range(4..16),
                    _ => last_size
                        .saturating_sub(rng.random_range(0..last_size / 16 + 1))
                        .max(1),
                };
                let align = match rng.random_range(0..3) {
                    0 => 0,
                    _ => 1u64 << rng.random_range(0..=12),
                };
                let before = measured.then(|| a.stats());
                match a.alloc(size, align) {
                    Ok(o) => {
                        let rsize = align_up(size, GRANULE);
                        assert!(o + rsize <= cap);
                        assert_eq!(o % align.max(1), 0);
                        if let Some((&po, &ps)) = model.range(..o).next_back() {
                            assert!(po + ps <= o, "overlaps predecessor");
                        }
                        if let Some((&no, _)) = model.range(o..).next() {
                            assert!(o + rsize <= no, "overlaps successor");
                        }
                        assert_eq!(a.usable_size(o), Ok(rsize));
                        model.insert(o, rsize);
                        in_use += rsize;
                    }
                    Err(e @ (Error::Exhausted | Error::MetadataFull)) => {
                        if let Some(before) = before {
                            assert_eq!(a.stats(), before, "failed alloc changed state");
                            // Good fit: a default-aligned request fails only
                            // if nothing fits or the fitting blocks share
                            // its class.
                            let rsize = align_up(size, GRANULE);
                            if e == Error::Exhausted && align <= GRANULE {
                                let big = before.largest_free;
                                assert!(rsize > big || mapping(rsize) == mapping(big));
                            }
                        }
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            } else if r < 95 {
                let k = rng.random_range(0..model.len());
                let (&o, &sz) = model.iter().nth(k).unwrap();
                a.free(o).unwrap();
                model.remove(&o);
                in_use -= sz;
                last_freed = Some(o);
                last_size = sz;
            } else if let Some(o) = last_freed.take() {
                if !model.contains_key(&o) {
                    let e = a.free(o).unwrap_err();
                    assert!(e == Error::DoubleFree || e == Error::InvalidOffset);
                }
            } else {
                let o = rng.random_range(0..cap * 2) & !(GRANULE - 1);
                if !model.contains_key(&o) {
                    assert!(a.free(o).is_err());
                }
            }
            a.locked(|t| assert_eq!((t.ctl.in_use, t.ctl.live), (in_use, model.len() as u64)));
            if measured {
                let st = a.stats();
                assert_eq!(st.in_use, in_use);
                assert_eq!(st.live, model.len() as u64);
                assert_eq!(st.free, cap - in_use);
                assert!(st.largest_free <= st.free);
            }
            if step % 16 == 0 {
                a.check_invariants();
            }
        }
        a.check_invariants();
        for (o, _) in core::mem::take(&mut model) {
            a.free(o).unwrap();
        }
        a.check_invariants();
        let st = a.stats();
        assert_eq!((st.in_use, st.live, st.largest_free), (0, 0, cap));
        assert_eq!(a.alloc(cap, 4096), Ok(0));
    }

    #[test]
    fn model_property() {
        let (seeds, steps) = if cfg!(miri) { (3, 150) } else { (24, 3000) };
        for seed in 0..seeds {
            // Ample metadata, then tight metadata to exercise MetadataFull.
            model_run(seed, steps, 1 << 20, 512);
            model_run(seed + 1000, steps, (1 << 20) + 48, 24);
        }
    }

    fn fill_utilization(cap: u64, size: u64, max_blocks: usize) -> f64 {
        let mut s = slots(max_blocks);
        let a = A::new(cap, &mut s[..]).unwrap();
        let mut n = 0u64;
        loop {
            match a.alloc(size, 0) {
                Ok(_) => n += 1,
                Err(Error::Exhausted) => break,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        (n * size) as f64 / cap as f64
    }

    #[test]
    fn utilization_fill_to_full() {
        let (cap, shifts): (u64, &[u32]) = if cfg!(miri) {
            (1 << 20, &[12])
        } else {
            (64 << 20, &[12, 13, 14, 15, 16, 17, 18, 19, 20])
        };
        for &k in shifts {
            let p = 1u64 << k;
            for size in [p, p + 17, p - 17, p * 9 / 10, p * 11 / 10] {
                let max_blocks = (cap / size) as usize + 8;
                let u = fill_utilization(cap, size, max_blocks);
                assert!(u >= 0.97, "size {size}: utilization {u}");
            }
        }
    }

    /// Mooncake's allocator benchmark, random sizes: 1 KiB..=64 MiB into a
    /// 2 GiB pool, evicting random blocks until each request fits; the mean
    /// of the allocated ratio after every request.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn utilization_random_with_evictions() {
        let cap = 2u64 << 30;
        let mut s = slots(8192);
        let a = A::new(cap, &mut s[..]).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut requested = 0u64;
        let alloc = |rng: &mut StdRng, live: &mut Vec<(u64, u64)>, requested: &mut u64| {
            let size = rng.random_range(1024..=64u64 << 20);
            loop {
                match a.alloc(size, 0) {
                    Ok(o) => {
                        live.push((o, size));
                        *requested += size;
                        return;
                    }
                    Err(Error::Exhausted) => {
                        let (o, sz) = live.swap_remove(rng.random_range(0..live.len()));
                        a.free(o).unwrap();
                        *requested -= sz;
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        };
        while requested < cap - (64 << 20) {
            alloc(&mut rng, &mut live, &mut requested);
        }
        let (mut sum, n) = (0.0, 20_000);
        for _ in 0..n {
            alloc(&mut rng, &mut live, &mut requested);
            sum += requested as f64 / cap as f64;
        }
        let avg = sum / n as f64;
        // Random eviction leaves holes no placement policy can avoid: this
        // measures ~0.867 (Mooncake's OffsetAllocator reports 0.84 here).
        assert!(avg >= 0.85, "average utilization {avg}");
    }

    #[test]
    fn concurrent_stress() {
        let (threads, iters) = if cfg!(miri) { (4, 40) } else { (4, 20_000) };
        let cap = 1u64 << 24;
        let mut s = slots(4096);
        let a = A::new(cap, &mut s[..]).unwrap();
        let owners: Mutex<BTreeMap<u64, (u64, usize)>> = Mutex::new(BTreeMap::new());
        std::thread::scope(|sc| {
            for t in 0..threads {
                let (a, owners) = (&a, &owners);
                sc.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(t as u64);
                    let mut mine: Vec<u64> = Vec::new();
                    for _ in 0..iters {
                        if mine.len() < 64 && rng.random_bool(0.6) {
                            let size = rng.random_range(1..65536);
                            let align = 1u64 << rng.random_range(0..=12);
                            let Ok(o) = a.alloc(size, align) else {
                                continue;
                            };
                            assert_eq!(o % align, 0);
                            let mut m = owners.lock().unwrap();
                            if let Some((&po, &(ps, _))) = m.range(..o).next_back() {
                                assert!(po + ps <= o, "overlap");
                            }
                            if let Some((&no, _)) = m.range(o..).next() {
                                assert!(o + size <= no, "overlap");
                            }
                            m.insert(o, (size, t));
                            mine.push(o);
                        } else if !mine.is_empty() {
                            let o = mine.swap_remove(rng.random_range(0..mine.len()));
                            assert_eq!(owners.lock().unwrap().remove(&o).unwrap().1, t);
                            a.free(o).unwrap();
                        }
                    }
                    for o in mine {
                        owners.lock().unwrap().remove(&o);
                        a.free(o).unwrap();
                    }
                });
            }
        });
        a.check_invariants();
        let st = a.stats();
        assert_eq!((st.in_use, st.live, st.largest_free), (0, 0, cap));
    }

    #[test]
    fn arena_is_sync_and_send() {
        fn is_sync<T: Sync + Send>() {}
        is_sync::<A<'static>>();
    }
}
