//! Crash cleanup: telling a dead creator's objects from a live one's, and
//! removing the dead ones.
//!
//! An owner's drop unlinks its object, but a process killed with `SIGKILL`
//! (or one that aborts) leaves it in `/dev/shm`, holding memory until
//! reboot. Removing "objects whose creator pid is gone" is not safe: pids
//! are reused, so a pid alone cannot tell a dead creator from an unrelated
//! live process that got the same number. This module therefore works on
//! names that carry the creator's identity:
//!
//! ```text
//! <prefix>.<pid>.<starttime>.<random>
//! ```
//!
//! - `pid`: the creating process (decimal);
//! - `starttime`: its start time in clock ticks since boot (field 22 of
//!   `/proc/<pid>/stat`, decimal), which together with the pid identifies
//!   one process for the life of the machine;
//! - `random`: 16 lowercase hex digits from `getrandom`, so one process can
//!   create any number of objects.
//!
//! `.` is valid in shm names and file names; the prefix may contain dots
//! too, because parsing works from the right ([`parse_name`]). Build names
//! with [`unique_name`] (also `pool::unique_name`) **in the process that
//! will create the object**.
//!
//! # Liveness rule
//!
//! An object named with prefix `P` is *stale* (removable) only if all hold:
//!
//! 1. its name is exactly `P.<pid>.<starttime>.<16 hex>`;
//! 2. its creator is dead: `/proc/<pid>/stat` does not exist, or its start
//!    time differs from the one in the name (the pid was reused), or the
//!    process is a zombie (it holds no descriptors any more). Any other
//!    answer (unreadable `/proc`, unparsable contents) counts as alive;
//! 3. `flock(LOCK_EX | LOCK_NB)` on the object succeeds. Every owner holds
//!    `LOCK_SH` on its object for its lifetime (see `segment`), so this fails
//!    while a live owner exists, even one whose pid is invisible here (another
//!    pid namespace, `hidepid`) or one that created the object under a name
//!    it did not make itself.
//!
//! The object is unlinked while the exclusive lock is held. Objects the
//! caller may not open (other users' objects with mode 0600) are skipped:
//! with `/dev/shm`'s sticky bit they could not be unlinked anyway. Existing
//! mappings of a removed object stay valid; only the name goes away.

use crate::sys::{self, CBuf, Dir, Fd};
use crate::{Error, Result};
use core::ffi::CStr;

/// Longest name suffix [`unique_name`] appends: `.` + 10-digit pid + `.` +
/// 20-digit start time + `.` + 16 hex digits.
pub const MAX_SUFFIX_LEN: usize = 1 + 10 + 1 + 20 + 1 + 16;

/// Longest prefix accepted, so that every name fits in
/// `sys::MAX_NAME_LEN` (254) bytes.
pub const MAX_PREFIX_LEN: usize = sys::MAX_NAME_LEN - MAX_SUFFIX_LEN;

/// A buffer always large enough for [`unique_name`].
pub const NAME_BUF_LEN: usize = sys::MAX_NAME_LEN;

/// The identity a parsed name carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameParts {
    /// Creator's process id.
    pub pid: u32,
    /// Creator's start time (clock ticks since boot).
    pub starttime: u64,
    /// The random component.
    pub random: u64,
}

/// Checks a prefix: 1..=[`MAX_PREFIX_LEN`] bytes, no `/`, no NUL.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let b = prefix.as_bytes();
    if b.is_empty() || b.len() > MAX_PREFIX_LEN || b.contains(&b'/') || b.contains(&0) {
        return Err(Error::InvalidName);
    }
    Ok(())
}

/// The calling process's start time (field 22 of `/proc/self/stat`).
pub fn self_starttime() -> Result<u64> {
    sys::proc_stat(None).map(|s| s.starttime)
}

/// Writes `<prefix>.<pid>.<starttime>.<random>` for the calling process into
/// `buf` and returns it (no NUL is written).
///
/// Errors: `InvalidName` for a bad prefix (see [`validate_prefix`]);
/// `InvalidArgument` if `buf` is too small ([`NAME_BUF_LEN`] always
/// suffices); `Os(errno)` if `/proc/self/stat` or `getrandom` fail.
pub fn unique_name<'b>(prefix: &str, buf: &'b mut [u8]) -> Result<&'b str> {
    validate_prefix(prefix)?;
    let starttime = self_starttime()?;
    let mut r = [0u8; 8];
    sys::random_bytes(&mut r)?;
    let parts = NameParts {
        pid: sys::getpid(),
        starttime,
        random: u64::from_ne_bytes(r),
    };
    format_name(prefix, &parts, buf)
}

/// Writes `<prefix>.<pid>.<starttime>.<random as 16 hex>` into `buf`.
///
/// Errors as [`unique_name`] (minus the OS ones). Useful to build names for
/// other identities, e.g. in tests.
pub fn format_name<'b>(prefix: &str, parts: &NameParts, buf: &'b mut [u8]) -> Result<&'b str> {
    validate_prefix(prefix)?;
    let mut pid = [0u8; 20];
    let mut st = [0u8; 20];
    let mut hex = [0u8; 16];
    for (i, h) in hex.iter_mut().enumerate() {
        let nib = (parts.random >> (60 - 4 * i)) & 0xf;
        *h = b"0123456789abcdef"[nib as usize];
    }
    let pieces: [&[u8]; 7] = [
        prefix.as_bytes(),
        b".",
        sys::fmt_u64(u64::from(parts.pid), &mut pid),
        b".",
        sys::fmt_u64(parts.starttime, &mut st),
        b".",
        &hex,
    ];
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    if total > buf.len() {
        return Err(Error::InvalidArgument);
    }
    let mut at = 0;
    for p in pieces {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    // Only ASCII was appended to a `&str`.
    core::str::from_utf8(&buf[..total]).map_err(|_| Error::InvalidName)
}

/// Parses `name` as `<prefix>.<pid>.<starttime>.<16 hex>`; `None` if it does
/// not have exactly that shape with exactly this prefix.
pub fn parse_name(prefix: &str, name: &[u8]) -> Option<NameParts> {
    let rest = name.strip_prefix(prefix.as_bytes())?.strip_prefix(b".")?;
    let mut it = rest.split(|&c| c == b'.');
    let pid = sys::parse_u64(it.next()?)?;
    let starttime = sys::parse_u64(it.next()?)?;
    let hex = it.next()?;
    if it.next().is_some() || hex.len() != 16 {
        return None;
    }
    let mut random = 0u64;
    for &c in hex {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        random = (random << 4) | u64::from(d);
    }
    Some(NameParts {
        pid: u32::try_from(pid).ok()?,
        starttime,
        random,
    })
}

/// Whether the process `pid` that started at `starttime` is still running
/// (rule 2 of the module docs). A zombie counts as dead; anything that
/// cannot be decided counts as alive.
pub fn creator_alive(pid: u32, starttime: u64) -> bool {
    match sys::proc_stat(Some(pid)) {
        Ok(st) => st.starttime == starttime && st.state != b'Z' && st.state != b'X',
        Err(Error::NotFound) => false,
        Err(_) => true,
    }
}

/// Calls `f` with the name of every stale object with `prefix` in `dir`
/// (default `/dev/shm`), without removing anything: the dry run of
/// [`remove_stale`]. Returns how many were reported.
///
/// Errors: `InvalidName` for a bad prefix; `NotFound` / `Os(errno)` if the
/// directory cannot be read.
pub fn for_each_stale(prefix: &str, dir: Option<&str>, mut f: impl FnMut(&str)) -> Result<usize> {
    scan(prefix, dir, |_, name, _| {
        f(name);
        Ok(true)
    })
}

/// Removes every stale object with `prefix` in `dir` (default `/dev/shm`)
/// and returns how many were removed. Objects that vanish or cannot be
/// removed meanwhile are skipped.
///
/// Errors as [`for_each_stale`].
pub fn remove_stale(prefix: &str, dir: Option<&str>) -> Result<usize> {
    remove_stale_each(prefix, dir, |_, _| {})
}

/// [`remove_stale`], calling `f(name, outcome)` for every stale object it
/// tried to remove (`Ok(())` removed; `Err` the `unlink` error).
pub fn remove_stale_each(
    prefix: &str,
    dir: Option<&str>,
    mut f: impl FnMut(&str, Result<()>),
) -> Result<usize> {
    scan(prefix, dir, |dirfd, name, cname| {
        // Still holding the exclusive lock (taken in `scan`).
        let r = sys::unlinkat(dirfd, cname).map_err(|e| match e {
            Error::Os(libc::ENOENT) => Error::NotFound,
            e => e,
        });
        let removed = r.is_ok();
        f(name, r);
        Ok(removed)
    })
}

type PathBuf = CBuf<{ sys::MAX_DIR_LEN + 1 }>;

/// Walks `dir`, and for each stale object calls `act(dirfd, name, cname)`
/// while holding `LOCK_EX` on it; counts the `Ok(true)` answers.
fn scan(
    prefix: &str,
    dir: Option<&str>,
    mut act: impl FnMut(&Fd, &str, &CStr) -> Result<bool>,
) -> Result<usize> {
    validate_prefix(prefix)?;
    let path = match dir {
        None => PathBuf::concat(&[b"/dev/shm"])?,
        Some(d) if d.is_empty() || d.len() > sys::MAX_DIR_LEN => {
            return Err(Error::InvalidArgument)
        }
        Some(d) => PathBuf::concat(&[d.as_bytes()])?,
    };
    let mut d = Dir::open(path.as_cstr()).map_err(|e| match e {
        Error::Os(libc::ENOENT) => Error::NotFound,
        e => e,
    })?;
    let dirfd = d.fd();
    let mut count = 0usize;
    d.for_each(|cname| {
        let Some(parts) = parse_name(prefix, cname.to_bytes()) else {
            return Ok(());
        };
        let Ok(name) = cname.to_str() else {
            return Ok(());
        };
        if creator_alive(parts.pid, parts.starttime) {
            return Ok(());
        }
        // Never follow links, never block on a FIFO; no write access needed.
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let Ok(fd) = sys::openat(&dirfd, cname, flags, 0) else {
            return Ok(()); // vanished, or not ours to open
        };
        match sys::fstat(&fd) {
            Ok(info) if info.is_regular => {}
            _ => return Ok(()),
        }
        if sys::flock(&fd, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            return Ok(()); // a live owner holds LOCK_SH
        }
        let acted = act(&dirfd, name, cname);
        // Unlock explicitly, not by closing: a process that another thread
        // forks meanwhile (to spawn anything) holds a copy of `fd` until it
        // execs, and the lock belongs to the open file description, so the
        // copy would keep it and the next cleaner would skip the object as
        // live. An explicit unlock releases it for every copy.
        let _ = sys::flock(&fd, libc::LOCK_UN);
        drop(fd);
        if acted? {
            count += 1;
        }
        Ok(())
    })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let mut buf = [0u8; NAME_BUF_LEN];
        let parts = NameParts {
            pid: 4_294_967_295,
            starttime: u64::MAX,
            random: 0x0123_4567_89ab_cdef,
        };
        let n = format_name("a.b", &parts, &mut buf).unwrap();
        assert_eq!(n, "a.b.4294967295.18446744073709551615.0123456789abcdef");
        assert_eq!(n.len(), 3 + MAX_SUFFIX_LEN);
        assert_eq!(parse_name("a.b", n.as_bytes()), Some(parts));
        assert_eq!(parse_name("a", n.as_bytes()), None);
        assert_eq!(parse_name("a.b.4294967295", n.as_bytes()), None);
        for bad in [
            "a.b.1.2.0123456789abcdeF",
            "a.b.1.2.0123456789abcde",
            "a.b.1.2.0123456789abcdef.x",
            "a.b.-1.2.0123456789abcdef",
            "a.b.4294967296.2.0123456789abcdef",
            "a.b..2.0123456789abcdef",
            "a.bx.1.2.0123456789abcdef",
        ] {
            assert_eq!(parse_name("a.b", bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn prefix_and_buffer_limits() {
        let mut buf = [0u8; NAME_BUF_LEN];
        let long = [b'p'; MAX_PREFIX_LEN + 1];
        let long = core::str::from_utf8(&long).unwrap();
        assert_eq!(unique_name(long, &mut buf), Err(Error::InvalidName));
        assert!(unique_name(&long[1..], &mut buf).is_ok());
        assert_eq!(unique_name("", &mut buf), Err(Error::InvalidName));
        assert_eq!(unique_name("a/b", &mut buf), Err(Error::InvalidName));
        assert_eq!(
            unique_name("a", &mut buf[..10]),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn own_name_is_alive() {
        let mut buf = [0u8; NAME_BUF_LEN];
        let n = unique_name("x", &mut buf).unwrap();
        let p = parse_name("x", n.as_bytes()).unwrap();
        assert_eq!(p.pid, sys::getpid());
        assert!(creator_alive(p.pid, p.starttime));
        assert!(!creator_alive(p.pid, p.starttime + 1));
    }
}
