//! Temporal stabilisation: a stage wrapping any [`FrameStage`] that carries the previous
//! stabilised frame forward along the optical flow of the input and blends it into the new
//! output where the scene is the same (forward–backward consistent, photometrically close).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use streamdiff_models::device::ComputeDevice;
use streamdiff_shaders::flow::FlowQuality;
use streamdiff_shaders::ops::Size;
use streamdiff_shaders::stabilise::FrameStabiliser;

use crate::PipelineError;
use crate::stage::FrameStage;
use crate::stage::frame::VideoFrame;

/// The strength used when `--stabilise` is given without a value.
pub const DEFAULT_STRENGTH: f32 = 0.8;

/// Settings of the stabiliser that may change while frames flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StabiliseSettings {
    /// Weight of the carried-forward frame where the flow is trusted: 0 = off, 1 = strongest.
    pub strength: f32,
}

impl Default for StabiliseSettings {
    fn default() -> Self {
        Self {
            strength: DEFAULT_STRENGTH,
        }
    }
}

/// Checks a user-given strength.
pub fn parse_strength(text: &str) -> Result<f32, PipelineError> {
    let strength: f32 = text.trim().parse().map_err(|_| {
        PipelineError::Input(format!("stabilise strength `{text}` is not a number"))
    })?;
    if (0.0..=1.0).contains(&strength) {
        Ok(strength)
    } else {
        Err(PipelineError::Input(format!(
            "stabilise strength {strength} is outside 0.0..=1.0"
        )))
    }
}

/// What the stabiliser remembers of the previous frame.
struct Previous {
    input: Vec<u8>,
    output: Vec<u8>,
    width_px: usize,
    height_px: usize,
    sequence: u64,
}

/// Wraps a stage; see the module docs.
pub struct StabiliseStage {
    inner: Box<dyn FrameStage>,
    engine: FrameStabiliser,
    /// Shared with controllers (GUI, element); copied out once per frame.
    settings: Arc<Mutex<StabiliseSettings>>,
    previous: Option<Previous>,
    /// Inputs whose output a delayed inner stage has not returned yet: (sequence, pixels).
    pending_inputs: VecDeque<(u64, Vec<u8>)>,
}

impl StabiliseStage {
    /// Stabilises `inner`'s output with flow computed on `compute` (WGSL kernels on wgpu,
    /// their CPU reference on flex).
    pub fn new(
        inner: Box<dyn FrameStage>,
        compute: &ComputeDevice,
        settings: StabiliseSettings,
    ) -> Result<Self, PipelineError> {
        let engine = FrameStabiliser::new(&compute.device, FlowQuality::Fast)?;
        Ok(Self {
            inner,
            engine,
            settings: Arc::new(Mutex::new(settings)),
            previous: None,
            pending_inputs: VecDeque::new(),
        })
    }

    /// A handle to change the settings live.
    pub fn settings(&self) -> Arc<Mutex<StabiliseSettings>> {
        self.settings.clone()
    }
}

impl FrameStage for StabiliseStage {
    fn name(&self) -> String {
        format!("{} + flow stabilisation", self.inner.name())
    }

    fn process(&mut self, frame: VideoFrame) -> Result<VideoFrame, PipelineError> {
        let input = frame.rgb.clone();
        let output = self.inner.process(frame)?;
        self.stabilise_output(input, output)
    }

    fn delay_frames(&self) -> usize {
        self.inner.delay_frames()
    }

    /// A delayed inner stage (the diffusion engine) returns each output with the timing of
    /// the input it came from: the input is looked up by its sequence number.
    fn process_aligned(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, PipelineError> {
        self.pending_inputs
            .push_back((frame.sequence, frame.rgb.clone()));
        let outputs = self.inner.process_aligned(frame)?;
        self.stabilise_aligned(outputs)
    }

    fn finish(&mut self) -> Result<Vec<VideoFrame>, PipelineError> {
        let outputs = self.inner.finish()?;
        self.stabilise_aligned(outputs)
    }
}

impl StabiliseStage {
    fn stabilise_aligned(
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
                    Some((sequence, _)) if *sequence == output.sequence => self
                        .pending_inputs
                        .pop_front()
                        .map(|(_, rgb)| rgb)
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                self.stabilise_output(input, output)
            })
            .collect()
    }

    /// Blends the previous stabilised frame into `output`, made from `input`.
    fn stabilise_output(
        &mut self,
        input: Vec<u8>,
        mut output: VideoFrame,
    ) -> Result<VideoFrame, PipelineError> {
        let settings = *self
            .settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let size = Size::new(output.width_px, output.height_px);
        // Only a directly preceding frame of the same size can be carried forward: a drop
        // (sequence gap) or a size change starts afresh.
        let usable = self.previous.as_ref().filter(|previous| {
            previous.width_px == output.width_px
                && previous.height_px == output.height_px
                && previous.sequence + 1 == output.sequence
                && input.len() == output.rgb.len()
                && previous.input.len() == input.len()
        });
        if let Some(previous) = usable
            && settings.strength > 0.0
        {
            output.rgb = self.engine.stabilise(
                &previous.input,
                &previous.output,
                &input,
                &output.rgb,
                size,
                settings.strength,
            )?;
        }
        self.previous = Some(Previous {
            input,
            output: output.rgb.clone(),
            width_px: output.width_px,
            height_px: output.height_px,
            sequence: output.sequence,
        });
        Ok(output)
    }
}
