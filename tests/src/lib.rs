//! Test harness for Plume: child processes with RAII guards, free ports and readiness waits.

pub mod servers;
