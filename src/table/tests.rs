//! Tests of the translation table (run under Miri too, with smaller counts).

use super::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::vec::Vec;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const TOP: u64 = 1 << ADDR_BITS;

fn storage(cfg: &TableConfig) -> Vec<AtomicU64> {
    (0..Table::<&[AtomicU64]>::words_for(cfg))
        .map(|_| AtomicU64::new(0))
        .collect()
}

/// Miri builds the table with 64-entry nodes (`LEVEL_BITS` = 6, so it can
/// interpret them quickly), which makes trees twice as deep: tests that are
/// not about node exhaustion give it proportionally more nodes.
const MIRI_NODES: u32 = if cfg!(miri) { 4 } else { 1 };

fn cfg(segments: u32, peers: u32, ranges: u32, nodes: u32) -> TableConfig {
    TableConfig::new(segments, peers, ranges, nodes)
}

/// A local address derived from a remote one, so readers can check answers.
fn local_of(peer: u32, remote: u64) -> usize {
    (remote + (peer as u64 + 1) * (1 << 40)) as usize
}

#[test]
fn send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Table<&[AtomicU64]>>();
    check::<Table<Vec<AtomicU64>>>();
}

#[test]
fn config_and_storage_errors() {
    let c = cfg(4, 2, 8, 4);
    let words = storage(&c);
    assert!(words.len() >= 4 * NODE_WORDS);
    assert_eq!(
        Table::new(c, &words[..words.len() - 1]).unwrap_err(),
        Error::InvalidArgument
    );
    let bad = cfg(u32::MAX, 0, 1, 0);
    assert_eq!(Table::<&[AtomicU64]>::words_for(&bad), 0);
    assert_eq!(
        Table::new(bad, &words[..]).unwrap_err(),
        Error::InvalidArgument
    );
    let bad = cfg(0, 0, 0, u32::MAX);
    assert_eq!(Table::<&[AtomicU64]>::words_for(&bad), 0);
    assert_eq!(
        Table::new(bad, &words[..]).unwrap_err(),
        Error::InvalidArgument
    );
    // An empty-capacity table is valid but everything is out of range.
    let z = cfg(0, 0, 0, 0);
    let zw = storage(&z);
    let t = Table::new(z, &zw[..]).unwrap();
    assert_eq!(t.insert_segment(0, 0, 4096), Err(Error::InvalidArgument));
    assert_eq!(t.relocate(0, 0, 0), Err(Error::InvalidArgument));
    assert_eq!(t.locate(4096), Err(Error::NotFound));
}

#[test]
fn new_reinitializes_garbage() {
    let c = cfg(4, 2, 8, 8 * MIRI_NODES);
    let words = storage(&c);
    for (i, w) in words.iter().enumerate() {
        w.store(0xdead_beef_0000 + i as u64, Relaxed);
    }
    let t = Table::new(c, &words[..]).unwrap();
    assert_eq!(
        t.stats(),
        TableStats {
            nodes_total: c.max_nodes as u64,
            ..Default::default()
        }
    );
    assert_eq!(t.resolve(1, 0, 0), Err(Error::NotFound));
    assert_eq!(t.relocate(1, 0x1000, 0), Err(Error::NotFound));
    t.insert_segment(1, 0x10_0000, 8192).unwrap();
    t.insert_remote(1, 0x2000, 4096, 0x5000).unwrap();
    assert_eq!(t.resolve(1, 4, 4), Ok(0x10_0004));
    assert_eq!(t.locate(0x10_1fff), Ok((1, 0x1fff)));
    assert_eq!(t.relocate(1, 0x2fff, 1), Ok(0x5fff));
}

#[test]
fn segment_errors() {
    let c = cfg(4, 1, 4, 16);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let e = Error::InvalidArgument;
    assert_eq!(t.insert_segment(4, 0x1000, 4096), Err(e));
    assert_eq!(t.insert_segment(0, 0x1000, 0), Err(e));
    assert_eq!(t.insert_segment(0, 0x1001, 4096), Err(e));
    assert_eq!(t.insert_segment(0, 0x1000, u64::MAX), Err(e));
    assert_eq!(t.insert_segment(0, 0x1000, u64::MAX - 4094), Err(e));
    assert_eq!(t.insert_segment(0, (TOP - 4096) as usize, 4097), Err(e));
    assert_eq!(t.insert_segment(0, TOP as usize, 4096), Err(e));
    assert_eq!(t.insert_segment(0, usize::MAX & !4095, 4096), Err(e));
    assert_eq!(t.remove_segment(4), Err(e));
    assert_eq!(t.resolve(4, 0, 0), Err(e));
    assert_eq!(t.segment(4), None);
    assert_eq!(t.remove_segment(0), Err(Error::NotFound));
    assert_eq!(t.resolve(0, 0, 0), Err(Error::NotFound));

    t.insert_segment(0, 0x10_0000, 64 * KIB).unwrap();
    assert_eq!(
        t.insert_segment(0, 0x80_0000, 4096),
        Err(Error::AlreadyExists)
    );
    // Overlaps of every shape with segment 0 = [0x10_0000, 0x11_0000).
    for (base, len) in [
        (0x10_0000, 4096),
        (0x10_f000, 1),
        (0x0f_f000, 4097),
        (0x0f_0000, 2 * MIB),
        (0x10_8000, MIB),
    ] {
        assert_eq!(
            t.insert_segment(1, base, len),
            Err(Error::AlreadyExists),
            "{base:#x}"
        );
    }
    // Adjacent on both sides is fine.
    t.insert_segment(1, 0x11_0000, 4096).unwrap();
    t.insert_segment(2, 0x0f_f000, 4096).unwrap();
    assert_eq!(t.stats().segments, 3);
    assert_eq!(t.segment(0), Some((0x10_0000, 64 * KIB)));
    t.remove_segment(0).unwrap();
    assert_eq!(t.remove_segment(0), Err(Error::NotFound));
    assert_eq!(t.segment(0), None);
    assert_eq!(t.stats().segments, 2);
}

#[test]
fn resolve_and_locate_bounds() {
    let c = cfg(8, 1, 4, 16 * MIRI_NODES);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let base = 0x7f00_0000_0000usize;
    let len = 3 * 4096 + 5; // not a page multiple
    t.insert_segment(3, base, len).unwrap();
    let oob = Err(Error::OutOfBounds);
    assert_eq!(t.resolve(3, 0, 0), Ok(base));
    assert_eq!(t.resolve(3, 0, len), Ok(base));
    assert_eq!(t.resolve(3, 0, len + 1), oob);
    assert_eq!(t.resolve(3, len - 1, 1), Ok(base + len as usize - 1));
    assert_eq!(t.resolve(3, len - 1, 0), Ok(base + len as usize - 1));
    assert_eq!(t.resolve(3, len - 1, 2), oob);
    assert_eq!(t.resolve(3, len, 0), oob);
    assert_eq!(t.resolve(3, u64::MAX, 0), oob);
    assert_eq!(t.resolve(3, u64::MAX, u64::MAX), oob);
    assert_eq!(t.resolve(3, 1, u64::MAX), oob);
    assert_eq!(t.resolve(3, 0, u64::MAX), oob);
    assert_eq!(t.resolve(3, u64::MAX - 1, 2), oob);

    assert_eq!(t.locate(base), Ok((3, 0)));
    assert_eq!(t.locate(base + len as usize - 1), Ok((3, len - 1)));
    assert_eq!(t.locate(base + len as usize), Err(Error::NotFound));
    assert_eq!(t.locate(base - 1), Err(Error::NotFound));
    assert_eq!(t.locate(usize::MAX), Err(Error::NotFound));
    assert_eq!(t.locate(TOP as usize), Err(Error::NotFound));
    assert_eq!(t.locate(0), Err(Error::NotFound));

    // A segment at the very top of the address space.
    let top = (TOP - 4096) as usize;
    t.insert_segment(7, top, 4096).unwrap();
    assert_eq!(t.resolve(7, 4095, 1), Ok(top + 4095));
    assert_eq!(t.resolve(7, 4095, 2), oob);
    assert_eq!(t.locate(top + 4095), Ok((7, 4095)));
    assert_eq!(t.locate(top + 4096), Err(Error::NotFound));
    // Segment at address 0 is allowed too.
    t.insert_segment(0, 0, 4096).unwrap();
    assert_eq!(t.locate(0), Ok((0, 0)));
    assert_eq!(t.resolve(0, 17, 1), Ok(17));
}

#[test]
fn remote_errors() {
    let c = cfg(1, 2, 3, 16 * MIRI_NODES);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let e = Err(Error::InvalidArgument);
    assert_eq!(t.insert_remote(2, 0x1000, 4096, 0x1000), e);
    assert_eq!(t.insert_remote(0, 0x1000, 0, 0x1000), e);
    assert_eq!(t.insert_remote(0, 0x1001, 4096, 0x1000), e);
    assert_eq!(t.insert_remote(0, 0x1000, 4096, 0x1008), e);
    assert_eq!(t.insert_remote(0, 0x1000, u64::MAX, 0x1000), e);
    assert_eq!(t.insert_remote(0, TOP - 4096, 8192, 0x1000), e);
    assert_eq!(t.insert_remote(0, !4095, 4096, 0x1000), e);
    assert_eq!(t.insert_remote(0, 0x1000, 8192, usize::MAX & !4095), e);
    assert_eq!(t.remove_remote(2, 0x1000), e);
    assert_eq!(t.relocate(2, 0x1000, 0), Err(Error::InvalidArgument));
    assert_eq!(t.remove_remote(0, 0x1000), Err(Error::NotFound));
    assert_eq!(t.relocate(0, 0x1000, 0), Err(Error::NotFound));

    t.insert_remote(0, 0x10_0000, 64 * KIB, 0x7000_0000)
        .unwrap();
    assert_eq!(
        t.insert_remote(0, 0x10_f000, 4096, 0x1000),
        Err(Error::AlreadyExists)
    );
    assert_eq!(
        t.insert_remote(0, 0x0f_f000, 8192, 0x1000),
        Err(Error::AlreadyExists)
    );
    // Same remote addresses for another peer are independent.
    t.insert_remote(1, 0x10_0000, 64 * KIB, 0x8000_0000)
        .unwrap();
    assert_eq!(t.remove_remote(0, 0x10_1000), Err(Error::NotFound));
    assert_eq!(t.remove_remote(0, 0x11_0000), Err(Error::NotFound));
    assert_eq!(t.relocate(0, 0x10_0010, 16), Ok(0x7000_0010));
    assert_eq!(t.relocate(1, 0x10_0010, 16), Ok(0x8000_0010));
    // Record capacity: 3 records.
    t.insert_remote(0, 0x20_0000, 4096, 0x9000_0000).unwrap();
    assert_eq!(
        t.insert_remote(0, 0x30_0000, 4096, 0x9000_0000),
        Err(Error::TableFull)
    );
    t.remove_remote(0, 0x20_0000).unwrap();
    assert_eq!(t.remove_remote(0, 0x20_0000), Err(Error::NotFound));
    assert_eq!(t.relocate(0, 0x20_0000, 0), Err(Error::NotFound));
    t.insert_remote(0, 0x30_0000, 4096, 0x9000_0000).unwrap();
    assert_eq!(t.relocate(0, 0x30_0fff, 1), Ok(0x9000_0fff));
    assert_eq!(t.stats().ranges, 3);
}

#[test]
fn relocate_bounds_and_top_of_space() {
    let c = cfg(1, 1, 4, 16 * MIRI_NODES);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let (rb, len, lb) = (0x5555_0000_0000u64, 5 * 4096 + 7, 0x2000_0000usize);
    t.insert_remote(0, rb, len, lb).unwrap();
    let oob = Err(Error::OutOfBounds);
    assert_eq!(t.relocate(0, rb, 0), Ok(lb));
    assert_eq!(t.relocate(0, rb, len), Ok(lb));
    assert_eq!(t.relocate(0, rb, len + 1), oob);
    assert_eq!(t.relocate(0, rb + len - 1, 1), Ok(lb + len as usize - 1));
    assert_eq!(t.relocate(0, rb + len - 1, 2), oob);
    assert_eq!(t.relocate(0, rb + 1, u64::MAX), oob);
    assert_eq!(t.relocate(0, rb + len, 0), Err(Error::NotFound));
    assert_eq!(t.relocate(0, rb - 1, 1), Err(Error::NotFound));
    assert_eq!(t.relocate(0, u64::MAX, 1), Err(Error::NotFound));
    assert_eq!(t.relocate(0, u64::MAX, u64::MAX), Err(Error::NotFound));

    let top = TOP - 8192;
    t.insert_remote(0, top, 8192, 0x3000_0000).unwrap();
    assert_eq!(t.relocate(0, TOP - 1, 1), Ok(0x3000_0000 + 8191));
    assert_eq!(t.relocate(0, TOP - 1, 2), oob);
    assert_eq!(t.relocate(0, TOP - 1, u64::MAX), oob);
    // Lengths just below 2^48 (the direct path's window test, which asks
    // `len < G`, leaves them to the record) and an access whose last byte
    // carries into bit 48 (which that test, made on the key's scale, drops:
    // the window bits below it differ as well).
    for len in [TOP - 4096, TOP - 4095, TOP - 1] {
        assert_eq!(t.relocate(0, TOP - 1, len), oob, "len {len:#x}");
        assert_eq!(t.relocate(0, top, len), oob, "len {len:#x}");
    }
    assert_eq!(t.relocate(0, TOP - 4096, 4097), oob);
    assert_eq!(t.relocate(0, TOP, 0), Err(Error::NotFound));
    assert_eq!(t.relocate(0, 0, 0), Err(Error::NotFound));
    t.remove_remote(0, top).unwrap();
    assert_eq!(t.relocate(0, TOP - 1, 1), Err(Error::NotFound));
    // A local mapping ending exactly at the top of the local address space.
    let last = usize::MAX - 4095;
    t.insert_remote(0, 0x1000, 4096, last).unwrap();
    assert_eq!(t.relocate(0, 0x1fff, 1), Ok(usize::MAX));
}

#[test]
// Rebuilding four 64 MiB ranges at a 4 KiB granule writes 65,536 leaf
// entries (about 1,000 of Miri's 64-entry nodes): too slow to interpret. The
// rebuild path runs under Miri in the model and removal tests.
#[cfg_attr(miri, ignore)]
fn granule_rebuild() {
    let c = cfg(8, 1, 16, 64);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let base = 0x10_0000_0000u64;
    for i in 0..4 {
        let rb = base + i * 64 * MIB;
        t.insert_remote(0, rb, 64 * MIB, local_of(0, rb)).unwrap();
        t.insert_segment(i as u32, rb as usize, 64 * MIB).unwrap();
    }
    assert_eq!(t.peer_granule(0), Some(64 * MIB));
    assert_eq!(t.local_granule(), Some(64 * MIB));
    assert_eq!(t.peer_granule(1), None);
    let rebuilds = t.stats().rebuilds;
    // A 4 KiB range (not granule-aligned relative to the old one) forces a rebuild.
    let small = base + 4 * 64 * MIB + 12 * KIB;
    t.insert_remote(0, small, 4096, local_of(0, small)).unwrap();
    t.insert_segment(4, small as usize, 100).unwrap();
    assert_eq!(t.peer_granule(0), Some(4096));
    assert_eq!(t.local_granule(), Some(4096));
    assert_eq!(t.stats().rebuilds, rebuilds + 2);
    for i in 0..4u64 {
        let rb = base + i * 64 * MIB;
        for a in [rb, rb + 4095, rb + 33 * MIB + 7, rb + 64 * MIB - 1] {
            assert_eq!(t.relocate(0, a, 1), Ok(local_of(0, a)));
            assert_eq!(t.locate(a as usize), Ok((i as u32, a - rb)));
        }
        assert_eq!(t.relocate(0, rb, 64 * MIB), Ok(local_of(0, rb)));
        assert_eq!(t.relocate(0, rb + 1, 64 * MIB), Err(Error::OutOfBounds));
        assert_eq!(
            t.resolve(i as u32, 64 * MIB - 1, 1),
            Ok((rb + 64 * MIB - 1) as usize)
        );
    }
    assert_eq!(
        t.relocate(0, small + 4095, 1),
        Ok(local_of(0, small + 4095))
    );
    assert_eq!(t.relocate(0, small + 4096, 0), Err(Error::NotFound));
    assert_eq!(t.relocate(0, small - 1, 0), Err(Error::NotFound));
    assert_eq!(t.locate(small as usize + 99), Ok((4, 99)));
    assert_eq!(t.locate(small as usize + 100), Err(Error::NotFound));
    // Granules between 4 KiB and 64 MiB: a 1 MiB + 1 byte range gives 1 MiB.
    let mid = base + 10 * 64 * MIB;
    let c2 = cfg(1, 1, 4, 64);
    let w2 = storage(&c2);
    let t2 = Table::new(c2, &w2[..]).unwrap();
    t2.insert_remote(0, mid, 64 * MIB, local_of(0, mid))
        .unwrap();
    t2.insert_remote(0, mid + 64 * MIB, MIB + 1, local_of(0, mid + 64 * MIB))
        .unwrap();
    assert_eq!(t2.peer_granule(0), Some(MIB));
    assert_eq!(
        t2.relocate(0, mid + 65 * MIB, 1),
        Ok(local_of(0, mid + 65 * MIB))
    );
    assert_eq!(t2.relocate(0, mid + 65 * MIB + 1, 0), Err(Error::NotFound));
    assert_eq!(
        t2.relocate(0, mid + 5 * MIB, 1),
        Ok(local_of(0, mid + 5 * MIB))
    );
}

#[test]
fn huge_range_uses_one_level() {
    assert_eq!(levels(36), if cfg!(miri) { 2 } else { 1 });
    let c = cfg(1, 1, 4, 4);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let g = 1u64 << 36;
    t.insert_remote(0, g, g, 0).unwrap();
    assert_eq!(t.stats().nodes_used, levels(36) as u64);
    assert_eq!(t.peer_granule(0), Some(g));
    assert_eq!(t.relocate(0, 2 * g - 1, 1), Ok((g - 1) as usize));
    assert_eq!(t.relocate(0, g - 1, 0), Err(Error::NotFound));
}

#[test]
fn node_exhaustion() {
    // A 4 KiB granule needs `l` levels (3 with 12-bit nodes): `l` nodes for
    // the first range.
    let l = levels(12);
    let c = cfg(2, 2, 4, l - 1);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    assert_eq!(
        t.insert_remote(0, 0x1000, 4096, 0x1000),
        Err(Error::TableFull)
    );
    assert_eq!(
        t.stats().nodes_used,
        0,
        "a failed rebuild gives its nodes back"
    );
    assert_eq!(t.stats().ranges, 0);
    assert_eq!(t.relocate(0, 0x1000, 0), Err(Error::NotFound));
    assert_eq!(t.insert_segment(0, 0x1000, 4096), Err(Error::TableFull));
    assert_eq!(t.segment(0), None);
    assert_eq!(t.resolve(0, 0, 0), Err(Error::NotFound));

    let c = cfg(2, 2, 4, l + 1);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    t.insert_remote(0, 0x1000, 4096, 0x1000).unwrap();
    assert_eq!(t.stats().nodes_used, l as u64);
    // Same leaf: no new node needed.
    t.insert_remote(0, 0x3000, 4096, 0x3000).unwrap();
    // Far away: needs a new interior node and a leaf, only one is left.
    assert_eq!(
        t.insert_remote(0, 0x7000_0000_0000, 4096, 0x5000),
        Err(Error::TableFull)
    );
    assert_eq!(t.relocate(0, 0x7000_0000_0000, 0), Err(Error::NotFound));
    assert_eq!(t.relocate(0, 0x1fff, 1), Ok(0x1fff));
    assert_eq!(t.relocate(0, 0x3000, 4096), Ok(0x3000));
    assert_eq!(t.stats().ranges, 2);
    // The failed insert did not consume its record: two more fit.
    t.remove_remote(0, 0x3000).unwrap();
    t.insert_remote(0, 0x5000, 4096, 0x5000).unwrap();
    t.insert_remote(0, 0x9000, 4096, 0x9000).unwrap();
    t.insert_remote(0, 0xb000, 4096, 0xb000).unwrap();
    assert_eq!(
        t.insert_remote(0, 0xd000, 4096, 0xd000),
        Err(Error::TableFull)
    );
}

#[test]
fn removed_ranges_free_their_index_entries() {
    let c = cfg(4, 2, 8, 16 * MIRI_NODES);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    for round in 0..20u64 {
        let peer = (round % 2) as u32;
        let rb = 0x4000_0000 + (round % 3) * 8192;
        t.insert_remote(peer, rb, 8192, local_of(peer, rb)).unwrap();
        t.insert_segment(1, rb as usize, 8192).unwrap();
        assert_eq!(
            t.relocate(peer, rb + 8191, 1),
            Ok(local_of(peer, rb + 8191))
        );
        assert_eq!(t.relocate(1 - peer, rb, 0), Err(Error::NotFound));
        assert_eq!(t.locate(rb as usize + 5), Ok((1, 5)));
        t.remove_remote(peer, rb).unwrap();
        t.remove_segment(1).unwrap();
        assert_eq!(t.relocate(peer, rb, 0), Err(Error::NotFound));
        assert_eq!(t.locate(rb as usize), Err(Error::NotFound));
    }
    let s = t.stats();
    assert_eq!((s.segments, s.ranges), (0, 0));
    // One three-level tree per space (local, peer 0, peer 1), built once.
    assert_eq!(
        (s.nodes_used, s.rebuilds),
        (3 * levels(12) as u64, 3),
        "{s:?}"
    );
}

/// Record references are below `2^31` (bit 63 of a leaf entry marks a
/// direct entry), so the records are limited to `2^31 - 1`.
#[test]
fn record_count_limit() {
    let words_for = |s: u32, r: u32| Table::<&[AtomicU64]>::words_for(&cfg(s, 0, r, 0));
    assert_ne!(words_for(1 << 30, (1 << 30) - 1), 0);
    assert_eq!(words_for(1 << 30, 1 << 30), 0);
    assert_eq!(words_for(0, u32::MAX), 0);
}

/// Windows that lie inside one remote range get direct leaf entries; the
/// answers are the same as through the records: accesses that run past a
/// window, partial windows, addresses above `2^48` that alias a window in
/// the walk, local bases too high to encode, removes and re-inserts.
#[test]
fn direct_entries() {
    let c = cfg(2, 1, 8, 16 * MIRI_NODES);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let direct = || {
        words[t.lay.nodes..]
            .iter()
            .filter(|w| w.load(Relaxed) & DIRECT != 0)
            .count()
    };
    let g = 64 * MIB;
    let rb = 0x10_0000_0000u64;
    t.insert_remote(0, rb, g, local_of(0, rb)).unwrap();
    assert_eq!(t.peer_granule(0), Some(g));
    assert_eq!(direct(), 1);
    // Three whole windows, then a range whose last window is partial.
    let r3 = rb + 4 * g;
    t.insert_remote(0, r3, 3 * g, local_of(0, r3)).unwrap();
    assert_eq!(direct(), 4);
    let rp = rb + 8 * g;
    t.insert_remote(0, rp, 2 * g - 5, local_of(0, rp)).unwrap();
    assert_eq!(direct(), 5);
    let oob = Err(Error::OutOfBounds);
    let nf = Err(Error::NotFound);
    for (a, len, want) in [
        (rb, g, Ok(local_of(0, rb))),
        (rb + g - 1, 1, Ok(local_of(0, rb + g - 1))),
        (rb + g - 1, 2, oob),
        (rb + 5, g, oob),
        (rb + g, 0, nf),
        (rb - 1, 1, nf),
        // Across windows inside one range: the record decides.
        (r3 + g - 1, 2, Ok(local_of(0, r3 + g - 1))),
        (r3 + 7, 3 * g - 7, Ok(local_of(0, r3 + 7))),
        (r3 + 7, 3 * g - 6, oob),
        (r3 + 3 * g - 1, 1, Ok(local_of(0, r3 + 3 * g - 1))),
        (r3 + 3 * g, 0, nf),
        // The partial window goes through the record.
        (rp + g, g - 5, Ok(local_of(0, rp + g))),
        (rp + 2 * g - 6, 1, Ok(local_of(0, rp + 2 * g - 6))),
        (rp + 2 * g - 6, 2, oob),
        (rp + 2 * g - 5, 0, nf),
        // Bits above 2^48 fall off in the walk: the direct path checks.
        (rb + TOP, 0, nf),
        (rb + (1 << 50), 0, nf),
        (rb + (1 << 60), 1, nf),
        (rb | 1 << 63, 1, nf),
    ] {
        assert_eq!(t.relocate(0, a, len), want, "relocate({a:#x}, {len:#x})");
    }
    // A delta `local - remote` too large to encode: references only, same
    // answers.
    let rh = rb + 12 * g;
    let high = rh + (1 << 47);
    t.insert_remote(0, rh, 2 * g, high as usize).unwrap();
    assert_eq!(direct(), 5);
    assert_eq!(t.relocate(0, rh + g + 3, 8), Ok((high + g + 3) as usize));
    assert_eq!(t.relocate(0, rh + 2 * g - 1, 2), oob);
    // Local segments never get direct entries.
    t.insert_segment(0, rb as usize, 4 * g).unwrap();
    assert_eq!(direct(), 5);
    assert_eq!(
        t.locate(rb as usize + 3 * g as usize + 9),
        Ok((0, 3 * g + 9))
    );
    // Remove clears the direct entries; a re-insert maps anew.
    t.remove_remote(0, r3).unwrap();
    assert_eq!(direct(), 2);
    assert_eq!(t.relocate(0, r3 + g, 1), nf);
    t.insert_remote(0, r3, 3 * g, 0x4000_0000).unwrap();
    assert_eq!(direct(), 5);
    assert_eq!(
        t.relocate(0, r3 + g + 1, 1),
        Ok(0x4000_0000 + g as usize + 1)
    );
    // A rebuild (smaller granule) writes direct entries for the new windows.
    t.insert_remote(0, rb + 20 * g, MIB, 0x10_0000).unwrap();
    assert_eq!(t.peer_granule(0), Some(MIB));
    assert!(direct() > 5);
    assert_eq!(
        t.relocate(0, r3 + g + 1, 4096),
        Ok(0x4000_0000 + g as usize + 1)
    );
    assert_eq!(
        t.relocate(0, rb + 20 * g + MIB - 1, 1),
        Ok(0x10_0000 + MIB as usize - 1)
    );
    assert_eq!(t.relocate(0, rb + 20 * g + MIB - 1, 2), oob);
}

/// A direct entry holds `local - remote` in pages, in 36 bits: deltas in
/// `[-2^47, 2^47)` are direct, whichever way the local base lies (also near
/// the top of the address space, where the answer wraps back from the
/// delta), the others go through the record with the same answers.
#[test]
fn direct_delta_limits() {
    let g = 64 * MIB;
    let rb = 0x10_0000_0000u64;
    let lim = 1u64 << 47;
    for (local, direct) in [
        (rb + lim - PAGE_SIZE, true),
        (rb + lim, false),
        (rb + 3 * g, true),
        (0, true),
        ((u64::MAX - 4 * g + 1) & !(PAGE_SIZE - 1), true),
    ] {
        let c = cfg(0, 1, 2, 4 * MIRI_NODES);
        let words = storage(&c);
        let t = Table::new(c, &words[..]).unwrap();
        t.insert_remote(0, rb, 2 * g, local as usize).unwrap();
        let n = words[t.lay.nodes..]
            .iter()
            .filter(|w| w.load(Relaxed) & DIRECT != 0)
            .count();
        // One 128 MiB window: the granule is the footprint, rounded down.
        assert_eq!(n, direct as usize, "local {local:#x}");
        for (off, len) in [(0, 1), (g - 1, 1), (g + 5, 4096), (2 * g - 1, 1), (7, g)] {
            let want = local.wrapping_add(off) as usize;
            assert_eq!(
                t.relocate(0, rb + off, len),
                Ok(want),
                "local {local:#x} off {off:#x}"
            );
        }
        assert_eq!(t.relocate(0, rb + 2 * g - 1, 2), Err(Error::OutOfBounds));
    }
    // Just below the lowest delta, and the lowest.
    let c = cfg(0, 1, 2, 4 * MIRI_NODES);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let rh = lim + 0x1000_0000;
    t.insert_remote(0, rh, g, 0x0fff_f000).unwrap();
    t.insert_remote(0, rh + g, g, 0x1400_0000).unwrap();
    let n = words[t.lay.nodes..]
        .iter()
        .filter(|w| w.load(Relaxed) & DIRECT != 0)
        .count();
    assert_eq!(n, 1);
    assert_eq!(t.relocate(0, rh + 9, 1), Ok(0x0fff_f009));
    assert_eq!(t.relocate(0, rh + g + 9, 1), Ok(0x1400_0009));
}

/// Index words are data: with roots, nodes and records overwritten by
/// arbitrary (and by plausible-looking) words, lookups may answer wrongly
/// but never read outside the storage or panic. Under Miri an out-of-bounds
/// `get_unchecked` would be reported as undefined behaviour.
#[test]
fn lookups_survive_scribbled_storage() {
    let c = cfg(4, 2, 8, 12 * MIRI_NODES);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    t.insert_remote(0, 0x10_0000, 8192, 0x20_0000).unwrap();
    t.insert_remote(1, 0x7000_0000_0000, 4096, 0x40_0000)
        .unwrap();
    t.insert_segment(1, 0x30_0000, 8192).unwrap();
    let n = words.len() as u64;
    let mut rng = StdRng::seed_from_u64(11);
    let rounds = if cfg!(miri) { 30 } else { 3000 };
    for _ in 0..rounds {
        for _ in 0..4 {
            // The header (writer lock, counters) is left alone: only the
            // index and the records are read by lookups.
            let i = rng.random_range(HEADER_WORDS as u64..n) as usize;
            let v = match rng.random_range(0..5) {
                0 => rng.random::<u64>(),
                // A root word: node word index, hops, key shift, granule.
                1 => {
                    rng.random_range(0..n + NODE_WORDS as u64) << 16 | rng.random_range(0..1 << 16)
                }
                // An interior entry: a node word index, maybe misaligned.
                2 => rng.random_range(0..n + NODE_WORDS as u64),
                // A leaf entry: two small record references.
                3 => rng.random_range(0..16u64) | rng.random_range(0..16u64) << 32,
                _ => 0,
            };
            words[i].store(v, Relaxed);
        }
        let mut spans = [RemoteSpan { addr: 0, len: 0 }; 12];
        for (k, span) in spans.iter_mut().enumerate() {
            let addr = match rng.random_range(0..3) {
                0 => rng.random::<u64>(),
                1 => 0x10_0000 + rng.random_range(0..16384u64),
                _ => rng.random_range(0..TOP),
            };
            let len = rng.random_range(0..8192u64);
            *span = RemoteSpan { addr, len };
            if k >= 4 {
                continue;
            }
            let _ = t.relocate(rng.random_range(0..3), addr, len);
            let _ = t.locate(addr as usize);
            let _ = t.resolve(rng.random_range(0..5), addr & 0xffff, len);
            let _ = t.segment(rng.random_range(0..5));
            let _ = (t.peer_granule(0), t.local_granule(), t.stats());
        }
        // The batch's own loop (every depth it has), over the same kinds of
        // addresses.
        let _ = t.relocate_batch(rng.random_range(0..3), &spans, &mut [0; 12]);
    }
}

// ---------------------------------------------------------------------
// Model test
// ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Range {
    space: usize, // 0 = local segments, 1 + p = peer p
    id: u32,      // segment id (local space only)
    start: u64,
    len: u64,
    value: u64,
}

fn footprint(r: &Range) -> (u64, u64) {
    (r.start, r.start + r.len.div_ceil(4096) * 4096)
}

fn model_find(model: &[Range], space: usize, addr: u64) -> Option<Range> {
    model
        .iter()
        .copied()
        .find(|r| r.space == space && r.start <= addr && addr - r.start < r.len)
}

fn model_overlaps(model: &[Range], space: usize, start: u64, len: u64) -> bool {
    model
        .iter()
        .any(|r| r.space == space && r.start < start + len && start < r.start + r.len)
}

fn random_addr(rng: &mut StdRng) -> u64 {
    // A few clusters spread over the address space, incl. its very top.
    let clusters = [0u64, 0x10_0000_0000, 0x7fff_f000_0000, TOP - 4 * MIB];
    let c = clusters[rng.random_range(0..clusters.len())];
    c + rng.random_range(0..1024u64) * 4096
}

fn random_len(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..10) {
        0 => rng.random_range(1..4096),
        1..=6 => rng.random_range(1..16u64) * 4096,
        7 => rng.random_range(1..16u64) * 4096 + rng.random_range(1..4096),
        _ => rng.random_range(16..256u64) * 4096,
    }
}

fn model_run(seed: u64, ops: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (segs, peers) = (8u32, 3u32);
    let c = cfg(segs, peers, 64, 200 * MIRI_NODES);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let mut model: Vec<Range> = Vec::new();
    // Start big so that granules shrink (and rebuilds happen) along the way.
    let mut max_len_pages = 256u64;
    for op in 0..ops {
        if op % (ops / 8).max(1) == 0 && max_len_pages > 1 {
            max_len_pages /= 2;
        }
        let space = rng.random_range(0..=peers as usize);
        match rng.random_range(0..10) {
            0..=2 => {
                let start = random_addr(&mut rng);
                let mut len = random_len(&mut rng);
                if len > max_len_pages * 4096 && rng.random_range(0..4) != 0 {
                    len = max_len_pages * 4096;
                }
                let fits = start + len.div_ceil(4096) * 4096 <= TOP;
                if space == 0 {
                    let id = rng.random_range(0..segs);
                    let got = t.insert_segment(id, start as usize, len);
                    let want = if !fits {
                        Err(Error::InvalidArgument)
                    } else if model.iter().any(|r| r.space == 0 && r.id == id)
                        || model_overlaps(&model, 0, start, len)
                    {
                        Err(Error::AlreadyExists)
                    } else {
                        Ok(())
                    };
                    assert_eq!(
                        got, want,
                        "seed {seed} op {op} segment {id} {start:#x}+{len:#x}"
                    );
                    if got.is_ok() {
                        model.push(Range {
                            space,
                            id,
                            start,
                            len,
                            value: start,
                        });
                    }
                } else {
                    let peer = space as u32 - 1;
                    let value = rng.random_range(1..1u64 << 30) * 4096;
                    let got = t.insert_remote(peer, start, len, value as usize);
                    let ranges = model.iter().filter(|r| r.space != 0).count();
                    let want = if !fits {
                        Err(Error::InvalidArgument)
                    } else if model_overlaps(&model, space, start, len) {
                        Err(Error::AlreadyExists)
                    } else if ranges == 64 {
                        Err(Error::TableFull)
                    } else {
                        Ok(())
                    };
                    assert_eq!(
                        got, want,
                        "seed {seed} op {op} peer {peer} {start:#x}+{len:#x}"
                    );
                    if got.is_ok() {
                        model.push(Range {
                            space,
                            id: 0,
                            start,
                            len,
                            value,
                        });
                    }
                }
            }
            3..=5 => {
                // Remove: mostly an existing range, sometimes a random address.
                let pick = if !model.is_empty() && rng.random_range(0..4) != 0 {
                    let r = model[rng.random_range(0..model.len())];
                    (r.space, r.id, r.start)
                } else {
                    (space, rng.random_range(0..segs), random_addr(&mut rng))
                };
                let (space, id, start) = pick;
                let pos = model.iter().position(|r| {
                    r.space == space
                        && if space == 0 {
                            r.id == id
                        } else {
                            r.start == start
                        }
                });
                let got = if space == 0 {
                    t.remove_segment(id)
                } else {
                    t.remove_remote(space as u32 - 1, start)
                };
                assert_eq!(got.is_ok(), pos.is_some(), "seed {seed} op {op} remove");
                if let Some(p) = pos {
                    model.swap_remove(p);
                } else {
                    assert_eq!(got, Err(Error::NotFound));
                }
            }
            _ => {
                // Queries: near a known range's edges, or anywhere. The
                // relocations are checked once more as one batch.
                let mut batch: Vec<(RemoteSpan, Result<usize>)> = Vec::new();
                for _ in 0..4 {
                    let addr = if !model.is_empty() && rng.random_range(0..3) != 0 {
                        let r = model[rng.random_range(0..model.len())];
                        let (_, fe) = footprint(&r);
                        match rng.random_range(0..5) {
                            0 => r.start,
                            1 => r.start + r.len - 1,
                            2 => r.start + r.len,
                            3 => r.start.wrapping_sub(1),
                            _ => r.start + rng.random_range(0..fe - r.start),
                        }
                    } else {
                        random_addr(&mut rng) + rng.random_range(0..4096)
                    };
                    let len = match rng.random_range(0..4) {
                        0 => 0,
                        1 => 1,
                        2 => rng.random_range(0..64 * KIB),
                        _ => u64::MAX - rng.random_range(0..2),
                    };
                    let hit = model_find(&model, space, addr);
                    if space == 0 {
                        let want = hit.map(|r| (r.id, addr - r.start)).ok_or(Error::NotFound);
                        assert_eq!(
                            t.locate(addr as usize),
                            want,
                            "seed {seed} op {op} locate {addr:#x}"
                        );
                        let id = hit.map_or(rng.random_range(0..segs), |r| r.id);
                        let seg = model.iter().find(|r| r.space == 0 && r.id == id);
                        let off = match seg {
                            Some(s) if rng.random_range(0..2) == 0 => s.len - 1,
                            Some(s) => addr.wrapping_sub(s.start),
                            None => 0,
                        };
                        let want = match seg {
                            None => Err(Error::NotFound),
                            Some(s) if off < s.len && len <= s.len - off => {
                                Ok((s.start + off) as usize)
                            }
                            Some(_) => Err(Error::OutOfBounds),
                        };
                        assert_eq!(t.resolve(id, off, len), want, "seed {seed} op {op} resolve");
                    } else {
                        let want = match hit {
                            None => Err(Error::NotFound),
                            Some(r) if len <= r.len - (addr - r.start) => {
                                Ok((r.value + addr - r.start) as usize)
                            }
                            Some(_) => Err(Error::OutOfBounds),
                        };
                        assert_eq!(
                            t.relocate(space as u32 - 1, addr, len),
                            want,
                            "seed {seed} op {op} relocate {addr:#x}+{len:#x}"
                        );
                        // The C ABI's slow path, also where a direct
                        // entry would answer.
                        assert_eq!(
                            t.relocate_by_record(space as u32 - 1, addr, len),
                            want,
                            "seed {seed} op {op} relocate_by_record {addr:#x}+{len:#x}"
                        );
                        batch.push((RemoteSpan { addr, len }, want));
                    }
                }
                if space != 0 {
                    check_batch(&t, space as u32 - 1, &batch);
                }
            }
        }
    }
    // Every registered range still answers at both ends.
    for r in &model {
        let last = r.start + r.len - 1;
        if r.space == 0 {
            assert_eq!(t.locate(last as usize), Ok((r.id, r.len - 1)));
            assert_eq!(t.resolve(r.id, 0, r.len), Ok(r.start as usize));
        } else {
            let p = r.space as u32 - 1;
            assert_eq!(t.relocate(p, r.start, r.len), Ok(r.value as usize));
            assert_eq!(t.relocate(p, last, 1), Ok((r.value + r.len - 1) as usize));
        }
    }
    let s = t.stats();
    assert_eq!(
        s.segments as usize,
        model.iter().filter(|r| r.space == 0).count()
    );
    assert_eq!(
        s.ranges as usize,
        model.iter().filter(|r| r.space != 0).count()
    );
}

/// `relocate_batch` over `batch`'s spans gives the expected answers up to
/// the first expected error, stops there, and leaves the rest of `out` alone.
fn check_batch(t: &Table<&[AtomicU64]>, peer: u32, batch: &[(RemoteSpan, Result<usize>)]) {
    let spans: Vec<RemoteSpan> = batch.iter().map(|b| b.0).collect();
    let mut out = vec![usize::MAX; spans.len() + 1];
    let got = t.relocate_batch(peer, &spans, &mut out);
    let stop = batch.iter().position(|b| b.1.is_err());
    match stop {
        Some(i) => assert_eq!(got, Err((i, batch[i].1.unwrap_err())), "{spans:x?}"),
        None => assert_eq!(got, Ok(()), "{spans:x?}"),
    }
    let done = stop.unwrap_or(spans.len());
    for (i, o) in out.iter().enumerate() {
        let want = if i < done {
            batch[i].1.unwrap()
        } else {
            usize::MAX
        };
        assert_eq!(*o, want, "out[{i}] of {spans:x?}");
    }
}

#[test]
fn relocate_batch_edges() {
    let c = cfg(1, 2, 8, 16 * MIRI_NODES);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    // Two ranges sharing a granule window (answered through their records)
    // and a 1 MiB range (direct entries).
    t.insert_remote(0, 0x10_0000, 0x3000, 0x7000_0000).unwrap();
    t.insert_remote(0, 0x10_3000, 0x3000, 0x7100_0000).unwrap();
    t.insert_remote(0, 0x4000_0000, MIB, 0x8000_0000).unwrap();
    let span = |addr, len| RemoteSpan { addr, len };
    let ok = [
        (span(0x4000_0010, 16), Ok(0x8000_0010)),
        (span(0x10_2fff, 1), Ok(0x7000_2fff)),
        (span(0x10_3000, 0x3000), Ok(0x7100_0000)),
        (
            span(0x4000_0000 + MIB - 1, 1),
            Ok(0x8000_0000 + MIB as usize - 1),
        ),
    ];
    check_batch(&t, 0, &ok);
    check_batch(&t, 0, &[]);
    let mut errs = ok.to_vec();
    errs.insert(2, (span(0x10_2fff, 2), Err(Error::OutOfBounds)));
    check_batch(&t, 0, &errs);
    errs.insert(1, (span(TOP + 0x4000_0000, 0), Err(Error::NotFound)));
    check_batch(&t, 0, &errs);
    // An address far above 2^48 whose low bits fall in a direct window
    // (the walk drops the high bits).
    errs[1] = (span(1 << 62 | 0x4000_0010, 16), Err(Error::NotFound));
    check_batch(&t, 0, &errs);
    // A whole direct window in one access: answered through the record.
    let g = t.peer_granule(0).unwrap();
    check_batch(
        &t,
        0,
        &[(span(0x4000_0000 + g, g), Ok(0x8000_0000 + g as usize))],
    );
    // Peer 1 has no ranges; peer 2 does not exist.
    check_batch(&t, 1, &[(span(0x4000_0000, 1), Err(Error::NotFound))]);
    let mut out = [7usize; 2];
    let spans = [span(0x4000_0000, 1); 2];
    assert_eq!(
        t.relocate_batch(2, &spans, &mut out),
        Err((0, Error::InvalidArgument))
    );
    // `out` shorter than `spans`: nothing is written.
    assert_eq!(
        t.relocate_batch(0, &spans, &mut out[..1]),
        Err((0, Error::InvalidArgument))
    );
    assert_eq!(out, [7, 7]);
}

/// The batch's loop has a copy for each tree depth (and a plain walk for
/// the deeper trees of Miri's smaller nodes): every granule, hence every
/// depth, answers as single calls do.
#[test]
fn relocate_batch_every_depth() {
    let span = |addr, len| RemoteSpan { addr, len };
    for shift in [12u32, 24, 30, 36, 42] {
        let c = cfg(1, 1, 4, 8 * MIRI_NODES);
        let words = storage(&c);
        let t = Table::new(c, &words[..]).unwrap();
        let g = 1u64 << shift;
        // One window wholly inside the range (a direct entry), then half of one.
        let (base, len) = (4 * g, 3 * g);
        t.insert_remote(0, base, len, local_of(0, base)).unwrap();
        let g = t.peer_granule(0).unwrap();
        let at = |off: u64| Ok(local_of(0, base + off));
        let batch = [
            (span(base, 1), at(0)),
            (span(base + g - 1, 1), at(g - 1)),
            // Across a window boundary: through the record.
            (span(base + g - 8, 16), at(g - 8)),
            (span(base + 5, 0), at(5)),
            (span(base + len - 1, 1), at(len - 1)),
            (span(base + len - 1, 2), Err(Error::OutOfBounds)),
        ];
        for (s, want) in &batch {
            assert_eq!(t.relocate(0, s.addr, s.len), *want, "{s:x?}");
        }
        check_batch(&t, 0, &batch);
        check_batch(&t, 0, &batch[..batch.len() - 1]);
        // Longer runs (the loop is unrolled): direct answers, with one
        // access at `stop` that takes the record path, or fails.
        let run: Vec<_> = (0..19u64)
            .map(|k| {
                let off = k * 4099 % (g - 64);
                (span(base + off, 64), at(off))
            })
            .collect();
        check_batch(&t, 0, &run);
        for stop in [0, 3, 7, 8, 9, 15, 18] {
            let mut r = run.clone();
            r[stop] = batch[2];
            check_batch(&t, 0, &r);
            r[stop] = batch[5];
            check_batch(&t, 0, &r);
        }
    }
}

/// Readers try a reference pair's low reference first: it must be the
/// range that holds more of the window, in whatever order the two arrived,
/// after a remove and re-insert, and after a rebuild.
#[test]
fn shared_windows_list_the_larger_share_first() {
    let g = 1u64 << 20;
    let lo = 16 * g;
    // `tail` holds the first 4 KiB of the window at `lo`, `head` the rest.
    let tail = (lo - g, g + PAGE_SIZE);
    let head = (lo + PAGE_SIZE, g);
    let low_start = |t: &Table<&[AtomicU64]>, window: u64| {
        let e = t.relocate_direct(0, window + 2 * PAGE_SIZE, 1).unwrap_err();
        assert_eq!(e & DIRECT, 0, "{e:x}");
        assert!(e as u32 != 0 && e >> 32 != 0, "not a pair: {e:x}");
        t.rec(e as u32 as usize - 1, R_START).load(Relaxed)
    };
    for order in [[tail, head], [head, tail]] {
        let c = cfg(1, 1, 8, 16 * MIRI_NODES);
        let words = storage(&c);
        let t = Table::new(c, &words[..]).unwrap();
        for (b, l) in order {
            t.insert_remote(0, b, l, local_of(0, b)).unwrap();
        }
        assert_eq!(t.peer_granule(0), Some(g));
        assert_eq!(low_start(&t, lo), head.0);
        for (b, l) in order {
            t.remove_remote(0, b).unwrap();
            t.insert_remote(0, b, l, local_of(0, b)).unwrap();
            assert_eq!(low_start(&t, lo), head.0);
        }
        // A range of a quarter window elsewhere: the rebuilt tree's window
        // at `lo` is `g / 4` long, and `head` still holds more of it.
        t.insert_remote(0, 64 * g, g / 4, local_of(0, 64 * g))
            .unwrap();
        assert_eq!(t.peer_granule(0), Some(g / 4));
        assert_eq!(low_start(&t, lo), head.0);
        for a in [lo, lo + PAGE_SIZE - 1, lo + PAGE_SIZE, lo + g / 4 - 1] {
            assert_eq!(t.relocate(0, a, 1), Ok(local_of(0, a)), "{a:x}");
        }
    }
}

/// Adjacent ranges that are not aligned to the granule share every window
/// they meet (reference pairs, the layout of a peer's back-to-back
/// mappings). The batch answers those from the records, as single calls
/// do, in runs of them, between direct answers, and up to an error in the
/// middle of a run.
#[test]
fn relocate_batch_shared_windows() {
    let span = |addr, len| RemoteSpan { addr, len };
    for shift in [16u32, 24, 30, 36] {
        let c = cfg(1, 1, 8, 16 * MIRI_NODES);
        let words = storage(&c);
        let t = Table::new(c, &words[..]).unwrap();
        let g = 1u64 << shift;
        // Five back-to-back ranges of `g + 4 KiB` from a page past a window
        // start: the granule is `g`, and with `g` well above 4 KiB no window
        // they meet lies inside one of them (each holds a boundary, or the
        // first one's start). Then a range of whole windows.
        let (base, len) = (8 * g + PAGE_SIZE, g + PAGE_SIZE);
        let direct = 64 * g;
        let mut ranges: Vec<(u64, u64)> = (0..5).map(|j| (base + j * len, len)).collect();
        ranges.push((direct, 2 * g));
        for &(b, l) in &ranges {
            t.insert_remote(0, b, l, local_of(0, b)).unwrap();
        }
        assert_eq!(t.peer_granule(0), Some(g));
        // The answer from the ranges themselves; single calls agree.
        let want = |addr: u64, l: u64| {
            let w = match ranges.iter().find(|&&(b, n)| addr >= b && addr - b < n) {
                None => Err(Error::NotFound),
                Some(&(b, n)) if l > b + n - addr => Err(Error::OutOfBounds),
                Some(_) => Ok(local_of(0, addr)),
            };
            assert_eq!(t.relocate(0, addr, l), w, "{addr:x} {l}");
            w
        };
        let at = |addr: u64, l: u64| (span(addr, l), want(addr, l));
        // Accesses in the shared windows, each on one side of a boundary.
        let shared: Vec<_> = (0..21u64)
            .map(|k| {
                let addr = base + k * (len / 4 + 4099) % (5 * len - 64);
                at(addr, 64.min(base + 5 * len - addr))
            })
            .collect();
        for (s, w) in &shared {
            assert!(w.is_ok(), "{s:x?}");
            // They are what this test is about: no direct answer.
            let d = t.relocate_direct(0, s.addr, s.len);
            assert!(
                d.is_err_and(|e| e != 0 && e & DIRECT == 0),
                "{s:x?}: {d:x?}"
            );
        }
        check_batch(&t, 0, &shared);
        // Direct answers between them, and the errors the records tell: an
        // access across a boundary, one past the last range, one in a gap.
        let mut mixed = shared.clone();
        for k in [0, 2, 3, 9, 10, 11, 20] {
            mixed.insert(k, at(direct + k as u64 * 4096, 16));
        }
        check_batch(&t, 0, &mixed);
        for bad in [
            at(base + len - 8, 16),
            at(base + 5 * len - 1, 2),
            at(base + 5 * len, 1),
        ] {
            assert!(bad.1.is_err(), "{:x?}", bad.0);
            for stop in [0, 1, 5, 8, 13, 27] {
                let mut r = mixed.clone();
                r.insert(stop, bad);
                check_batch(&t, 0, &r);
            }
        }
    }
}

#[test]
fn model_random() {
    let (seeds, ops) = if cfg!(miri) { (1, 40) } else { (16, 3000) };
    for seed in 0..seeds {
        model_run(seed, ops);
    }
}

// ---------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------

#[test]
// Scale is the point of this test; Miri interprets even 200 ranges for many
// minutes, and the same insert/lookup paths run under Miri in the model test.
#[cfg_attr(miri, ignore)]
fn scale_many_ranges_one_peer() {
    let n: u64 = if cfg!(miri) { 200 } else { 100_000 };
    let c = cfg(1, 2, n as u32, 256);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    // Lengths of 1-3 pages with one-page gaps; the first range is the largest.
    let base = 0x7f00_0000_0000u64;
    let mut starts = Vec::with_capacity(n as usize);
    let mut at = base;
    for i in 0..n {
        let len = (3 - i % 3) * 4096 - (i % 5);
        starts.push((at, len));
        t.insert_remote(0, at, len, local_of(0, at)).unwrap();
        at += len.div_ceil(4096) * 4096 + 4096;
    }
    assert_eq!(t.stats().ranges, n);
    assert_eq!(t.peer_granule(0), Some(4096));
    assert_eq!(t.insert_remote(0, at, 4096, 0), Err(Error::TableFull));
    for &(s, len) in &starts {
        assert_eq!(t.relocate(0, s, len), Ok(local_of(0, s)));
        assert_eq!(t.relocate(0, s + len - 1, 1), Ok(local_of(0, s + len - 1)));
        assert_eq!(t.relocate(0, s + len, 1), Err(Error::NotFound));
        assert_eq!(t.relocate(1, s, 0), Err(Error::NotFound));
    }
}

// ---------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------

/// Slot `i` of the concurrent test: a fixed remote range per slot, so a
/// reader can tell exactly which answers are legal.
fn slot_range(i: u64) -> (u64, u64) {
    let start = 0x10_0000_0000 + i * 2 * MIB;
    // Lengths shrink with i, so later inserts rebuild the index under readers.
    let len = (MIB >> (i % 9)).max(4096) - (i % 3) * 7;
    (start, len)
}

const SLOTS: u64 = 24;

fn check_remote(t: &Table<&[AtomicU64]>, peer: u32, addr: u64, len: u64) {
    match t.relocate(peer, addr, len) {
        Ok(p) => {
            assert_eq!(
                p,
                local_of(peer, addr),
                "torn or wrong answer for {addr:#x}"
            );
            let i = (addr - 0x10_0000_0000) / (2 * MIB);
            let (s, l) = slot_range(i);
            assert!(
                addr >= s && addr - s < l && len <= l - (addr - s),
                "{addr:#x}+{len}"
            );
        }
        Err(Error::NotFound) | Err(Error::OutOfBounds) => {}
        Err(e) => panic!("unexpected {e:?}"),
    }
}

#[test]
// Interpreting two readers against a rebuilding writer takes Miri well over
// ten minutes; the read protocol itself is model-checked by tests/loom_table.rs
// and the arena's concurrent stress test does run under Miri.
#[cfg_attr(miri, ignore)]
fn concurrent_readers_and_writer() {
    // Readers run until the writer is done; under Miri they also stop after
    // `reader_max` lookups, as its scheduler may starve the writer.
    let (writer_ops, reader_min, reader_max) = if cfg!(miri) {
        (40, 30, 400)
    } else {
        (4000, 20_000, u64::MAX)
    };
    let c = cfg(SLOTS as u32, 2, 2 * SLOTS as u32, 512);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        for r in 0..2u64 {
            let (t, done) = (&t, &done);
            sc.spawn(move || {
                let mut rng = StdRng::seed_from_u64(100 + r);
                let mut n = 0u64;
                while n < reader_min || (n < reader_max && !done.load(Ordering::Acquire)) {
                    n += 1;
                    let i = rng.random_range(0..SLOTS);
                    let (s, l) = slot_range(i);
                    let addr = s + rng.random_range(0..2 * l);
                    let len = rng.random_range(0..l + 2);
                    check_remote(t, (n % 2) as u32, addr, len);
                    // Segments: slot i's segment id is i, base = remote start.
                    match t.resolve(i as u32, addr - s, len) {
                        Ok(p) => {
                            assert_eq!(p as u64, addr);
                            assert!(addr - s < l && len <= l - (addr - s));
                        }
                        Err(Error::NotFound) | Err(Error::OutOfBounds) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    match t.locate(addr as usize) {
                        Ok((id, off)) => assert_eq!((id as u64, off), (i, addr - s)),
                        Err(Error::NotFound) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
            });
        }
        let mut rng = StdRng::seed_from_u64(7);
        let mut live = [[false; SLOTS as usize]; 3];
        for _ in 0..writer_ops {
            let space = rng.random_range(0..3usize);
            let i = rng.random_range(0..SLOTS);
            let (s, l) = slot_range(i);
            let res = match (space, live[space][i as usize]) {
                (0, false) => t.insert_segment(i as u32, s as usize, l),
                (0, true) => t.remove_segment(i as u32),
                (p, false) => t.insert_remote(p as u32 - 1, s, l, local_of(p as u32 - 1, s)),
                (p, true) => t.remove_remote(p as u32 - 1, s),
            };
            res.unwrap();
            live[space][i as usize] ^= true;
        }
        done.store(true, Ordering::Release);
        // Final state is exact.
        for i in 0..SLOTS {
            let (s, l) = slot_range(i);
            for p in 0..2u32 {
                let want = if live[p as usize + 1][i as usize] {
                    Ok(local_of(p, s + l - 1))
                } else {
                    Err(Error::NotFound)
                };
                assert_eq!(t.relocate(p, s + l - 1, 1), want);
            }
        }
    });
}

/// A batch that fails leaves `out` untouched from the failing index, even
/// when a writer removes the range between its accesses: every access lies
/// in one range that a writer inserts and removes over and over, so batches
/// stop part way through their chunks of 8. (Which interleavings occur is
/// up to the scheduler; ce4b845's batch, which read a chunk again after a
/// miss and could stop earlier the second time, failed it in 10 of 12 runs.)
#[test]
// Threads and hundreds of thousands of batches: too slow under Miri, whose
// single batches run in `relocate_batch_every_depth`.
#[cfg_attr(miri, ignore)]
fn concurrent_batches_leave_out_untouched_from_the_failure() {
    const SENTINEL: usize = usize::MAX;
    const BASE: u64 = 0x20_0000_0000;
    const LEN: u64 = 64 * MIB;
    let c = cfg(1, 1, 4, 64);
    let words = storage(&c);
    let t = Table::new(c, &words[..]).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut rng = StdRng::seed_from_u64(11);
            let mut n = 0u64;
            while n < 200_000 || !done.load(Ordering::Acquire) {
                n += 1;
                let spans: Vec<RemoteSpan> = (0..64)
                    .map(|_| RemoteSpan {
                        addr: BASE + rng.random_range(0..LEN - 64),
                        len: 64,
                    })
                    .collect();
                let mut out = vec![SENTINEL; spans.len()];
                let stop = match t.relocate_batch(0, &spans, &mut out) {
                    Ok(()) => spans.len(),
                    Err((i, e)) => {
                        assert_eq!(e, Error::NotFound, "access {i}");
                        i
                    }
                };
                for (k, (s, o)) in spans.iter().zip(&out).enumerate() {
                    let want = if k < stop {
                        local_of(0, s.addr)
                    } else {
                        SENTINEL
                    };
                    assert_eq!(*o, want, "out[{k}] of a batch that stopped at {stop}");
                }
            }
        });
        for _ in 0..20_000 {
            t.insert_remote(0, BASE, LEN, local_of(0, BASE)).unwrap();
            t.remove_remote(0, BASE).unwrap();
        }
        done.store(true, Ordering::Release);
    });
}
