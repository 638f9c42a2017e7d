//! Temporal stabilisation: a stage wrapping any [`FrameStage`] that carries the previous
//! stabilised frame forward along the optical flow of the input and blends it into the new
//! output where the scene is the same (forward–backward consistent, photometrically close).
//!
//! The frames go to the flow kernels as device tensors: an inner stage that leaves its output
//! on the GPU (the engine, the style network on wgpu) is stabilised there, and the result stays
//! there for the next consumer. The input is uploaded once and shared with the inner stage.

use std::collections::VecDeque;

use burn::tensor::{Device, Tensor};
use streamdiff_models::device::ComputeDevice;
use streamdiff_shaders::flow::FlowQuality;
use streamdiff_shaders::stabilise::FrameStabiliser;
use streamdiff_types::FrameSize;

use super::control::{Live, SettingsError, StageControls, StageStats, Validate};
use super::{FrameStage, VideoFrame};
use crate::PipelineError;

/// The strength used when stabilisation is asked for without a value.
pub const DEFAULT_STRENGTH: f32 = 0.8;

/// Settings of the stabiliser that may change while frames flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StabiliseSettings {
    /// Weight of the carried-forward frame where the flow is trusted: 0 = off, 1 = strongest.
    pub strength: f32,
}

impl Default for StabiliseSettings {
    /// [`DEFAULT_STRENGTH`].
    fn default() -> Self {
        Self {
            strength: DEFAULT_STRENGTH,
        }
    }
}

impl Validate for StabiliseSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if (0.0..=1.0).contains(&self.strength) {
            Ok(())
        } else {
            Err(SettingsError::StabiliseStrength(self.strength))
        }
    }
}

/// Checks a user-given strength.
pub fn parse_strength(text: &str) -> Result<f32, SettingsError> {
    let strength: f32 = text.trim().parse().map_err(|_| SettingsError::NotANumber {
        setting: "stabilise strength",
        text: text.to_string(),
    })?;
    StabiliseSettings { strength }.validate()?;
    Ok(strength)
}

/// What the stabiliser remembers of the previous frame (tensors on the device).
struct Previous {
    input: Option<Tensor<4>>,
    output: Tensor<4>,
    size: FrameSize,
    sequence: u64,
}

/// Wraps a stage; see the module docs.
pub struct StabiliseStage {
    inner: Box<dyn FrameStage>,
    engine: FrameStabiliser,
    device: Device,
    /// Shared with controllers; copied out once per frame.
    settings: Live<StabiliseSettings>,
    previous: Option<Previous>,
    /// Inputs whose output a delayed inner stage has not returned yet: (sequence, pixels).
    pending_inputs: VecDeque<(u64, Tensor<4>)>,
}

impl StabiliseStage {
    /// Stabilises `inner`'s output with flow computed on `compute` (WGSL kernels on wgpu,
    /// their CPU reference on flex).
    pub fn new(
        inner: Box<dyn FrameStage>,
        compute: &ComputeDevice,
        settings: StabiliseSettings,
    ) -> Result<Self, PipelineError> {
        settings.validate()?;
        let engine = FrameStabiliser::new(&compute.device, FlowQuality::Fast)?;
        Ok(Self {
            inner,
            engine,
            device: compute.device.clone(),
            settings: Live::new(settings),
            previous: None,
            pending_inputs: VecDeque::new(),
        })
    }

    /// A handle to change the settings live.
    pub fn settings(&self) -> Live<StabiliseSettings> {
        self.settings.clone()
    }

    /// Stabilises the inner stage's outputs. A delayed inner stage (the diffusion engine)
    /// returns each output with the timing of the input it came from: the input is looked up
    /// by its sequence number.
    fn stabilise_all(
        &mut self,
        outputs: Vec<VideoFrame>,
    ) -> Result<Vec<VideoFrame>, PipelineError> {
        outputs
            .into_iter()
            .map(|output| {
                while let Some(&(sequence, _)) = self.pending_inputs.front()
                    && sequence < output.sequence
                {
                    self.pending_inputs.pop_front();
                }
                let input = match self.pending_inputs.front() {
                    Some((sequence, _)) if *sequence == output.sequence => {
                        self.pending_inputs.pop_front().map(|(_, input)| input)
                    }
                    _ => None,
                };
                self.stabilise_output(input, output)
            })
            .collect()
    }

    /// Blends the previous stabilised frame into `output`, made from `input`.
    fn stabilise_output(
        &mut self,
        input: Option<Tensor<4>>,
        output: VideoFrame,
    ) -> Result<VideoFrame, PipelineError> {
        let settings = self.settings.get();
        let size = output.size();
        let raw = output.to_tensor(&self.device)?;
        // Only a directly preceding frame of the same size can be carried forward: a drop
        // (sequence gap) or a size change starts afresh.
        let carried = self
            .previous
            .as_ref()
            .filter(|previous| previous.size == size && previous.sequence + 1 == output.sequence)
            .and_then(|previous| Some((previous.input.as_ref()?, &previous.output)));
        let stabilised = match (carried, &input) {
            (Some((previous_input, previous_output)), Some(input)) if settings.strength > 0.0 => {
                Some(self.engine.stabilise_tensors(
                    previous_input,
                    previous_output,
                    input,
                    &raw,
                    settings.strength,
                )?)
            }
            _ => None,
        };
        let (picture, output) = match stabilised {
            Some(result) => (result.clone(), output.with_tensor(result)?),
            None => (raw, output),
        };
        self.previous = Some(Previous {
            input,
            output: picture,
            size,
            sequence: output.sequence,
        });
        Ok(output)
    }
}

impl FrameStage for StabiliseStage {
    fn name(&self) -> String {
        format!("{} + flow stabilisation", self.inner.name())
    }

    fn process(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, PipelineError> {
        // Upload once: the inner stage finds the tensor on the frame and uses it.
        let frame = frame.uploaded(&self.device)?;
        let input = frame.to_tensor(&self.device)?;
        self.pending_inputs.push_back((frame.sequence, input));
        let outputs = self.inner.process(frame)?;
        self.stabilise_all(outputs)
    }

    fn finish(&mut self) -> Result<Vec<VideoFrame>, PipelineError> {
        let outputs = self.inner.finish()?;
        let stabilised = self.stabilise_all(outputs);
        self.pending_inputs.clear();
        self.previous = None;
        stabilised
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.pending_inputs.clear();
        self.previous = None;
    }

    fn delay_frames(&self) -> usize {
        self.inner.delay_frames()
    }

    fn controls(&self) -> StageControls {
        StageControls {
            stabilise: Some(self.settings.clone()),
            ..StageControls::default()
        }
        .merged_with(self.inner.controls())
    }

    fn stats(&self) -> StageStats {
        self.inner.stats()
    }

    fn compute(&self) -> Option<&ComputeDevice> {
        self.inner.compute()
    }
}
