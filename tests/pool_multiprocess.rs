//! A real two-process test: the parent creates a pool and writes a pattern,
//! a child process (this test binary re-executed, running only
//! `child_entry`) opens the pool by name, checks the pattern at the offset it
//! was given and writes an answer; the parent checks the answer.

mod common;

use common::ShmGuard;
use mooncake_shm::pool::{Pool, PoolOptions};
use mooncake_shm::Error;
use std::process::Command;

const LEN: u64 = 64 * 1024;

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 7) as u8
}

fn answer(i: u64) -> u8 {
    pattern(i) ^ 0xA5
}

/// Child side: does nothing unless started by `parent_child_roundtrip`.
#[test]
fn child_entry() {
    let Ok(name) = std::env::var("MCSHM_CHILD_POOL") else {
        return;
    };
    let off: u64 = std::env::var("MCSHM_CHILD_OFF").unwrap().parse().unwrap();
    let parent: u32 = std::env::var("MCSHM_CHILD_PARENT")
        .unwrap()
        .parse()
        .unwrap();

    let pool = Pool::open(&name).expect("child: open pool");
    assert!(!pool.is_owner());
    assert_eq!(pool.creator_pid(), parent);
    assert_ne!(pool.creator_pid(), std::process::id());
    assert_eq!(pool.alloc(64, 8).unwrap_err(), Error::NotOwner);
    assert_eq!(pool.free(off).unwrap_err(), Error::NotOwner);

    let p = pool.ptr(off, 2 * LEN).expect("child: ptr");
    assert_eq!(pool.offset_of(p).unwrap(), off);
    // SAFETY: [p, p + 2 LEN) is inside the pool; the parent is waiting for
    // us and does not touch it meanwhile.
    let block = unsafe { std::slice::from_raw_parts_mut(p, 2 * LEN as usize) };
    let (seen, reply) = block.split_at_mut(LEN as usize);
    for (i, &b) in seen.iter().enumerate() {
        assert_eq!(b, pattern(i as u64), "child: pattern mismatch at {i}");
    }
    for (i, b) in reply.iter_mut().enumerate() {
        *b = answer(i as u64);
    }
    println!("MCSHM_CHILD_OK");
    // The peer's drop only unmaps.
}

#[test]
fn parent_child_roundtrip() {
    let g = ShmGuard::new();
    let name = g.name();
    let pool = Pool::create(
        &name,
        &PoolOptions {
            capacity: 4 << 20,
            max_blocks: 256,
            ..PoolOptions::default()
        },
    )
    .expect("create pool");
    // Some other allocation first, so the block is not at the data start.
    let other = pool.alloc(1000, 8).unwrap();
    let off = pool.alloc(2 * LEN, 4096).unwrap();
    let p = pool.ptr(off, 2 * LEN).unwrap();
    // SAFETY: the block is ours and inside the pool.
    let block = unsafe { std::slice::from_raw_parts_mut(p, 2 * LEN as usize) };
    for (i, b) in block[..LEN as usize].iter_mut().enumerate() {
        *b = pattern(i as u64);
    }

    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("MCSHM_CHILD_POOL", &name)
        .env("MCSHM_CHILD_OFF", off.to_string())
        .env("MCSHM_CHILD_PARENT", std::process::id().to_string())
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("MCSHM_CHILD_OK") && stdout.contains("1 passed"),
        "child did not run its checks:\n{stdout}\n{stderr}"
    );

    // SAFETY: the child has exited; the block is ours again.
    let block = unsafe { std::slice::from_raw_parts(p, 2 * LEN as usize) };
    for (i, &b) in block[LEN as usize..].iter().enumerate() {
        assert_eq!(b, answer(i as u64), "answer mismatch at {i}");
    }
    // The child's exit did not unlink the pool.
    assert!(g.exists(&name));
    pool.free(off).unwrap();
    pool.free(other).unwrap();
    drop(pool);
    assert!(!g.exists(&name));
}

#[test]
fn child_sees_missing_pool_as_not_found() {
    // The child opening a name that does not exist must fail cleanly.
    let g = ShmGuard::new();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("MCSHM_CHILD_POOL", g.name())
        .env("MCSHM_CHILD_OFF", Pool::DATA_OFFSET.to_string())
        .env("MCSHM_CHILD_PARENT", std::process::id().to_string())
        .output()
        .expect("spawn child");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NotFound"), "{stderr}");
}
