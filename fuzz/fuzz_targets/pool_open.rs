//! `Pool::open` / `Pool::open_fd` over arbitrary header bytes and object
//! sizes: they must reject or accept, never crash (no SIGBUS, no read past
//! the object), and accept exactly the headers the documented validation
//! accepts.
//!
//! Each input becomes a fresh object: a named one in /dev/shm
//! (`mcshm_fuzz_<pid>_<counter>`, created with raw `shm_open(O_CREAT |
//! O_EXCL)`, `ftruncate`, `pwrite`) and the same bytes in a memfd (sealed
//! against shrinking, or not, as the input says). The object's first bytes
//! are the input's header (optionally patched with the right magic, version,
//! layout or ready marker, so the fuzzer reaches every check), its size is
//! the input's (capped at 1 MiB + 1 page).
//!
//! Checks:
//! - `Ok` only if every documented check passes; `Err` only with an error
//!   whose condition holds (the checks' order is not pinned here, only that
//!   the reason given is a real one);
//! - on `Ok`: `info()` is the header, `ptr` accepts exactly the data area,
//!   and the whole data area reads back what was written and can be written;
//! - an unsealed memfd is `NotSealed`;
//! - the named object is unlinked in every case (a guard, plus a panic hook
//!   for libFuzzer's abort-on-panic) so nothing is left in /dev/shm.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mooncake_shm::pool::{Pool, PoolHeader};
use mooncake_shm::Error;
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

const MAX_OBJECT: u64 = (1 << 20) + 4096;
const HDR: usize = PoolHeader::SIZE as usize;

#[derive(Arbitrary, Debug)]
struct Input {
    header: [u8; HDR],
    /// Object size, reduced modulo `MAX_OBJECT + 1`.
    size: u32,
    /// Derive the size from the header: `total_size` plus this delta
    /// (clamped), so valid and just-truncated objects are common.
    size_from_header: Option<i16>,
    fix_magic: bool,
    fix_version: bool,
    fix_layout: Option<u32>,
    fix_ready: bool,
    sealed: bool,
    /// Bytes written right after the header (then zeros).
    tail: Vec<u8>,
}

/// Name of the named object in use, for the panic hook.
static CURRENT: Mutex<Option<CString>> = Mutex::new(None);
static COUNTER: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

/// `MCSHM_FUZZ_TRACE=1` prints every outcome (to see which paths a corpus reaches).
fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("MCSHM_FUZZ_TRACE").is_some())
}

/// Unlinks the named object on drop.
struct Unlink(CString);

impl Drop for Unlink {
    fn drop(&mut self) {
        // SAFETY: a valid C string.
        unsafe { libc::shm_unlink(self.0.as_ptr()) };
        *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Closes a descriptor on drop.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn put<const N: usize>(h: &mut [u8; HDR], at: usize, v: [u8; N]) {
    h[at..at + N].copy_from_slice(&v);
}

fn u64_at(h: &[u8; HDR], at: usize) -> u64 {
    u64::from_ne_bytes(h[at..at + 8].try_into().unwrap())
}

fn u32_at(h: &[u8; HDR], at: usize) -> u32 {
    u32::from_ne_bytes(h[at..at + 4].try_into().unwrap())
}

/// Writes `len` bytes of object content (`bytes` then zeros) to `fd`.
fn fill(fd: i32, len: u64, bytes: &[u8]) {
    // SAFETY: plain syscalls on a descriptor we own.
    unsafe {
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0, "ftruncate");
        let n = bytes.len().min(len as usize);
        if n > 0 {
            let w = libc::pwrite(fd, bytes.as_ptr().cast(), n, 0);
            assert_eq!(w, n as isize, "pwrite");
        }
    }
}

/// The errors whose conditions hold for this header and object size, and
/// whether the documented validation accepts it.
fn reasons(h: &[u8; HDR], obj: u64) -> (Vec<Error>, bool) {
    let mut why = Vec::new();
    if obj < PoolHeader::SIZE {
        return (vec![Error::Truncated], false);
    }
    let magic = u64_at(h, 0);
    let version = u32_at(h, 8);
    let header_size = u32_at(h, 12);
    let total = u64_at(h, 16);
    let data_offset = u64_at(h, 24);
    let capacity = u64_at(h, 32);
    let ready = u32_at(h, 44);
    if magic != PoolHeader::MAGIC {
        why.push(if magic == 0 && ready == 0 {
            Error::NotReady
        } else {
            Error::BadMagic
        });
    }
    if version != PoolHeader::VERSION
        || header_size as u64 != PoolHeader::SIZE
        || data_offset != Pool::DATA_OFFSET
        || capacity == 0
        || data_offset.checked_add(capacity) != Some(total)
    {
        why.push(Error::VersionMismatch);
    }
    if ready != PoolHeader::READY {
        why.push(Error::NotReady);
    }
    if total > obj {
        why.push(Error::Truncated);
    }
    let ok = why.is_empty();
    (why, ok)
}

fn check(res: Result<Pool, Error>, h: &[u8; HDR], obj: u64, content: &[u8], what: &str) {
    let (why, ok) = reasons(h, obj);
    if trace() {
        eprintln!(
            "{what}: object {obj} bytes -> {:?}",
            res.as_ref().map(|p| p.info())
        );
    }
    let pool = match res {
        Ok(p) => p,
        Err(e) => {
            assert!(!ok, "{what}: valid header rejected with {e:?}");
            assert!(
                why.contains(&e),
                "{what}: {e:?}, but the reasons are {why:?}"
            );
            return;
        }
    };
    assert!(ok, "{what}: accepted, but {why:?}");
    let info = pool.info();
    assert_eq!(info.total_size, u64_at(h, 16));
    assert_eq!(info.data_offset, Pool::DATA_OFFSET);
    assert_eq!(info.capacity, u64_at(h, 32));
    assert_eq!(info.creator_pid, u32_at(h, 40));
    assert!(!pool.is_owner());
    assert_eq!(pool.alloc(16, 0), Err(Error::NotOwner));
    let (start, cap) = (info.data_offset, info.capacity);
    let end = start + cap;
    assert_eq!(pool.len(), obj);
    // Exactly the data area is addressable.
    assert_eq!(pool.ptr(0, 1), Err(Error::OutOfBounds));
    assert_eq!(pool.ptr(start - 1, 1), Err(Error::OutOfBounds));
    assert_eq!(pool.ptr(end, 1), Err(Error::OutOfBounds));
    assert_eq!(pool.ptr(start, cap + 1), Err(Error::OutOfBounds));
    assert_eq!(pool.ptr(u64::MAX, 2), Err(Error::OutOfBounds));
    assert!(pool.ptr(end, 0).is_ok());
    let p = pool.ptr(start, cap).expect("the whole data area");
    // SAFETY: `ptr` vouched for `cap` bytes; nobody else maps this object.
    let data = unsafe { std::slice::from_raw_parts_mut(p, cap as usize) };
    for (i, b) in data.iter().enumerate() {
        let want = content.get(start as usize + i).copied().unwrap_or(0);
        assert_eq!(*b, want, "{what}: data byte {i}");
    }
    data[0] = 0xA5;
    data[cap as usize - 1] = 0x5A;
    assert_eq!(pool.offset_of(p), Ok(start));
    assert_eq!(
        pool.offset_of(p.wrapping_add(cap as usize)),
        Err(Error::OutOfBounds)
    );
}

fuzz_target!(|input: Input| {
    HOOK.call_once(|| {
        // libFuzzer's hook aborts the process on panic, so no destructor
        // runs: unlink the current object first.
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut cur) = CURRENT.try_lock() {
                if let Some(name) = cur.take() {
                    // SAFETY: a valid C string.
                    unsafe { libc::shm_unlink(name.as_ptr()) };
                }
            }
            prev(info)
        }));
    });

    let mut h = input.header;
    if input.fix_magic {
        put(&mut h, 0, PoolHeader::MAGIC.to_ne_bytes());
    }
    if input.fix_version {
        put(&mut h, 8, PoolHeader::VERSION.to_ne_bytes());
    }
    if let Some(cap) = input.fix_layout {
        let cap = cap as u64 % (MAX_OBJECT - Pool::DATA_OFFSET + 1);
        put(&mut h, 12, (PoolHeader::SIZE as u32).to_ne_bytes());
        put(&mut h, 16, (Pool::DATA_OFFSET + cap).to_ne_bytes());
        put(&mut h, 24, Pool::DATA_OFFSET.to_ne_bytes());
        put(&mut h, 32, cap.to_ne_bytes());
    }
    if input.fix_ready {
        put(&mut h, 44, PoolHeader::READY.to_ne_bytes());
    }
    let obj = match input.size_from_header {
        Some(d) => u64_at(&h, 16)
            .saturating_add_signed(d as i64)
            .min(MAX_OBJECT),
        None => input.size as u64 % (MAX_OBJECT + 1),
    };
    let mut content = h.to_vec();
    content.extend_from_slice(&input.tail[..input.tail.len().min(8192)]);

    // Named object.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("mcshm_fuzz_{}_{}", std::process::id(), n);
    let cname = CString::new(format!("/{name}")).unwrap();
    *CURRENT.lock().unwrap() = Some(cname.clone());
    let guard = Unlink(cname);
    // SAFETY: valid C string; we own the returned descriptor.
    let fd = unsafe {
        libc::shm_open(
            guard.0.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        )
    };
    assert!(fd >= 0, "shm_open: {}", std::io::Error::last_os_error());
    let fd = Fd(fd);
    fill(fd.0, obj, &content);
    drop(fd);
    let res = Pool::open(&name);
    // The mapping (if any) outlives the name: unlink before checking.
    drop(guard);
    check(res, &h, obj, &content, "open");

    // The same bytes in a memfd.
    // SAFETY: valid C string; we own the returned descriptor.
    let mfd = unsafe {
        libc::memfd_create(
            c"mcshm_fuzz".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(
        mfd >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    let mfd = Fd(mfd);
    fill(mfd.0, obj, &content);
    if input.sealed {
        // SAFETY: plain fcntl on our descriptor.
        let r = unsafe {
            libc::fcntl(
                mfd.0,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            )
        };
        assert_eq!(r, 0, "F_ADD_SEALS");
        check(Pool::open_fd(mfd.0), &h, obj, &content, "open_fd");
    } else {
        assert_eq!(Pool::open_fd(mfd.0).err(), Some(Error::NotSealed));
    }
});
