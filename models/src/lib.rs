//! streamdiff's models: burn modules and weight loading.
//!
//! Today this holds the default style network ([`multistyle`]), the ONNX weight reader it
//! loads from ([`onnx`]), style presets ([`style`]), device selection ([`device`]) and frame
//! conversion helpers ([`image`]), and the Stable Diffusion family ([`sd`]). Every model runs
//! on whatever burn device it is given.

pub mod device;
pub mod image;
pub mod multistyle;
pub mod onnx;
pub mod paths;
pub mod sd;
pub mod style;

use std::path::PathBuf;

/// Errors from loading or running models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file is not there.
    #[error(
        "model file {path} not found; run `make run` (or scripts/setup.sh) to fetch the default model"
    )]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is there but is not the model we expect.
    #[error(
        "model file {path} is corrupt or not the expected model ({reason}); run scripts/setup.sh to fetch it again"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A style specification could not be understood.
    #[error("bad style `{spec}`: {reason}")]
    BadStyle {
        /// What the user gave.
        spec: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The compute device failed.
    #[error("compute device error: {0}")]
    Device(String),
}
