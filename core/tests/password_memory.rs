//! The argon2 working memory (19 MiB per hash with the default parameters) goes back to the
//! operating system as soon as a hash or a check is done. Under the system allocator (glibc)
//! it used to stay: glibc serves the first 19 MiB block with `mmap`, then raises its mmap
//! threshold past that size, so the next ones come from its heap and stay resident (38 MiB more
//! after one hash and two checks). A test binary of its own, with one test: nothing else
//! allocates while it reads the resident size.

#![cfg(target_os = "linux")]

use plume::auth::password::{hash_blocking, verify_blocking};

/// The process's resident anonymous memory in KiB (`RssAnon` of /proc/self/status).
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status")
}

#[test]
fn hashing_and_checking_leave_no_working_memory_resident() {
    let before = rss_anon_kib();
    let phc = hash_blocking("correct horse").expect("hash");
    assert!(verify_blocking("correct horse", &phc).expect("verify"));
    assert!(!verify_blocking("wrong horse", &phc).expect("verify"));
    let after = rss_anon_kib();
    // One working area is 19,456 KiB; a few MiB of slack for the allocator's own pages.
    assert!(
        after < before + 4096,
        "resident anonymous memory grew from {before} KiB to {after} KiB"
    );
}
