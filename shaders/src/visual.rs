//! The usual colour-wheel picture of a flow field (Baker et al., Middlebury): hue is the
//! direction, saturation the speed relative to the fastest pixel.

use std::path::Path;

use crate::ShaderError;
use crate::flo::FlowField;

/// The Middlebury colour wheel: red–yellow–green–cyan–blue–magenta segments.
fn colour_wheel() -> Vec<[f32; 3]> {
    const SEGMENTS: [(usize, [f32; 3], [f32; 3]); 6] = [
        (15, [255.0, 0.0, 0.0], [0.0, 255.0, 0.0]),
        (6, [255.0, 255.0, 0.0], [-255.0, 0.0, 0.0]),
        (4, [0.0, 255.0, 0.0], [0.0, 0.0, 255.0]),
        (11, [0.0, 255.0, 255.0], [0.0, -255.0, 0.0]),
        (13, [0.0, 0.0, 255.0], [255.0, 0.0, 0.0]),
        (6, [255.0, 0.0, 255.0], [0.0, 0.0, -255.0]),
    ];
    let mut wheel = Vec::new();
    for (steps, start, delta) in SEGMENTS {
        for i in 0..steps {
            let t = i as f32 / steps as f32;
            wheel.push([
                start[0] + delta[0] * t,
                start[1] + delta[1] * t,
                start[2] + delta[2] * t,
            ]);
        }
    }
    wheel
}

/// Packed RGB of the flow picture, normalised by the largest speed in the field.
pub fn flow_to_rgb(field: &FlowField) -> Vec<u8> {
    let wheel = colour_wheel();
    let max_speed = field
        .data
        .chunks_exact(2)
        .map(|f| (f[0] * f[0] + f[1] * f[1]).sqrt())
        .filter(|s| s.is_finite())
        .fold(0.0f32, f32::max)
        .max(1e-6);
    let mut rgb = Vec::with_capacity(field.size.pixels() * 3);
    for f in field.data.chunks_exact(2) {
        let (u, v) = (f[0] / max_speed, f[1] / max_speed);
        if !u.is_finite() || !v.is_finite() {
            rgb.extend_from_slice(&[0, 0, 0]);
            continue;
        }
        let radius = (u * u + v * v).sqrt().min(1.0);
        let angle = (-v).atan2(-u) / std::f32::consts::PI;
        let position = (angle + 1.0) / 2.0 * (wheel.len() - 1) as f32;
        let k0 = position.floor() as usize % wheel.len();
        let k1 = (k0 + 1) % wheel.len();
        let t = position - position.floor();
        for (a, b) in wheel[k0].iter().zip(&wheel[k1]) {
            let colour = ((1.0 - t) * a + t * b) / 255.0;
            let value = 1.0 - radius * (1.0 - colour);
            rgb.push((value * 255.0).round().clamp(0.0, 255.0) as u8);
        }
    }
    rgb
}

/// Writes the flow picture as a PNG.
pub fn write_flow_png(path: &Path, field: &FlowField) -> Result<(), ShaderError> {
    let rgb = flow_to_rgb(field);
    image::save_buffer(
        path,
        &rgb,
        field.size.width_px as u32,
        field.size.height_px as u32,
        image::ColorType::Rgb8,
    )
    .map_err(|err| ShaderError::Image {
        path: path.display().to_string(),
        reason: err.to_string(),
    })
}

/// Reads an image file as packed RGB and its size.
pub fn read_rgb(path: &Path) -> Result<(Vec<u8>, crate::ops::Size), ShaderError> {
    let image = image::open(path).map_err(|err| ShaderError::Image {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    let rgb = image.to_rgb8();
    let size = crate::ops::Size::new(rgb.width() as usize, rgb.height() as usize);
    Ok((rgb.into_raw(), size))
}
