//! Bad input for pools: every way a peer can be handed something that is not
//! a usable pool, and every out-of-range request.

mod common;

use common::ShmGuard;
use mooncake_shm::pool::{Pool, PoolHeader, PoolOptions};
use mooncake_shm::Error;

const CAP: u64 = 64 * 1024;

/// A header written by hand, following the documented layout.
#[derive(Clone, Copy)]
struct Hdr {
    magic: u64,
    version: u32,
    header_size: u32,
    total_size: u64,
    data_offset: u64,
    capacity: u64,
    pid: u32,
    ready: u32,
}

impl Hdr {
    fn good() -> Hdr {
        Hdr {
            magic: PoolHeader::MAGIC,
            version: PoolHeader::VERSION,
            header_size: PoolHeader::SIZE as u32,
            total_size: Pool::DATA_OFFSET + CAP,
            data_offset: Pool::DATA_OFFSET,
            capacity: CAP,
            pid: 1,
            ready: PoolHeader::READY,
        }
    }
    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&self.magic.to_ne_bytes());
        v.extend_from_slice(&self.version.to_ne_bytes());
        v.extend_from_slice(&self.header_size.to_ne_bytes());
        v.extend_from_slice(&self.total_size.to_ne_bytes());
        v.extend_from_slice(&self.data_offset.to_ne_bytes());
        v.extend_from_slice(&self.capacity.to_ne_bytes());
        v.extend_from_slice(&self.pid.to_ne_bytes());
        v.extend_from_slice(&self.ready.to_ne_bytes());
        assert_eq!(v.len() as u64, PoolHeader::SIZE);
        v
    }
}

/// (what, object length, initial content, expected result of `Pool::open`)
type Case = (&'static str, u64, Vec<u8>, Result<(), Error>);

#[test]
fn hand_written_headers_table() {
    let full = Pool::DATA_OFFSET + CAP;
    let good = Hdr::good();
    let cases: Vec<Case> = vec![
        ("good header opens", full, good.bytes(), Ok(())),
        (
            "wrong magic",
            full,
            Hdr {
                magic: u64::from_ne_bytes(*b"NOTAPOOL"),
                ..good
            }
            .bytes(),
            Err(Error::BadMagic),
        ),
        (
            "byte-swapped magic",
            full,
            Hdr {
                magic: PoolHeader::MAGIC.swap_bytes(),
                ..good
            }
            .bytes(),
            Err(Error::BadMagic),
        ),
        (
            "garbage object",
            full,
            (0..4096u32).map(|i| (i * 31 + 7) as u8).collect(),
            Err(Error::BadMagic),
        ),
        (
            "version 2",
            full,
            Hdr { version: 2, ..good }.bytes(),
            Err(Error::VersionMismatch),
        ),
        (
            "version 0",
            full,
            Hdr { version: 0, ..good }.bytes(),
            Err(Error::VersionMismatch),
        ),
        (
            "wrong header size",
            full,
            Hdr {
                header_size: 64,
                ..good
            }
            .bytes(),
            Err(Error::VersionMismatch),
        ),
        (
            "wrong data offset",
            full,
            Hdr {
                data_offset: 8192,
                total_size: 8192 + CAP,
                ..good
            }
            .bytes(),
            Err(Error::VersionMismatch),
        ),
        (
            "inconsistent total",
            full,
            Hdr {
                total_size: full - 1,
                ..good
            }
            .bytes(),
            Err(Error::VersionMismatch),
        ),
        (
            "capacity overflows",
            full,
            Hdr {
                capacity: u64::MAX,
                total_size: u64::MAX,
                ..good
            }
            .bytes(),
            Err(Error::VersionMismatch),
        ),
        (
            "not ready (0)",
            full,
            Hdr { ready: 0, ..good }.bytes(),
            Err(Error::NotReady),
        ),
        (
            "not ready (1)",
            full,
            Hdr { ready: 1, ..good }.bytes(),
            Err(Error::NotReady),
        ),
        (
            "all zero: being created",
            full,
            vec![],
            Err(Error::NotReady),
        ),
        (
            "header says bigger than object",
            8192,
            Hdr {
                capacity: 1 << 20,
                total_size: Pool::DATA_OFFSET + (1 << 20),
                ..good
            }
            .bytes(),
            Err(Error::Truncated),
        ),
        (
            "object smaller than header",
            20,
            good.bytes()[..20].to_vec(),
            Err(Error::Truncated),
        ),
        (
            "object one byte short of header",
            PoolHeader::SIZE - 1,
            good.bytes()[..47].to_vec(),
            Err(Error::Truncated),
        ),
        ("empty object", 0, vec![], Err(Error::Truncated)),
        (
            "object shorter than data area",
            full - 1,
            good.bytes(),
            Err(Error::Truncated),
        ),
        (
            "object longer than needed is fine",
            full + 4096,
            good.bytes(),
            Ok(()),
        ),
    ];
    let g = ShmGuard::new();
    for (what, len, content, want) in cases {
        let name = g.name();
        g.raw_create(&name, len, &content);
        let got = Pool::open(&name).map(|p| {
            assert!(!p.is_owner());
            assert_eq!(p.data_len(), CAP);
            assert_eq!(p.creator_pid(), 1);
        });
        assert_eq!(got, want, "case: {what}");
        // Validation never modifies the object.
        let raw = g.raw_read(&name);
        assert_eq!(raw.len() as u64, len, "case: {what}");
        assert_eq!(&raw[..content.len()], &content[..], "case: {what}");
    }
}

#[test]
fn missing_and_invalid_names() {
    let g = ShmGuard::new();
    let name = g.name();
    assert_eq!(Pool::open(&name).unwrap_err(), Error::NotFound);
    let d = g.dir();
    assert_eq!(
        Pool::open_in(Some(d.to_str().unwrap()), &name).unwrap_err(),
        Error::NotFound
    );
    for bad in ["", "a/b", "/x", "..", "a\0b"] {
        assert_eq!(Pool::open(bad).unwrap_err(), Error::InvalidName, "{bad:?}");
        assert_eq!(
            Pool::create(
                bad,
                &PoolOptions {
                    capacity: CAP,
                    ..Default::default()
                }
            )
            .unwrap_err(),
            Error::InvalidName,
            "{bad:?}"
        );
    }
    assert!(!g.exists(&name));
}

#[test]
fn bad_create_options_leave_nothing() {
    let g = ShmGuard::new();
    let name = g.name();
    for o in [
        PoolOptions {
            capacity: 0,
            ..Default::default()
        },
        PoolOptions {
            capacity: u64::MAX,
            ..Default::default()
        },
        PoolOptions {
            capacity: u64::MAX - Pool::DATA_OFFSET + 1,
            ..Default::default()
        },
    ] {
        assert_eq!(Pool::create(&name, &o).unwrap_err(), Error::InvalidArgument);
        assert!(!g.exists(&name));
    }
}

#[test]
fn name_collision_does_not_truncate() {
    let g = ShmGuard::new();
    // A foreign object.
    let name = g.name();
    let content = b"somebody else's data".to_vec();
    g.raw_create(&name, 12345, &content);
    assert_eq!(
        Pool::create(
            &name,
            &PoolOptions {
                capacity: CAP,
                ..Default::default()
            }
        )
        .unwrap_err(),
        Error::AlreadyExists
    );
    let raw = g.raw_read(&name);
    assert_eq!(raw.len(), 12345);
    assert_eq!(&raw[..content.len()], &content[..]);

    // A live pool.
    let name2 = g.name();
    let pool = Pool::create(
        &name2,
        &PoolOptions {
            capacity: CAP,
            max_blocks: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let off = pool.alloc(16, 8).unwrap();
    // SAFETY: in bounds.
    unsafe { std::ptr::copy_nonoverlapping(b"survives".as_ptr(), pool.ptr(off, 16).unwrap(), 8) };
    assert_eq!(
        Pool::create(
            &name2,
            &PoolOptions {
                capacity: 4096,
                ..Default::default()
            }
        )
        .unwrap_err(),
        Error::AlreadyExists
    );
    let peer = Pool::open(&name2).unwrap();
    assert_eq!(peer.len(), Pool::DATA_OFFSET + CAP);
    // SAFETY: in bounds.
    assert_eq!(
        unsafe { std::slice::from_raw_parts(peer.ptr(off, 8).unwrap(), 8) },
        b"survives"
    );
}

#[test]
fn peer_cannot_allocate() {
    let g = ShmGuard::new();
    let name = g.name();
    g.raw_create(&name, Pool::DATA_OFFSET + CAP, &Hdr::good().bytes());
    let peer = Pool::open(&name).unwrap();
    assert!(!peer.is_owner());
    assert_eq!(peer.alloc(64, 8).unwrap_err(), Error::NotOwner);
    assert_eq!(peer.alloc(0, 0).unwrap_err(), Error::NotOwner);
    assert_eq!(peer.free(Pool::DATA_OFFSET).unwrap_err(), Error::NotOwner);
    drop(peer);
    assert!(g.exists(&name), "peer drop must not unlink");
}

#[test]
fn ptr_and_offset_of_bounds() {
    let g = ShmGuard::new();
    let name = g.name();
    g.raw_create(&name, Pool::DATA_OFFSET + CAP, &Hdr::good().bytes());
    let pool = Pool::open(&name).unwrap();
    let d = Pool::DATA_OFFSET;
    let end = d + CAP;
    let oob: &[(u64, u64)] = &[
        (u64::MAX, 1),
        (u64::MAX, 0),
        (u64::MAX - 1, 2),
        (d, u64::MAX),
        (d + 1, u64::MAX),
        (0, 1),
        (0, 0),
        (d - 1, 1),
        (d - 1, 2),
        (end, 1),
        (end - 1, 2),
        (end + 1, 0),
        (d, CAP + 1),
    ];
    for &(off, len) in oob {
        assert_eq!(
            pool.ptr(off, len).unwrap_err(),
            Error::OutOfBounds,
            "ptr({off}, {len})"
        );
    }
    let base = pool.base() as usize;
    for &(off, len) in &[
        (d, CAP),
        (d, 1),
        (end - 1, 1),
        (end, 0),
        (d, 0),
        (d + 100, 200),
    ] {
        assert_eq!(
            pool.ptr(off, len).unwrap() as usize,
            base + off as usize,
            "ptr({off}, {len})"
        );
    }
    let b = pool.base();
    for p in [
        std::ptr::null(),
        b.cast_const(),
        b.wrapping_add(d as usize - 1).cast_const(),
        b.wrapping_add(end as usize).cast_const(),
        b.wrapping_sub(1).cast_const(),
        usize::MAX as *const u8,
    ] {
        assert_eq!(pool.offset_of(p).unwrap_err(), Error::OutOfBounds, "{p:?}");
    }
    assert_eq!(pool.offset_of(b.wrapping_add(d as usize)).unwrap(), d);
    assert_eq!(
        pool.offset_of(b.wrapping_add(end as usize - 1)).unwrap(),
        end - 1
    );
}
