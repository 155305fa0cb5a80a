//! Thin wrappers over the POSIX shared-memory syscalls. STUB.
#![allow(missing_docs, unused)]
use crate::{Error, Result, ZeroValid};
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

/// A zeroed, private, anonymous mapping of `len` values of `T`: metadata storage for the pure layers.
pub struct AnonMap<T: ZeroValid> {
    ptr: *mut T,
    len: usize,
    _t: PhantomData<T>,
}
// SAFETY: owns its mapping exclusively, like a Box<[T]>.
unsafe impl<T: ZeroValid + Send> Send for AnonMap<T> {}
// SAFETY: as above.
unsafe impl<T: ZeroValid + Sync> Sync for AnonMap<T> {}
impl<T: ZeroValid> AnonMap<T> {
    pub fn zeroed(len: usize) -> Result<Self> {
        Err(Error::Os(12))
    }
}
impl<T: ZeroValid> Deref for AnonMap<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &[]
    }
}
impl<T: ZeroValid> DerefMut for AnonMap<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut []
    }
}
