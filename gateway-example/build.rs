//! Installs the pinned Feathers browser client packages (`web/package.json` and
//! `web/package-lock.json`) with `npm ci` into `OUT_DIR`, so that the binary can embed their
//! `dist` files with `include_bytes!`. No third-party code is committed to the repository.
//!
//! The install runs again only when the manifest or the lockfile changes. Without npm the build
//! fails with a message that says what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files the binary embeds, relative to `node_modules`.
const FILES: [&str; 2] = [
    "@feathersjs/client/dist/feathers.min.js",
    "socket.io-client/dist/socket.io.min.js",
];

fn main() {
    println!("cargo::rerun-if-changed=web/package.json");
    println!("cargo::rerun-if-changed=web/package-lock.json");
    if let Err(message) = install() {
        // A build script reports failure by exiting non-zero; cargo shows stderr.
        eprintln!("\nerror: gateway-example: {message}\n");
        std::process::exit(1);
    }
}

fn install() -> Result<(), String> {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env("OUT_DIR")?).join("web");
    let web = manifest.join("web");
    let lock = read(&web.join("package-lock.json"))?;
    let package = read(&web.join("package.json"))?;

    // Already installed from this very lockfile: nothing to do.
    let installed = out.join("installed-lock.json");
    if std::fs::read(&installed).ok().as_deref() == Some(lock.as_slice())
        && FILES
            .iter()
            .all(|f| out.join("node_modules").join(f).is_file())
    {
        return Ok(());
    }

    let npm_missing = Command::new("npm")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success());
    if npm_missing {
        return Err(
            "npm was not found. The demo's web page serves the official Feathers browser \
             client, which is installed at build time from the pinned lockfile \
             gateway-example/web/package-lock.json. Install Node.js 20 or later with npm (Debian: \
             `apt-get install nodejs npm`) and build again."
                .into(),
        );
    }

    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&installed);
    write(&out.join("package.json"), &package)?;
    write(&out.join("package-lock.json"), &lock)?;

    let status = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&out)
        .status()
        .map_err(|e| format!("cannot run npm ci: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`npm ci` in {} failed ({status}); the npm registry must be reachable to install \
             the pinned Feathers browser client",
            out.display()
        ));
    }
    for file in FILES {
        let path = out.join("node_modules").join(file);
        if !path.is_file() {
            return Err(format!("npm ci did not install {}", path.display()));
        }
    }
    // The stamp is written last, so that a failed install is tried again.
    write(&installed, &lock)
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (run through cargo)"))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
