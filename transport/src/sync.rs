//! The poison-tolerant lock helper: `plume::sync`, the one helper of Plume's crates (why a
//! poisoned lock is used as it is: see there).

pub(crate) use plume::sync::{lock, read, write};
