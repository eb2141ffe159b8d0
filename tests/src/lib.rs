//! Test harness for Plume: child processes with RAII guards, free ports and readiness waits.

pub mod cargo_bin;
pub mod child;
#[cfg(test)]
mod ports_tests;
pub mod process;
pub mod servers;
