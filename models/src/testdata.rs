//! Locating the shared test data (`STREAMDIFF_TEST_DATA`, default `../shared/data`) and the
//! installed default model, for tests and benchmarks.
//!
//! In CI (`CI` set) a missing folder or model is an error; elsewhere callers skip with a reason.

use std::path::{Path, PathBuf};

/// Why something needed by a test is not available.
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// Whether we run under CI, where missing test inputs must fail rather than skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// The shared test-data folder. Relative defaults are resolved against the workspace root.
pub fn data_dir() -> Result<PathBuf, Unavailable> {
    let dir = match std::env::var_os("STREAMDIFF_TEST_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("../shared/data"),
    };
    if dir.join("README.md").is_file() {
        Ok(dir)
    } else {
        Err(Unavailable(format!(
            "test data folder {} not found (set STREAMDIFF_TEST_DATA)",
            dir.display()
        )))
    }
}

/// A file inside the shared test data.
pub fn data_file(relative: &str) -> Result<PathBuf, Unavailable> {
    let path = data_dir()?.join(relative);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Unavailable(format!(
            "test data file {} not found",
            path.display()
        )))
    }
}

/// The installed default style model.
pub fn multistyle_model() -> Result<PathBuf, Unavailable> {
    let path = crate::paths::default_multistyle_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(Unavailable(format!(
            "default model {} not installed (run scripts/setup.sh)",
            path.display()
        )))
    }
}

/// Unwraps a test input, or explains the skip: panics under CI, prints and returns `None` elsewhere.
pub fn require<T>(input: Result<T, Unavailable>) -> Option<T> {
    match input {
        Ok(value) => Some(value),
        Err(Unavailable(reason)) if in_ci() => {
            panic!("required test input missing in CI: {reason}")
        }
        Err(Unavailable(reason)) => {
            eprintln!("SKIPPED: {reason}");
            None
        }
    }
}

/// The workspace root (the parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
