//! Model stages: anything that turns frames into frames.
//!
//! Capture and output code only know [`FrameStage`]; the default style network here and the
//! diffusion engine ([`crate::stage::engine::stage::EngineStage`]) plug in behind it.

pub mod engine;
pub mod frame;
pub mod stabilise;

use std::path::Path;
use std::sync::{Arc, Mutex};

use streamdiff_models::device::ComputeDevice;
use streamdiff_models::image::{rgb_to_tensor, tensor_to_rgb};
use streamdiff_models::multistyle::MultiStyleNet;
use streamdiff_models::style::StyleMix;

use crate::PipelineError;
use crate::stage::frame::VideoFrame;

/// A model that turns one frame into one frame, run on its own thread.
pub trait FrameStage: Send {
    /// Short name for logs and summaries.
    fn name(&self) -> String;

    /// Processes one frame. The returned frame keeps the input's timing fields.
    fn process(&mut self, frame: VideoFrame) -> Result<VideoFrame, PipelineError>;

    /// Frames the stage holds back before its first output (0 for per-frame models; a
    /// stream-batch engine's pipeline delay).
    fn delay_frames(&self) -> usize {
        0
    }

    /// Processes one frame and returns the outputs that are ready, oldest first, each carrying
    /// the timing of the input it was made from (so latency accounting includes any pipeline
    /// delay). Empty while a delayed stage fills. Per-frame stages return their one frame.
    fn process_aligned(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, PipelineError> {
        Ok(vec![self.process(frame)?])
    }

    /// At the end of the input: the frames still held back, oldest first.
    fn finish(&mut self) -> Result<Vec<VideoFrame>, PipelineError> {
        Ok(Vec::new())
    }
}

/// Settings of the style stage that may change while frames flow.
#[derive(Clone, Debug)]
pub struct StyleSettings {
    /// The style or blend applied.
    pub style: StyleMix,
}

/// The default stage: the 26-style network on the chosen device.
pub struct StyleStage {
    model: MultiStyleNet,
    compute: ComputeDevice,
    /// Shared with controllers (GUI, element); copied out once per frame.
    settings: Arc<Mutex<StyleSettings>>,
}

impl StyleStage {
    /// Loads the network from `model_path` onto `compute`.
    pub fn load(
        model_path: &Path,
        compute: ComputeDevice,
        style: StyleMix,
    ) -> Result<Self, PipelineError> {
        let model = MultiStyleNet::from_pretrained(model_path, &compute.device)?;
        Ok(Self {
            model,
            compute,
            settings: Arc::new(Mutex::new(StyleSettings { style })),
        })
    }

    /// A handle to change the settings live.
    pub fn settings(&self) -> Arc<Mutex<StyleSettings>> {
        self.settings.clone()
    }

    /// Stylises packed RGB bytes directly (used by benchmarks and tests).
    pub fn stylize_rgb(
        &self,
        rgb: &[u8],
        width_px: usize,
        height_px: usize,
        style: &StyleMix,
    ) -> Result<Vec<u8>, PipelineError> {
        let input = rgb_to_tensor(rgb, width_px, height_px, &self.compute.device);
        Ok(tensor_to_rgb(self.model.stylize(input, style))?)
    }
}

impl FrameStage for StyleStage {
    fn name(&self) -> String {
        format!(
            "multistyle on {} ({})",
            self.compute.backend, self.compute.adapter
        )
    }

    fn process(&mut self, mut frame: VideoFrame) -> Result<VideoFrame, PipelineError> {
        let style = self
            .settings
            .lock()
            .map(|settings| settings.style.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().style.clone());
        frame.rgb = self.stylize_rgb(&frame.rgb, frame.width_px, frame.height_px, &style)?;
        Ok(frame)
    }
}
