//! Test harness for Plume: child processes with RAII guards, free ports and readiness waits.

pub mod cargo_bin;
pub mod child;
pub mod process;
pub mod servers;
