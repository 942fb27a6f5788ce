//! Locating the `ptyd` and `ptyctl` binaries in the cargo target directory.
//!
//! A test binary runs from `target/<profile>/deps/<name>-<hash>`; the workspace's
//! binaries are built next to `deps`, in `target/<profile>/`. Cargo only builds them for
//! tests of their own package, so `cargo build --workspace --bins` must run first.
//! `PTYD_TEST_BIN_DIR` overrides the directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Environment variable naming the directory that holds `ptyd` and `ptyctl`, overriding
/// the one derived from the running test binary.
pub const BIN_DIR_ENV: &str = "PTYD_TEST_BIN_DIR";

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate lives in `<root>/tests`.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The `target/<profile>` directory the running test binary was built into
/// (or `PTYD_TEST_BIN_DIR` when set).
pub fn target_profile_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot find the running test binary")?;
    let mut dir = exe.parent().context("the test binary has no parent directory")?;
    // Integration tests and unit tests run from `deps`; examples from `examples`.
    if matches!(dir.file_name().and_then(|n| n.to_str()), Some("deps" | "examples")) {
        dir = dir.parent().context("the deps directory has no parent")?;
    }
    Ok(dir.to_path_buf())
}

/// The path of the workspace binary `name`, failing with build instructions when it
/// has not been built.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let dir = target_profile_dir()?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{name} binary not found at {}: run `cargo build --workspace --bins` (with the same \
             profile as the tests) before the cross-process tests, or set {BIN_DIR_ENV}",
            path.display()
        );
    }
    Ok(path)
}

/// The `ptyd` daemon binary.
pub fn ptyd_bin() -> Result<PathBuf> {
    bin_path("ptyd")
}

/// The `ptyctl` command-line client binary.
pub fn ptyctl_bin() -> Result<PathBuf> {
    bin_path("ptyctl")
}
