//! Model-checks the translation table's publish/read protocol with loom.
//!
//! `src/table.rs` uses `core` atomics on caller-provided storage, which loom
//! cannot instrument, so this is a faithful miniature: the same sequence of
//! atomic loads, stores and fences with the same orderings, on `loom`
//! atomics, over a tiny storage (one address space, a two-level radix tree
//! with two-entry nodes, a few four-word records):
//!
//! - records are written under a per-record seqlock (`write_record`: `seq`
//!   odd with `Relaxed`, `Release` fence, data `Relaxed`, even `seq` with
//!   `Release`) and read with `read_record` (`seq` `Acquire`, data
//!   `Relaxed`, `Acquire` fence, `seq` `Relaxed`, used only if equal, even
//!   and `len != 0`);
//! - a fresh node is zeroed (`Relaxed`) before it is linked with a `Release`
//!   store; a new tree is published by a `Release` store of the root word;
//!   leaf entries are set and cleared with `Release` stores; readers load
//!   every index word with `Acquire` and check the record's tag and range;
//! - a *direct* leaf entry (a window inside one range) carries the window's
//!   local base itself: the reader answers from that one word without
//!   reading the record; it is stored into an empty entry and cleared to 0
//!   on remove, both with `Release`.
//!
//! The properties: a reader never combines fields of two different records
//! or versions (no torn record), never follows garbage from a node's
//! previous contents, and every answer it gives is a mapping that was
//! registered at some point of the run.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --test loom_table --release`
//! (`LOOM_MAX_PREEMPTIONS=N` widens the search; the default here is 2).
#![allow(unexpected_cfgs)]
#![cfg(loom)]

use loom::sync::atomic::{
    fence, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use loom::sync::Arc;
use loom::thread;

const R_SEQ: usize = 0;
const R_START: usize = 1;
const R_LEN: usize = 2;
const R_VALUE: usize = 3;
const NODE_WORDS: usize = 2;
/// Node references (interior entries and the root word's node field) are
/// word offsets into the node region, as in the real table, whose first
/// node is the *empty node*: never handed out or written, all 0, so an
/// empty reference (0) leads the reader to an empty entry.
const EMPTY_NODE_WORDS: usize = NODE_WORDS;
/// The address space the writer uses (the real table: 0 local, 1 + peer).
const SPACE: u32 = 1;
/// Leaf entry flag of a direct entry (as in the real table).
const DIRECT: u64 = 1 << 63;
/// The mini's granule: a direct entry's window is `WINDOW` bytes.
const WINDOW: u64 = 0x1000;
/// A word a node may hold from before it was taken (the real table zeroes
/// nodes on allocation, so this must never be observed by a reader).
const GARBAGE: u64 = 0xDEAD_0000_0000_0003;

/// A snapshot of a record, as `read_record` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snap {
    tag: u32,
    start: u64,
    len: u64,
    value: u64,
}

struct Mini {
    root: AtomicU64,
    records: Vec<[AtomicU64; 4]>,
    nodes: Vec<AtomicU64>,
}

impl Mini {
    fn new(records: usize, nodes: usize) -> Self {
        Mini {
            root: AtomicU64::new(0),
            records: (0..records)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            // Nodes start with stale content, as after a failed rebuild gave
            // its nodes back; the empty node is zero (`Table::new`).
            nodes: (0..EMPTY_NODE_WORDS + nodes * NODE_WORDS)
                .map(|i| AtomicU64::new(if i < EMPTY_NODE_WORDS { 0 } else { GARBAGE }))
                .collect(),
        }
    }

    fn node_word(&self, node: usize, slot: usize) -> &AtomicU64 {
        &self.nodes[Self::node_ref(node) as usize + slot]
    }

    /// The reference to node `node` (its first word's offset in the region).
    fn node_ref(node: usize) -> u64 {
        (EMPTY_NODE_WORDS + node * NODE_WORDS) as u64
    }

    /// The word `slot` of the node a reference (possibly 0: the empty node)
    /// points to, as the reader reaches it.
    fn entry(&self, r: u64, slot: usize) -> &AtomicU64 {
        &self.nodes[r as usize + slot]
    }

    // ---- write side (one writer: the real table holds its writer lock) ----

    /// `Table::write_record`.
    fn write_record(&self, idx: usize, tag: u32, start: u64, len: u64, value: u64) {
        let r = &self.records[idx];
        let seq = &r[R_SEQ];
        let s = seq.load(Relaxed);
        let c = s as u32;
        seq.store((s & !0xffff_ffff) | c.wrapping_add(1) as u64, Relaxed);
        fence(Release);
        r[R_START].store(start, Relaxed);
        r[R_LEN].store(len, Relaxed);
        r[R_VALUE].store(value, Relaxed);
        seq.store(((tag as u64) << 32) | c.wrapping_add(2) as u64, Release);
    }

    /// `Table::alloc_node`: zero the node before anyone can link it.
    fn alloc_node(&self, node: usize) -> usize {
        for slot in 0..NODE_WORDS {
            self.node_word(node, slot).store(0, Relaxed);
        }
        node
    }

    /// `Table::leaf_node` with `create`: link a missing leaf under `interior`.
    fn link_leaf(&self, interior: usize, slot: usize, leaf: usize) {
        let w = self.node_word(interior, slot);
        if w.load(Relaxed) == 0 {
            let n = self.alloc_node(leaf);
            w.store(Self::node_ref(n), Release);
        }
    }

    /// `Table::fill`, one entry: add record reference `r` to a leaf entry.
    fn fill(&self, leaf: usize, slot: usize, r: u32) {
        let w = self.node_word(leaf, slot);
        let e = w.load(Relaxed);
        let new = if e as u32 == 0 {
            e | r as u64
        } else {
            e | ((r as u64) << 32)
        };
        w.store(new, Release);
    }

    /// `Table::fill`, one entry, for a window that lies inside the range of
    /// reference `r`: a direct entry with the window's local base `local`
    /// (encoded more simply than the real table's, same single store).
    fn fill_direct(&self, leaf: usize, slot: usize, local: u64, r: u32) {
        let w = self.node_word(leaf, slot);
        assert_eq!(w.load(Relaxed), 0, "direct entries go into empty windows");
        w.store(DIRECT | local << 16 | r as u64, Release);
    }

    /// `Table::unlink_range`, one entry: drop reference `r` from a leaf entry.
    fn unlink(&self, leaf: usize, slot: usize, r: u64) {
        let w = self.node_word(leaf, slot);
        let e = w.load(Relaxed);
        if e & DIRECT != 0 {
            if e & 0xffff == r {
                w.store(0, Release);
            }
            return;
        }
        let mut new = e;
        if e & 0xffff_ffff == r {
            new &= !0xffff_ffff;
        }
        if e >> 32 == r {
            new &= 0xffff_ffff;
        }
        if new != e {
            w.store(new, Release);
        }
    }

    /// `Table::rebuild`'s publication: one `Release` store of the root word.
    fn publish_root(&self, node: usize) {
        self.root.store(Self::node_ref(node) << 16, Release);
    }

    // ---- read side (lock-free) ----

    /// `Table::read_record`.
    fn read_record(&self, idx: usize) -> Option<Snap> {
        let r = &self.records[idx];
        let s1 = r[R_SEQ].load(Acquire);
        let start = r[R_START].load(Relaxed);
        let len = r[R_LEN].load(Relaxed);
        let value = r[R_VALUE].load(Relaxed);
        fence(Acquire);
        let s2 = r[R_SEQ].load(Relaxed);
        if s1 != s2 || s1 & 1 != 0 || len == 0 {
            return None;
        }
        Some(Snap {
            tag: (s1 >> 32) as u32,
            start,
            len,
            value,
        })
    }

    /// `Table::lookup` + `relocate` for a two-level tree whose key is
    /// `(interior slot, leaf slot)`.
    fn relocate(&self, islot: usize, lslot: usize, addr: u64) -> Option<u64> {
        // An empty root (0) or interior entry leads to the empty node: no
        // test of its own, as in `Table::walk`.
        let root = self.root.load(Acquire);
        let e = self.entry(root >> 16, islot).load(Acquire);
        assert_ne!(
            e, GARBAGE,
            "reader saw an interior entry before the node was zeroed"
        );
        let leaf = self.entry(e, lslot).load(Acquire);
        assert_ne!(
            leaf, GARBAGE,
            "reader saw a leaf entry before the node was zeroed"
        );
        if leaf & DIRECT != 0 {
            // `Table::direct`: the entry alone is the answer.
            return Some(((leaf & !DIRECT) >> 16) + (addr & (WINDOW - 1)));
        }
        for r in [leaf as u32, (leaf >> 32) as u32] {
            if r != 0 {
                if let Some(s) = self.read_record(r as usize - 1) {
                    if s.tag == SPACE && addr.wrapping_sub(s.start) < s.len {
                        return Some(s.value + (addr - s.start));
                    }
                }
            }
        }
        None
    }
}

/// Records written in these tests: tag, start, len, value tie together, so a
/// torn snapshot (fields of two of them) is recognizable.
const A: Snap = Snap {
    tag: SPACE,
    start: 0x1000,
    len: 0x1000,
    value: 0xA000,
};
const B: Snap = Snap {
    tag: SPACE,
    start: 0x3000,
    len: 0x800,
    value: 0xB000,
};
/// A record of another address space (reuse of a freed range record).
const C: Snap = Snap {
    tag: SPACE + 1,
    start: 0x1000,
    len: 0x1000,
    value: 0xC000,
};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    // Bounded preemptions keep the exploration short on a 2-core machine;
    // a missing fence or a too-weak publication needs at most two.
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

/// One record rewritten in place (insert, change to another space's range,
/// remove) while a reader takes snapshots: every snapshot is one whole
/// version, never a mix.
#[test]
fn seqlock_record_is_never_torn() {
    model(|| {
        let t = Arc::new(Mini::new(1, 0));
        let w = {
            let t = t.clone();
            thread::spawn(move || {
                for s in [A, C] {
                    t.write_record(0, s.tag, s.start, s.len, s.value);
                }
                t.write_record(0, SPACE, 0, 0, 0);
            })
        };
        for _ in 0..2 {
            if let Some(s) = t.read_record(0) {
                assert!(s == A || s == C, "torn record: {s:x?}");
            }
        }
        w.join().unwrap();
        assert_eq!(t.read_record(0), None);
    });
}

/// Two readers against one writer on a record (smaller writer script).
#[test]
fn seqlock_two_readers() {
    model(|| {
        let t = Arc::new(Mini::new(1, 0));
        t.write_record(0, A.tag, A.start, A.len, A.value);
        let w = {
            let t = t.clone();
            thread::spawn(move || t.write_record(0, B.tag, B.start, B.len, B.value))
        };
        let r = {
            let t = t.clone();
            thread::spawn(move || {
                if let Some(s) = t.read_record(0) {
                    assert!(s == A || s == B, "torn record: {s:x?}");
                }
            })
        };
        if let Some(s) = t.read_record(0) {
            assert!(s == A || s == B, "torn record: {s:x?}");
        }
        w.join().unwrap();
        r.join().unwrap();
    });
}

/// First insert into an empty space (the rebuild path: zero root node and
/// leaf, link, fill, write the record, publish the root), then a second
/// insert into the existing tree (fresh leaf linked under the live interior
/// node, record written, entry filled). A reader relocating an address of
/// each range gets `None` or the right translation, and never sees a node's
/// stale contents.
#[test]
fn publish_tree_and_insert() {
    model(|| {
        let t = Arc::new(Mini::new(2, 3));
        let w = {
            let t = t.clone();
            thread::spawn(move || {
                // rebuild(): build the whole tree privately, then publish.
                let root = t.alloc_node(0);
                t.link_leaf(root, 0, 1);
                t.fill(1, 0, 1);
                t.write_record(0, A.tag, A.start, A.len, A.value);
                t.publish_root(root);
                // insert_range() into the live tree.
                t.link_leaf(root, 1, 2);
                t.write_record(1, B.tag, B.start, B.len, B.value);
                t.fill(2, 1, 2);
            })
        };
        let a = t.relocate(0, 0, A.start + 0x10);
        assert!(a.is_none() || a == Some(A.value + 0x10), "{a:x?}");
        let b = t.relocate(1, 1, B.start + 0x20);
        assert!(b.is_none() || b == Some(B.value + 0x20), "{b:x?}");
        w.join().unwrap();
        assert_eq!(t.relocate(0, 0, A.start), Some(A.value));
        assert_eq!(t.relocate(1, 1, B.start), Some(B.value));
    });
}

/// Remove a range (unlink its entries, free its record) and reuse the
/// record for a range of another space while a reader may still hold the
/// stale entry: the reader answers `None` or the old, then-registered
/// translation, never the new owner's.
#[test]
fn remove_and_reuse_record() {
    model(|| {
        let t = Arc::new(Mini::new(1, 2));
        // Set up (before the threads): A published in a two-level tree.
        let root = t.alloc_node(0);
        t.link_leaf(root, 0, 1);
        t.fill(1, 0, 1);
        t.write_record(0, A.tag, A.start, A.len, A.value);
        t.publish_root(root);
        let w = {
            let t = t.clone();
            thread::spawn(move || {
                // remove_remote(): unlink, then free the record.
                t.unlink(1, 0, 1);
                t.write_record(0, SPACE, 0, 0, 0);
                // The record is reused by another space's insert.
                t.write_record(0, C.tag, C.start, C.len, C.value);
            })
        };
        for _ in 0..2 {
            let a = t.relocate(0, 0, A.start + 0x10);
            assert!(a.is_none() || a == Some(A.value + 0x10), "{a:x?}");
        }
        w.join().unwrap();
        assert_eq!(t.relocate(0, 0, A.start), None);
    });
}

/// A range with a direct entry (its window lies inside it): the record is
/// written, the direct entry stored into the live tree, then the range is
/// removed (entry cleared, record freed and reused by another space) while a
/// reader relocates: it answers `None` or the direct translation, which was
/// registered at the time, and never sees the record's later owner.
#[test]
fn direct_entry_insert_and_remove() {
    /// A window-aligned range that covers its window.
    const D: Snap = Snap {
        tag: SPACE,
        start: 0x4000,
        len: WINDOW,
        value: 0xD000,
    };
    model(|| {
        let t = Arc::new(Mini::new(1, 2));
        // Set up (before the threads): an empty two-level tree.
        let root = t.alloc_node(0);
        t.link_leaf(root, 0, 1);
        t.publish_root(root);
        let w = {
            let t = t.clone();
            thread::spawn(move || {
                // insert_remote(): record, then the direct entry.
                t.write_record(0, D.tag, D.start, D.len, D.value);
                t.fill_direct(1, 0, D.value, 1);
                // remove_remote(): clear the entry, free and reuse the record.
                t.unlink(1, 0, 1);
                t.write_record(0, SPACE, 0, 0, 0);
                t.write_record(0, C.tag, C.start, C.len, C.value);
            })
        };
        for _ in 0..2 {
            let a = t.relocate(0, 0, D.start + 0x10);
            assert!(a.is_none() || a == Some(D.value + 0x10), "{a:x?}");
        }
        w.join().unwrap();
        assert_eq!(t.relocate(0, 0, D.start), None);
    });
}
