//! Pool layer in one process: owner allocation, translation, peers,
//! directory mode, prefault.

mod common;

use common::{resident_pages, ShmGuard};
use mooncake_shm::pool::{Pool, PoolHeader, PoolOptions};
use mooncake_shm::Error;

fn opts(capacity: u64) -> PoolOptions<'static> {
    PoolOptions {
        capacity,
        max_blocks: 1024,
        ..PoolOptions::default()
    }
}

#[test]
fn pool_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Pool>();
}

#[test]
fn header_layout_is_as_documented() {
    assert_eq!(PoolHeader::SIZE, 48);
    assert_eq!(std::mem::offset_of!(PoolHeader, magic), 0);
    assert_eq!(std::mem::offset_of!(PoolHeader, version), 8);
    assert_eq!(std::mem::offset_of!(PoolHeader, header_size), 12);
    assert_eq!(std::mem::offset_of!(PoolHeader, total_size), 16);
    assert_eq!(std::mem::offset_of!(PoolHeader, data_offset), 24);
    assert_eq!(std::mem::offset_of!(PoolHeader, capacity), 32);
    assert_eq!(std::mem::offset_of!(PoolHeader, creator_pid), 40);
    assert_eq!(std::mem::offset_of!(PoolHeader, ready), 44);
    assert_eq!(&PoolHeader::MAGIC.to_ne_bytes(), b"MCSHMPL1");
    const { assert!(PoolHeader::SIZE <= Pool::DATA_OFFSET) };
}

#[test]
fn create_writes_a_valid_header() {
    let g = ShmGuard::new();
    let name = g.name();
    let cap = 1 << 20;
    let pool = Pool::create(&name, &opts(cap)).unwrap();
    assert!(pool.is_owner());
    assert_eq!(pool.name(), name);
    assert_eq!(pool.len(), Pool::DATA_OFFSET + cap);
    assert_eq!(pool.data_len(), cap);
    assert_eq!(pool.creator_pid(), std::process::id());
    let info = pool.info();
    assert_eq!(info.version, PoolHeader::VERSION);
    assert_eq!(info.total_size, Pool::DATA_OFFSET + cap);
    assert_eq!(info.data_offset, Pool::DATA_OFFSET);
    assert_eq!(info.capacity, cap);

    // The raw bytes follow the documented layout.
    let raw = g.raw_read(&name);
    assert_eq!(raw.len() as u64, Pool::DATA_OFFSET + cap);
    assert_eq!(&raw[0..8], b"MCSHMPL1");
    let u32_at = |o: usize| u32::from_ne_bytes(raw[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_ne_bytes(raw[o..o + 8].try_into().unwrap());
    assert_eq!(u32_at(8), PoolHeader::VERSION);
    assert_eq!(u32_at(12), 48);
    assert_eq!(u64_at(16), Pool::DATA_OFFSET + cap);
    assert_eq!(u64_at(24), Pool::DATA_OFFSET);
    assert_eq!(u64_at(32), cap);
    assert_eq!(u32_at(40), std::process::id());
    assert_eq!(u32_at(44), PoolHeader::READY);
    // Allocator metadata is not in the shared object: everything after the
    // header is still zero after allocations.
    let off = pool.alloc(4096, 64).unwrap();
    pool.free(off).unwrap();
    let raw = g.raw_read(&name);
    assert!(raw[48..].iter().all(|&b| b == 0));

    drop(pool);
    assert!(!g.exists(&name));
}

#[test]
fn alloc_ptr_offset_of_roundtrip() {
    let g = ShmGuard::new();
    let cap = 4 << 20;
    let pool = Pool::create(&g.name(), &opts(cap)).unwrap();
    let end = Pool::DATA_OFFSET + cap;
    let mut blocks = Vec::new();
    for (i, &(size, align)) in [
        (1u64, 1u64),
        (100, 8),
        (4096, 4096),
        (65536, 64),
        (3, 2),
        (777, 256),
    ]
    .iter()
    .enumerate()
    {
        let off = pool.alloc(size, align).unwrap();
        assert!(off >= Pool::DATA_OFFSET, "offset {off} inside the header");
        assert!(off + size <= end);
        assert_eq!(off % align, 0);
        let p = pool.ptr(off, size).unwrap();
        assert_eq!(p as usize % align as usize, 0, "pointer alignment");
        assert_eq!(p as usize, pool.base() as usize + off as usize);
        assert_eq!(pool.offset_of(p).unwrap(), off);
        assert_eq!(
            pool.offset_of(p.wrapping_add(size as usize - 1)).unwrap(),
            off + size - 1
        );
        // SAFETY: [p, p + size) is inside the pool.
        unsafe { std::ptr::write_bytes(p, i as u8 + 1, size as usize) };
        blocks.push((off, size, i as u8 + 1));
    }
    // Blocks do not overlap: every pattern survived.
    for &(off, size, v) in &blocks {
        let p = pool.ptr(off, size).unwrap();
        // SAFETY: in bounds.
        let s = unsafe { std::slice::from_raw_parts(p, size as usize) };
        assert!(s.iter().all(|&b| b == v));
    }
    assert_eq!(pool.stats().live, blocks.len() as u64);
    for &(off, _, _) in &blocks {
        pool.free(off).unwrap();
    }
    assert_eq!(pool.stats().live, 0);
    assert_eq!(pool.stats().capacity, cap);
    // Offsets inside the header never reach the arena.
    assert_eq!(pool.free(0).unwrap_err(), Error::InvalidOffset);
    assert_eq!(
        pool.free(Pool::DATA_OFFSET - 1).unwrap_err(),
        Error::InvalidOffset
    );
}

#[test]
fn arena_errors_pass_through() {
    let g = ShmGuard::new();
    let pool = Pool::create(&g.name(), &opts(1 << 16)).unwrap();
    assert_eq!(pool.alloc(0, 8).unwrap_err(), Error::ZeroSize);
    assert_eq!(pool.alloc(8, 3).unwrap_err(), Error::BadAlignment);
    assert_eq!(pool.alloc((1 << 16) + 1, 8).unwrap_err(), Error::TooLarge);
}

#[test]
fn peer_in_same_process_sees_owner_data() {
    let g = ShmGuard::new();
    let name = g.name();
    let owner = Pool::create(&name, &opts(1 << 20)).unwrap();
    let off = owner.alloc(256, 64).unwrap();
    let p = owner.ptr(off, 256).unwrap();
    // SAFETY: in bounds.
    unsafe { std::ptr::copy_nonoverlapping(b"mooncake".as_ptr(), p, 8) };

    let peer = Pool::open(&name).unwrap();
    assert!(!peer.is_owner());
    assert_ne!(peer.base(), owner.base());
    assert_eq!(peer.len(), owner.len());
    assert_eq!(peer.data_len(), owner.data_len());
    assert_eq!(peer.info(), owner.info());
    assert_eq!(peer.creator_pid(), std::process::id());
    let q = peer.ptr(off, 256).unwrap();
    // SAFETY: in bounds.
    assert_eq!(unsafe { std::slice::from_raw_parts(q, 8) }, b"mooncake");
    assert_eq!(peer.offset_of(q).unwrap(), off);
    assert_eq!(peer.alloc(8, 8).unwrap_err(), Error::NotOwner);
    assert_eq!(peer.free(off).unwrap_err(), Error::NotOwner);
    let st = peer.stats();
    assert_eq!(st.capacity, 1 << 20);
    assert_eq!(st.live, 0);

    drop(peer);
    assert!(g.exists(&name));
    owner.free(off).unwrap();
    drop(owner);
    assert!(!g.exists(&name));
    assert_eq!(Pool::open(&name).unwrap_err(), Error::NotFound);
}

#[test]
fn dir_mode_pool() {
    let g = ShmGuard::new();
    let dir = g.dir();
    let d = dir.to_str().unwrap();
    let name = g.name();
    let owner = Pool::create(
        &name,
        &PoolOptions {
            dir: Some(d),
            ..opts(1 << 20)
        },
    )
    .unwrap();
    assert!(dir.join(&name).exists());
    assert!(!g.exists(&name));
    assert_eq!(Pool::open(&name).unwrap_err(), Error::NotFound);
    let off = owner.alloc(64, 8).unwrap();
    // SAFETY: in bounds.
    unsafe { owner.ptr(off, 1).unwrap().write(99) };
    let peer = Pool::open_in(Some(d), &name).unwrap();
    // SAFETY: in bounds.
    assert_eq!(unsafe { peer.ptr(off, 1).unwrap().read() }, 99);
    drop(peer);
    drop(owner);
    assert!(!dir.join(&name).exists());
}

#[test]
fn prefault_pool_is_resident() {
    let g = ShmGuard::new();
    let cap = 1 << 20;
    let pool = Pool::create(
        &g.name(),
        &PoolOptions {
            prefault: true,
            ..opts(cap)
        },
    )
    .unwrap();
    let (res, pages) = resident_pages(pool.base(), pool.len() as usize);
    assert_eq!(res, pages);
}

#[test]
fn huge_pages_pool_works_or_fails_cleanly() {
    let g = ShmGuard::new();
    let name = g.name();
    match Pool::create(
        &name,
        &PoolOptions {
            huge_pages: true,
            ..opts(2 << 20)
        },
    ) {
        Ok(p) => assert!(p.len() >= Pool::DATA_OFFSET + (2 << 20)),
        Err(e) => {
            assert!(matches!(e, Error::Os(_)), "unexpected {e:?}");
            assert!(!g.exists(&name));
        }
    }
}

#[test]
fn pool_shared_across_threads() {
    let g = ShmGuard::new();
    let pool = Pool::create(&g.name(), &opts(1 << 20)).unwrap();
    let offs: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    let off = pool.alloc(1024, 64).unwrap();
                    // SAFETY: in bounds, block owned by this thread.
                    unsafe { std::ptr::write_bytes(pool.ptr(off, 1024).unwrap(), t as u8, 1024) };
                    off
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, &off) in offs.iter().enumerate() {
        // SAFETY: in bounds.
        let s = unsafe { std::slice::from_raw_parts(pool.ptr(off, 1024).unwrap(), 1024) };
        assert!(s.iter().all(|&b| b == t as u8));
        pool.free(off).unwrap();
    }
}

#[test]
fn sharded_pool_offsets_and_limits() {
    let g = ShmGuard::new();
    let bad = PoolOptions {
        shards: 17,
        ..opts(1 << 20)
    };
    assert_eq!(
        Pool::create(&g.name(), &bad).err(),
        Some(Error::InvalidArgument)
    );
    assert!(Pool::open(&g.name()).is_err(), "nothing left behind");

    let pool = Pool::create(
        &g.name(),
        &PoolOptions {
            shards: 4,
            ..opts(1 << 20)
        },
    )
    .unwrap();
    // Each shard holds a quarter: a larger request fails, a quarter fits.
    assert_eq!(pool.alloc((1 << 18) + 16, 0), Err(Error::Exhausted));
    let whole = pool.alloc(1 << 18, 4096).unwrap();
    // Offsets are from the mapping base and every block is addressable.
    let offs: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    (0..32)
                        .map(|_| {
                            let off = pool.alloc(1000, 64).unwrap();
                            assert_eq!(off % 64, 0);
                            // SAFETY: in bounds (checked by ptr), block owned here.
                            unsafe { std::ptr::write_bytes(pool.ptr(off, 1000).unwrap(), t, 1000) };
                            off
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let st = pool.stats();
    assert_eq!(st.live, 129);
    for off in offs.into_iter().chain([whole]) {
        pool.free(off).unwrap();
    }
    assert_eq!(pool.free(whole), Err(Error::DoubleFree));
    let st = pool.stats();
    assert_eq!((st.live, st.in_use, st.largest_free), (0, 0, 1 << 18));
}
