//! Mesh benchmarks (being written).

fn main() {}
