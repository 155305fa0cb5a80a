//! O(1) address translation (pure `core`, no `alloc`, lock-free reads).
//!
//! A [`Table`] answers three questions, each in constant time and without a
//! lock:
//!
//! * [`Table::resolve`]: `(segment id, offset, len)` -> local address;
//! * [`Table::locate`]: local address -> `(segment id, offset)`;
//! * [`Table::relocate`]: `(peer, remote address, len)` -> local address (the
//!   drop-in for Mooncake's `relocateSharedMemoryAddress`).
//!
//! # Storage layout
//!
//! All state lives in the caller's `[AtomicU64]` (sized by
//! [`Table::words_for`]), carved into four regions:
//!
//! | region  | words                                   | contents |
//! |---------|-----------------------------------------|----------|
//! | header  | 8                                       | writer lock, node bump pointer, range-record bump pointer and free list, counters |
//! | roots   | `1 + max_peers`                         | one root word per *address space*: space 0 is the local space of the segments, space `1 + p` is peer `p` |
//! | records | `4 * (max_segments + max_ranges)`       | records `0..max_segments` are the segment slots (indexed by id), the rest are range records |
//! | nodes   | `4096 * (1 + max_nodes)`                | radix nodes, 4096 words (32 KiB) each; node 0 is the *empty node* |
//!
//! A record is four words `[seq, start, len, value]`: `seq` holds the owning
//! address space in its high 32 bits and a seqlock counter in its low 32
//! bits; `start`/`len` describe the range (`len == 0`: free); `value` is the
//! local base of a remote range (and the free-list link of a free record).
//!
//! # The radix index
//!
//! Each address space has a direct-mapped radix tree over the address bits,
//! like a page table. Addresses must lie below `2^48` ([`ADDR_BITS`]). The key
//! of an address is `addr >> g`, where the *granule* `G = 2^g` is a power of
//! two with `4096 <= G <= 2^36` and `G <=` the shortest registered
//! *footprint* (a range's length rounded up to the page size). Nodes have
//! 4096 entries (12 key bits), so a tree has `ceil((48 - g) / 12)` levels:
//! 3 for 4 KiB granules, 2 from 16 MiB, 1 from 64 GiB. Interior entries hold
//! the *node reference* of the child: the offset of its first word from the
//! start of the node region. Reference 0 is the *empty node*, which is never
//! handed out or written, so all its entries stay 0: an empty interior entry
//! (0) leads a reader there, and from there to an empty leaf entry, without
//! a test of its own. A leaf entry covers one `G`-aligned *window* and has
//! one of two forms:
//!
//! * a *reference pair*: two 32-bit record references (`record index + 1`,
//!   0 = empty; references are below `2^31`, so bit 63 is clear). Since the
//!   footprints of one space are page-aligned, disjoint and at least `G`
//!   long, any window meets at most two of them, so two references always
//!   suffice and a lookup does at most two range compares. The low
//!   reference, which readers try first, is the range that covers more of
//!   the window;
//! * a *direct* entry, for a window that lies wholly inside one remote range:
//!   `1 << 63 | ref << 36 | (delta >> 12) mod 2^36`, where `delta` is the
//!   range's `local_base - remote_base` (mod `2^64`; page aligned, and taken
//!   as a signed number in `[-2^47, 2^47)`) and `ref` the range's record
//!   reference (below `2^27`). `relocate` answers an access that stays
//!   inside the window from this one word, as `addr + delta` (the delta
//!   field shifted up to bit 63 and arithmetically back down to bit 12),
//!   without reading the record; anything else (an access running past the
//!   window, `locate`, a remove) follows `ref` to the record. A window gets
//!   a direct entry when it is filled and the encoding fits (with local and
//!   remote addresses both below `2^47`, as user addresses are, the delta
//!   always does); the local space (whose `locate` needs the segment id and
//!   offset, not a local address) always uses reference pairs.
//!
//! With ranges of a few granules or more, most lookups therefore touch one
//! cache line of the index (plus the few, hot, upper-level lines) and none of
//! the records: the lookup cost stays flat as the number of ranges grows.
//!
//! The root word of a space is `root << 16 | hops << 12 | g << 6 | ksh`:
//! `root` is the node reference of the root node (0 = empty space: the empty
//! node),
//! `hops` has one bit per interior level (`levels - 1` low bits set: 0, 1
//! or 3), and `ksh = 64 - g - 12 * levels` is the *key shift*: `addr << ksh`
//! left-aligns the key so that the top level's slot is its top 12 bits, and
//! each level below takes the next 12 after a constant shift (key bits above
//! the top level fall off the word). The key shift sits in the low bits, so
//! the root word itself is the shift count; the walk tests one `hops` bit
//! per level instead of counting. Readers get the tree, its depth and its
//! granule from one load, and walk it with constant shifts and one bounds
//! check per node reference. (Under Miri, whose nodes are smaller and trees
//! deeper, `hops` takes up to 5 bits and `root` starts at bit 20.)
//!
//! When a range with a footprint shorter
//! than `G` arrives, the writer builds a complete new tree with the smaller
//! granule from the space's live records, then publishes it with one store to
//! the root word. The granule never grows back.
//!
//! # Read protocol
//!
//! Readers never lock, never spin and never write; they are wait-free.
//!
//! * Index words (root words, interior and leaf entries) are published by the
//!   writer with `Release` stores (a fresh node is zeroed before it is linked)
//!   and read with `Acquire` loads.
//! * Records are read under a per-record seqlock: load `seq` (`Acquire`), the
//!   three data words (`Relaxed`), an `Acquire` fence, `seq` again. The
//!   snapshot is used only if both `seq` loads are equal and even; an odd or
//!   changed `seq` means the record is being written, which only happens to a
//!   record that is not (or no longer) linked from the live index, so the
//!   reader treats it as a miss. The writer makes `seq` odd, issues a `Release`
//!   fence, stores the data, then stores the even `seq` with `Release`. A reader
//!   therefore never combines fields of two different ranges.
//! * A direct leaf entry is its own snapshot: one atomic word, written only
//!   when its window is empty (no other range can share a window that lies
//!   inside one range) and cleared to 0 when the range is removed. A reader
//!   that loads it answers with the mapping it describes, which was
//!   registered at the instant of the load; a stale tree (replaced by a
//!   rebuild) is never written again, so its entries describe mappings that
//!   were registered when the reader loaded its root word. The entry's
//!   window is only known to lie inside the range for real addresses, so the
//!   reader checks `addr < 2^48` there (the walk drops the address bits above
//!   the tree's top level) and falls back to the record when the access runs
//!   past the window.
//! * A reader may still follow a stale reference (an entry it loaded just
//!   before a remove, or a whole tree replaced by a rebuild). The record it
//!   reaches is then free (`len == 0`), or belongs to another space (tag
//!   mismatch), or is a live range of the same space; the reader only answers
//!   when the address lies in the snapshot, so every answer is a mapping that
//!   was registered at some instant during the call.
//! * A batch ([`Table::relocate_batch`]) decodes the root word once and
//!   loads it again every 8 accesses, stopping to start over on the new tree
//!   when it changed. It loads the index entries afresh for every access, as
//!   single calls do; only a rebuild racing with it is seen later, within 8
//!   accesses.
//!
//! Writers (`insert_*` / `remove_*`) are serialized by a spinlock in the
//! header word 0 and are expected to be rare.
//!
//! # Reuse policy and lifetimes
//!
//! * Radix nodes come from a bump allocator and are **never reused** while
//!   the table lives: nodes stay linked when the ranges that needed them are
//!   removed (and serve later inserts in the same region), and a rebuild
//!   abandons the old tree. Running out of nodes yields [`Error::TableFull`].
//!   A failed rebuild gives its nodes back (they were never published).
//! * Range records are recycled through a free list as soon as their range is
//!   removed; the seqlock and the address/tag checks above make that safe.
//! * The table never maps or unmaps memory. An address obtained from a lookup
//!   that raced with (or preceded) a remove may point into the removed
//!   mapping, so callers must keep a mapping alive until no reader can still
//!   use a pointer obtained before its remove. Mooncake keeps its mappings
//!   until shutdown, which satisfies this.
//!
//! # Conventions
//!
//! * Bases must be page aligned ([`PAGE_SIZE`]); lengths are arbitrary but
//!   non-zero. A range `[base, base + len)` must end at or below `2^48`.
//! * Lookups take a `len` that may be zero: then only the start address (or
//!   offset) is checked, and it must lie *inside* the range. A start one past
//!   the end is [`Error::OutOfBounds`] for `resolve` and [`Error::NotFound`]
//!   for `locate`/`relocate`.
//! * Inserts cost `O(footprint / G)` (every granule of the range is linked);
//!   removes likewise; a rebuild is `O(max_ranges + total footprint / G)`.

use crate::{Error, Result};
use core::hint::black_box;
use core::ops::Deref;
use core::sync::atomic::{
    fence, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

/// Page size every base must be aligned to, and the smallest granule.
pub const PAGE_SIZE: u64 = 4096;
/// Addresses (local and remote) must lie below `2^ADDR_BITS`.
pub const ADDR_BITS: u32 = 48;

const PAGE_SHIFT: u32 = 12;
/// Key bits per radix level. Under Miri, whose data-race detector makes every
/// atomic access expensive, nodes are 64 entries instead of 4096 so the tests
/// (which zero every node they take) finish in minutes; all tree code is
/// generic in this constant, only the number of levels changes.
const LEVEL_BITS: u32 = if cfg!(miri) { 6 } else { 12 };
const FANOUT: usize = 1 << LEVEL_BITS;
const SLOT_MASK: u64 = FANOUT as u64 - 1;
const NODE_WORDS: usize = FANOUT;
const MAX_GRANULE_SHIFT: u32 = ADDR_BITS - LEVEL_BITS;
const ADDR_LIMIT: u64 = 1 << ADDR_BITS;

const HEADER_WORDS: usize = 8;
const H_LOCK: usize = 0;
const H_NEXT_NODE: usize = 1;
const H_NEXT_RANGE: usize = 2;
const H_FREE_RANGE: usize = 3;
const H_SEGMENTS: usize = 4;
const H_RANGES: usize = 5;
const H_REBUILDS: usize = 6;

const REC_WORDS: usize = 4;
const R_SEQ: usize = 0;
const R_START: usize = 1;
const R_LEN: usize = 2;
const R_VALUE: usize = 3;

const LOCAL_SPACE: usize = 0;

/// Leaf entry flag of a *direct* entry (module documentation): bit 63, never
/// set in a reference pair as references are below `2^31`.
const DIRECT: u64 = 1 << 63;
/// A direct entry's record reference: bits 36..63, below `2^27`.
const DIRECT_REF_SHIFT: u32 = 36;
const DIRECT_REF_MASK: u64 = (1 << 27) - 1;
/// A direct entry's `local - remote` delta, in pages, two's complement in
/// its low 36 bits: deltas in `[-2^47, 2^47)`.
const DIRECT_DELTA_BITS: u32 = 36;
const DIRECT_DELTA_MASK: u64 = (1 << DIRECT_DELTA_BITS) - 1;
const DIRECT_DELTA_LIMIT: i64 = 1 << (DIRECT_DELTA_BITS + PAGE_SHIFT - 1);

/// Storage a [`Table`] can live in: a slice of `AtomicU64` behind `Deref`.
///
/// # Safety
/// Every `deref` call must return a slice of the same length over the same
/// memory. The table checks that length once, in [`Table::new`], and then
/// reads words whose indices follow from its configuration (and from index
/// words it bounds-checks against the configuration) without bounds checks.
pub unsafe trait TableStorage: Deref<Target = [AtomicU64]> {}

// SAFETY: a shared slice reborrows the same memory every time.
unsafe impl TableStorage for &[AtomicU64] {}

// SAFETY: the table only ever has `&` access to the vector, which therefore
// never reallocates: every deref returns its one buffer with its one length.
#[cfg(feature = "std")]
unsafe impl TableStorage for std::vec::Vec<AtomicU64> {}

// SAFETY: a boxed slice cannot change its buffer or length at all.
#[cfg(feature = "std")]
unsafe impl TableStorage for std::boxed::Box<[AtomicU64]> {}

/// One access for [`Table::relocate_batch`]: `len` bytes at the peer's
/// address `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteSpan {
    /// The peer's address of the first byte.
    pub addr: u64,
    /// Bytes accessed from `addr` (0: only `addr` is checked).
    pub len: u64,
}

/// Capacities of a [`Table`]; storage is sized from them by [`Table::words_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// Number of local segment ids; valid ids are `0..max_segments`.
    pub max_segments: u32,
    /// Number of peers; valid peer ids are `0..max_peers`.
    pub max_peers: u32,
    /// Number of remote range records shared by all peers.
    pub max_ranges: u32,
    /// Number of radix nodes (4096 words = 32 KiB each) shared by all address
    /// spaces. Nodes are never reused, see the module documentation.
    pub max_nodes: u32,
}

impl TableConfig {
    /// A configuration with the given capacities.
    pub const fn new(max_segments: u32, max_peers: u32, max_ranges: u32, max_nodes: u32) -> Self {
        TableConfig {
            max_segments,
            max_peers,
            max_ranges,
            max_nodes,
        }
    }
}

impl Default for TableConfig {
    /// 1024 segments, 64 peers, 65536 remote ranges, 256 nodes (about 10.6 MiB).
    fn default() -> Self {
        TableConfig::new(1024, 64, 65536, 256)
    }
}

/// A snapshot of a [`Table`]'s occupancy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Registered local segments.
    pub segments: u64,
    /// Registered remote ranges, all peers together.
    pub ranges: u64,
    /// Radix nodes taken from the node region (never returned).
    pub nodes_used: u64,
    /// Size of the node region.
    pub nodes_total: u64,
    /// Index rebuilds caused by a granule shrink (or a first insert).
    pub rebuilds: u64,
}

/// Word offsets of the regions inside the storage.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Number of records (segment slots and range records).
    n_records: usize,
    roots: usize,
    records: usize,
    nodes: usize,
    /// `max_nodes * NODE_WORDS + 1`, the number of node words after the
    /// empty node's, plus one: a node reference `n` is the start of a whole
    /// node inside the region iff `n < node_lim` and it is node aligned; the
    /// readers check only the first part, which already keeps every word
    /// `nodes + n + (0..NODE_WORDS)` inside the storage.
    node_lim: usize,
    total: usize,
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return None,
        }
    };
}

impl Layout {
    const fn of(cfg: &TableConfig) -> Option<Layout> {
        let records_n = cfg.max_segments as u64 + cfg.max_ranges as u64;
        // References are `record index + 1` in 31 bits (bit 63 of a leaf
        // entry marks a direct entry).
        if records_n >= 1 << 31 {
            return None;
        }
        if cfg.max_nodes == u32::MAX {
            return None;
        }
        let roots = HEADER_WORDS;
        let records = tri!(roots.checked_add(1 + cfg.max_peers as usize));
        let rec_words = tri!((records_n as usize).checked_mul(REC_WORDS));
        let nodes = tri!(records.checked_add(rec_words));
        // `1 +`: node 0 is the empty node (`max_nodes < u32::MAX`).
        let node_words = tri!((1 + cfg.max_nodes as usize).checked_mul(NODE_WORDS));
        let total = tri!(nodes.checked_add(node_words));
        Some(Layout {
            n_records: records_n as usize,
            roots,
            records,
            nodes,
            node_lim: node_words - (NODE_WORDS - 1),
            total,
        })
    }
}

/// A consistent snapshot of one record.
#[derive(Debug, Clone, Copy)]
struct Snap {
    idx: usize,
    start: u64,
    len: u64,
    value: u64,
}

impl Snap {
    /// The local address of an access of `len` bytes at `addr`, which lies
    /// in this remote range (`addr - start < len`, as `match_leaf` and
    /// `match_ref` guarantee): `value` moved by the offset, or
    /// [`Error::OutOfBounds`] if the access runs past the range's end.
    #[inline(always)]
    fn relocate(&self, addr: u64, len: u64) -> Result<usize> {
        let off = addr.wrapping_sub(self.start);
        debug_assert!(off < self.len);
        if len > self.len - off {
            return Err(Error::OutOfBounds);
        }
        Ok(self.value.wrapping_add(off) as usize)
    }
}

/// Releases the writer lock on drop.
struct WriterGuard<'a>(&'a AtomicU64);

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

#[inline(always)]
const fn levels(g: u32) -> u32 {
    (ADDR_BITS - g).div_ceil(LEVEL_BITS)
}

/// The most interior levels a tree has (`levels(PAGE_SHIFT) - 1`): 2 with
/// 12-bit nodes, 5 under Miri.
const MAX_HOPS: u32 = levels(PAGE_SHIFT) - 1;

/// Root word fields (see the module documentation): the key shift in bits
/// 0..6, the granule shift in bits 6..12, one bit per interior level from
/// bit 12, the root node from `ROOT_NODE_SHIFT`.
const ROOT_G_SHIFT: u32 = 6;
const ROOT_HOPS_SHIFT: u32 = 12;
const ROOT_NODE_SHIFT: u32 = if cfg!(miri) { 20 } else { 16 };
const ROOT_FIELD_MASK: u64 = 0x3f;
const _: () = assert!(ROOT_HOPS_SHIFT + MAX_HOPS <= ROOT_NODE_SHIFT);
// The walk adds `LEVEL_BITS` per level to the key shift field (at most 16).
const _: () = assert!(16 + MAX_HOPS * LEVEL_BITS < 64);

/// The root word of a tree whose root node has node reference `node_ref`,
/// with granule shift `g`.
#[inline(always)]
const fn root_word(node_ref: usize, g: u32) -> u64 {
    let l = levels(g);
    // The key shift: `addr << ksh` puts the top level's slot bits at the
    // top of the word (`g + l * LEVEL_BITS` is at most 59, so `ksh >= 5`).
    let ksh = 64 - g - l * LEVEL_BITS;
    // Bit `ROOT_HOPS_SHIFT + i` set for every interior level `i < l - 1`.
    let hops = ((1u64 << (l - 1)) - 1) << ROOT_HOPS_SHIFT;
    (node_ref as u64) << ROOT_NODE_SHIFT | hops | (g as u64) << ROOT_G_SHIFT | ksh as u64
}

/// Accesses per root-word check in [`Table::relocate_direct_run`]'s loop.
const RUN_UNROLL: usize = 8;
// The module docs, `Table::relocate_batch`'s and the README give this number
// as "8 accesses": change them with it.
const _: () = assert!(RUN_UNROLL == 8, "update the docs that say 8 accesses");

/// The `local - remote` delta of direct leaf entry `e`: its delta field,
/// sign-extended (the flag and the reference shift out).
#[inline(always)]
fn direct_delta(e: u64) -> u64 {
    ((e << (64 - DIRECT_DELTA_BITS)) as i64 >> (64 - DIRECT_DELTA_BITS - PAGE_SHIFT)) as u64
}

/// One tree's root word, decoded for a run of lookups
/// ([`Table::relocate_direct_run`]).
///
/// The key shift is kept as a multiplier and the granule as a mask, so the
/// loop shifts by no register: x86 takes shift counts in one register
/// only, and the two counts would make the compiler spill.
struct Tree<'a> {
    /// The storage from the node region on.
    region: &'a [AtomicU64],
    /// Node reference of the root node (below `lim`).
    top: usize,
    /// [`Layout::node_lim`].
    lim: usize,
    /// `1 << ksh`: `addr * key_mul` is the left-aligned key of `walk`.
    key_mul: u64,
    /// The address bits at and above the granule shift `g`.
    outside: u64,
    /// [`ADDR_LIMIT`], kept as a value: as a constant it is a 64-bit
    /// immediate, which the compiler loaded afresh for every access (one
    /// instruction of 36 per access; the batch is 2% faster without it).
    addr_limit: u64,
}

impl Tree<'_> {
    /// [`Table::direct_in`], for a tree of `HOPS`
    /// interior levels. The window test is a mask that also rejects
    /// `len >= G` (so that `addr + len` cannot wrap; a whole-window access
    /// is answered through the record instead, the same).
    #[inline(always)]
    fn direct<const HOPS: u32>(&self, addr: u64, len: u64) -> Option<usize> {
        if addr >= self.addr_limit {
            return None;
        }
        // Level `h` takes the top `LEVEL_BITS` bits of the key shifted left
        // by `h * LEVEL_BITS`, as in `walk`.
        let key = addr.wrapping_mul(self.key_mul);
        let at = self.top + (key >> (64 - LEVEL_BITS)) as usize;
        debug_assert!(self.top < self.lim && at < self.region.len());
        // SAFETY: `top < lim` (a `Tree` is only made after that check) and
        // the slot is below `NODE_WORDS`, so `at` lies inside the node
        // region (see `Layout::node_lim`), which `region` starts with.
        let mut e = unsafe { self.region.get_unchecked(at) }.load(Acquire);
        let mut h = 1;
        while h <= HOPS {
            let node = e as usize;
            if node >= self.lim {
                return None;
            }
            let at = node + ((key << (h * LEVEL_BITS)) >> (64 - LEVEL_BITS)) as usize;
            debug_assert!(at < self.region.len());
            // SAFETY: as for the root node (`node < lim`, checked).
            e = unsafe { self.region.get_unchecked(at) }.load(Acquire);
            h += 1;
        }
        let last = addr.wrapping_add(len).wrapping_sub(1);
        if e & DIRECT == 0 || ((last ^ addr) | len) & self.outside != 0 {
            return None;
        }
        Some(addr.wrapping_add(direct_delta(e)) as usize)
    }
}

/// Validates a range to be indexed and returns the end of its footprint.
fn footprint_end(start: u64, len: u64) -> Result<u64> {
    if len == 0 || start % PAGE_SIZE != 0 {
        return Err(Error::InvalidArgument);
    }
    let fp = len
        .checked_add(PAGE_SIZE - 1)
        .ok_or(Error::InvalidArgument)?
        & !(PAGE_SIZE - 1);
    match start.checked_add(fp) {
        Some(end) if end <= ADDR_LIMIT => Ok(end),
        _ => Err(Error::InvalidArgument),
    }
}

/// The largest granule shift usable for a footprint of `fp` bytes.
fn granule_for(fp: u64) -> u32 {
    (63 - fp.leading_zeros()).clamp(PAGE_SHIFT, MAX_GRANULE_SHIFT)
}

/// Address translation table over caller-provided atomic storage.
///
/// `Send`/`Sync` whenever the storage handle `S` is. See the module
/// documentation for the layout and the lock-free read protocol.
pub struct Table<S: TableStorage> {
    storage: S,
    cfg: TableConfig,
    lay: Layout,
}

impl<S: TableStorage> core::fmt::Debug for Table<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Table")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<S: TableStorage> Table<S> {
    /// Number of `AtomicU64` words of storage a table with `cfg` needs.
    ///
    /// Returns 0 when the configuration is invalid (more than `2^31 - 1`
    /// segments plus ranges, `max_nodes == u32::MAX`, or a size that
    /// overflows `usize`); [`Table::new`] rejects such configurations.
    pub const fn words_for(cfg: &TableConfig) -> usize {
        match Layout::of(cfg) {
            Some(l) => l.total,
            None => 0,
        }
    }

    /// Builds a table over `storage`, (re)initializing it.
    ///
    /// `storage` must hold at least [`Table::words_for`]`(&cfg)` words; it may
    /// be zeroed (e.g. an anonymous mapping) or hold garbage (a reused `Vec`).
    /// Only the header, roots, records and the empty node are cleared here,
    /// and only words that are not already zero are written, so a fresh
    /// anonymous mapping is not dirtied; nodes are zeroed when they are
    /// taken. No other table may use the same storage at the same time.
    ///
    /// Errors: [`Error::InvalidArgument`] for an invalid configuration or too
    /// small a storage.
    pub fn new(cfg: TableConfig, storage: S) -> Result<Self> {
        let lay = Layout::of(&cfg).ok_or(Error::InvalidArgument)?;
        if storage.len() < lay.total {
            return Err(Error::InvalidArgument);
        }
        for w in &storage[..lay.nodes + NODE_WORDS] {
            if w.load(Relaxed) != 0 {
                w.store(0, Relaxed);
            }
        }
        fence(Release);
        Ok(Table { storage, cfg, lay })
    }

    /// The configuration the table was built with.
    pub fn config(&self) -> TableConfig {
        self.cfg
    }

    /// Current occupancy (each field read independently, without the lock).
    pub fn stats(&self) -> TableStats {
        TableStats {
            segments: self.h(H_SEGMENTS).load(Relaxed),
            ranges: self.h(H_RANGES).load(Relaxed),
            nodes_used: self.h(H_NEXT_NODE).load(Relaxed),
            nodes_total: self.cfg.max_nodes as u64,
            rebuilds: self.h(H_REBUILDS).load(Relaxed),
        }
    }

    /// The granule (in bytes) of the local index, or `None` while it is empty.
    pub fn local_granule(&self) -> Option<u64> {
        self.granule_of(LOCAL_SPACE)
    }

    /// The granule (in bytes) of `peer`'s index, or `None` if the peer is out
    /// of range or never had a range.
    pub fn peer_granule(&self, peer: u32) -> Option<u64> {
        if peer >= self.cfg.max_peers {
            return None;
        }
        self.granule_of(peer as usize + 1)
    }

    // ------------------------------------------------------------------
    // Local segments
    // ------------------------------------------------------------------

    /// Registers local segment `id` as `[base, base + len)`.
    ///
    /// Errors: [`Error::InvalidArgument`] if `id >= max_segments`, `len == 0`,
    /// `base` is not page aligned or the range does not end below `2^48`;
    /// [`Error::AlreadyExists`] if `id` is in use or the range overlaps another
    /// segment; [`Error::TableFull`] if the node region is exhausted.
    pub fn insert_segment(&self, id: u32, base: usize, len: u64) -> Result<()> {
        if id >= self.cfg.max_segments {
            return Err(Error::InvalidArgument);
        }
        let start = base as u64;
        let end = footprint_end(start, len)?;
        let _g = self.lock();
        if self.rec(id as usize, R_LEN).load(Relaxed) != 0 {
            return Err(Error::AlreadyExists);
        }
        self.check_overlap(LOCAL_SPACE, start, len, end)?;
        self.insert_range(LOCAL_SPACE, id as usize, start, len, 0)?;
        self.bump(H_SEGMENTS, 1);
        Ok(())
    }

    /// Unregisters local segment `id`.
    ///
    /// Errors: [`Error::InvalidArgument`] if `id >= max_segments`,
    /// [`Error::NotFound`] if it is not registered.
    pub fn remove_segment(&self, id: u32) -> Result<()> {
        if id >= self.cfg.max_segments {
            return Err(Error::InvalidArgument);
        }
        let _g = self.lock();
        let idx = id as usize;
        let len = self.rec(idx, R_LEN).load(Relaxed);
        if len == 0 {
            return Err(Error::NotFound);
        }
        let start = self.rec(idx, R_START).load(Relaxed);
        self.unlink_range(LOCAL_SPACE, idx, start, len);
        self.write_record(idx, LOCAL_SPACE as u32, 0, 0, 0);
        self.bump(H_SEGMENTS, u64::MAX);
        Ok(())
    }

    /// `(base, len)` of segment `id`, or `None` if absent (or being changed).
    pub fn segment(&self, id: u32) -> Option<(usize, u64)> {
        if id >= self.cfg.max_segments {
            return None;
        }
        self.read_record(id as usize)
            .map(|s| (s.start as usize, s.len))
    }

    /// Translates `(id, offset, len)` to the local address `base + offset`.
    ///
    /// `[offset, offset + len)` must lie inside the segment (overflow-safe);
    /// `len == 0` checks only that `offset` is inside. Lock-free, a few loads.
    ///
    /// Errors: [`Error::InvalidArgument`] if `id >= max_segments`,
    /// [`Error::NotFound`] if the segment is absent, [`Error::OutOfBounds`]
    /// otherwise.
    #[inline]
    pub fn resolve(&self, id: u32, offset: u64, len: u64) -> Result<usize> {
        if id >= self.cfg.max_segments {
            return Err(Error::InvalidArgument);
        }
        // SAFETY: segment slots are records `0..max_segments`.
        let Some((start, seg_len)) = (unsafe { self.read_span(id as usize) }) else {
            return Err(Error::NotFound);
        };
        if offset >= seg_len || len > seg_len - offset {
            return Err(if seg_len == 0 {
                Error::NotFound
            } else {
                Error::OutOfBounds
            });
        }
        Ok(start.wrapping_add(offset) as usize)
    }

    /// Finds the segment containing the local address `addr` and returns
    /// `(id, addr - base)`. Lock-free and O(1).
    ///
    /// Errors: [`Error::NotFound`] if no segment contains `addr`.
    #[inline]
    pub fn locate(&self, addr: usize) -> Result<(u32, u64)> {
        let addr = addr as u64;
        let s = self.lookup(LOCAL_SPACE, addr).ok_or(Error::NotFound)?;
        Ok((s.idx as u32, addr.wrapping_sub(s.start)))
    }

    // ------------------------------------------------------------------
    // Remote ranges
    // ------------------------------------------------------------------

    /// Registers `[remote_base, remote_base + len)` of `peer` as mapped at
    /// `local_base`.
    ///
    /// Errors: [`Error::InvalidArgument`] if `peer >= max_peers`, `len == 0`,
    /// either base is not page aligned, the remote range does not end below
    /// `2^48` or the local one overflows the address space;
    /// [`Error::AlreadyExists`] if it overlaps a range of the same peer;
    /// [`Error::TableFull`] if no range record or node is left.
    pub fn insert_remote(
        &self,
        peer: u32,
        remote_base: u64,
        len: u64,
        local_base: usize,
    ) -> Result<()> {
        if peer >= self.cfg.max_peers || local_base as u64 % PAGE_SIZE != 0 {
            return Err(Error::InvalidArgument);
        }
        let end = footprint_end(remote_base, len)?;
        match (local_base as u64).checked_add(len - 1) {
            Some(last) if last <= usize::MAX as u64 => {}
            _ => return Err(Error::InvalidArgument),
        }
        let space = peer as usize + 1;
        let _g = self.lock();
        self.check_overlap(space, remote_base, len, end)?;
        let (idx, link) = self.reserve_range_record()?;
        self.insert_range(space, idx, remote_base, len, local_base as u64)?;
        self.commit_range_record(link);
        self.bump(H_RANGES, 1);
        Ok(())
    }

    /// Unregisters the range of `peer` that starts at `remote_base`.
    ///
    /// Errors: [`Error::InvalidArgument`] if `peer >= max_peers`,
    /// [`Error::NotFound`] if no range of `peer` starts exactly there.
    pub fn remove_remote(&self, peer: u32, remote_base: u64) -> Result<()> {
        if peer >= self.cfg.max_peers {
            return Err(Error::InvalidArgument);
        }
        let space = peer as usize + 1;
        let _g = self.lock();
        let s = self.lookup(space, remote_base).ok_or(Error::NotFound)?;
        if s.start != remote_base {
            return Err(Error::NotFound);
        }
        self.unlink_range(space, s.idx, s.start, s.len);
        let free = self.h(H_FREE_RANGE).load(Relaxed);
        self.write_record(s.idx, space as u32, 0, 0, free);
        self.h(H_FREE_RANGE)
            .store((s.idx - self.cfg.max_segments as usize) as u64 + 1, Relaxed);
        self.bump(H_RANGES, u64::MAX);
        Ok(())
    }

    /// Translates `peer`'s address `remote_addr` to the local address
    /// `remote_addr - remote_base + local_base` of the range containing it.
    ///
    /// The whole `[remote_addr, remote_addr + len)` must lie in that one range
    /// (overflow-safe); `len == 0` checks only `remote_addr`. Lock-free, O(1):
    /// most accesses are answered by a direct leaf entry after at most three
    /// node loads; the others walk again and compare at most two ranges.
    ///
    /// Errors: [`Error::InvalidArgument`] if `peer >= max_peers`,
    /// [`Error::NotFound`] if no range of `peer` contains `remote_addr`,
    /// [`Error::OutOfBounds`] if one does but the access runs past its end.
    #[inline]
    pub fn relocate(&self, peer: u32, remote_addr: u64, len: u64) -> Result<usize> {
        // The three steps the C ABI takes too; the last checks the peer.
        match self.relocate_direct(peer, remote_addr, len) {
            Ok(local) => Ok(local),
            // `e == 0` whenever `peer` is out of range: `by_entry` reads nothing.
            Err(e) => match self.by_entry(peer as usize + 1, remote_addr, len, e) {
                Some(local) => Ok(local),
                None => self.relocate_by_record(peer, remote_addr, len),
            },
        }
    }

    /// [`Self::relocate`] without its direct-entry path
    /// ([`Self::relocate_direct`]), for callers that have tried that path
    /// already (`relocate` itself, the C ABI, the batch): the record(s) of
    /// the access's leaf entry give the answer or the error. Same results
    /// as `relocate` for every input.
    #[inline(never)]
    pub(crate) fn relocate_by_record(
        &self,
        peer: u32,
        remote_addr: u64,
        len: u64,
    ) -> Result<usize> {
        if peer >= self.cfg.max_peers {
            return Err(Error::InvalidArgument);
        }
        let space = peer as usize + 1;
        let (_, e) = self.walk(space, remote_addr).ok_or(Error::NotFound)?;
        self.match_leaf(space, remote_addr, e)
            .ok_or(Error::NotFound)?
            .relocate(remote_addr, len)
    }

    /// [`Self::relocate`] for many accesses to one peer at once: `out[i]`
    /// gets the local address of `spans[i]`, for every `i`.
    ///
    /// The same answers, errors and cost bound per access as `relocate`,
    /// without a call, a peer check and an error path per access: a caller
    /// that relocates every slice of a transfer batch pays for the lookups
    /// alone. Each access reads the index's entries afresh, so an insert or
    /// remove racing with the batch is seen by the accesses after it, as
    /// with single calls; a rebuild of the peer's index (which a range
    /// shorter than every earlier one causes) within 8 accesses.
    ///
    /// Stops at the first access that fails: `Err((i, error))`, with
    /// `out[..i]` written and `out[i..]` untouched.
    /// [`Error::InvalidArgument`] at index 0 if `out` is shorter than `spans`
    /// (nothing written) or `peer >= max_peers`.
    pub fn relocate_batch(
        &self,
        peer: u32,
        spans: &[RemoteSpan],
        out: &mut [usize],
    ) -> core::result::Result<(), (usize, Error)> {
        if out.len() < spans.len() || peer >= self.cfg.max_peers {
            return Err((0, Error::InvalidArgument));
        }
        let space = peer as usize + 1;
        let mut i = 0;
        while i < spans.len() {
            i += self.relocate_direct_run(peer, &spans[i..], &mut out[i..]);
            if i == spans.len() {
                break;
            }
            // The run stopped here: the direct path does not answer (or the
            // tree changed). The records answer, up to the next direct answer.
            i += self.entry_run(space, &spans[i..], &mut out[i..]);
            let Some(s) = spans.get(i) else { break };
            // An error (or a change racing with the batch): the record path
            // tells which, or answers after all.
            out[i] = self
                .relocate_by_record(peer, s.addr, s.len)
                .map_err(|e| (i, e))?;
            i += 1;
        }
        Ok(())
    }

    /// The direct-entry answers of [`Self::relocate`] over `spans` in order,
    /// written to `out`, up to the first access that needs more (an error
    /// or a record): the number answered.
    ///
    /// The tree's shape is decoded from the root word once, and the loop is
    /// specialized on its depth ([`Self::direct_run_in`]).
    #[inline(never)]
    fn relocate_direct_run(&self, peer: u32, spans: &[RemoteSpan], out: &mut [usize]) -> usize {
        debug_assert!(peer < self.cfg.max_peers && out.len() >= spans.len());
        let space = peer as usize + 1;
        debug_assert!(HEADER_WORDS + space < self.lay.total);
        // SAFETY: `space <= max_peers`, and the root region (which starts at
        // `HEADER_WORDS`) holds `1 + max_peers` words.
        let slot = unsafe { self.storage.get_unchecked(HEADER_WORDS + space) };
        let root = slot.load(Acquire);
        match (root >> ROOT_HOPS_SHIFT) as u32 & ((1 << MAX_HOPS) - 1) {
            0 => self.direct_run_in::<0>(slot, root, spans, out),
            1 => self.direct_run_in::<1>(slot, root, spans, out),
            3 => self.direct_run_in::<2>(slot, root, spans, out),
            _ => self.entry_run(space, spans, out),
        }
    }

    /// [`Self::relocate`]'s answers over `spans` in order, written to `out`,
    /// each from one walk ([`Self::direct_in`], then [`Self::by_entry`] for
    /// a leaf entry that needs its record): the number answered, up to the
    /// first access that fails or the first one answered by a direct entry
    /// (that one included), where [`Self::relocate_direct_run`]'s loop is
    /// faster. The batch's path for windows that two ranges share, and
    /// every access of trees of other depths (those of Miri's smaller
    /// nodes).
    #[inline(never)]
    fn entry_run(&self, space: usize, spans: &[RemoteSpan], out: &mut [usize]) -> usize {
        for (i, (s, o)) in spans.iter().zip(out.iter_mut()).enumerate() {
            match self.direct_in(true, space, s.addr, s.len) {
                Ok(local) => {
                    *o = local;
                    return i + 1;
                }
                Err(e) => match self.by_entry(space, s.addr, s.len, e) {
                    Some(local) => *o = local,
                    None => return i,
                },
            }
        }
        spans.len()
    }

    /// [`Self::relocate_direct_run`] over the tree of root word `root`
    /// (loaded from `slot`), which has `HOPS` interior levels, decoded once
    /// ([`Tree`]). The root word is loaded again before every
    /// [`RUN_UNROLL`] accesses, and the run stops when it changed (the
    /// caller restarts it on the new tree): a racing rebuild is seen within
    /// that many accesses, and every answer is a mapping that was
    /// registered at some instant during the call, as for single calls.
    ///
    /// No calls in the loop, and a function of its own per depth, so that
    /// the compiler keeps the table's invariants (node region and limit,
    /// key multiplier, window mask) and both slices in registers across it.
    /// Inlined into one function, the three loops and the fallback walk
    /// shared its register allocation, and an edit to any of them could
    /// spill the output pointer of another (2% slower batches, measured).
    #[inline(never)]
    fn direct_run_in<const HOPS: u32>(
        &self,
        slot: &AtomicU64,
        root: u64,
        spans: &[RemoteSpan],
        out: &mut [usize],
    ) -> usize {
        let lim = self.lay.node_lim;
        let top = (root >> ROOT_NODE_SHIFT) as usize;
        if top >= lim {
            return 0;
        }
        let g = (root >> ROOT_G_SHIFT) as u32 & ROOT_FIELD_MASK as u32;
        let tree = Tree {
            // SAFETY: `lay.nodes <= lay.total <= st.len()`.
            region: unsafe { self.storage.get_unchecked(self.lay.nodes..) },
            top,
            lim,
            // `black_box`: the compiler would turn the multiplication and
            // the mask back into shifts by a register (see `Tree`).
            key_mul: black_box(1u64.wrapping_shl(root as u32 & ROOT_FIELD_MASK as u32)),
            outside: black_box(u64::MAX.wrapping_shl(g)),
            // `black_box`: else the constant comes back as an immediate.
            addr_limit: black_box(ADDR_LIMIT),
        };
        let n = spans.len().min(out.len());
        let (spans, out) = (&spans[..n], &mut out[..n]);
        let mut i = 0;
        // Unrolled: fewer loop and root-word instructions per access.
        for (sc, oc) in spans
            .chunks_exact(RUN_UNROLL)
            .zip(out.chunks_exact_mut(RUN_UNROLL))
        {
            if slot.load(Acquire) != root {
                return i;
            }
            for k in 0..RUN_UNROLL {
                match tree.direct::<HOPS>(sc[k].addr, sc[k].len) {
                    Some(local) => oc[k] = local,
                    None => return i + k,
                }
            }
            i += RUN_UNROLL;
        }
        while i < n {
            if slot.load(Acquire) != root {
                return i;
            }
            match tree.direct::<HOPS>(spans[i].addr, spans[i].len) {
                Some(local) => out[i] = local,
                None => return i,
            }
            i += 1;
        }
        n
    }

    /// The common case of [`Self::relocate`] alone: `Ok(local)` when the
    /// access is answered by a direct leaf entry; else `Err` with the leaf
    /// entry the walk ended at (0 if it found none, or the peer or an
    /// argument is bad), which [`Self::by_entry`] and then
    /// [`Self::relocate_by_record`] answer. Same checks, no record read, no
    /// error values.
    #[inline(always)]
    pub(crate) fn relocate_direct(
        &self,
        peer: u32,
        remote_addr: u64,
        len: u64,
    ) -> core::result::Result<usize, u64> {
        let ok = peer < self.cfg.max_peers;
        self.direct_in(ok, peer as usize + 1, remote_addr, len)
    }

    /// The answer of a *direct* leaf entry for an access of `len` bytes at
    /// `addr` in address space `space`: the walk of [`Self::walk`], then the
    /// entry's delta. For everything else (an error, or an answer that
    /// needs the record) `Err` with the leaf entry the walk ended at, for
    /// [`Self::by_entry`]: 0 when it left the tree, and at once unless
    /// `space_ok` (which must mean `space <= max_peers`).
    ///
    /// A direct entry's window lies inside one range, so the entry alone is
    /// the translation if the access stays in the window (else the range's
    /// end decides, which only the record knows) and `addr` is a real
    /// address (the walk drops address bits above the tree's top level).
    /// With `addr` and `len` below `2^48` nothing wraps; the access stays in
    /// the window iff its last byte has the window number of its first, and
    /// this test also asks `len < G`. `len == 0` at a window start fails it
    /// (the "last byte" is in the window before); the record answers those,
    /// the same.
    ///
    /// The key shift is applied as a multiplier, which the compiler turns
    /// back into a shift by the one count `ksh`, and the window test is made
    /// on the key's scale: one shift count in `cl` for the whole walk,
    /// against three (one per level, and the granule) in [`Self::walk`]. On
    /// x86 a shift by `cl` is two micro-ops on the ports that also take the
    /// branches (`shm_address_lookup_bench`: 4.6 ns a call before, 4.2 after).
    #[inline(always)]
    fn direct_in(
        &self,
        space_ok: bool,
        space: usize,
        addr: u64,
        len: u64,
    ) -> core::result::Result<usize, u64> {
        if !space_ok || (addr | len) >= ADDR_LIMIT {
            return Err(0);
        }
        let st: &[AtomicU64] = &self.storage;
        debug_assert!(HEADER_WORDS + space < self.lay.total);
        // SAFETY: `space <= max_peers` (the caller's `space_ok`), and the
        // root region, which starts at `HEADER_WORDS`, holds `1 + max_peers`
        // words.
        let root = unsafe { st.get_unchecked(HEADER_WORDS + space) }.load(Acquire);
        // SAFETY: `lay.nodes <= lay.total <= st.len()`.
        let region = unsafe { st.get_unchecked(self.lay.nodes..) };
        // SAFETY: a plain read of a field of `self` (at each check, as in
        // `walk`: one register fewer).
        let lim = || unsafe { core::ptr::read_volatile(&self.lay.node_lim) };
        let mut node = (root >> ROOT_NODE_SHIFT) as usize;
        if node >= lim() {
            return Err(0);
        }
        // `addr * key_mul` is `walk`'s left-aligned key (`addr << ksh`).
        let key_mul = 1u64.wrapping_shl(root as u32);
        let key = addr.wrapping_mul(key_mul);
        // The window test: `(last ^ addr) | len` must be below `2^g`, that
        // is, below `win` once moved left by `ksh` (the bits from `g` up land
        // at bit `64 - levels * LEVEL_BITS`). No bit falls off the top: the
        // top is at `g + levels * LEVEL_BITS >= ADDR_BITS`, and the only bit
        // of `last ^ addr` at or above `ADDR_BITS` (bit 48, a carry out of
        // `addr < 2^48`) comes with every bit from `g` to 47 when `len < 2^g`.
        let mut win = 1u64 << (64 - LEVEL_BITS);
        let mut h = 0;
        loop {
            let slot = ((key << (h * LEVEL_BITS)) >> (64 - LEVEL_BITS)) as usize;
            debug_assert!(self.lay.nodes + node + slot < self.lay.total);
            // SAFETY: `node < node_lim` (checked) and `slot < NODE_WORDS`, so
            // `node + slot` lies inside the node region (see
            // `Layout::node_lim`), which `region` starts with.
            let e = unsafe { region.get_unchecked(node + slot) }.load(Acquire);
            // One root word bit per interior level (the loop unrolls).
            if h < MAX_HOPS && root & (1 << (ROOT_HOPS_SHIFT + h)) != 0 {
                node = e as usize;
                if node >= lim() {
                    return Err(0);
                }
                win >>= LEVEL_BITS;
                h += 1;
                continue;
            }
            let last = addr.wrapping_add(len).wrapping_sub(1);
            if e & DIRECT == 0 || ((last ^ addr) | len).wrapping_mul(key_mul) >= win {
                return Err(e);
            }
            return Ok(addr.wrapping_add(direct_delta(e)) as usize);
        }
    }

    /// The answer of leaf entry `e` of address space `space` for an access
    /// of `len` bytes at `addr`, from the record(s) it refers to: what
    /// [`Self::relocate_by_record`] gives when it succeeds, without its walk
    /// (the caller has just loaded `e`); `None` for every error. For the
    /// entries a direct answer cannot come from: reference pairs (windows
    /// that two ranges share, as adjacent ranges not aligned to the granule
    /// make every window they meet) and accesses that leave a direct
    /// entry's window.
    ///
    /// Out of line, so that the direct path around its call keeps its
    /// registers and makes no stack frame.
    #[inline(never)]
    fn by_entry(&self, space: usize, addr: u64, len: u64, e: u64) -> Option<usize> {
        self.match_leaf(space, addr, e)?.relocate(addr, len).ok()
    }

    // ------------------------------------------------------------------
    // Read side
    // ------------------------------------------------------------------

    #[inline(always)]
    fn h(&self, i: usize) -> &AtomicU64 {
        &self.storage[i]
    }

    #[inline(always)]
    fn rec(&self, idx: usize, field: usize) -> &AtomicU64 {
        &self.storage[self.lay.records + idx * REC_WORDS + field]
    }

    /// Word `slot` of (allocated) node `node`.
    #[inline(always)]
    fn node_word(&self, node: usize, slot: usize) -> &AtomicU64 {
        &self.storage[self.lay.nodes + Self::node_ref(node) + slot]
    }

    /// Word `i` of the storage, without a bounds check.
    ///
    /// # Safety
    /// `i < self.lay.total`.
    #[inline(always)]
    unsafe fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.lay.total);
        // SAFETY: `i < lay.total <= storage.len()`: `new` checked the length
        // and `TableStorage` keeps it.
        unsafe { self.storage.get_unchecked(i) }
    }

    /// Seqlock read of record `idx`: `(seq, start, len, value)`, or `None`
    /// if it is being written (odd or changed `seq`). A free record
    /// (`len == 0`) is returned as is; callers' range checks reject it.
    ///
    /// # Safety
    /// `idx < max_segments + max_ranges`.
    #[inline(always)]
    unsafe fn read_raw(&self, idx: usize) -> Option<(u64, u64, u64, u64)> {
        debug_assert!(idx < self.lay.n_records);
        let at = self.lay.records + idx * REC_WORDS;
        // SAFETY: the record region holds `n_records` records, so
        // `at + REC_WORDS <= lay.nodes <= lay.total`.
        let w = |f: usize| unsafe { self.word(at + f) };
        let s1 = w(R_SEQ).load(Acquire);
        let start = w(R_START).load(Relaxed);
        let len = w(R_LEN).load(Relaxed);
        let value = w(R_VALUE).load(Relaxed);
        fence(Acquire);
        let s2 = w(R_SEQ).load(Relaxed);
        if s1 != s2 || s1 & 1 != 0 {
            return None;
        }
        Some((s1, start, len, value))
    }

    /// [`Self::read_raw`] without the `value` word (segment slots have none):
    /// `(start, len)`.
    ///
    /// # Safety
    /// `idx < max_segments + max_ranges`.
    #[inline(always)]
    unsafe fn read_span(&self, idx: usize) -> Option<(u64, u64)> {
        debug_assert!(idx < self.lay.n_records);
        let at = self.lay.records + idx * REC_WORDS;
        // SAFETY: as in `read_raw`.
        let w = |f: usize| unsafe { self.word(at + f) };
        let s1 = w(R_SEQ).load(Acquire);
        let start = w(R_START).load(Relaxed);
        let len = w(R_LEN).load(Relaxed);
        fence(Acquire);
        let s2 = w(R_SEQ).load(Relaxed);
        if s1 != s2 || s1 & 1 != 0 {
            return None;
        }
        Some((start, len))
    }

    /// Seqlock read of record `idx`; `None` if free or being written.
    #[inline(always)]
    fn read_record(&self, idx: usize) -> Option<Snap> {
        if idx >= self.lay.n_records {
            return None;
        }
        // SAFETY: `idx < n_records` checked above.
        let (_, start, len, value) = unsafe { self.read_raw(idx)? };
        if len == 0 {
            return None;
        }
        Some(Snap {
            idx,
            start,
            len,
            value,
        })
    }

    /// The record of `space` whose range contains `addr`, if any.
    ///
    /// Index words are data, not invariants (a `&[AtomicU64]` storage may be
    /// scribbled on by its owner), so every node and record reference read
    /// from them is range checked before use; a bad one is a miss. An empty
    /// node reference leads to the empty node, whose entries are all 0 (a
    /// record reference 0 fails its check: `ref - 1` wraps). A node
    /// reference is only checked to leave room for a whole node after it,
    /// not to be node aligned: a corrupted one reads the wrong words, never
    /// words outside the storage.
    ///
    /// Addresses at or above `2^48` need no separate check: every slot index
    /// is the top `LEVEL_BITS` bits of the shifted key, so it stays inside
    /// its node, and every live range ends at or below `2^48`
    /// (`footprint_end`), so the final range check rejects them.
    #[inline(always)]
    fn lookup(&self, space: usize, addr: u64) -> Option<Snap> {
        let (_, e) = self.walk(space, addr)?;
        self.match_leaf(space, addr, e)
    }

    /// The walk of [`Self::lookup`]: `(granule shift, leaf entry)` of the
    /// window of `addr` in the tree of `space` (an empty one is 0); `None`
    /// if the walk meets a bad node reference.
    #[inline(always)]
    fn walk(&self, space: usize, addr: u64) -> Option<(u32, u64)> {
        debug_assert!(space <= self.cfg.max_peers as usize);
        // SAFETY: `space <= max_peers` (callers check the peer), and the
        // root region holds `1 + max_peers` words.
        debug_assert_eq!(self.lay.roots, HEADER_WORDS);
        // The slice once: `self.word` would re-read the storage handle after
        // every `Acquire` load.
        let st: &[AtomicU64] = &self.storage;
        debug_assert!(HEADER_WORDS + space < self.lay.total);
        // SAFETY: as above; `lay.total <= st.len()` (`new` checked the
        // length, `TableStorage` keeps it).
        let root = unsafe { st.get_unchecked(HEADER_WORDS + space) }.load(Acquire);
        // SAFETY: `lay.nodes <= lay.total <= st.len()`.
        let region = unsafe { st.get_unchecked(self.lay.nodes..) };
        // Read from `self` at each check: one register fewer across the walk
        // of a single call.
        // SAFETY: a plain read of a field of `self`.
        let lim = || unsafe { core::ptr::read_volatile(&self.lay.node_lim) };
        // `root == 0` (empty space) gives the empty node: 0 hops, all
        // entries 0, so the leaf entry is 0 (no reference).
        let node = (root >> ROOT_NODE_SHIFT) as usize;
        if node >= lim() {
            return None;
        }
        // The key, left-aligned: `addr << ksh` puts the top level's slot
        // bits at the top of the word (key bits above the top level fall
        // off, as a slot mask would drop them), so level `i` takes the top
        // `LEVEL_BITS` bits of `addr << (ksh + i * LEVEL_BITS)`.
        // `wrapping_shl` takes the shift modulo 64: the low 6 bits of `sh`
        // are the key shift. `sh` starts as the root word and gains
        // `LEVEL_BITS` per level, which leaves its other fields alone
        // (`ksh + MAX_HOPS * LEVEL_BITS < 64` in a valid root word), and
        // keeps no shifted key in a register.
        let mut sh = root as u32;
        let slot = (addr.wrapping_shl(sh) >> (64 - LEVEL_BITS)) as usize;
        debug_assert!(self.lay.nodes + node + slot < self.lay.total);
        // SAFETY: `node < node_lim` (checked) and `slot < NODE_WORDS`, so
        // `node + slot` lies inside the node region (see `Layout::node_lim`),
        // which `region` starts with.
        let mut e = unsafe { region.get_unchecked(node + slot) }.load(Acquire);
        // One root word bit per interior level: at most `MAX_HOPS` more
        // loads, whatever the word holds (the compiler unrolls the loop).
        let mut hop = 0;
        while hop < MAX_HOPS {
            if sh & (1 << (ROOT_HOPS_SHIFT + hop)) == 0 {
                break;
            }
            hop += 1;
            // Interior entries hold the child's node reference (0: empty,
            // the empty node).
            let node = e as usize;
            if node >= lim() {
                return None;
            }
            sh += LEVEL_BITS;
            let slot = (addr.wrapping_shl(sh) >> (64 - LEVEL_BITS)) as usize;
            debug_assert!(self.lay.nodes + node + slot < self.lay.total);
            // SAFETY: as for the root node above.
            e = unsafe { region.get_unchecked(node + slot) }.load(Acquire);
        }
        Some((sh >> ROOT_G_SHIFT, e))
    }

    /// The record referenced from leaf entry `leaf` that belongs to `space`
    /// and contains `addr`.
    ///
    /// The low reference is tried inline; the high one (present only where a
    /// granule window meets two ranges) out of line, which keeps the common
    /// path short and its register use low.
    #[inline(always)]
    fn match_leaf(&self, space: usize, addr: u64, leaf: u64) -> Option<Snap> {
        if leaf & DIRECT != 0 {
            let r = (leaf >> DIRECT_REF_SHIFT) & DIRECT_REF_MASK;
            return self.match_ref(space, addr, r as u32);
        }
        if let Some(s) = self.match_ref(space, addr, leaf as u32) {
            return Some(s);
        }
        if leaf >> 32 == 0 {
            return None;
        }
        self.match_ref_outlined(space, addr, (leaf >> 32) as u32)
    }

    /// [`Self::match_ref`] for the high reference of a leaf entry.
    #[inline(never)]
    fn match_ref_outlined(&self, space: usize, addr: u64, r: u32) -> Option<Snap> {
        self.match_ref(space, addr, r)
    }

    /// The record of reference `r` (`idx + 1`, 0 = empty) if it belongs to
    /// `space` and contains `addr`.
    #[inline(always)]
    fn match_ref(&self, space: usize, addr: u64, r: u32) -> Option<Snap> {
        // `r == 0` (empty) wraps to `usize::MAX` and fails the check.
        let idx = (r as usize).wrapping_sub(1);
        if idx >= self.lay.n_records {
            return None;
        }
        // SAFETY: `idx < n_records` checked above.
        let (seq, start, len, value) = unsafe { self.read_raw(idx) }?;
        if (seq >> 32) as usize != space {
            return None;
        }
        // `len == 0` (free) fails the range check.
        if addr.wrapping_sub(start) < len {
            return Some(Snap {
                idx,
                start,
                len,
                value,
            });
        }
        None
    }

    fn granule_of(&self, space: usize) -> Option<u64> {
        let root = self.storage[self.lay.roots + space].load(Acquire);
        (root != 0).then(|| 1u64 << (root >> ROOT_G_SHIFT & ROOT_FIELD_MASK))
    }

    // ------------------------------------------------------------------
    // Write side (all called with the writer lock held)
    // ------------------------------------------------------------------

    fn lock(&self) -> WriterGuard<'_> {
        let w = self.h(H_LOCK);
        while w.compare_exchange_weak(0, 1, Acquire, Relaxed).is_err() {
            while w.load(Relaxed) != 0 {
                core::hint::spin_loop();
            }
        }
        WriterGuard(w)
    }

    fn bump(&self, i: usize, delta: u64) {
        let w = self.h(i);
        w.store(w.load(Relaxed).wrapping_add(delta), Relaxed);
    }

    /// Seqlock write of record `idx` (`len == 0` frees it).
    fn write_record(&self, idx: usize, tag: u32, start: u64, len: u64, value: u64) {
        let seq = self.rec(idx, R_SEQ);
        let s = seq.load(Relaxed);
        let c = s as u32;
        seq.store((s & !0xffff_ffff) | c.wrapping_add(1) as u64, Relaxed);
        fence(Release);
        self.rec(idx, R_START).store(start, Relaxed);
        self.rec(idx, R_LEN).store(len, Relaxed);
        self.rec(idx, R_VALUE).store(value, Relaxed);
        seq.store(((tag as u64) << 32) | c.wrapping_add(2) as u64, Release);
    }

    /// The range record the next insert will use, without taking it:
    /// `(record index, Some(next free link))` when it comes from the free
    /// list, `(record index, None)` when from the bump region. The link must
    /// be read now: the insert overwrites the record's `value` word.
    fn reserve_range_record(&self) -> Result<(usize, Option<u64>)> {
        let m = self.cfg.max_segments as usize;
        let free = self.h(H_FREE_RANGE).load(Relaxed);
        if free != 0 {
            let idx = m + (free - 1) as usize;
            return Ok((idx, Some(self.rec(idx, R_VALUE).load(Relaxed))));
        }
        let next = self.h(H_NEXT_RANGE).load(Relaxed);
        if next >= self.cfg.max_ranges as u64 {
            return Err(Error::TableFull);
        }
        Ok((m + next as usize, None))
    }

    /// Takes the record returned by [`Self::reserve_range_record`].
    fn commit_range_record(&self, link: Option<u64>) {
        match link {
            Some(next_free) => self.h(H_FREE_RANGE).store(next_free, Relaxed),
            None => self.bump(H_NEXT_RANGE, 1),
        }
    }

    /// The node reference of allocated node `n` (the empty node comes
    /// first).
    fn node_ref(n: usize) -> usize {
        (n + 1) * NODE_WORDS
    }

    /// The allocated node a non-zero node reference written by the writer
    /// points to.
    fn node_of(r: usize) -> usize {
        r / NODE_WORDS - 1
    }

    /// `(root node, granule shift)` of a non-zero root word written by
    /// [`Self::rebuild`].
    fn decode_root(&self, root: u64) -> (usize, u32) {
        let node = Self::node_of((root >> ROOT_NODE_SHIFT) as usize);
        (node, (root >> ROOT_G_SHIFT & ROOT_FIELD_MASK) as u32)
    }

    /// Takes a fresh, zeroed node from the bump region.
    fn alloc_node(&self) -> Result<usize> {
        let next = self.h(H_NEXT_NODE).load(Relaxed);
        if next >= self.cfg.max_nodes as u64 {
            return Err(Error::TableFull);
        }
        self.h(H_NEXT_NODE).store(next + 1, Relaxed);
        let n = next as usize;
        let at = self.lay.nodes + Self::node_ref(n);
        for w in &self.storage[at..at + NODE_WORDS] {
            w.store(0, Relaxed);
        }
        Ok(n)
    }

    /// The leaf node covering leaf prefix `prefix` (`key >> 12`), creating
    /// missing nodes if `create`. `Ok(None)`: absent and `!create`.
    fn leaf_node(&self, root: usize, g: u32, prefix: u64, create: bool) -> Result<Option<usize>> {
        let mut node = root;
        let mut hops = levels(g) - 1;
        while hops > 0 {
            let shift = (hops - 1) * LEVEL_BITS;
            let w = self.node_word(node, ((prefix >> shift) & SLOT_MASK) as usize);
            let e = w.load(Relaxed);
            node = if e != 0 {
                Self::node_of(e as usize)
            } else if create {
                let n = self.alloc_node()?;
                w.store(Self::node_ref(n) as u64, Release);
                n
            } else {
                return Ok(None);
            };
            hops -= 1;
        }
        Ok(Some(node))
    }

    /// Calls `f` on every existing leaf entry of the tree `(root, g)` that
    /// covers `[start, end)`; creates missing nodes first if `create` (then
    /// `f` may be a no-op to just make room).
    fn for_each_entry(
        &self,
        root: usize,
        g: u32,
        start: u64,
        end: u64,
        create: bool,
        mut f: impl FnMut(u64, &AtomicU64) -> Result<()>,
    ) -> Result<()> {
        let k0 = start >> g;
        let k1 = (end - 1) >> g;
        for prefix in (k0 >> LEVEL_BITS)..=(k1 >> LEVEL_BITS) {
            let Some(node) = self.leaf_node(root, g, prefix, create)? else {
                continue;
            };
            let lo = if prefix == k0 >> LEVEL_BITS {
                k0 & SLOT_MASK
            } else {
                0
            };
            let hi = if prefix == k1 >> LEVEL_BITS {
                k1 & SLOT_MASK
            } else {
                SLOT_MASK
            };
            for slot in lo..=hi {
                f(
                    prefix << LEVEL_BITS | slot,
                    self.node_word(node, slot as usize),
                )?;
            }
        }
        Ok(())
    }

    /// Links record `idx` (range `[start, start + len)` of `space`, value
    /// `value`) into every entry of the tree `(root, g)` that covers its
    /// footprint; nodes must exist. A window the range covers whole gets a
    /// direct entry when it can be encoded (remote space, reference below
    /// `2^27`, `local - remote` delta in `[-2^47, 2^47)`), the others a
    /// reference, low or high by the two ranges' shares of the window.
    fn fill(
        &self,
        (root, g): (usize, u32),
        space: usize,
        idx: usize,
        (start, len, value): (u64, u64, u64),
    ) {
        let r = idx as u64 + 1;
        let end = match footprint_end(start, len) {
            Ok(end) => end,
            Err(_) => return,
        };
        let res = self.for_each_entry(root, g, start, end, false, |k, w| {
            let e = w.load(Relaxed);
            let lo = k << g;
            let direct = space != LOCAL_SPACE
                && e == 0
                && r <= DIRECT_REF_MASK
                && lo >= start
                && (k + 1) << g <= start + len;
            // `local - remote`, the same for every byte of the range.
            let delta = value.wrapping_sub(start);
            let fits = (-DIRECT_DELTA_LIMIT..DIRECT_DELTA_LIMIT).contains(&(delta as i64));
            let new = if direct && fits {
                DIRECT | r << DIRECT_REF_SHIFT | (delta >> PAGE_SHIFT) & DIRECT_DELTA_MASK
            } else {
                debug_assert_eq!(e & DIRECT, 0, "direct entry shared with another range");
                let [a, b] = refs_of(e);
                debug_assert!(a == 0 || b == 0, "leaf entry already holds two ranges");
                let other = (a | b) as u64;
                // Readers try the low reference first, inline, and the high
                // one out of line: the range holding more of the window goes
                // low (a peer's back-to-back mappings share each window
                // between a short tail and a long head).
                let mine = window_share(start, len, lo, g);
                if other == 0 || self.share_of(other, lo, g) <= mine {
                    r | other << 32
                } else {
                    other | r << 32
                }
            };
            w.store(new, Release);
            Ok(())
        });
        debug_assert!(res.is_ok());
    }

    /// [`window_share`] of the live range of record reference `r`.
    fn share_of(&self, r: u64, lo: u64, g: u32) -> u64 {
        let o = r as usize - 1;
        let start = self.rec(o, R_START).load(Relaxed);
        window_share(start, self.rec(o, R_LEN).load(Relaxed), lo, g)
    }

    /// [`Error::AlreadyExists`] if `[start, start + len)` (footprint end
    /// `end`) overlaps a live range of `space`.
    fn check_overlap(&self, space: usize, start: u64, len: u64, end: u64) -> Result<()> {
        let root = self.storage[self.lay.roots + space].load(Relaxed);
        if root == 0 {
            return Ok(());
        }
        let (rnode, g) = self.decode_root(root);
        self.for_each_entry(rnode, g, start, end, false, |_, w| {
            for other in refs_of(w.load(Relaxed)) {
                if other != 0 {
                    let o = other as usize - 1;
                    let os = self.rec(o, R_START).load(Relaxed);
                    let ol = self.rec(o, R_LEN).load(Relaxed);
                    if os < start + len && start < os + ol {
                        return Err(Error::AlreadyExists);
                    }
                }
            }
            Ok(())
        })
    }

    /// Inserts record `idx` (`[start, start+len)`, value `value`) into
    /// `space`, which must not overlap it ([`Self::check_overlap`]). The
    /// record is written only once nothing can fail any more.
    fn insert_range(
        &self,
        space: usize,
        idx: usize,
        start: u64,
        len: u64,
        value: u64,
    ) -> Result<()> {
        let end = footprint_end(start, len)?;
        let want = granule_for(end - start);
        let root = self.storage[self.lay.roots + space].load(Relaxed);
        if root != 0 {
            let (rnode, g) = self.decode_root(root);
            if want >= g {
                self.for_each_entry(rnode, g, start, end, true, |_, _| Ok(()))?;
                self.write_record(idx, space as u32, start, len, value);
                self.fill((rnode, g), space, idx, (start, len, value));
                return Ok(());
            }
        }
        self.rebuild(space, want, idx, start, len, value)
    }

    /// Builds a new tree for `space` with granule shift `g` holding the live
    /// records of the space plus the new record `idx`, then publishes it.
    fn rebuild(
        &self,
        space: usize,
        g: u32,
        idx: usize,
        start: u64,
        len: u64,
        value: u64,
    ) -> Result<()> {
        let saved = self.h(H_NEXT_NODE).load(Relaxed);
        let built = (|| {
            let root = self.alloc_node()?;
            let (lo, hi) = if space == LOCAL_SPACE {
                (0, self.cfg.max_segments as usize)
            } else {
                let m = self.cfg.max_segments as usize;
                (m, m + self.h(H_NEXT_RANGE).load(Relaxed) as usize)
            };
            for o in lo..hi {
                let ol = self.rec(o, R_LEN).load(Relaxed);
                let tag = (self.rec(o, R_SEQ).load(Relaxed) >> 32) as usize;
                if ol == 0 || tag != space || o == idx {
                    continue;
                }
                let os = self.rec(o, R_START).load(Relaxed);
                let oe = footprint_end(os, ol)?;
                self.for_each_entry(root, g, os, oe, true, |_, _| Ok(()))?;
                let ov = self.rec(o, R_VALUE).load(Relaxed);
                self.fill((root, g), space, o, (os, ol, ov));
            }
            let end = footprint_end(start, len)?;
            self.for_each_entry(root, g, start, end, true, |_, _| Ok(()))?;
            self.fill((root, g), space, idx, (start, len, value));
            Ok(root)
        })();
        let root = match built {
            Ok(root) => root,
            Err(e) => {
                // Nothing of the new tree was published: give the nodes back.
                self.h(H_NEXT_NODE).store(saved, Relaxed);
                return Err(e);
            }
        };
        self.write_record(idx, space as u32, start, len, value);
        self.storage[self.lay.roots + space].store(root_word(Self::node_ref(root), g), Release);
        self.bump(H_REBUILDS, 1);
        Ok(())
    }

    /// Removes record reference `idx + 1` from the live index of `space`.
    fn unlink_range(&self, space: usize, idx: usize, start: u64, len: u64) {
        let root = self.storage[self.lay.roots + space].load(Relaxed);
        let Ok(end) = footprint_end(start, len) else {
            return;
        };
        if root == 0 {
            return;
        }
        let (rnode, g) = self.decode_root(root);
        let r = idx as u64 + 1;
        let _ = self.for_each_entry(rnode, g, start, end, false, |_, w| {
            let e = w.load(Relaxed);
            let mut new = e;
            if e & DIRECT != 0 {
                if (e >> DIRECT_REF_SHIFT) & DIRECT_REF_MASK == r {
                    w.store(0, Release);
                }
                return Ok(());
            }
            if e & 0xffff_ffff == r {
                new &= !0xffff_ffff;
            }
            if e >> 32 == r {
                new &= 0xffff_ffff;
            }
            if new != e {
                w.store(new, Release);
            }
            Ok(())
        });
    }
}

/// How many bytes of the `2^g`-byte window at `lo` the range `[start,
/// start + len)` covers.
fn window_share(start: u64, len: u64, lo: u64, g: u32) -> u64 {
    let end = start.saturating_add(len);
    end.min(lo.saturating_add(1 << g))
        .saturating_sub(start.max(lo))
}

/// The record references of leaf entry `e` (0: none).
fn refs_of(e: u64) -> [u32; 2] {
    if e & DIRECT != 0 {
        [((e >> DIRECT_REF_SHIFT) & DIRECT_REF_MASK) as u32, 0]
    } else {
        [e as u32, (e >> 32) as u32]
    }
}

#[cfg(test)]
mod tests;
