//! Binaries of other workspace packages, built for a test by cargo itself (a test of this
//! package gets no `CARGO_BIN_EXE_` for them).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use serde_json::Value;

/// The `gateway-example` binary, built once per test process (`cargo build -p gateway-example`,
/// a no-op when it is fresh).
///
/// # Panics
/// When the build fails: a test failure.
pub fn gateway_example() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo
            .args(["build", "--locked", "-p", "gateway-example"])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit());
        // Without the variables cargo sets for this test: build scripts that watch one (ring
        // watches CARGO_MANIFEST_DIR) would otherwise rebuild, and the next build rebuild again.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let set_for_tests = ["CARGO_PKG_", "CARGO_BIN_EXE_"]
                .iter()
                .any(|p| key.starts_with(p))
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&key.as_ref());
            if set_for_tests {
                cargo.env_remove(key.as_ref());
            }
        }
        let out = cargo.output().expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo build -p gateway-example failed"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact" && m["target"]["name"] == "gateway-example"
            })
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the gateway-example executable")
    })
}
