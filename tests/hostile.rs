//! Hostile or broken peers: a peer that rewrites the shared header after
//! the owner created the pool. The owner's allocator and everyone's bounds
//! live in private memory, so only *new* opens notice (and refuse).
//! (Out-of-range `ptr`/`offset_of` on a valid pool: tests/bad_input.rs.)

mod common;

use common::ShmGuard;
use mooncake_shm::pool::{Pool, PoolHeader, PoolOptions};
use mooncake_shm::Error;

const CAP: u64 = 256 * 1024;

/// Byte offsets of the header fields (see `PoolHeader`'s docs).
const MAGIC: u64 = 0;
const VERSION: u64 = 8;
const HEADER_SIZE: u64 = 12;
const TOTAL_SIZE: u64 = 16;
const DATA_OFFSET: u64 = 24;
const CAPACITY: u64 = 32;
const READY: u64 = 44;

fn opts() -> PoolOptions<'static> {
    PoolOptions {
        capacity: CAP,
        max_blocks: 256,
        ..PoolOptions::default()
    }
}

/// The owner still allocates, frees, and bounds-checks exactly as before.
fn owner_still_works(owner: &Pool) {
    let before = owner.stats();
    let mut offs = Vec::new();
    for i in 0..32u64 {
        let off = owner.alloc(1000 + i * 37, 64).unwrap();
        assert!(off >= Pool::DATA_OFFSET && off + 1000 <= Pool::DATA_OFFSET + CAP);
        // SAFETY: a live block of at least 1000 bytes inside the pool.
        unsafe { owner.ptr(off, 1000).unwrap().write_bytes(i as u8, 1000) };
        offs.push(off);
    }
    for (i, &off) in offs.iter().enumerate() {
        // SAFETY: as above.
        assert_eq!(unsafe { *owner.ptr(off, 1).unwrap() }, i as u8);
        owner.free(off).unwrap();
    }
    assert_eq!(owner.free(offs[0]), Err(Error::DoubleFree));
    assert_eq!(owner.stats(), before);
    let full = owner.alloc(CAP, 8).unwrap();
    assert_eq!(owner.alloc(1, 8), Err(Error::Exhausted));
    owner.free(full).unwrap();
    // Bounds come from the private copy of the header, not from the shared one.
    let end = Pool::DATA_OFFSET + CAP;
    assert_eq!(owner.ptr(end, 1), Err(Error::OutOfBounds));
    assert_eq!(
        owner.ptr(Pool::DATA_OFFSET, CAP + 1),
        Err(Error::OutOfBounds)
    );
    assert_eq!(owner.data_len(), CAP);
}

#[test]
fn peer_rewrites_header_owner_keeps_working_new_opens_refuse() {
    let g = ShmGuard::new();
    let name = g.name();
    let owner = Pool::create(&name, &opts()).unwrap();
    let early_peer = Pool::open(&name).unwrap();
    let good = g.raw_read(&name)[..PoolHeader::SIZE as usize].to_vec();
    let big = (1u64 << 40).to_ne_bytes();

    let cases: Vec<(&str, u64, Vec<u8>, Error)> = vec![
        ("magic", MAGIC, b"EVILPOOL".to_vec(), Error::BadMagic),
        ("magic zeroed", MAGIC, vec![0; 8], Error::BadMagic),
        (
            "version",
            VERSION,
            99u32.to_ne_bytes().to_vec(),
            Error::VersionMismatch,
        ),
        (
            "header_size",
            HEADER_SIZE,
            4096u32.to_ne_bytes().to_vec(),
            Error::VersionMismatch,
        ),
        (
            "total_size alone",
            TOTAL_SIZE,
            big.to_vec(),
            Error::VersionMismatch,
        ),
        (
            "data_offset",
            DATA_OFFSET,
            0u64.to_ne_bytes().to_vec(),
            Error::VersionMismatch,
        ),
        (
            "capacity zero",
            CAPACITY,
            0u64.to_ne_bytes().to_vec(),
            Error::VersionMismatch,
        ),
        (
            "ready cleared",
            READY,
            0u32.to_ne_bytes().to_vec(),
            Error::NotReady,
        ),
        ("ready garbage", READY, b"NOPE".to_vec(), Error::NotReady),
    ];
    for (what, off, bytes, want) in cases {
        g.raw_write(&name, off, &bytes);
        assert_eq!(Pool::open(&name).unwrap_err(), want, "{what}");
        owner_still_works(&owner);
        // A peer that opened earlier keeps its validated view too.
        assert_eq!(early_peer.data_len(), CAP, "{what}");
        assert_eq!(
            early_peer.ptr(Pool::DATA_OFFSET + CAP, 1),
            Err(Error::OutOfBounds),
            "{what}"
        );
        g.raw_write(&name, 0, &good);
        Pool::open(&name).unwrap_or_else(|e| panic!("restored header ({what}): {e}"));
    }

    // Consistent but larger sizes: the object is shorter than the header claims.
    let mut hdr = good.clone();
    hdr[TOTAL_SIZE as usize..][..8].copy_from_slice(&(Pool::DATA_OFFSET + (1 << 40)).to_ne_bytes());
    hdr[CAPACITY as usize..][..8].copy_from_slice(&big);
    g.raw_write(&name, 0, &hdr);
    assert_eq!(Pool::open(&name).unwrap_err(), Error::Truncated);
    owner_still_works(&owner);
    assert_eq!(
        early_peer.ptr(Pool::DATA_OFFSET + CAP, 1),
        Err(Error::OutOfBounds)
    );

    // The whole header page wiped: looks like a pool still being created.
    g.raw_write(&name, 0, &[0u8; 4096]);
    assert_eq!(Pool::open(&name).unwrap_err(), Error::NotReady);
    // Header page filled with junk.
    g.raw_write(&name, 0, &[0xffu8; 4096]);
    assert_eq!(Pool::open(&name).unwrap_err(), Error::BadMagic);
    owner_still_works(&owner);

    // The owner's data survives all of it, and its drop still unlinks.
    drop(early_peer);
    drop(owner);
    assert!(!g.exists(&name));
}

#[test]
fn peer_scribbling_over_data_cannot_break_the_allocator() {
    // The arena keeps no metadata in the pool: a peer overwriting the whole
    // data area (free space included) changes nothing for the owner.
    let g = ShmGuard::new();
    let name = g.name();
    let owner = Pool::create(&name, &opts()).unwrap();
    let a = owner.alloc(4096, 4096).unwrap();
    let b = owner.alloc(8192, 64).unwrap();
    let peer = Pool::open(&name).unwrap();
    let p = peer.ptr(Pool::DATA_OFFSET, CAP).unwrap();
    // SAFETY: the peer's mapping of the whole data area.
    unsafe { p.write_bytes(0xA5, CAP as usize) };
    owner.free(a).unwrap();
    assert_eq!(owner.free(a), Err(Error::DoubleFree));
    assert_eq!(owner.free(a + 8), Err(Error::InvalidOffset));
    assert_eq!(owner.free(0), Err(Error::InvalidOffset));
    assert_eq!(owner.free(Pool::DATA_OFFSET - 1), Err(Error::InvalidOffset));
    assert_eq!(owner.free(u64::MAX), Err(Error::InvalidOffset));
    owner.free(b).unwrap();
    assert_eq!(owner.stats().live, 0);
    owner_still_works(&owner);
    // Peers still cannot allocate or free.
    assert_eq!(peer.alloc(16, 8), Err(Error::NotOwner));
    assert_eq!(peer.free(Pool::DATA_OFFSET), Err(Error::NotOwner));
}

#[test]
fn offsets_from_a_larger_or_different_pool_are_rejected() {
    // A peer given offsets meant for another (larger) pool, or offsets that
    // would reach the object's tail beyond the header's capacity.
    let g = ShmGuard::new();
    let small_name = g.name();
    let small = Pool::create(&small_name, &opts()).unwrap();
    let big = Pool::create(
        &g.name(),
        &PoolOptions {
            capacity: 4 * CAP,
            ..opts()
        },
    )
    .unwrap();
    // The highest offset the big pool hands out, whatever its placement policy.
    let mut far = 0;
    while let Ok(o) = big.alloc(CAP / 2, 4096) {
        far = far.max(o);
    }
    assert!(
        far > Pool::DATA_OFFSET + CAP,
        "big pool offsets must exceed the small pool"
    );
    let peer = Pool::open(&small_name).unwrap();
    for pool in [&small, &peer] {
        assert_eq!(pool.ptr(far, 1), Err(Error::OutOfBounds));
        assert_eq!(pool.ptr(far, 0), Err(Error::OutOfBounds));
        let into_big = big.ptr(far, 1).unwrap();
        assert_eq!(pool.offset_of(into_big), Err(Error::OutOfBounds));
    }
    // Length that wraps the address space from a valid offset.
    assert_eq!(
        peer.ptr(Pool::DATA_OFFSET + 1, u64::MAX - Pool::DATA_OFFSET),
        Err(Error::OutOfBounds)
    );
}
