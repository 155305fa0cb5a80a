//! Crash cleanup: the name scheme, the liveness rule (pid + start time +
//! the owner's lock), `remove_stale` against a SIGKILLed child, directory
//! mode, the `mcshm-clean` tool and the C entry points.

mod common;

use common::child::{wait_for_parent, Child};
use common::ShmGuard;
use mooncake_shm::cleanup::{self, NameParts, NAME_BUF_LEN};
use mooncake_shm::pool::{self, Pool, PoolOptions};
use mooncake_shm::segment::Segment;
use mooncake_shm::Error;
use std::collections::BTreeSet;
use std::process::Command;

/// A pid no process can have (above the kernel's PID_MAX_LIMIT of 2^22).
const DEAD_PID: u32 = 4_000_000_000;

fn opts() -> PoolOptions<'static> {
    PoolOptions {
        capacity: 64 * 1024,
        max_blocks: 64,
        ..PoolOptions::default()
    }
}

fn name_for(prefix: &str, pid: u32, starttime: u64) -> String {
    let mut buf = [0u8; NAME_BUF_LEN];
    let parts = NameParts {
        pid,
        starttime,
        random: rand::random(),
    };
    cleanup::format_name(prefix, &parts, &mut buf)
        .unwrap()
        .to_string()
}

fn my_starttime() -> u64 {
    cleanup::self_starttime().unwrap()
}

fn stale_set(prefix: &str, dir: Option<&str>) -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    let n = cleanup::for_each_stale(prefix, dir, |n| {
        v.insert(n.to_string());
    })
    .unwrap();
    assert_eq!(n, v.len());
    v
}

/// Child side of `sigkilled_creator_objects_are_removed_live_one_kept`.
#[test]
fn child_create_two_and_hang() {
    let Ok(prefix) = std::env::var("MCSHM_CLEAN_PREFIX") else {
        return;
    };
    let mut b1 = [0u8; NAME_BUF_LEN];
    let mut b2 = [0u8; NAME_BUF_LEN];
    let n1 = pool::unique_name(&prefix, &mut b1).unwrap();
    let n2 = pool::unique_name(&prefix, &mut b2).unwrap();
    let _p1 = Pool::create(n1, &opts()).unwrap();
    let _p2 = Pool::create(n2, &opts()).unwrap();
    println!("MCSHM_READY {n1} {n2}");
    // Block until killed (or until the parent goes away).
    wait_for_parent();
}

#[test]
fn sigkilled_creator_objects_are_removed_live_one_kept() {
    let g = ShmGuard::new();
    let prefix = g.name();
    let mut buf = [0u8; NAME_BUF_LEN];
    let live_name = pool::unique_name(&prefix, &mut buf).unwrap().to_string();
    let live = Pool::create(&live_name, &opts()).unwrap();

    let mut child = Child::spawn(
        "child_create_two_and_hang",
        &[("MCSHM_CLEAN_PREFIX", prefix.clone())],
        None,
    );
    let names = child.expect_line("MCSHM_READY ");
    assert_eq!(names.len(), 2);
    for n in &names {
        assert!(g.exists(n), "{n}");
        let p = cleanup::parse_name(&prefix, n.as_bytes()).unwrap();
        assert_eq!(p.pid, child.pid());
    }
    // While the child lives nothing is stale.
    assert!(stale_set(&prefix, None).is_empty());
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 0);

    child.kill9();
    for n in &names {
        assert!(g.exists(n), "SIGKILL left {n} behind (no drop ran)");
    }
    let expected: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(stale_set(&prefix, None), expected);
    let mut reported = BTreeSet::new();
    let removed = cleanup::remove_stale_each(&prefix, None, |n, r| {
        assert_eq!(r, Ok(()));
        reported.insert(n.to_string());
    })
    .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(reported, expected);
    for n in &names {
        assert!(!g.exists(n), "{n} not removed");
    }
    assert!(g.exists(&live_name), "the live pool was removed");
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 0);
    // The live pool still works.
    let off = live.alloc(100, 8).unwrap();
    live.free(off).unwrap();
    drop(live);
    assert!(!g.exists(&live_name));
}

#[test]
fn a_fork_during_a_scan_does_not_keep_the_lock() {
    // A process forked while a cleaner holds an object's lock (any thread
    // that spawns a process does this) keeps a copy of the descriptor until
    // it execs or exits. The cleaner releases the lock explicitly, so that
    // copy does not keep the object looking live.
    let g = ShmGuard::new();
    let prefix = g.name();
    let stale = name_for(&prefix, DEAD_PID, 1);
    g.raw_create(&stale, 4096, b"");
    let mut forked = 0;
    let n = cleanup::for_each_stale(&prefix, None, |_| {
        // SAFETY: the child only calls async-signal-safe functions (pause,
        // _exit) and is killed below.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the forked child: async-signal-safe calls only.
            unsafe {
                libc::pause();
                libc::_exit(0)
            }
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        forked = pid;
    })
    .unwrap();
    assert_eq!(n, 1);
    let removed = cleanup::remove_stale(&prefix, None);
    // SAFETY: plain syscalls on our own unreaped child.
    unsafe {
        libc::kill(forked, libc::SIGKILL);
        libc::waitpid(forked, std::ptr::null_mut(), 0);
    }
    assert_eq!(removed, Ok(1), "the forked copy kept the lock");
    assert!(!g.exists(&stale));
}

#[test]
fn reused_pid_with_other_starttime_is_dead() {
    let g = ShmGuard::new();
    let prefix = g.name();
    let me = std::process::id();
    let st = my_starttime();
    // Our own pid, but a start time that is not ours: the pid was "reused".
    let reused = name_for(&prefix, me, st + 1);
    // No such process at all.
    let gone = name_for(&prefix, DEAD_PID, st);
    // Our own identity: alive, even without the owner's lock.
    let alive = name_for(&prefix, me, st);
    for n in [&reused, &gone, &alive] {
        g.raw_create(n, 4096, b"x");
    }
    assert!(!cleanup::creator_alive(me, st + 1));
    assert!(!cleanup::creator_alive(DEAD_PID, st));
    assert!(cleanup::creator_alive(me, st));
    let expected: BTreeSet<String> = [reused.clone(), gone.clone()].into();
    assert_eq!(stale_set(&prefix, None), expected);
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 2);
    assert!(!g.exists(&reused) && !g.exists(&gone));
    assert!(g.exists(&alive), "an object of a live creator was removed");
}

#[test]
fn live_lock_holder_is_never_removed() {
    // A name that says "dead creator", but a live owner holds its lock
    // (e.g. an owner in another pid namespace, or one that used a foreign
    // name): the exclusive-lock check keeps it.
    let g = ShmGuard::new();
    let prefix = g.name();
    let name = name_for(&prefix, DEAD_PID, 1);
    let pool = Pool::create(&name, &opts()).unwrap();
    assert!(stale_set(&prefix, None).is_empty());
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 0);
    assert!(g.exists(&name));
    // A peer does not hold the lock; the owner does, so still kept.
    let peer = Pool::open(&name).unwrap();
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 0);
    drop(pool);
    assert!(!g.exists(&name));
    drop(peer);

    // Same for a bare segment owner.
    let name = name_for(&prefix, DEAD_PID, 2);
    let seg = Segment::create(
        &name,
        &mooncake_shm::segment::SegmentOptions::with_len(4096),
    )
    .unwrap();
    assert!(seg.fd().is_some(), "the owner keeps its descriptor");
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 0);
    drop(seg);
    assert!(!g.exists(&name));
}

#[test]
fn foreign_names_are_ignored() {
    let g = ShmGuard::new();
    let prefix = g.name();
    let dead = name_for(&prefix, DEAD_PID, 1);
    let others = [
        prefix.to_string(),
        format!("{prefix}.garbage"),
        format!("{prefix}.{DEAD_PID}.1"),
        format!("{dead}.extra"),
        format!("{prefix}x.{DEAD_PID}.1.0123456789abcdef"),
        format!("{prefix}.{DEAD_PID}.1.0123456789ABCDEF"),
        format!("{prefix}.{DEAD_PID}.1.0123456789abcde"),
        format!("{prefix}.+1.1.0123456789abcdef"),
    ];
    for n in &others {
        g.raw_create(n, 4096, b"");
    }
    assert!(stale_set(&prefix, None).is_empty());
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 0);
    for n in &others {
        assert!(g.exists(n), "{n} was removed");
    }
}

#[test]
fn bad_prefix_and_dir() {
    assert_eq!(cleanup::remove_stale("", None), Err(Error::InvalidName));
    assert_eq!(cleanup::remove_stale("a/b", None), Err(Error::InvalidName));
    assert_eq!(
        cleanup::remove_stale(&"p".repeat(cleanup::MAX_PREFIX_LEN + 1), None),
        Err(Error::InvalidName)
    );
    assert_eq!(
        cleanup::remove_stale("p", Some("/nonexistent/mcshm/dir")),
        Err(Error::NotFound)
    );
    assert_eq!(
        cleanup::remove_stale("p", Some("")),
        Err(Error::InvalidArgument)
    );
    let mut small = [0u8; 8];
    assert_eq!(
        pool::unique_name("p", &mut small),
        Err(Error::InvalidArgument)
    );
}

#[test]
fn dir_mode_cleanup_never_follows_symlinks() {
    let g = ShmGuard::new();
    let prefix = g.name();
    let dir = g.dir();
    let d = dir.to_str().unwrap();
    // A stale file, a live pool under a dead-looking name, and a symlink
    // with a stale name pointing at a victim file.
    let stale = name_for(&prefix, DEAD_PID, 1);
    std::fs::write(dir.join(&stale), b"left by a crash").unwrap();
    let locked = name_for(&prefix, DEAD_PID, 2);
    let pool = Pool::create(
        &locked,
        &PoolOptions {
            dir: Some(d),
            ..opts()
        },
    )
    .unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let link = name_for(&prefix, DEAD_PID, 3);
    std::os::unix::fs::symlink(&victim, dir.join(&link)).unwrap();
    g.declare_own(&stale);
    g.declare_own(&link);

    assert_eq!(stale_set(&prefix, Some(d)), [stale.clone()].into());
    assert_eq!(cleanup::remove_stale(&prefix, Some(d)).unwrap(), 1);
    assert!(!dir.join(&stale).exists());
    assert!(dir.join(&locked).exists());
    assert!(
        dir.join(&link).symlink_metadata().is_ok(),
        "symlink removed"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // /dev/shm was not scanned for this dir's objects.
    drop(pool);
    assert!(!dir.join(&locked).exists());
    std::fs::remove_file(dir.join(&link)).unwrap();
}

#[test]
fn mcshm_clean_tool() {
    let g = ShmGuard::new();
    let prefix = g.name();
    let dead = name_for(&prefix, DEAD_PID, 1);
    g.raw_create(&dead, 4096, b"");
    let mut buf = [0u8; NAME_BUF_LEN];
    let live_name = pool::unique_name(&prefix, &mut buf).unwrap().to_string();
    let live = Pool::create(&live_name, &opts()).unwrap();
    let exe = env!("CARGO_BIN_EXE_mcshm-clean");

    let out = Command::new(exe)
        .args(["--dry-run", &prefix])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(&dead) && stdout.contains("dry run"),
        "{stdout}"
    );
    assert!(!stdout.contains(&live_name), "{stdout}");
    assert!(stdout.contains("1 stale object"), "{stdout}");
    assert!(g.exists(&dead), "dry run removed something");

    let out = Command::new(exe).arg(&prefix).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(&format!("removed /dev/shm/{dead}")),
        "{stdout}"
    );
    assert!(stdout.contains("removed 1 stale object"), "{stdout}");
    assert!(!g.exists(&dead));
    assert!(g.exists(&live_name));

    let out = Command::new(exe).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(exe).args(["--bogus", "p"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(exe)
        .args(["--dir", "/nonexistent/mcshm", "p"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    drop(live);
}

#[cfg(feature = "capi")]
#[test]
fn c_entry_points() {
    use mooncake_shm::ffi::*;
    use std::ffi::{CStr, CString};
    let g = ShmGuard::new();
    let prefix = g.name();
    let cprefix = CString::new(prefix.clone()).unwrap();
    let mut buf = [0 as std::ffi::c_char; MCSHM_UNIQUE_NAME_BUF_LEN];
    // SAFETY: valid C string and a buffer of the stated length.
    unsafe {
        assert_eq!(
            mcshm_unique_name(cprefix.as_ptr(), buf.as_mut_ptr(), 10),
            MCSHM_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            mcshm_unique_name(cprefix.as_ptr(), std::ptr::null_mut(), 10),
            MCSHM_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            mcshm_unique_name(c"a/b".as_ptr(), buf.as_mut_ptr(), buf.len()),
            MCSHM_ERR_INVALID_NAME
        );
        assert_eq!(
            mcshm_unique_name(cprefix.as_ptr(), buf.as_mut_ptr(), buf.len()),
            MCSHM_OK
        );
    }
    // SAFETY: NUL-terminated on success.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    let p = cleanup::parse_name(&prefix, name.as_bytes()).unwrap();
    assert_eq!(p.pid, std::process::id());

    let dead = name_for(&prefix, DEAD_PID, 7);
    g.raw_create(&dead, 4096, b"");
    g.raw_create(name, 4096, b"");
    let mut removed = 99u64;
    // SAFETY: valid C strings and out-parameter.
    unsafe {
        assert_eq!(
            mcshm_cleanup_stale(std::ptr::null(), std::ptr::null(), &mut removed),
            MCSHM_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            mcshm_cleanup_stale(cprefix.as_ptr(), c"/nonexistent/x".as_ptr(), &mut removed),
            MCSHM_ERR_NOT_FOUND
        );
        assert_eq!(
            mcshm_cleanup_stale(cprefix.as_ptr(), std::ptr::null(), &mut removed),
            MCSHM_OK
        );
    }
    assert_eq!(removed, 1);
    assert!(!g.exists(&dead));
    assert!(g.exists(name));
    // SAFETY: NULL out_removed is allowed.
    let rc =
        unsafe { mcshm_cleanup_stale(cprefix.as_ptr(), std::ptr::null(), std::ptr::null_mut()) };
    assert_eq!(rc, MCSHM_OK);
}
