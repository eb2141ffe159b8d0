//! The Plume gateway demo.
fn main() {}
