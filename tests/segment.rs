//! Segment layer: create/open/drop semantics, names, sizes, directory mode,
//! prefault and huge pages.

mod common;

use common::{resident_pages, ShmGuard};
use mooncake_shm::segment::{Segment, SegmentOptions};
use mooncake_shm::Error;

fn opts(len: u64) -> SegmentOptions<'static> {
    SegmentOptions::with_len(len)
}

#[test]
fn segment_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Segment>();
}

#[test]
fn create_open_drop_semantics() {
    let g = ShmGuard::new();
    let name = g.name();
    let owner = Segment::create(&name, &opts(10_000)).unwrap();
    assert!(owner.is_owner());
    assert_eq!(owner.len(), 10_000);
    assert_eq!(owner.name(), name);
    assert!(!owner.in_dir());
    assert!(g.exists(&name));
    assert_eq!(g.raw_read(&name).len(), 10_000);
    // Fresh objects are zeroed.
    // SAFETY: 10_000 bytes are mapped.
    let bytes = unsafe { std::slice::from_raw_parts_mut(owner.as_ptr(), 10_000) };
    assert!(bytes.iter().all(|&b| b == 0));
    bytes[9_999] = 0x5A;
    bytes[0] = 0xA5;

    let peer = Segment::open(&name, 10_000).unwrap();
    assert!(!peer.is_owner());
    assert_eq!(peer.len(), 10_000);
    assert_eq!(peer.name(), name);
    assert_ne!(peer.as_ptr(), owner.as_ptr());
    // SAFETY: mapped, length checked.
    unsafe {
        assert_eq!(*peer.as_ptr(), 0xA5);
        assert_eq!(*peer.as_ptr().add(9_999), 0x5A);
        // Writes through the peer are visible to the owner.
        *peer.as_ptr().add(5_000) = 7;
        assert_eq!(*owner.as_ptr().add(5_000), 7);
    }

    // A peer's drop only unmaps.
    drop(peer);
    assert!(g.exists(&name));
    let peer2 = Segment::open(&name, 0).unwrap();
    assert_eq!(peer2.len(), 10_000);

    // The owner's drop unlinks; existing peer mappings stay valid.
    drop(owner);
    assert!(!g.exists(&name));
    // SAFETY: peer2 still maps the (now nameless) object.
    unsafe { assert_eq!(*peer2.as_ptr().add(5_000), 7) };
    drop(peer2);
    assert_eq!(Segment::open(&name, 0).unwrap_err(), Error::NotFound);
}

#[test]
fn name_validation_table() {
    let g = ShmGuard::new();
    let long_ok = "x".repeat(254);
    let too_long = "x".repeat(255);
    let bad: &[&str] = &["", "/", "/abc", "a/b", "abc/", "a\0b", ".", "..", &too_long];
    for &n in bad {
        assert_eq!(
            Segment::create(n, &opts(4096)).unwrap_err(),
            Error::InvalidName,
            "create {n:?}"
        );
        assert_eq!(
            Segment::open(n, 0).unwrap_err(),
            Error::InvalidName,
            "open {n:?}"
        );
        assert_eq!(
            Segment::remove(None, n).unwrap_err(),
            Error::InvalidName,
            "remove {n:?}"
        );
    }
    // Valid edge cases: 254 bytes, dots inside, non-ASCII UTF-8.
    let prefixed_254 = {
        let p = g.name();
        let mut s = p.clone();
        s.push_str(&long_ok[p.len()..]);
        s
    };
    assert_eq!(prefixed_254.len(), 254);
    for n in [
        prefixed_254,
        format!("{}.a.b", g.name()),
        format!("{}_é", g.name()),
    ] {
        let s = Segment::create(&n, &opts(4096)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(s.name(), n);
        let p = Segment::open(&n, 4096).unwrap();
        assert_eq!(p.name(), n);
        drop(s);
        assert!(!g.exists(&n));
    }
}

#[test]
fn zero_length_is_rejected_without_side_effects() {
    let g = ShmGuard::new();
    let name = g.name();
    assert_eq!(
        Segment::create(&name, &opts(0)).unwrap_err(),
        Error::InvalidArgument
    );
    assert!(!g.exists(&name));
}

#[test]
fn eexist_does_not_truncate_or_touch_existing() {
    let g = ShmGuard::new();

    // Existing object created by someone else (raw libc).
    let name = g.name();
    let content: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    g.raw_create(&name, 8192, &content);
    for len in [1u64, 4096, 8192, 1 << 20] {
        assert_eq!(
            Segment::create(&name, &opts(len)).unwrap_err(),
            Error::AlreadyExists
        );
    }
    let after = g.raw_read(&name);
    assert_eq!(after.len(), 8192);
    assert_eq!(after, content);

    // Existing object owned by another Segment: it stays usable and sized.
    let name2 = g.name();
    let owner = Segment::create(&name2, &opts(3 * 4096)).unwrap();
    // SAFETY: mapped, 12 KiB.
    unsafe { owner.as_ptr().add(4096 * 3 - 1).write(0xEE) };
    assert_eq!(
        Segment::create(&name2, &opts(4096)).unwrap_err(),
        Error::AlreadyExists
    );
    let raw = g.raw_read(&name2);
    assert_eq!(raw.len(), 3 * 4096);
    assert_eq!(raw[3 * 4096 - 1], 0xEE);
    drop(owner);
    assert!(!g.exists(&name2));
}

#[test]
fn open_missing_is_not_found() {
    let g = ShmGuard::new();
    let name = g.name();
    assert_eq!(Segment::open(&name, 0).unwrap_err(), Error::NotFound);
    assert_eq!(Segment::remove(None, &name).unwrap_err(), Error::NotFound);
    let dir = g.dir();
    let d = dir.to_str().unwrap();
    assert_eq!(
        Segment::open_in(Some(d), &name, 0).unwrap_err(),
        Error::NotFound
    );
    let missing_dir = format!("{d}/no_such_subdir");
    assert_eq!(
        Segment::open_in(Some(&missing_dir), &name, 0).unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        Segment::create(
            &name,
            &SegmentOptions {
                dir: Some(&missing_dir),
                ..opts(4096)
            }
        )
        .unwrap_err(),
        Error::NotFound
    );
    assert_eq!(
        Segment::open_in(Some(""), &name, 0).unwrap_err(),
        Error::InvalidArgument
    );
    assert!(!g.exists(&name));
}

#[test]
fn open_too_short_is_truncated_before_mapping() {
    let g = ShmGuard::new();
    let name = g.name();
    g.raw_create(&name, 100, b"hello");
    assert_eq!(Segment::open(&name, 4096).unwrap_err(), Error::Truncated);
    assert_eq!(Segment::open(&name, 101).unwrap_err(), Error::Truncated);
    let p = Segment::open(&name, 100).unwrap();
    assert_eq!(p.len(), 100);
    // SAFETY: 100 bytes mapped.
    assert_eq!(
        unsafe { std::slice::from_raw_parts(p.as_ptr(), 5) },
        b"hello"
    );
    drop(p);
    assert!(g.exists(&name), "peer drop must not unlink");

    let empty = g.name();
    g.raw_create(&empty, 0, &[]);
    assert_eq!(Segment::open(&empty, 0).unwrap_err(), Error::Truncated);
}

#[test]
fn remove_unlinks_stale_objects() {
    let g = ShmGuard::new();
    let name = g.name();
    g.raw_create(&name, 4096, b"stale");
    Segment::remove(None, &name).unwrap();
    assert!(!g.exists(&name));
    assert_eq!(Segment::remove(None, &name).unwrap_err(), Error::NotFound);
}

#[test]
fn dir_mode_create_open_cleanup() {
    let g = ShmGuard::new();
    let dir = g.dir();
    let d = dir.to_str().unwrap();
    let name = g.name();
    let o = SegmentOptions {
        dir: Some(d),
        ..opts(64 * 1024)
    };
    let owner = Segment::create(&name, &o).unwrap();
    assert!(owner.is_owner());
    assert!(owner.in_dir());
    assert!(!g.exists(&name), "dir mode must not use /dev/shm");
    let file = dir.join(&name);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 * 1024);
    // SAFETY: 64 KiB mapped.
    unsafe { owner.as_ptr().add(1234).write(42) };

    assert_eq!(
        Segment::create(&name, &o).unwrap_err(),
        Error::AlreadyExists
    );
    assert_eq!(Segment::open(&name, 0).unwrap_err(), Error::NotFound);

    let peer = Segment::open_in(Some(d), &name, 64 * 1024).unwrap();
    assert!(!peer.is_owner());
    assert!(peer.in_dir());
    // SAFETY: 64 KiB mapped.
    assert_eq!(unsafe { peer.as_ptr().add(1234).read() }, 42);
    assert_eq!(
        Segment::open_in(Some(d), &name, 64 * 1024 + 1).unwrap_err(),
        Error::Truncated
    );
    drop(peer);
    assert!(file.exists());

    // The owner removes its file (through its directory handle).
    drop(owner);
    assert!(!file.exists());

    // A directory path relative to the current directory works too.
    let name2 = g.name();
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd.components().count() - 1;
    let rel_from_root = format!(
        "{}{}",
        "../".repeat(ups),
        dir.strip_prefix("/").unwrap().display()
    );
    let s = Segment::create(
        &name2,
        &SegmentOptions {
            dir: Some(&rel_from_root),
            ..opts(4096)
        },
    )
    .unwrap();
    assert!(dir.join(&name2).exists());
    drop(s);
    assert!(!dir.join(&name2).exists());
}

#[test]
fn dir_mode_does_not_follow_symlinks() {
    let g = ShmGuard::new();
    let dir = g.dir();
    let d = dir.to_str().unwrap();
    let target = g.name();
    g.raw_create(&target, 4096, b"target");
    let link = g.name();
    g.declare_own(&link);
    std::os::unix::fs::symlink(format!("/dev/shm/{target}"), dir.join(&link)).unwrap();

    assert_eq!(
        Segment::open_in(Some(d), &link, 0).unwrap_err(),
        Error::Os(libc::ELOOP)
    );
    assert_eq!(
        Segment::create(
            &link,
            &SegmentOptions {
                dir: Some(d),
                ..opts(4096)
            }
        )
        .unwrap_err(),
        Error::AlreadyExists
    );
    // Target untouched.
    assert_eq!(&g.raw_read(&target)[..6], b"target");
    assert_eq!(g.raw_read(&target).len(), 4096);
}

#[test]
fn prefault_makes_every_page_resident() {
    let g = ShmGuard::new();
    let len = 2usize << 20;
    let cold = Segment::create(&g.name(), &opts(len as u64)).unwrap();
    let (res, pages) = resident_pages(cold.as_ptr(), len);
    assert_eq!(res, 0, "a fresh non-prefaulted object has no pages");
    assert_eq!(pages, len / 4096);

    let name = g.name();
    let hot = Segment::create(
        &name,
        &SegmentOptions {
            prefault: true,
            ..opts(len as u64)
        },
    )
    .unwrap();
    let (res, pages) = resident_pages(hot.as_ptr(), len);
    assert_eq!(res, pages, "prefault must fault in every page");
    // SAFETY: len bytes mapped.
    let all = unsafe { std::slice::from_raw_parts(hot.as_ptr(), len) };
    assert!(all.iter().all(|&b| b == 0));

    // Prefault in directory mode as well.
    let dir = g.dir();
    let hot_dir = Segment::create(
        &g.name(),
        &SegmentOptions {
            prefault: true,
            dir: Some(dir.to_str().unwrap()),
            ..opts(len as u64)
        },
    )
    .unwrap();
    let (res, pages) = resident_pages(hot_dir.as_ptr(), len);
    assert_eq!(res, pages);
}

#[test]
fn prefault_reports_enospc_instead_of_sigbus() {
    let g = ShmGuard::new();
    // SAFETY: statvfs writes into `st`.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut st) };
    assert_eq!(rc, 0);
    let total = st.f_blocks as u64 * st.f_frsize as u64;
    if total == 0 {
        eprintln!("/dev/shm has no size limit; skipping ENOSPC check");
        return;
    }
    // Larger than the whole file system: tmpfs refuses the fallocate up front.
    let name = g.name();
    let err = Segment::create(
        &name,
        &SegmentOptions {
            prefault: true,
            ..opts(total + (1 << 30))
        },
    )
    .unwrap_err();
    assert_eq!(err, Error::Os(libc::ENOSPC));
    assert!(!g.exists(&name), "failed create must unlink its name");
}

#[test]
fn huge_pages_work_or_fail_cleanly() {
    let g = ShmGuard::new();
    let dir = g.dir();
    for d in [None, Some(dir.to_str().unwrap())] {
        let name = g.name();
        let r = Segment::create(
            &name,
            &SegmentOptions {
                huge_pages: true,
                dir: d,
                ..opts(2 << 20)
            },
        );
        match r {
            Ok(s) => {
                assert!(s.len() >= 2 << 20);
                // SAFETY: mapped.
                unsafe { s.as_ptr().write(1) };
            }
            Err(e) => {
                eprintln!("huge pages in {d:?}: {e}");
                // MAP_HUGETLB on tmpfs / ext4 is EINVAL; never masked.
                assert!(matches!(e, Error::Os(_)), "unexpected {e:?}");
                assert!(!g.exists(&name));
                assert!(!dir.join(&name).exists());
            }
        }
    }
    // Also when combined with prefault.
    let name = g.name();
    if let Err(e) = Segment::create(
        &name,
        &SegmentOptions {
            huge_pages: true,
            prefault: true,
            ..opts(2 << 20)
        },
    ) {
        assert!(matches!(e, Error::Os(_)), "unexpected {e:?}");
        assert!(!g.exists(&name));
    }
}

#[test]
fn many_segments_and_names_are_independent() {
    let g = ShmGuard::new();
    let segs: Vec<Segment> = (0..32)
        .map(|i| Segment::create(&g.name(), &opts(4096 * (i + 1))).unwrap())
        .collect();
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.len(), 4096 * (i as u64 + 1));
        // SAFETY: mapped.
        unsafe { s.as_ptr().write(i as u8) };
    }
    for (i, s) in segs.iter().enumerate() {
        let p = Segment::open(s.name(), 0).unwrap();
        // SAFETY: mapped.
        assert_eq!(unsafe { p.as_ptr().read() }, i as u8);
    }
}
