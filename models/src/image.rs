//! Moving packed 8-bit RGB frames to and from NCHW float tensors in `[0, 1]`.

use burn::tensor::{Device, Tensor, TensorData};

use streamdiff_types::FrameSize;

use crate::ModelError;

/// Uploads tightly packed RGB bytes (`size.rgb_bytes()`) as a `[1, 3, height, width]` tensor.
///
/// The byte-to-float scaling happens on the CPU in one pass; the HWC to CHW transpose runs on
/// the device.
pub fn rgb_to_tensor(rgb: &[u8], size: FrameSize, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = rgb.iter().map(|&v| f32::from(v) / 255.0).collect();
    Tensor::<4>::from_data(
        TensorData::new(values, [1, size.height_px, size.width_px, 3]),
        device,
    )
    .permute([0, 3, 1, 2])
}

/// Reads a `[1, 3, height, width]` tensor in `[0, 1]` back as packed RGB bytes, rounding
/// as the reference implementation does (`clip(x, 0, 1) * 255 + 0.5`, truncated).
pub fn tensor_to_rgb(image: Tensor<4>) -> Result<Vec<u8>, ModelError> {
    let data = image
        .permute([0, 2, 3, 1])
        .clamp(0.0, 1.0)
        .try_into_data()
        .map_err(|err| ModelError::Device(format!("reading the frame back failed: {err:?}")))?;
    let values = data
        .as_slice::<f32>()
        .map_err(|err| ModelError::Device(format!("unexpected output type: {err:?}")))?;
    // Truncation after +0.5 is the reference's rounding; values are in [0.5, 255.5].
    Ok(values.iter().map(|&v| (v * 255.0 + 0.5) as u8).collect())
}
