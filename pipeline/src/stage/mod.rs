//! Stages: anything that turns frames into frames, and the live control of their settings.
//!
//! This half of the pipeline knows nothing of GStreamer or async runtimes: capture, outputs and
//! the runner (in [`crate::io`] and [`crate::runner`]) only know [`FrameStage`]. The default
//! style network ([`style::StyleStage`]), the StreamDiffusion engine
//! ([`engine::stage::EngineStage`]) and the stabiliser wrapping either
//! ([`stabilise::StabiliseStage`]) plug in behind it; the GStreamer element drives a stage
//! directly, buffer by buffer.

pub mod control;
pub mod engine;
pub mod frame;
pub mod stabilise;
pub mod style;

use streamdiff_models::device::ComputeDevice;

use crate::PipelineError;
pub use control::{Live, SettingsError, StageControls, StageStats, Validate};
pub use frame::{FrameError, VideoFrame};

/// A model stage, run on its own thread: frames in, frames out, in order.
///
/// Every input gives exactly one output, and each output carries the timing (`pts`,
/// `sequence`, `captured_at`) of the input it was made from. A per-frame model returns its
/// frame at once; a stage with a pipeline delay (the stream-batch engine) returns nothing
/// while it fills and hands the held-back frames out in [`finish`](Self::finish).
pub trait FrameStage: Send {
    /// Short name for logs and summaries.
    fn name(&self) -> String;

    /// Processes one frame; returns the outputs that are ready, oldest first.
    fn process(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, PipelineError>;

    /// At the end of the input: the frames still held back, oldest first. The stage is then
    /// ready for a new stream.
    fn finish(&mut self) -> Result<Vec<VideoFrame>, PipelineError> {
        Ok(Vec::new())
    }

    /// Forgets the stream (a flush or a seek): frames held back are dropped, nothing carries
    /// over to the next frame. Settings stay.
    fn reset(&mut self) {}

    /// Frames the stage holds back before its first output (0 for per-frame models; a
    /// stream-batch engine's pipeline delay).
    fn delay_frames(&self) -> usize {
        0
    }

    /// Handles to the settings that may change while frames flow (see [`control`]).
    fn controls(&self) -> StageControls {
        StageControls::default()
    }

    /// The stage's own counters, read after each frame.
    fn stats(&self) -> StageStats {
        StageStats::default()
    }

    /// The device the stage computes on, when it has one.
    fn compute(&self) -> Option<&ComputeDevice> {
        None
    }
}
