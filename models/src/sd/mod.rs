//! The Stable Diffusion model family: the tiny autoencoder ([`taesd`]), the CLIP tokenizer
//! ([`tokenizer`]) and text encoder ([`clip`]), the denoiser ([`unet`]), the shared weight loading through burn-store ([`weights`]) and their
//! errors ([`SdError`]).
//!
//! Every module loads the real checkpoint layouts (diffusers folders and the original
//! PyTorch state dicts) and runs on whatever burn device it is given.

pub mod clip;
pub mod taesd;
pub mod tokenizer;
pub mod unet;
pub mod weights;

use std::path::PathBuf;

/// Errors from loading Stable Diffusion models. Each names the file, and the tensor where
/// one is at fault; none of them comes from a panic.
#[derive(Debug, thiserror::Error)]
pub enum SdError {
    /// A file the model needs is not there.
    #[error("file {path} not found")]
    MissingFile {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is truncated, corrupt or not in the format its name says.
    #[error("{path} is truncated or corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the reader reported.
        reason: String,
    },
    /// A configuration file is missing a key or holds a value the model cannot use.
    #[error("bad configuration in {path}: {reason}")]
    BadConfig {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model needs a tensor that the file does not hold.
    #[error("{path} has no tensor for model parameter `{parameter}`")]
    MissingTensor {
        /// The weight file.
        path: PathBuf,
        /// The parameter of the burn module (after key remapping) that stays empty.
        parameter: String,
    },
    /// The file holds a tensor the model has no place for.
    #[error("{path} holds tensor `{tensor}`, which the model does not expect")]
    UnexpectedTensor {
        /// The weight file.
        path: PathBuf,
        /// The tensor's name in the file.
        tensor: String,
    },
    /// A tensor has another shape than the model's parameter.
    #[error("tensor `{tensor}` in {path} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weight file.
        path: PathBuf,
        /// The tensor's name in the file.
        tensor: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a data type that cannot fill the parameter (an integer for a float, ...).
    #[error("tensor `{tensor}` in {path} has dtype {found}, expected {expected}")]
    WrongDtype {
        /// The weight file.
        path: PathBuf,
        /// The tensor's name in the file.
        tensor: String,
        /// The kind of data the model needs.
        expected: String,
        /// The data type in the file.
        found: String,
    },
}
