//! The stabiliser on frame tensors equals the stabiliser on bytes: on the WGSL kernels (the
//! tensors' GPU memory handed to the kernels as it is, the result a tensor on the same device)
//! and on the CPU reference, within one level of 0..255 (the byte path rounds its inputs and
//! output to bytes, the tensor path keeps floats).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use streamdiff_shaders::flow::FlowQuality;
use streamdiff_shaders::ops::Size;
use streamdiff_shaders::stabilise::FrameStabiliser;

const SIZE: Size = Size::new(64, 48);

/// A smooth textured frame shifted right by `shift_px`, packed RGB.
fn frame(shift_px: f32, tint: u8) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(SIZE.pixels() * 3);
    for y in 0..SIZE.height_px {
        for x in 0..SIZE.width_px {
            let u = x as f32 - shift_px;
            let v = 128.0 + 60.0 * (u * 0.3).sin() * (y as f32 * 0.25).cos();
            rgb.extend_from_slice(&[v as u8, (255.0 - v) as u8, tint]);
        }
    }
    rgb
}

fn to_tensor(rgb: &[u8], device: &Device) -> Tensor<4> {
    let values: Vec<f32> = rgb.iter().map(|&v| f32::from(v) / 255.0).collect();
    Tensor::<4>::from_data(
        TensorData::new(values, [1, SIZE.height_px, SIZE.width_px, 3]),
        device,
    )
    .permute([0, 3, 1, 2])
}

fn to_bytes(frame: Tensor<4>) -> Vec<u8> {
    let values = frame
        .permute([0, 2, 3, 1])
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32");
    values
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8)
        .collect()
}

fn check(device: &Device, name: &str) {
    let stabiliser = FrameStabiliser::new(device, FlowQuality::Fast).expect("stabiliser");
    let (previous_input, input) = (frame(0.0, 90), frame(1.5, 90));
    // The outputs: the inputs restyled differently (tinted), so blending changes them.
    let (previous_output, output) = (frame(0.0, 200), frame(1.5, 30));
    let bytes = stabiliser
        .stabilise(
            &previous_input,
            &previous_output,
            &input,
            &output,
            SIZE,
            0.8,
        )
        .expect("byte path");
    let tensors =
        [&previous_input, &previous_output, &input, &output].map(|rgb| to_tensor(rgb, device));
    let result = stabiliser
        .stabilise_tensors(&tensors[0], &tensors[1], &tensors[2], &tensors[3], 0.8)
        .expect("tensor path");
    assert_eq!(result.dims(), [1, 3, SIZE.height_px, SIZE.width_px]);
    assert_eq!(
        result.device(),
        *device,
        "{name}: the result stays on the device"
    );
    let from_tensors = to_bytes(result);
    let worst = bytes
        .iter()
        .zip(&from_tensors)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    let changed = bytes.iter().zip(&output).filter(|(a, b)| a != b).count();
    eprintln!("{name}: worst difference {worst}, {changed} values blended");
    assert!(
        worst <= 1,
        "{name}: tensor and byte paths differ by {worst}"
    );
    assert!(
        changed > bytes.len() / 4,
        "{name}: the step blended the frames"
    );
    // Strength 0 hands the output back untouched.
    let off = stabiliser
        .stabilise_tensors(&tensors[0], &tensors[1], &tensors[2], &tensors[3], 0.0)
        .expect("off");
    assert_eq!(
        to_bytes(off),
        output,
        "{name}: strength 0 is the output itself"
    );
    // Frames of different sizes are refused.
    let small = Tensor::<4>::zeros([1, 3, 8, 8], device);
    assert!(
        stabiliser
            .stabilise_tensors(&tensors[0], &tensors[1], &small, &tensors[3], 0.8)
            .is_err()
    );
}

#[test]
fn tensor_frames_on_the_wgsl_kernels_match_the_byte_path() {
    check(&common::wgpu_device(), "wgpu");
}

#[test]
fn tensor_frames_on_the_cpu_reference_match_the_byte_path() {
    check(&Device::flex(), "flex");
}
