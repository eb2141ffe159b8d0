//! Poison-tolerant locks: the one helper of Plume's crates (`plume-transport` uses it too).
//!
//! A panic while a lock is held (a hook's, a service's or a handler's panic is caught further
//! up) must not take the App or the mesh node down with it: every lock Plume takes is a short
//! critical section over plain data that stays consistent, so a poisoned lock is used as it is.
//! Plugins with the same kind of state may use these functions too.
//!
//! ```
//! use std::sync::Mutex;
//!
//! let hits = Mutex::new(0);
//! *plume::sync::lock(&hits) += 1;
//! assert_eq!(*plume::sync::lock(&hits), 1);
//! ```

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock `m`, ignoring poison.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-lock `m`, ignoring poison.
pub fn read<T: ?Sized>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-lock `m`, ignoring poison.
pub fn write<T: ?Sized>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, RwLock};

    #[test]
    fn a_poisoned_lock_is_used_as_it_is() {
        let m = Mutex::new(1);
        let rw = RwLock::new(1);
        std::thread::scope(|s| {
            let poison = s.spawn(|| {
                let _a = super::lock(&m);
                let _b = super::write(&rw);
                panic!("poison both locks");
            });
            assert!(poison.join().is_err());
        });
        assert!(m.is_poisoned() && rw.is_poisoned());
        *super::lock(&m) += 1;
        *super::write(&rw) += 1;
        assert_eq!((*super::lock(&m), *super::read(&rw)), (2, 2));
    }
}
