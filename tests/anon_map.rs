//! `sys::AnonMap`, the metadata storage of pools and C-ABI tables: zeroed,
//! writable to its end, large maps on 2 MiB boundaries (so transparent huge
//! pages can back all of them), and nothing left mapped after drop.
//!
//! Runs without libtest's harness (`harness = false` in Cargo.toml): "nothing
//! is mapped at the old address" only means something in a process with one
//! thread. Under libtest another thread (a test thread starting or ending,
//! its stack, output capture) may map the freed address at once, and did so
//! in CI.

use mooncake_shm::sys::AnonMap;

/// `(start, end)` of the mapping in /proc/self/maps that contains `addr`.
fn mapping_of(addr: usize) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().find_map(|l| {
        let range = l.split_whitespace().next()?;
        let (a, b) = range.split_once('-')?;
        let (a, b) = (
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        );
        (a <= addr && addr < b).then_some((a, b))
    })
}

fn small_and_large_maps_are_zeroed_writable_and_unmapped_on_drop() {
    const MIB: usize = 1 << 20;
    for bytes in [4096usize, 100_000, 2 * MIB, 3 * MIB + 8, 5 * MIB] {
        let len = bytes / 8;
        let mut m = AnonMap::<u64>::zeroed(len).unwrap();
        assert_eq!(m.len(), len);
        assert!(m.iter().all(|&w| w == 0));
        m[0] = 1;
        m[len - 1] = 2;
        let start = m.as_ptr().addr();
        assert_eq!(start % 4096, 0);
        if bytes >= 2 * MIB {
            assert_eq!(
                start % (2 * MIB),
                0,
                "{bytes} bytes not on a 2 MiB boundary"
            );
            let (a, b) = mapping_of(start).expect("mapped");
            assert!(a <= start && start + bytes.next_multiple_of(2 * MIB) <= b);
        }
        drop(m);
        assert_eq!(
            mapping_of(start),
            None,
            "{bytes} bytes still mapped after drop"
        );
    }
}

fn rejects_empty_and_overflowing_sizes() {
    assert!(AnonMap::<u64>::zeroed(0).is_err());
    assert!(AnonMap::<u64>::zeroed(usize::MAX / 4).is_err());
}

fn main() {
    small_and_large_maps_are_zeroed_writable_and_unmapped_on_drop();
    rejects_empty_and_overflowing_sizes();
    println!("anon_map: 2 checks passed");
}
