//! streamdiff's live path: GStreamer capture and output, the bounded frame queues, the model
//! stage abstraction and the runner that ties them together.
//!
//! Data flows one way: source → input queue → stage → output queue → output. The stage is the
//! default style network or the StreamDiffusion engine ([`engine`]).

pub mod io;
pub mod metrics;
pub mod queue;
pub mod runner;
pub mod stage;

/// Errors of the live path, each worded for the person running streamdiff.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input could not be opened or decoded.
    #[error("{0}")]
    Input(String),
    /// The output could not be written.
    #[error("{0}")]
    Output(String),
    /// GStreamer itself is missing or failed.
    #[error("{0}")]
    Gstreamer(String),
    /// The model failed to load or run.
    #[error(transparent)]
    Model(#[from] streamdiff_models::ModelError),
    /// A Stable Diffusion model failed to load.
    #[error(transparent)]
    Sd(#[from] streamdiff_models::sd::SdError),
    /// The stream-batch engine was set up or driven wrongly (bad schedule, frame size, ...).
    #[error("{0}")]
    Engine(String),
    /// The flow kernels (stabilisation) failed.
    #[error(transparent)]
    Shader(#[from] streamdiff_shaders::ShaderError),
}
