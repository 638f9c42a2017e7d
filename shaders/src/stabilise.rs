//! Flow-guided temporal stabilisation and the flicker metric, on [`AnyOps`].
//!
//! Stabilising frame t: flow from input t to input t−1 (and back, for the occlusion mask),
//! the previous *stabilised* output warped along it, then blended into the new output where
//! the mask says the scene is the same and the warped input agrees with the new input.

use crate::ShaderError;
use crate::flow::{FlowParams, FlowQuality, estimate_flow};
use crate::gpu::AnyOps;
use crate::ops::{FlowOps, Size};

/// Luma difference (0..255) at which the blend weight falls to 1/e: larger differences mean
/// the warp went wrong (disocclusion, lighting change), so the new frame wins.
pub const LUMA_TOLERANCE: f32 = 24.0;

fn to_f32(rgb: &[u8]) -> Vec<f32> {
    rgb.iter().map(|&v| f32::from(v)).collect()
}

fn to_u8(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

fn check_rgb(what: &str, rgb: &[u8], size: Size) -> Result<(), ShaderError> {
    if rgb.len() == size.pixels() * 3 {
        Ok(())
    } else {
        Err(ShaderError::Shape(format!(
            "{what}: {} bytes do not make a {}x{} RGB frame",
            rgb.len(),
            size.width_px,
            size.height_px
        )))
    }
}

/// Flow `from → to` and the forward–backward mask of it, as device buffers.
fn flow_and_mask<O: FlowOps>(
    ops: &O,
    from: &O::Buf,
    to: &O::Buf,
    size: Size,
    params: &FlowParams,
) -> Result<(O::Buf, O::Buf), ShaderError> {
    let forward = estimate_flow(ops, from, to, size, params)?;
    let backward = estimate_flow(ops, to, from, size, params)?;
    let mask = ops.consistency(&forward, &backward, size)?;
    Ok((forward, mask))
}

#[allow(clippy::too_many_arguments)]
fn stabilise_with<O: FlowOps>(
    ops: &O,
    previous_input: &[u8],
    previous_output: &[u8],
    input: &[u8],
    output: &[u8],
    size: Size,
    params: &FlowParams,
    strength: f32,
) -> Result<Vec<u8>, ShaderError> {
    let luma_previous = ops.gray(&ops.upload(&to_f32(previous_input))?, size)?;
    let luma_now = ops.gray(&ops.upload(&to_f32(input))?, size)?;
    let (flow, mask) = flow_and_mask(ops, &luma_now, &luma_previous, size, params)?;
    let carried = ops.warp(&ops.upload(&to_f32(previous_output))?, &flow, size, 3)?;
    let luma_carried = ops.warp(&luma_previous, &flow, size, 1)?;
    let blended = ops.blend(
        &ops.upload(&to_f32(output))?,
        &carried,
        &mask,
        &luma_now,
        &luma_carried,
        size,
        strength,
        LUMA_TOLERANCE,
    )?;
    Ok(to_u8(&ops.download(&blended)?))
}

/// Sum of |out_t − warp(out_{t−1})| over consistent pixels and channels, and their count.
fn warping_error_with<O: FlowOps>(
    ops: &O,
    previous_input: &[u8],
    input: &[u8],
    previous_output: &[u8],
    output: &[u8],
    size: Size,
    params: &FlowParams,
) -> Result<(f64, usize), ShaderError> {
    let luma_previous = ops.gray(&ops.upload(&to_f32(previous_input))?, size)?;
    let luma_now = ops.gray(&ops.upload(&to_f32(input))?, size)?;
    let (flow, mask) = flow_and_mask(ops, &luma_now, &luma_previous, size, params)?;
    let carried =
        ops.download(&ops.warp(&ops.upload(&to_f32(previous_output))?, &flow, size, 3)?)?;
    let mask = ops.download(&mask)?;
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for (p, m) in mask.iter().enumerate() {
        if *m < 0.5 {
            continue;
        }
        for c in 0..3 {
            let i = p * 3 + c;
            sum += f64::from((f32::from(output[i]) - carried[i]).abs());
            count += 1;
        }
    }
    Ok((sum, count))
}

/// The stabiliser's engine: kernels on a device and the flow settings.
#[derive(Clone, Debug)]
pub struct FrameStabiliser {
    ops: AnyOps,
    params: FlowParams,
}

impl FrameStabiliser {
    /// Kernels for `device` (WGSL on wgpu, the reference on flex) at the given flow quality.
    pub fn new(device: &burn::tensor::Device, quality: FlowQuality) -> Result<Self, ShaderError> {
        Ok(Self {
            ops: AnyOps::for_device(device)?,
            params: FlowParams::preset(quality),
        })
    }

    /// The stabilised frame t from inputs t−1 and t, the stabilised output t−1 and the raw
    /// output t (packed RGB of `size`). `strength` 0 returns `output` unchanged.
    pub fn stabilise(
        &self,
        previous_input: &[u8],
        previous_output: &[u8],
        input: &[u8],
        output: &[u8],
        size: Size,
        strength: f32,
    ) -> Result<Vec<u8>, ShaderError> {
        for (what, rgb) in [
            ("previous input", previous_input),
            ("previous output", previous_output),
            ("input", input),
            ("output", output),
        ] {
            check_rgb(what, rgb, size)?;
        }
        if strength <= 0.0 {
            return Ok(output.to_vec());
        }
        let strength = strength.min(1.0);
        match &self.ops {
            AnyOps::Cpu(ops) => stabilise_with(
                ops,
                previous_input,
                previous_output,
                input,
                output,
                size,
                &self.params,
                strength,
            ),
            AnyOps::Gpu(ops) => stabilise_with(
                ops,
                previous_input,
                previous_output,
                input,
                output,
                size,
                &self.params,
                strength,
            ),
        }
    }

    /// Temporal warping error of one step: the sum of |out_t − warp(out_{t−1})| (0..255 per
    /// channel) over pixels whose flow input t → t−1 passes the forward–backward check, and
    /// the number of values summed. Pass the inputs as outputs to measure the input itself.
    pub fn warping_error(
        &self,
        previous_input: &[u8],
        input: &[u8],
        previous_output: &[u8],
        output: &[u8],
        size: Size,
    ) -> Result<(f64, usize), ShaderError> {
        for (what, rgb) in [
            ("previous input", previous_input),
            ("previous output", previous_output),
            ("input", input),
            ("output", output),
        ] {
            check_rgb(what, rgb, size)?;
        }
        match &self.ops {
            AnyOps::Cpu(ops) => warping_error_with(
                ops,
                previous_input,
                input,
                previous_output,
                output,
                size,
                &self.params,
            ),
            AnyOps::Gpu(ops) => warping_error_with(
                ops,
                previous_input,
                input,
                previous_output,
                output,
                size,
                &self.params,
            ),
        }
    }
}
