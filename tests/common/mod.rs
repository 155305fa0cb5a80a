//! Shared test helpers: unique shm names, a guard that removes them (and
//! fails the test if the library leaked any), and raw libc object creation.
#![allow(dead_code)]

pub mod child;

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::FromRawFd;
use std::path::{Path, PathBuf};

/// Hands out names `mcshm_test_<pid>_<random>_<n>` and, on drop, removes
/// every object with its prefix from /dev/shm (and its temp dir). If the test
/// did not panic, it then fails if something was left that the test did not
/// declare as its own (`raw_*` objects): that would be a library leak.
pub struct ShmGuard {
    prefix: String,
    next: Cell<u32>,
    own: RefCell<Vec<String>>,
    dir: RefCell<Option<PathBuf>>,
}

impl ShmGuard {
    pub fn new() -> ShmGuard {
        let prefix = format!(
            "mcshm_test_{}_{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        ShmGuard {
            prefix,
            next: Cell::new(0),
            own: RefCell::new(Vec::new()),
            dir: RefCell::new(None),
        }
    }

    /// A fresh, unused name.
    pub fn name(&self) -> String {
        let n = self.next.get();
        self.next.set(n + 1);
        format!("{}_{}", self.prefix, n)
    }

    /// A temp directory under /tmp for directory mode (removed on drop).
    pub fn dir(&self) -> PathBuf {
        let mut d = self.dir.borrow_mut();
        if d.is_none() {
            let p = std::env::temp_dir().join(format!("{}_dir", self.prefix));
            std::fs::create_dir(&p).expect("create temp dir");
            *d = Some(p);
        }
        d.clone().unwrap()
    }

    /// Whether `name` currently exists in /dev/shm.
    pub fn exists(&self, name: &str) -> bool {
        Path::new("/dev/shm").join(name).exists()
    }

    /// Creates an object with raw `shm_open(O_CREAT|O_EXCL)` + `ftruncate`,
    /// writes `content` at 0, and records it as the test's own.
    pub fn raw_create(&self, name: &str, len: u64, content: &[u8]) {
        let c = CString::new(format!("/{name}")).unwrap();
        // SAFETY: valid C string.
        let fd = unsafe {
            libc::shm_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
        };
        assert!(
            fd >= 0,
            "raw shm_open failed: {}",
            std::io::Error::last_os_error()
        );
        self.own.borrow_mut().push(name.to_string());
        // SAFETY: fd is a fresh descriptor we own.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(len).expect("ftruncate");
        if !content.is_empty() {
            f.write_all_at(content, 0).expect("write");
        }
    }

    /// Declares `name` as created by the test itself (not a library leak).
    pub fn declare_own(&self, name: &str) {
        self.own.borrow_mut().push(name.to_string());
    }

    /// Writes `bytes` at `off` into an existing /dev/shm object.
    pub fn raw_write(&self, name: &str, off: u64, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(Path::new("/dev/shm").join(name))
            .expect("open for write");
        f.write_all_at(bytes, off).expect("write");
    }

    /// Reads the whole /dev/shm object.
    pub fn raw_read(&self, name: &str) -> Vec<u8> {
        std::fs::read(Path::new("/dev/shm").join(name)).expect("read")
    }

    /// Entries with this guard's prefix in `dir`.
    fn leftovers(&self, dir: &Path) -> Vec<String> {
        let want = format!("{}_", self.prefix);
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&want) && !n.ends_with("_dir") {
                    out.push(n);
                }
            }
        }
        out
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        let own = self.own.borrow().clone();
        let mut leaked = Vec::new();
        for n in self.leftovers(Path::new("/dev/shm")) {
            let c = CString::new(format!("/{n}")).unwrap();
            // SAFETY: valid C string.
            unsafe { libc::shm_unlink(c.as_ptr()) };
            if !own.contains(&n) {
                leaked.push(format!("/dev/shm/{n}"));
            }
        }
        if let Some(d) = self.dir.borrow().as_ref() {
            for n in self.leftovers(d) {
                let _ = std::fs::remove_file(d.join(&n));
                if !own.contains(&n) {
                    leaked.push(d.join(&n).display().to_string());
                }
            }
            let _ = std::fs::remove_dir_all(d);
        }
        if !std::thread::panicking() {
            assert!(leaked.is_empty(), "library left objects behind: {leaked:?}");
            assert!(
                self.leftovers(Path::new("/dev/shm")).is_empty(),
                "cleanup failed"
            );
        }
    }
}

/// Whether the kernel reports every page of `[p, p + len)` resident.
pub fn resident_pages(p: *mut u8, len: usize) -> (usize, usize) {
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: p is page-aligned (start of a mapping) and [p, p+len) is mapped.
    let rc = unsafe { libc::mincore(p.cast(), len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    (vec.iter().filter(|&&b| b & 1 != 0).count(), pages)
}
