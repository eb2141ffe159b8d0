//! Unit tests of the distribution plugin.
