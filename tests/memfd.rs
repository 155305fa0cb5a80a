//! Sealed memfd pools: the descriptor travels over a Unix socket to another
//! process, nobody can change the object's size (no SIGBUS from a shrinking
//! peer), and a peer refuses descriptors that are not sealed.

mod common;

use common::child::Child;
use common::ShmGuard;
use mooncake_shm::pool::{Pool, PoolOptions};
use mooncake_shm::segment::MEMFD_SEALS;
use mooncake_shm::sys;
use mooncake_shm::Error;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;

const LEN: u64 = 64 * 1024;

fn opts() -> PoolOptions<'static> {
    PoolOptions {
        capacity: 1 << 20,
        max_blocks: 64,
        ..PoolOptions::default()
    }
}

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9) >> 5) as u8
}

fn ftruncate(fd: i32, len: i64) -> Result<(), i32> {
    // SAFETY: plain syscall on a descriptor the test owns.
    if unsafe { libc::ftruncate(fd, len) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

/// A raw memfd of `len` bytes holding `content`, with `flags`, plus `seals`.
fn raw_memfd(len: u64, content: &[u8], flags: u32, seals: i32) -> i32 {
    // SAFETY: valid C string.
    let fd = unsafe { libc::memfd_create(c"mcshm-test".as_ptr(), flags | libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    ftruncate(fd, len as i64).unwrap();
    // SAFETY: `content` is valid for reads of its length.
    let n = unsafe { libc::pwrite(fd, content.as_ptr().cast(), content.len(), 0) };
    assert_eq!(n, content.len() as isize);
    if seals != 0 {
        sys::add_seals_raw(fd, seals).unwrap();
    }
    fd
}

fn close(fd: i32) {
    // SAFETY: the test owns `fd` and closes it once.
    unsafe { libc::close(fd) };
}

/// Child side of `memfd_pool_shared_with_child_over_socket`.
#[test]
fn child_memfd_peer() {
    let Ok(sock) = std::env::var("MCSHM_MEMFD_SOCK") else {
        return;
    };
    let sock: i32 = sock.parse().unwrap();
    let off: u64 = std::env::var("MCSHM_MEMFD_OFF").unwrap().parse().unwrap();
    let fd = sys::recv_fd(sock).expect("child: recv_fd");
    let pool = Pool::open_fd(fd.raw()).expect("child: open_fd");
    drop(fd); // the mapping does not need it
    assert!(pool.is_memfd() && !pool.is_owner());
    assert_eq!(pool.fd(), None);
    assert_eq!(pool.name(), "");
    assert_eq!(pool.alloc(64, 8), Err(Error::NotOwner));
    let p = pool.ptr(off, 2 * LEN).unwrap();
    // SAFETY: inside the pool; the parent waits for our answer.
    let block = unsafe { std::slice::from_raw_parts_mut(p, 2 * LEN as usize) };
    let (seen, reply) = block.split_at_mut(LEN as usize);
    for (i, &b) in seen.iter().enumerate() {
        assert_eq!(b, pattern(i as u64), "child: pattern mismatch at {i}");
    }
    for (i, b) in reply.iter_mut().enumerate() {
        *b = !pattern(i as u64);
    }
    // A peer cannot shrink the object either.
    // SAFETY: `stat` is a plain C struct; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let fd2 = sys::recv_fd(sock).expect("child: second fd");
    // SAFETY: `st` is writable.
    assert_eq!(unsafe { libc::fstat(fd2.raw(), &mut st) }, 0);
    assert_eq!(ftruncate(fd2.raw(), 4096), Err(libc::EPERM));
    println!("MCSHM_CHILD_OK");
}

#[test]
fn memfd_pool_shared_with_child_over_socket() {
    let g = ShmGuard::new();
    let pool = Pool::create_memfd(&opts()).unwrap();
    assert!(pool.is_owner() && pool.is_memfd());
    assert_eq!(pool.name(), "");
    let fd = pool.fd().expect("owner keeps the memfd");
    let _pad = pool.alloc(1000, 8).unwrap();
    let off = pool.alloc(2 * LEN, 4096).unwrap();
    let p = pool.ptr(off, 2 * LEN).unwrap();
    // SAFETY: our block, inside the pool.
    let block = unsafe { std::slice::from_raw_parts_mut(p, 2 * LEN as usize) };
    for (i, b) in block[..LEN as usize].iter_mut().enumerate() {
        *b = pattern(i as u64);
    }

    let (mine, theirs) = UnixStream::pair().unwrap();
    let mut child = Child::spawn(
        "child_memfd_peer",
        &[
            ("MCSHM_MEMFD_SOCK", theirs.as_raw_fd().to_string()),
            ("MCSHM_MEMFD_OFF", off.to_string()),
        ],
        Some(theirs.as_raw_fd()),
    );
    drop(theirs);
    sys::send_fd(mine.as_raw_fd(), fd).unwrap();
    sys::send_fd(mine.as_raw_fd(), fd).unwrap();
    child.expect_line("MCSHM_CHILD_OK");
    let (st, rest) = child.finish();
    assert!(st.success(), "child failed: {st:?}\n{rest}");

    // SAFETY: the child has exited; the block is ours again.
    let block = unsafe { std::slice::from_raw_parts(p, 2 * LEN as usize) };
    for (i, &b) in block[LEN as usize..].iter().enumerate() {
        assert_eq!(b, !pattern(i as u64), "answer mismatch at {i}");
    }
    drop(pool);
    drop(g); // nothing of ours in /dev/shm: a memfd has no name
}

#[test]
fn sealed_memfd_refuses_any_resize() {
    let pool = Pool::create_memfd(&opts()).unwrap();
    let fd = pool.fd().unwrap();
    assert_eq!(sys::get_seals(fd).unwrap(), MEMFD_SEALS);
    let len = pool.len() as i64;
    assert_eq!(ftruncate(fd, len / 2), Err(libc::EPERM), "shrink");
    assert_eq!(ftruncate(fd, 0), Err(libc::EPERM), "shrink to 0");
    assert_eq!(ftruncate(fd, len * 2), Err(libc::EPERM), "grow");
    // F_SEAL_SEAL: the seals themselves are final.
    assert_eq!(
        sys::add_seals_raw(fd, libc::F_SEAL_WRITE),
        Err(Error::Os(libc::EPERM))
    );
    // Punching a hole is allowed by the seals but does not change the size;
    // the pages read back as zeros instead of faulting.
    // SAFETY: plain syscall on our descriptor.
    let rc = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            len,
        )
    };
    assert_eq!(rc, 0);
    let off = pool.alloc(4096, 4096).unwrap();
    let p = pool.ptr(off, 4096).unwrap();
    // SAFETY: inside the pool; still mapped and backed.
    unsafe { p.write(7) };
    // SAFETY: as above.
    assert_eq!(unsafe { p.read() }, 7);
    // The whole mapping is still readable.
    let base = pool.base();
    // SAFETY: [base, base + len) is our mapping.
    let _ = unsafe { base.add(len as usize - 1).read_volatile() };
}

#[test]
fn peer_refuses_unsealed_or_broken_descriptors() {
    let g = ShmGuard::new();
    let owner = Pool::create_memfd(&opts()).unwrap();
    let total = owner.len();
    // A byte-exact copy of a valid pool object.
    // SAFETY: [base, base + total) is the owner's mapping.
    let image = unsafe { std::slice::from_raw_parts(owner.base(), total as usize) }.to_vec();

    let unsealed = raw_memfd(total, &image[..4096], 0, 0);
    assert_eq!(Pool::open_fd(unsealed).unwrap_err(), Error::NotSealed);
    let grow_only = raw_memfd(
        total,
        &image[..4096],
        libc::MFD_ALLOW_SEALING,
        libc::F_SEAL_GROW,
    );
    assert_eq!(Pool::open_fd(grow_only).unwrap_err(), Error::NotSealed);
    let shrink_only = raw_memfd(
        total,
        &image[..4096],
        libc::MFD_ALLOW_SEALING,
        libc::F_SEAL_SHRINK,
    );
    let peer = Pool::open_fd(shrink_only).expect("F_SEAL_SHRINK is what matters");
    assert_eq!(peer.data_len(), owner.data_len());
    drop(peer);
    for fd in [unsealed, grow_only, shrink_only] {
        close(fd);
    }

    // A sealed memfd that is too short, empty, or not a pool.
    let short = raw_memfd(16, &image[..16], libc::MFD_ALLOW_SEALING, MEMFD_SEALS);
    assert_eq!(Pool::open_fd(short).unwrap_err(), Error::Truncated);
    let empty = raw_memfd(0, &[], libc::MFD_ALLOW_SEALING, MEMFD_SEALS);
    assert_eq!(Pool::open_fd(empty).unwrap_err(), Error::Truncated);
    let junk = raw_memfd(
        total,
        b"not a pool header",
        libc::MFD_ALLOW_SEALING,
        MEMFD_SEALS,
    );
    assert_eq!(Pool::open_fd(junk).unwrap_err(), Error::BadMagic);
    // Header says more than the (sealed) object holds.
    let cut = raw_memfd(
        total - 4096,
        &image[..4096],
        libc::MFD_ALLOW_SEALING,
        MEMFD_SEALS,
    );
    assert_eq!(Pool::open_fd(cut).unwrap_err(), Error::Truncated);
    for fd in [short, empty, junk, cut] {
        close(fd);
    }

    // A named pool's /dev/shm object and a regular file are not sealed.
    let name = g.name();
    let named = Pool::create(&name, &opts()).unwrap();
    assert_eq!(named.fd(), None, "named pools hand out no memfd");
    let f = std::fs::File::open(format!("/dev/shm/{name}")).unwrap();
    assert_eq!(Pool::open_fd(f.as_raw_fd()).unwrap_err(), Error::NotSealed);
    let tmp = std::env::temp_dir().join(format!("{name}_regular"));
    std::fs::write(&tmp, &image).unwrap();
    let f2 = std::fs::File::open(&tmp).unwrap();
    let r = Pool::open_fd(f2.as_raw_fd());
    std::fs::remove_file(&tmp).unwrap();
    assert_eq!(r.unwrap_err(), Error::NotSealed);
    drop(named);

    // Not a descriptor at all.
    assert_eq!(Pool::open_fd(-1).unwrap_err(), Error::Os(libc::EBADF));
    // Named-pool options that make no sense for a memfd.
    assert_eq!(
        Pool::create_memfd(&PoolOptions {
            dir: Some("/tmp"),
            ..opts()
        })
        .unwrap_err(),
        Error::InvalidArgument
    );
    assert_eq!(
        Pool::create_memfd(&PoolOptions {
            capacity: 0,
            ..opts()
        })
        .unwrap_err(),
        Error::InvalidArgument
    );
}

#[test]
fn same_process_peer_and_lifetimes() {
    let owner = Pool::create_memfd(&opts()).unwrap();
    let peer = Pool::open_fd(owner.fd().unwrap()).unwrap();
    assert_ne!(owner.base(), peer.base());
    let off = owner.alloc(4096, 64).unwrap();
    // SAFETY: inside both mappings of the same block.
    unsafe {
        owner.ptr(off, 8).unwrap().write_bytes(0x5a, 8);
        assert_eq!(*peer.ptr(off, 8).unwrap(), 0x5a);
    }
    assert_eq!(peer.info(), owner.info());
    // The peer's mapping outlives the owner (and its descriptor).
    drop(owner);
    // SAFETY: the peer's mapping is still valid.
    unsafe {
        let p = peer.ptr(off, 8).unwrap();
        assert_eq!(*p, 0x5a);
        p.write(1);
        assert_eq!(*p, 1);
    }
}

#[test]
fn fd_passing_errors() {
    let (a, b) = UnixStream::pair().unwrap();
    // A message without a descriptor.
    use std::io::Write;
    (&a).write_all(b"x").unwrap();
    assert_eq!(sys::recv_fd(b.as_raw_fd()).unwrap_err(), Error::NotFound);
    // The sender went away.
    drop(a);
    assert_eq!(
        sys::recv_fd(b.as_raw_fd()).unwrap_err(),
        Error::Os(libc::ECONNRESET)
    );
    // Sending a bad descriptor, or on a closed peer.
    let (c, d) = UnixStream::pair().unwrap();
    assert_eq!(
        sys::send_fd(c.as_raw_fd(), -1).unwrap_err(),
        Error::Os(libc::EBADF)
    );
    drop(d);
    assert_eq!(
        sys::send_fd(c.as_raw_fd(), c.as_raw_fd()).unwrap_err(),
        Error::Os(libc::EPIPE)
    );
    assert_eq!(sys::recv_fd(-1).unwrap_err(), Error::Os(libc::EBADF));
}

#[cfg(feature = "capi")]
#[test]
fn c_entry_points() {
    use mooncake_shm::ffi::*;
    let g = ShmGuard::new();
    let mut o = std::mem::MaybeUninit::<mcshm_pool_options>::uninit();
    // SAFETY: writable options.
    unsafe { mcshm_pool_options_init(o.as_mut_ptr()) };
    // SAFETY: initialized just above.
    let mut o = unsafe { o.assume_init() };
    o.capacity = 1 << 20;
    let mut owner: *mut mcshm_pool = std::ptr::null_mut();
    let mut peer: *mut mcshm_pool = std::ptr::null_mut();
    let mut fd = -1;
    // SAFETY: valid options and out-parameters; handles destroyed once.
    unsafe {
        o.dir = c"/tmp".as_ptr();
        assert_eq!(
            mcshm_pool_create_memfd(&o, &mut owner),
            MCSHM_ERR_INVALID_ARGUMENT
        );
        o.dir = std::ptr::null();
        assert_eq!(
            mcshm_pool_create_memfd(&o, std::ptr::null_mut()),
            MCSHM_ERR_NULL_ARGUMENT
        );
        assert_eq!(mcshm_pool_create_memfd(&o, &mut owner), MCSHM_OK);
        assert_eq!(mcshm_pool_fd(owner, &mut fd), MCSHM_OK);
        assert!(fd >= 0);

        let (a, b) = UnixStream::pair().unwrap();
        assert_eq!(mcshm_send_fd(a.as_raw_fd(), fd), MCSHM_OK);
        let mut got = -1;
        assert_eq!(mcshm_recv_fd(b.as_raw_fd(), &mut got), MCSHM_OK);
        assert!(got >= 0 && got != fd);
        assert_eq!(mcshm_pool_open_fd(got, &mut peer), MCSHM_OK);
        close(got);
        let mut pfd = 0;
        assert_eq!(mcshm_pool_fd(peer, &mut pfd), MCSHM_ERR_INVALID_ARGUMENT);

        let mut off = 0u64;
        assert_eq!(mcshm_pool_alloc(owner, 256, 8, &mut off), MCSHM_OK);
        let mut p1: *mut std::ffi::c_void = std::ptr::null_mut();
        let mut p2: *mut std::ffi::c_void = std::ptr::null_mut();
        assert_eq!(mcshm_pool_ptr(owner, off, 256, &mut p1), MCSHM_OK);
        assert_eq!(mcshm_pool_ptr(peer, off, 256, &mut p2), MCSHM_OK);
        p1.cast::<u8>().write(42);
        assert_eq!(p2.cast::<u8>().read(), 42);
        mcshm_pool_destroy(peer);

        let unsealed = raw_memfd(1 << 20, b"", 0, 0);
        assert_eq!(
            mcshm_pool_open_fd(unsealed, &mut peer),
            MCSHM_ERR_NOT_SEALED
        );
        close(unsealed);
        assert_eq!(mcshm_pool_open_fd(-1, &mut peer), MCSHM_ERR_OS);
        assert_eq!(mcshm_last_os_error(), libc::EBADF);

        let name = std::ffi::CString::new(g.name()).unwrap();
        let mut named: *mut mcshm_pool = std::ptr::null_mut();
        assert_eq!(mcshm_pool_create(name.as_ptr(), &o, &mut named), MCSHM_OK);
        assert_eq!(mcshm_pool_fd(named, &mut pfd), MCSHM_ERR_INVALID_ARGUMENT);
        mcshm_pool_destroy(named);
        mcshm_pool_destroy(owner);
    }
}
