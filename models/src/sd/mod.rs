//! The Stable Diffusion model family: the tiny autoencoder ([`taesd`]), the CLIP tokenizer
//! ([`tokenizer`]) and text encoder ([`clip`]), the denoiser ([`unet`]), the whole model
//! loaded from a diffusers folder or the Hugging Face cache ([`pipeline`]), the two heavy
//! operations behind one function each ([`ops`]), the shared weight loading through burn-store
//! ([`weights`]) and their errors ([`SdError`]).
//!
//! Every module loads the real checkpoint layouts (diffusers folders and the original
//! PyTorch state dicts) and runs on whatever burn device it is given. Weights in fp16 or fp32
//! files load; compute is f32 or f16 ([`precision`]).

pub mod clip;
pub mod ops;
pub mod pipeline;
pub mod precision;
pub mod taesd;
pub mod tokenizer;
pub mod unet;
pub mod weights;

use std::path::{Path, PathBuf};

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
    /// A folder that should hold a model is not there.
    #[error("folder {path} not found")]
    MissingFolder {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A path exists but is not the kind of model folder asked for.
    #[error("{path} is not a model folder: {reason}")]
    NotAModel {
        /// The path given.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A diffusers folder lacks a component folder the pipeline needs.
    #[error(
        "{root} has no `{component}/` folder (a Stable Diffusion folder needs unet/, text_encoder/ and tokenizer/)"
    )]
    MissingComponent {
        /// The diffusers folder.
        root: PathBuf,
        /// The component (`unet`, `text_encoder`, `tokenizer`).
        component: String,
    },
    /// A component folder holds no weight file of a known name.
    #[error("no weights in {dir}: expected {expected}")]
    MissingWeights {
        /// The component folder.
        dir: PathBuf,
        /// The file names looked for.
        expected: String,
    },
    /// A repo id that is not in the local Hugging Face cache (nothing is downloaded).
    #[error(
        "`{repo_id}` is not a folder and not in the Hugging Face cache: looked for {looked_in} (set HF_HUB_CACHE or HF_HOME, or give a folder)"
    )]
    NotInCache {
        /// The repo id given, `org/name`.
        repo_id: String,
        /// The cache folder (or snapshot) looked for.
        looked_in: PathBuf,
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
    /// A precision name that is neither f32 nor f16.
    #[error("unknown precision `{0}`; use f32 or f16")]
    UnknownPrecision(String),
}

/// Reads a text file (a config, a vocabulary), telling a missing file from an unreadable one.
pub(crate) fn read_text(path: &Path) -> Result<String, SdError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SdError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => SdError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}
