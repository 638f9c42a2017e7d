//! Flow-guided temporal stabilisation and the flicker metric, on [`AnyOps`].
//!
//! Stabilising frame t: flow from input t to input t−1 (and back, for the occlusion mask),
//! the previous *stabilised* output warped along it, then blended into the new output where
//! the mask says the scene is the same and the warped input agrees with the new input.
//!
//! Frames come as packed RGB bytes ([`FrameStabiliser::stabilise`]) or as burn tensors
//! `[1, 3, height, width]` in `[0, 1]` ([`FrameStabiliser::stabilise_tensors`]). On wgpu the
//! tensors' memory is handed to the kernels as it is and the result is a tensor again: frames
//! that stay on the GPU between stages are never copied to the host here.

use burn::tensor::{Device, Tensor, TensorData};

use crate::ShaderError;
use crate::cpu::CpuOps;
use crate::flow::{FlowParams, FlowQuality, estimate_flow};
use crate::gpu::{AnyOps, GpuBuf, GpuOps};
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

/// The four frames of a step, in the order every function here takes them.
const FRAMES: [&str; 4] = ["previous input", "previous output", "input", "output"];

/// Checks that every one of the four frames of a step is a packed RGB frame of `size`.
fn check_rgb(frames: [&[u8]; 4], size: Size) -> Result<(), ShaderError> {
    for (what, rgb) in FRAMES.into_iter().zip(frames) {
        if rgb.len() != size.pixels() * 3 {
            return Err(ShaderError::Shape(format!(
                "{what}: {} bytes do not make a {}x{} RGB frame",
                rgb.len(),
                size.width_px,
                size.height_px
            )));
        }
    }
    Ok(())
}

/// The size of `[1, 3, height, width]` frame tensors, the same for all four.
fn tensor_size(frames: [&Tensor<4>; 4]) -> Result<Size, ShaderError> {
    let [_, _, height_px, width_px] = frames[0].dims();
    let size = Size::new(width_px, height_px);
    for (what, frame) in FRAMES.into_iter().zip(frames) {
        if frame.dims() != [1, 3, size.height_px, size.width_px] {
            return Err(ShaderError::Shape(format!(
                "{what}: a [1, 3, {}, {}] frame tensor expected, got {:?}",
                size.height_px,
                size.width_px,
                frame.dims()
            )));
        }
    }
    Ok(size)
}

/// A frame tensor as the kernels' interleaved RGB values, 0..255.
fn interleaved(frame: &Tensor<4>, size: Size) -> Tensor<1> {
    frame
        .clone()
        .permute([0, 2, 3, 1])
        .reshape([size.pixels() * 3])
        * 255.0
}

/// Interleaved RGB values 0..255 back to a frame tensor in `[0, 1]`.
fn planar(values: Tensor<1>, size: Size) -> Tensor<4> {
    (values.reshape([1, size.height_px, size.width_px, 3]) / 255.0)
        .permute([0, 3, 1, 2])
        .clamp(0.0, 1.0)
}

/// How a kernel set takes frame tensors: the CPU reference copies them (its buffers are host
/// memory), the WGSL kernels borrow the tensor's own GPU memory.
trait TensorFrames: FlowOps {
    fn buf_from_tensor(&self, values: Tensor<1>) -> Result<Self::Buf, ShaderError>;
    fn tensor_from_buf(&self, buf: Self::Buf, device: &Device) -> Result<Tensor<1>, ShaderError>;
}

impl TensorFrames for CpuOps {
    fn buf_from_tensor(&self, values: Tensor<1>) -> Result<Self::Buf, ShaderError> {
        values
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|err| ShaderError::Device(format!("reading a frame failed: {err:?}")))
    }

    fn tensor_from_buf(&self, buf: Self::Buf, device: &Device) -> Result<Tensor<1>, ShaderError> {
        let len = buf.len();
        Ok(Tensor::from_data(TensorData::new(buf, [len]), device))
    }
}

impl TensorFrames for GpuOps {
    fn buf_from_tensor(&self, values: Tensor<1>) -> Result<Self::Buf, ShaderError> {
        GpuBuf::from_tensor(values)
    }

    fn tensor_from_buf(&self, buf: Self::Buf, device: &Device) -> Result<Tensor<1>, ShaderError> {
        buf.into_tensor(device)
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

/// One stabilisation step on the kernels' buffers (interleaved RGB, 0..255).
fn stabilise_bufs<O: FlowOps>(
    ops: &O,
    [previous_input, previous_output, input, output]: [&O::Buf; 4],
    size: Size,
    params: &FlowParams,
    strength: f32,
) -> Result<O::Buf, ShaderError> {
    let luma_previous = ops.gray(previous_input, size)?;
    let luma_now = ops.gray(input, size)?;
    let (flow, mask) = flow_and_mask(ops, &luma_now, &luma_previous, size, params)?;
    let carried = ops.warp(previous_output, &flow, size, 3)?;
    let luma_carried = ops.warp(&luma_previous, &flow, size, 1)?;
    ops.blend(
        output,
        &carried,
        &mask,
        &luma_now,
        &luma_carried,
        size,
        strength,
        LUMA_TOLERANCE,
    )
}

/// [`stabilise_bufs`] on packed RGB bytes.
fn stabilise_with<O: FlowOps>(
    ops: &O,
    frames: [&[u8]; 4],
    size: Size,
    params: &FlowParams,
    strength: f32,
) -> Result<Vec<u8>, ShaderError> {
    let [a, b, c, d] = frames.map(|rgb| ops.upload(&to_f32(rgb)));
    let bufs = [a?, b?, c?, d?];
    let [a, b, c, d] = &bufs;
    let blended = stabilise_bufs(ops, [a, b, c, d], size, params, strength)?;
    Ok(to_u8(&ops.download(&blended)?))
}

/// [`stabilise_bufs`] on frame tensors, the result a frame tensor on the same device.
fn stabilise_tensors_with<O: TensorFrames>(
    ops: &O,
    frames: [&Tensor<4>; 4],
    size: Size,
    params: &FlowParams,
    strength: f32,
) -> Result<Tensor<4>, ShaderError> {
    let device = frames[3].device();
    let [a, b, c, d] = frames.map(|frame| ops.buf_from_tensor(interleaved(frame, size)));
    let bufs = [a?, b?, c?, d?];
    let [a, b, c, d] = &bufs;
    let blended = stabilise_bufs(ops, [a, b, c, d], size, params, strength)?;
    Ok(planar(ops.tensor_from_buf(blended, &device)?, size))
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
        let frames = [previous_input, previous_output, input, output];
        check_rgb(frames, size)?;
        if strength <= 0.0 {
            return Ok(output.to_vec());
        }
        let strength = strength.min(1.0);
        match &self.ops {
            AnyOps::Cpu(ops) => stabilise_with(ops, frames, size, &self.params, strength),
            AnyOps::Gpu(ops) => stabilise_with(ops, frames, size, &self.params, strength),
        }
    }

    /// [`Self::stabilise`] on frames that are tensors `[1, 3, height, width]` in `[0, 1]` on
    /// this stabiliser's device; the result is such a tensor too. On wgpu nothing is copied to
    /// or from the host.
    pub fn stabilise_tensors(
        &self,
        previous_input: &Tensor<4>,
        previous_output: &Tensor<4>,
        input: &Tensor<4>,
        output: &Tensor<4>,
        strength: f32,
    ) -> Result<Tensor<4>, ShaderError> {
        let frames = [previous_input, previous_output, input, output];
        let size = tensor_size(frames)?;
        if strength <= 0.0 {
            return Ok(output.clone());
        }
        let strength = strength.min(1.0);
        match &self.ops {
            AnyOps::Cpu(ops) => stabilise_tensors_with(ops, frames, size, &self.params, strength),
            AnyOps::Gpu(ops) => stabilise_tensors_with(ops, frames, size, &self.params, strength),
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
        check_rgb([previous_input, previous_output, input, output], size)?;
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
