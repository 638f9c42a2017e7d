//! The default stage: the 26-style network.

use std::path::Path;

use streamdiff_models::device::ComputeDevice;
use streamdiff_models::image::{rgb_to_tensor, tensor_to_rgb};
use streamdiff_models::multistyle::MultiStyleNet;
use streamdiff_models::style::StyleMix;
use streamdiff_types::FrameSize;

use super::control::{Live, SettingsError, StageControls, Validate};
use super::{FrameStage, VideoFrame};
use crate::PipelineError;

/// Settings of the style stage that may change while frames flow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StyleSettings {
    /// The style or blend applied; [`streamdiff_models::style::DEFAULT_STYLE`] by default.
    pub style: StyleMix,
}

impl Validate for StyleSettings {
    /// A [`StyleMix`] is valid by construction.
    fn validate(&self) -> Result<(), SettingsError> {
        Ok(())
    }
}

/// The style network on the chosen device.
pub struct StyleStage {
    model: MultiStyleNet,
    compute: ComputeDevice,
    /// Shared with controllers; copied out once per frame.
    settings: Live<StyleSettings>,
}

impl StyleStage {
    /// Loads the network from `model_path` onto `compute`.
    pub fn load(
        model_path: &Path,
        compute: ComputeDevice,
        settings: StyleSettings,
    ) -> Result<Self, PipelineError> {
        let model = MultiStyleNet::from_pretrained(model_path, &compute.device)?;
        Ok(Self {
            model,
            compute,
            settings: Live::new(settings),
        })
    }

    /// A handle to change the settings live.
    pub fn settings(&self) -> Live<StyleSettings> {
        self.settings.clone()
    }

    /// Stylises packed RGB bytes directly (used by benchmarks and tests).
    pub fn stylize_rgb(
        &self,
        rgb: &[u8],
        size: FrameSize,
        style: &StyleMix,
    ) -> Result<Vec<u8>, PipelineError> {
        let input = rgb_to_tensor(rgb, size, &self.compute.device);
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

    /// The result stays on the device: a next stage or a GPU-drawn output takes it from there,
    /// and the bytes are read back only when a sink asks for them.
    fn process(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, PipelineError> {
        let style = self.settings.read(|settings| settings.style.clone());
        let input = frame.to_tensor(&self.compute.device)?;
        let output = self.model.stylize(input, &style).clamp(0.0, 1.0);
        Ok(vec![frame.with_tensor(output)?])
    }

    fn controls(&self) -> StageControls {
        StageControls {
            style: Some(self.settings.clone()),
            ..StageControls::default()
        }
    }

    fn compute(&self) -> Option<&ComputeDevice> {
        Some(&self.compute)
    }
}
