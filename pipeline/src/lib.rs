//! streamdiff's live path: GStreamer capture and outputs, the bounded frame queues, the model
//! stages with their live controls, and the runner that ties them together.
//!
//! Data flows one way: source → input queue → stage → output queue → sinks. The crate has
//! two halves with a visible boundary:
//! - [`stage`]: frames ([`VideoFrame`]), the [`FrameStage`] trait, the style network, the
//!   StreamDiffusion engine, the stabiliser and live control ([`Live`], [`StageControls`]).
//!   No GStreamer and no async runtime in there.
//! - [`io`]: capture ([`io::source`]), outputs behind [`FrameSink`] ([`io::sink`]),
//!   whole-clip decoding, GStreamer helpers.
//!
//! Beside them: the bounded [`queue`]s, the [`runner`] and the [`metrics`] it publishes.

pub mod io;
pub mod metrics;
pub mod queue;
pub mod runner;
pub mod stage;

pub use io::sink::{FrameSink, SinkError};
pub use metrics::Metrics;
pub use runner::{RunConfig, Runner};
pub use stage::{FrameStage, Live, SettingsError, StageControls, Validate, VideoFrame};
pub use streamdiff_types::FrameSize;

/// Errors of the live path, each worded for the person running streamdiff.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input could not be opened or decoded.
    #[error("{0}")]
    Input(String),
    /// An output failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// GStreamer itself is missing or failed.
    #[error("{0}")]
    Gstreamer(String),
    /// A setting has a value that cannot be applied.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A frame's pixels do not fit its size, or could not be read back from the device.
    #[error(transparent)]
    Frame(#[from] stage::FrameError),
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
    /// A run ended with a panic in the stage, which took the stage with it.
    #[error("the model stage was lost in an earlier failure; load it again")]
    StageLost,
}
