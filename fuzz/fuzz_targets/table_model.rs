//! The translation table against a naive model.
//!
//! The input decodes into a small configuration and a sequence of
//! operations on local segments (`insert_segment`, `remove_segment`,
//! `resolve`, `locate`) and remote ranges (`insert_remote`, `remove_remote`,
//! `relocate`). Addresses are synthetic (nothing is mapped: the table never
//! dereferences them), mostly page-aligned and small, with some at the
//! granule extremes and some arbitrary. The model is a `Vec` per address
//! space searched linearly.
//!
//! Every answer must be the model's: the same `Ok` value, or the same error
//! kind, following the documented precedence (`InvalidArgument`, then
//! `AlreadyExists` / `NotFound`, then `OutOfBounds` / `TableFull`). The one
//! freedom the table has is running out of radix nodes: an insert the model
//! accepts may fail with `TableFull`, and must then change nothing (later
//! lookups keep agreeing with the model, which did not insert either).
#![no_main]

use arbitrary::Arbitrary;
use core::sync::atomic::AtomicU64;
use libfuzzer_sys::fuzz_target;
use mooncake_shm::table::{RemoteSpan, Table, TableConfig};
use mooncake_shm::Error;

const PAGE: u64 = 4096;
const ADDR_LIMIT: u64 = 1 << 48;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    /// A page in the first MiB.
    Page(u8),
    /// A 16 MiB-aligned address (large granules).
    Huge(u8),
    /// Pages just below the 2^48 limit.
    Top(u8),
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Addr::Page(n) => n as u64 * PAGE,
            Addr::Huge(n) => (n as u64) << 24,
            Addr::Top(n) => ADDR_LIMIT - (n as u64 + 1) * PAGE,
            Addr::Raw(r) => r,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    Pages(u8),
    Bytes(u16),
    /// Up to 240 MiB in 16 MiB steps.
    Huge(u8),
    Raw(u64),
}

impl Len {
    fn get(self) -> u64 {
        match self {
            Len::Pages(n) => n as u64 * PAGE,
            Len::Bytes(n) => n as u64,
            Len::Huge(n) => ((n % 16) as u64) << 24,
            Len::Raw(r) => r,
        }
    }
}

/// An offset into a range picked from the model.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Off {
    Start,
    Bytes(u16),
    /// Relative to the end of the range.
    FromEnd(i16),
    Raw(u64),
}

impl Off {
    fn get(self, len: u64) -> u64 {
        match self {
            Off::Start => 0,
            Off::Bytes(b) => b as u64,
            Off::FromEnd(d) => len.wrapping_add(d as i64 as u64),
            Off::Raw(r) => r,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    InsertSegment {
        id: u8,
        base: Addr,
        len: Len,
    },
    RemoveSegment {
        id: u8,
    },
    Resolve {
        id: u8,
        offset: Off,
        len: Len,
    },
    Locate {
        addr: Addr,
    },
    /// `locate` of an address inside (or near) a live segment.
    LocateLive {
        n: u8,
        off: Off,
    },
    InsertRemote {
        peer: u8,
        remote: Addr,
        len: Len,
        local: Addr,
    },
    RemoveRemote {
        peer: u8,
        remote: Addr,
    },
    /// Remove a live range (or, with `off`, probe near its start).
    RemoveRemoteLive {
        n: u8,
        off: Off,
    },
    Relocate {
        peer: u8,
        addr: Addr,
        len: Len,
    },
    /// `relocate` of an address inside (or near) a live range.
    RelocateLive {
        n: u8,
        off: Off,
        len: Len,
    },
    /// `relocate_batch` for `peer`, each access near a live range of any
    /// peer (or at a random address if there is none).
    RelocateBatch {
        peer: u8,
        picks: Vec<(u8, Off, Len, Addr)>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_segments: u8,
    max_peers: u8,
    max_ranges: u8,
    max_nodes: u8,
    ops: Vec<Op>,
}

#[derive(Clone, Copy, Debug)]
struct Range {
    start: u64,
    len: u64,
    value: u64,
}

impl Range {
    fn contains(&self, a: u64) -> bool {
        a >= self.start && a - self.start < self.len
    }
    fn overlaps(&self, start: u64, len: u64) -> bool {
        self.start < start.saturating_add(len) && start < self.start + self.len
    }
}

struct Model {
    cfg: TableConfig,
    segments: Vec<Option<Range>>,
    peers: Vec<Vec<Range>>,
}

/// Footprint validity shared by both inserts: non-zero length, page-aligned
/// start, page-rounded end at or below 2^48.
fn footprint_ok(start: u64, len: u64) -> bool {
    if len == 0 || start % PAGE != 0 {
        return false;
    }
    match len.checked_add(PAGE - 1) {
        Some(l) => start
            .checked_add(l & !(PAGE - 1))
            .is_some_and(|end| end <= ADDR_LIMIT),
        None => false,
    }
}

impl Model {
    fn insert_segment(&self, id: u32, base: u64, len: u64) -> Result<(), Error> {
        if id >= self.cfg.max_segments || !footprint_ok(base, len) {
            return Err(Error::InvalidArgument);
        }
        if self.segments[id as usize].is_some()
            || self
                .segments
                .iter()
                .flatten()
                .any(|r| r.overlaps(base, len))
        {
            return Err(Error::AlreadyExists);
        }
        Ok(())
    }

    fn remove_segment(&self, id: u32) -> Result<(), Error> {
        if id >= self.cfg.max_segments {
            return Err(Error::InvalidArgument);
        }
        self.segments[id as usize]
            .map(|_| ())
            .ok_or(Error::NotFound)
    }

    fn resolve(&self, id: u32, offset: u64, len: u64) -> Result<usize, Error> {
        if id >= self.cfg.max_segments {
            return Err(Error::InvalidArgument);
        }
        let s = self.segments[id as usize].ok_or(Error::NotFound)?;
        if offset >= s.len || len > s.len - offset {
            return Err(Error::OutOfBounds);
        }
        Ok((s.start + offset) as usize)
    }

    fn locate(&self, addr: u64) -> Result<(u32, u64), Error> {
        self.segments
            .iter()
            .enumerate()
            .find_map(|(i, s)| match s {
                Some(s) if s.contains(addr) => Some((i as u32, addr - s.start)),
                _ => None,
            })
            .ok_or(Error::NotFound)
    }

    fn insert_remote(&self, peer: u32, remote: u64, len: u64, local: u64) -> Result<(), Error> {
        if peer >= self.cfg.max_peers
            || local % PAGE != 0
            || !footprint_ok(remote, len)
            || local.checked_add(len - 1).is_none()
        {
            return Err(Error::InvalidArgument);
        }
        if self.peers[peer as usize]
            .iter()
            .any(|r| r.overlaps(remote, len))
        {
            return Err(Error::AlreadyExists);
        }
        let live: usize = self.peers.iter().map(Vec::len).sum();
        if live >= self.cfg.max_ranges as usize {
            return Err(Error::TableFull);
        }
        Ok(())
    }

    fn remove_remote(&self, peer: u32, remote: u64) -> Result<usize, Error> {
        if peer >= self.cfg.max_peers {
            return Err(Error::InvalidArgument);
        }
        self.peers[peer as usize]
            .iter()
            .position(|r| r.start == remote)
            .ok_or(Error::NotFound)
    }

    fn relocate(&self, peer: u32, addr: u64, len: u64) -> Result<usize, Error> {
        if peer >= self.cfg.max_peers {
            return Err(Error::InvalidArgument);
        }
        let r = self.peers[peer as usize]
            .iter()
            .find(|r| r.contains(addr))
            .ok_or(Error::NotFound)?;
        let off = addr - r.start;
        if len > r.len - off {
            return Err(Error::OutOfBounds);
        }
        Ok((r.value + off) as usize)
    }

    /// The n-th live remote range, as `(peer, range)`.
    fn nth_range(&self, n: u8) -> Option<(u32, Range)> {
        let all: Vec<(u32, Range)> = self
            .peers
            .iter()
            .enumerate()
            .flat_map(|(p, v)| v.iter().map(move |r| (p as u32, *r)))
            .collect();
        (!all.is_empty()).then(|| all[n as usize % all.len()])
    }

    fn nth_segment(&self, n: u8) -> Option<Range> {
        let all: Vec<Range> = self.segments.iter().flatten().copied().collect();
        (!all.is_empty()).then(|| all[n as usize % all.len()])
    }
}

/// An insert must answer as the model does, except that it may run out of
/// radix nodes (`TableFull`) where the model succeeds. Returns whether it
/// took effect.
fn check_insert(
    got: Result<(), Error>,
    want: Result<(), Error>,
    what: &dyn core::fmt::Debug,
) -> bool {
    match (got, want) {
        (Ok(()), Ok(())) => true,
        (Err(g), Err(w)) if g == w => false,
        (Err(Error::TableFull), Ok(())) => false,
        (g, w) => panic!("{what:?}: table {g:?}, model {w:?}"),
    }
}

fuzz_target!(|input: Input| {
    let cfg = TableConfig {
        max_segments: (input.max_segments % 8) as u32 + 1,
        max_peers: (input.max_peers % 4) as u32 + 1,
        max_ranges: (input.max_ranges % 16) as u32 + 1,
        max_nodes: (input.max_nodes % 8) as u32 + 1,
    };
    let words = Table::<&[AtomicU64]>::words_for(&cfg);
    if words == 0 {
        // The interface stub (before the real table lands) sizes nothing.
        return;
    }
    let storage: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
    let table = Table::new(cfg, &storage[..]).expect("valid configuration");
    let mut m = Model {
        cfg,
        segments: vec![None; cfg.max_segments as usize],
        peers: vec![Vec::new(); cfg.max_peers as usize],
    };
    let id_of = |id: u8| id as u32 % (cfg.max_segments + 1);
    let peer_of = |p: u8| p as u32 % (cfg.max_peers + 1);

    for op in input.ops.iter().take(256) {
        match *op {
            Op::InsertSegment { id, base, len } => {
                let (id, base, len) = (id_of(id), base.get(), len.get());
                let got = table.insert_segment(id, base as usize, len);
                if check_insert(got, m.insert_segment(id, base, len), op) {
                    m.segments[id as usize] = Some(Range {
                        start: base,
                        len,
                        value: 0,
                    });
                }
            }
            Op::RemoveSegment { id } => {
                let id = id_of(id);
                let want = m.remove_segment(id);
                assert_eq!(table.remove_segment(id), want, "{op:?}");
                if want.is_ok() {
                    m.segments[id as usize] = None;
                }
            }
            Op::Resolve { id, offset, len } => {
                let id = id_of(id);
                let slen = m
                    .segments
                    .get(id as usize)
                    .copied()
                    .flatten()
                    .map_or(0, |s| s.len);
                let (offset, len) = (offset.get(slen), len.get());
                assert_eq!(
                    table.resolve(id, offset, len),
                    m.resolve(id, offset, len),
                    "{op:?}"
                );
            }
            Op::Locate { addr } => {
                let a = addr.get();
                assert_eq!(table.locate(a as usize), m.locate(a), "{op:?}");
            }
            Op::LocateLive { n, off } => {
                if let Some(s) = m.nth_segment(n) {
                    let a = s.start.wrapping_add(off.get(s.len));
                    assert_eq!(table.locate(a as usize), m.locate(a), "{op:?} at {a:#x}");
                }
            }
            Op::InsertRemote {
                peer,
                remote,
                len,
                local,
            } => {
                let (peer, remote, len, local) =
                    (peer_of(peer), remote.get(), len.get(), local.get());
                let got = table.insert_remote(peer, remote, len, local as usize);
                if check_insert(got, m.insert_remote(peer, remote, len, local), op) {
                    m.peers[peer as usize].push(Range {
                        start: remote,
                        len,
                        value: local,
                    });
                }
            }
            Op::RemoveRemote { peer, remote } => {
                let (peer, remote) = (peer_of(peer), remote.get());
                remove_remote(&table, &mut m, peer, remote, op);
            }
            Op::RemoveRemoteLive { n, off } => {
                if let Some((peer, r)) = m.nth_range(n) {
                    let remote = r.start.wrapping_add(off.get(r.len));
                    remove_remote(&table, &mut m, peer, remote, op);
                }
            }
            Op::Relocate { peer, addr, len } => {
                let (peer, a, len) = (peer_of(peer), addr.get(), len.get());
                assert_eq!(
                    table.relocate(peer, a, len),
                    m.relocate(peer, a, len),
                    "{op:?}"
                );
            }
            Op::RelocateBatch { peer, ref picks } => {
                let peer = peer_of(peer);
                let spans: Vec<RemoteSpan> = picks
                    .iter()
                    .map(|(n, off, len, addr)| {
                        let addr = match m.nth_range(*n) {
                            Some((_, r)) => r.start.wrapping_add(off.get(r.len)),
                            None => addr.get(),
                        };
                        RemoteSpan {
                            addr,
                            len: len.get(),
                        }
                    })
                    .collect();
                let mut out = vec![usize::MAX; spans.len()];
                let got = table.relocate_batch(peer, &spans, &mut out);
                // The model's answers up to the first error, which stops it;
                // a bad peer fails even an empty batch.
                let mut want = match m.relocate(peer, 0, 0) {
                    Err(Error::InvalidArgument) => Err((0, Error::InvalidArgument)),
                    _ => Ok(()),
                };
                let mut done = spans.len();
                for (i, s) in spans.iter().enumerate().filter(|_| want.is_ok()) {
                    match m.relocate(peer, s.addr, s.len) {
                        Ok(local) => assert_eq!(out[i], local, "{op:?} [{i}]"),
                        Err(e) => {
                            (want, done) = (Err((i, e)), i);
                            break;
                        }
                    }
                }
                assert_eq!(got, want, "{op:?}");
                assert!(out[done..].iter().all(|&o| o == usize::MAX), "{op:?}");
            }
            Op::RelocateLive { n, off, len } => {
                if let Some((peer, r)) = m.nth_range(n) {
                    let a = r.start.wrapping_add(off.get(r.len));
                    let len = len.get();
                    assert_eq!(
                        table.relocate(peer, a, len),
                        m.relocate(peer, a, len),
                        "{op:?} at {a:#x}"
                    );
                }
            }
        }
    }

    // Everything the model holds is still found, then can be removed.
    for (id, s) in m.segments.iter().enumerate() {
        if let Some(s) = s {
            assert_eq!(table.resolve(id as u32, 0, s.len), Ok(s.start as usize));
            assert_eq!(
                table.locate((s.start + s.len - 1) as usize),
                Ok((id as u32, s.len - 1))
            );
            assert_eq!(table.remove_segment(id as u32), Ok(()));
            assert_eq!(table.locate(s.start as usize), Err(Error::NotFound));
        }
    }
    for (p, ranges) in m.peers.iter().enumerate() {
        for r in ranges {
            assert_eq!(
                table.relocate(p as u32, r.start, r.len),
                Ok(r.value as usize)
            );
            assert_eq!(table.remove_remote(p as u32, r.start), Ok(()));
            assert_eq!(table.relocate(p as u32, r.start, 0), Err(Error::NotFound));
        }
    }
});

fn remove_remote(table: &Table<&[AtomicU64]>, m: &mut Model, peer: u32, remote: u64, op: &Op) {
    let want = m.remove_remote(peer, remote);
    assert_eq!(
        table.remove_remote(peer, remote),
        want.map(|_| ()),
        "{op:?}"
    );
    if let Ok(i) = want {
        m.peers[peer as usize].swap_remove(i);
    }
}
