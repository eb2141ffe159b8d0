//! Install a pinned npm package set (a folder with `package.json` and `package-lock.json`) once
//! per lockfile content, shared by every test process.
//!
//! Test binaries run concurrently, so the install happens in a private staging directory that is
//! renamed into place: the first complete install wins, a later one is discarded, and nobody ever
//! sees a half-written `node_modules`. Included with `#[path]` by the tests of several crates.

use std::path::{Path, PathBuf};

/// The installed copy of `src` (its `node_modules` included), in the system temp directory.
pub(crate) fn install_locked(src: &Path, label: &str) -> PathBuf {
    let lock = std::fs::read(src.join("package-lock.json")).expect("lockfile");
    let hash = lock.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    let dir = std::env::temp_dir().join(format!("plume-{label}-{hash:016x}"));
    if dir.exists() {
        return dir;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let staging = dir.with_extension(format!("staging-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&staging).expect("staging dir");
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(src.join(file), staging.join(file)).expect("copy");
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&staging)
        .status()
        .expect("npm runs");
    assert!(status.success(), "npm ci failed in {}", staging.display());
    if std::fs::rename(&staging, &dir).is_err() {
        // Another test process finished first: use its copy.
        let _ = std::fs::remove_dir_all(&staging);
        assert!(dir.exists(), "cannot install into {}", dir.display());
    }
    dir
}
