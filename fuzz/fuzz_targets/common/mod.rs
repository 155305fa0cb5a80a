//! Inputs and reference arithmetic shared by the allocator fuzz targets
//! (`arena_model`, `sharded_model`, `cache_model`): one definition, so the
//! targets decode the same bytes the same way and check against the same
//! rules. Not every target uses every item.
#![allow(dead_code)]

use arbitrary::Arbitrary;
use mooncake_shm::arena::{Arena, ArenaSlot, ArenaStorage, GRANULE, MAX_CAPACITY};
use mooncake_shm::Error;

/// The largest alignment an arena honours.
pub const MAX_ALIGN: u64 = Arena::<Vec<ArenaSlot>>::MAX_ALIGN;

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Capacity {
    /// Granules: small arenas fill up quickly.
    Granules(u16),
    Bytes(u32),
    Pow2(u8),
    /// Anything, including zero and values above `MAX_CAPACITY`.
    Raw(u64),
}

impl Capacity {
    pub fn bytes(self) -> u64 {
        match self {
            Capacity::Granules(g) => g as u64 * GRANULE,
            Capacity::Bytes(b) => b as u64,
            Capacity::Pow2(k) => 1u64 << (k % 64),
            Capacity::Raw(r) => r,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    Tiny(u8),
    Medium(u16),
    /// `2^k` plus a small signed delta (class boundaries).
    Pow2(u8, i8),
    /// A fraction (of 65536) of the capacity.
    Frac(u16),
    /// Capacity plus a small signed delta.
    NearCap(i8),
    Raw(u64),
}

impl Size {
    /// The request in bytes, for an arena of capacity `cap`.
    pub fn bytes(self, cap: u64) -> u64 {
        match self {
            Size::Tiny(s) => s as u64,
            Size::Medium(s) => s as u64,
            Size::Pow2(k, d) => (1u64 << (k % 64)).wrapping_add(d as i64 as u64),
            Size::Frac(f) => ((cap as u128 * f as u128) >> 16) as u64,
            Size::NearCap(d) => cap.wrapping_add(d as i64 as u64),
            Size::Raw(r) => r,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Align {
    Default,
    /// `2^(k % 14)`: up to twice `MAX_ALIGN`.
    Pow2(u8),
    Raw(u64),
}

impl Align {
    pub fn bytes(self) -> u64 {
        match self {
            Align::Default => 0,
            Align::Pow2(k) => 1u64 << (k % 14),
            Align::Raw(r) => r,
        }
    }
}

/// `x` rounded up to `a` (wrapping: only meaningful for valid requests).
pub fn align_up(x: u64, a: u64) -> u64 {
    x.wrapping_add(a - 1) & !(a - 1)
}

/// `size` (a multiple of the granule) rounded up to its TLSF class boundary:
/// 32 linear classes per power of two, exact below 32 granules.
pub fn class_ceil(size: u64) -> u64 {
    let u = size / GRANULE;
    if u < 32 {
        return size;
    }
    let f = 63 - u.leading_zeros();
    let m = (1u64 << (f - 5)) - 1;
    ((u + m) & !m) * GRANULE
}

/// Whether an arena accepts `align` (0: the default).
pub fn align_ok(align: u64) -> bool {
    align == 0 || (align.is_power_of_two() && align <= MAX_ALIGN)
}

/// The error an arena's `alloc` gives for these arguments, if any: checked
/// in the order size, alignment, capacity.
pub fn request_error(size: u64, align: u64, cap: u64) -> Option<Error> {
    if size == 0 {
        Some(Error::ZeroSize)
    } else if !align_ok(align) {
        Some(Error::BadAlignment)
    } else if size > cap {
        Some(Error::TooLarge)
    } else {
        None
    }
}

/// `Arena::new(raw_cap, storage)`, checked against its rule: it accepts
/// exactly the capacities that, rounded down to the granule, lie in
/// `1..=MAX_CAPACITY` (and then has that capacity), and rejects the rest
/// with `InvalidArgument`. `None` when rejected.
pub fn new_arena<S: ArenaStorage>(raw_cap: u64, storage: S) -> Option<Arena<S>> {
    let cap = raw_cap & !(GRANULE - 1);
    let valid = cap != 0 && cap <= MAX_CAPACITY;
    match Arena::new(raw_cap, storage) {
        Ok(a) => {
            assert!(valid, "accepted capacity {raw_cap}");
            assert_eq!(a.capacity(), cap);
            Some(a)
        }
        Err(e) => {
            assert_eq!(e, Error::InvalidArgument);
            assert!(!valid, "rejected capacity {raw_cap}");
            None
        }
    }
}
