//! Owner death: a peer's mapping outlives the owner process, whether it
//! exits normally (its drop unlinks the name) or is SIGKILLed (the name
//! stays until `cleanup::remove_stale`); a new owner can reuse the prefix.

mod common;

use common::child::{wait_for_parent, Child};
use common::ShmGuard;
use mooncake_shm::cleanup::{self, NAME_BUF_LEN};
use mooncake_shm::pool::{self, Pool, PoolOptions};

const LEN: u64 = 128 * 1024;

fn opts() -> PoolOptions<'static> {
    PoolOptions {
        capacity: 1 << 20,
        max_blocks: 64,
        ..PoolOptions::default()
    }
}

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 9)) as u8
}

/// Child side: the owner. Creates a pool, writes the pattern, reports
/// `name offset`, then waits for the parent; "exit" means drop and exit.
#[test]
fn child_owner() {
    let Ok(prefix) = std::env::var("MCSHM_OWNER_PREFIX") else {
        return;
    };
    let mut buf = [0u8; NAME_BUF_LEN];
    let name = pool::unique_name(&prefix, &mut buf).unwrap();
    let pool = Pool::create(name, &opts()).unwrap();
    let off = pool.alloc(LEN, 4096).unwrap();
    let p = pool.ptr(off, LEN).unwrap();
    // SAFETY: our block, inside the pool.
    let block = unsafe { std::slice::from_raw_parts_mut(p, LEN as usize) };
    for (i, b) in block.iter_mut().enumerate() {
        *b = pattern(i as u64);
    }
    println!("MCSHM_OWNER_READY {name} {off}");
    let cmd = wait_for_parent();
    assert_eq!(cmd, "exit");
    drop(pool); // normal exit path: unmap + unlink
    println!("MCSHM_OWNER_GONE");
}

/// Checks the pattern through the peer's mapping, then writes and reads back.
fn peer_still_works(peer: &Pool, off: u64) {
    let p = peer.ptr(off, LEN).unwrap();
    // SAFETY: the peer's mapping of the block; no one else uses it now.
    let block = unsafe { std::slice::from_raw_parts_mut(p, LEN as usize) };
    for (i, &b) in block.iter().enumerate() {
        assert_eq!(b, pattern(i as u64), "pattern lost at {i}");
    }
    for b in block.iter_mut() {
        *b = !*b;
    }
    for (i, &b) in block.iter().enumerate() {
        assert_eq!(b, !pattern(i as u64), "write lost at {i}");
    }
    for b in block.iter_mut() {
        *b = !*b;
    }
}

#[test]
fn peer_outlives_owner_that_exits_normally() {
    let g = ShmGuard::new();
    let prefix = g.name();
    let mut owner = Child::spawn(
        "child_owner",
        &[("MCSHM_OWNER_PREFIX", prefix.clone())],
        None,
    );
    let ready = owner.expect_line("MCSHM_OWNER_READY ");
    let (name, off) = (ready[0].clone(), ready[1].parse::<u64>().unwrap());
    assert_eq!(
        cleanup::parse_name(&prefix, name.as_bytes()).unwrap().pid,
        owner.pid()
    );
    let peer = Pool::open(&name).unwrap();
    assert_eq!(peer.creator_pid(), owner.pid());
    owner.send_line("exit");
    owner.expect_line("MCSHM_OWNER_GONE");
    let (st, rest) = owner.finish();
    assert!(st.success(), "owner failed: {st:?}\n{rest}");

    assert!(!g.exists(&name), "the owner's drop unlinks the name");
    peer_still_works(&peer, off);
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 0);

    // A new owner can take the same name and the same prefix.
    let again = Pool::create(&name, &opts()).unwrap();
    let mut buf = [0u8; NAME_BUF_LEN];
    let fresh = pool::unique_name(&prefix, &mut buf).unwrap().to_string();
    let fresh_pool = Pool::create(&fresh, &opts()).unwrap();
    // The reused name says "dead creator", but the new owner holds its lock:
    // nothing is removed.
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 0);
    assert!(g.exists(&name) && g.exists(&fresh));
    let o = again.alloc(64, 8).unwrap();
    again.free(o).unwrap();
    peer_still_works(&peer, off);
    drop(again);
    drop(fresh_pool);
    assert!(!g.exists(&fresh));
}

#[test]
fn peer_outlives_sigkilled_owner_and_cleanup_removes_the_name() {
    let g = ShmGuard::new();
    let prefix = g.name();
    let mut owner = Child::spawn(
        "child_owner",
        &[("MCSHM_OWNER_PREFIX", prefix.clone())],
        None,
    );
    let ready = owner.expect_line("MCSHM_OWNER_READY ");
    let (name, off) = (ready[0].clone(), ready[1].parse::<u64>().unwrap());
    let peer = Pool::open(&name).unwrap();
    assert_eq!(
        cleanup::remove_stale(&prefix, None).unwrap(),
        0,
        "owner alive"
    );

    owner.kill9();
    assert!(g.exists(&name), "no drop ran, the name is still there");
    peer_still_works(&peer, off);
    // The peer holds no lock: the object is stale and goes away.
    assert_eq!(cleanup::remove_stale(&prefix, None).unwrap(), 1);
    assert!(!g.exists(&name));
    peer_still_works(&peer, off);
    assert_eq!(
        Pool::open(&name).unwrap_err(),
        mooncake_shm::Error::NotFound
    );
    drop(peer);
}
