//! WGSL compute kernels for streamdiff: dense optical flow (DIS-style inverse search with
//! variational refinement), bilinear warping, forward–backward occlusion masks and the blend of
//! the temporal stabiliser.
//!
//! Every kernel is a `.wgsl` file in `src/wgsl/`, launched on the wgpu client burn already
//! holds (no second GPU context), and has a plain-Rust reference in [`cpu`] with the same
//! semantics. [`ops::FlowOps`] abstracts over the two so the flow estimator in [`flow`] runs
//! unchanged on either; tests compare them on random data.

pub mod cpu;
pub mod flo;
pub mod flow;
pub mod gpu;
pub mod ops;
pub mod stabilise;
pub mod visual;

/// Errors of the kernels, the flow estimator and the `.flo` codec.
#[derive(Debug, thiserror::Error)]
pub enum ShaderError {
    /// The GPU device failed or a buffer could not be read back.
    #[error("GPU: {0}")]
    Device(String),
    /// A `.flo` file is malformed.
    #[error("{path}: {reason}")]
    Flo {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Inputs that do not fit together (sizes, lengths).
    #[error("{0}")]
    Shape(String),
    /// An image could not be encoded or decoded.
    #[error("{path}: {reason}")]
    Image {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}
