//! The stabilisation stage around a stage that flickers: a static textured scene, to which
//! the inner stage adds fresh noise every frame. Stabilised, consecutive outputs differ less;
//! strength 0 (set live) passes the inner output through unchanged.

use std::time::Duration;

use streamdiff_models::device::{BackendChoice, open_device};
use streamdiff_pipeline::PipelineError;
use streamdiff_pipeline::stage::stabilise::{StabiliseSettings, StabiliseStage, parse_strength};
use streamdiff_pipeline::stage::{FrameStage, VideoFrame};
use streamdiff_types::FrameSize;

const WIDTH_PX: usize = 64;
const HEIGHT_PX: usize = 48;

/// Adds deterministic per-frame noise of ±`amplitude` to every byte.
struct NoisyStage {
    amplitude: i32,
    state: u64,
}

impl FrameStage for NoisyStage {
    fn name(&self) -> String {
        "noise".to_string()
    }

    fn process(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, PipelineError> {
        let mut rgb = frame.rgb()?.to_vec();
        for byte in &mut rgb {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let noise = (self.state % (2 * self.amplitude as u64 + 1)) as i32 - self.amplitude;
            *byte = (i32::from(*byte) + noise).clamp(0, 255) as u8;
        }
        let size = frame.size();
        Ok(vec![frame.with_rgb(rgb, size)?])
    }
}

fn scene(sequence: u64) -> VideoFrame {
    let mut rgb = Vec::with_capacity(WIDTH_PX * HEIGHT_PX * 3);
    for y in 0..HEIGHT_PX {
        for x in 0..WIDTH_PX {
            let v = 128.0 + 60.0 * ((x as f32) * 0.3).sin() * ((y as f32) * 0.25).cos();
            rgb.extend_from_slice(&[v as u8, (255.0 - v) as u8, 128]);
        }
    }
    let mut frame = VideoFrame::from_rgb(rgb, FrameSize::new(WIDTH_PX, HEIGHT_PX)).expect("frame");
    frame.pts = Duration::from_millis(40 * sequence);
    frame.sequence = sequence;
    frame
}

/// The one output of a per-frame stage, as bytes.
fn one(stage: &mut dyn FrameStage, frame: VideoFrame) -> Vec<u8> {
    let mut out = stage.process(frame).expect("frame");
    assert_eq!(out.len(), 1, "a per-frame stage returns its frame at once");
    out.remove(0).into_rgb().expect("bytes")
}

fn mean_abs_difference(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(p, q)| f64::from(p.abs_diff(*q)))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn stabilisation_damps_flicker_and_strength_zero_is_off() {
    let compute = open_device(BackendChoice::Flex).expect("flex device");
    let inner = Box::new(NoisyStage {
        amplitude: 20,
        state: 0x1234_5678,
    });
    let mut stage =
        StabiliseStage::new(inner, &compute, StabiliseSettings::default()).expect("stabiliser");
    let outputs: Vec<Vec<u8>> = (0..6).map(|t| one(&mut stage, scene(t))).collect();
    let stabilised = mean_abs_difference(&outputs[4], &outputs[5]);

    let mut plain = NoisyStage {
        amplitude: 20,
        state: 0x1234_5678,
    };
    let raw: Vec<Vec<u8>> = (0..6).map(|t| one(&mut plain, scene(t))).collect();
    let flickering = mean_abs_difference(&raw[4], &raw[5]);
    assert!(
        stabilised < 0.6 * flickering,
        "stabilised frames differ by {stabilised:.2}, raw by {flickering:.2}"
    );
    // The first frame has nothing to carry and passes through.
    assert_eq!(outputs[0], raw[0]);

    // Off, live: the next output is the inner stage's own.
    let settings = stage.controls().stabilise.expect("the stabiliser's handle");
    settings.update(|s| s.strength = 0.0);
    let off = one(&mut stage, scene(6));
    let expected = one(&mut plain, scene(6));
    assert_eq!(off, expected);
}

#[test]
fn strengths_are_checked() {
    assert_eq!(parse_strength("0.25").expect("valid"), 0.25);
    assert!(parse_strength("1.5").is_err());
    assert!(parse_strength("-0.1").is_err());
    assert!(parse_strength("much").is_err());
}

/// Adds the same deterministic noise as [`NoisyStage`], but on the device: its outputs are
/// device frames, as the engine's and the style network's are.
struct DeviceNoisyStage {
    host: NoisyStage,
    device: burn::tensor::Device,
}

impl FrameStage for DeviceNoisyStage {
    fn name(&self) -> String {
        "noise on the device".to_string()
    }

    fn process(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, PipelineError> {
        let input = frame.to_tensor(&self.device)?;
        let size = frame.size();
        // The noise itself is made as bytes (a zero frame plus noise, re-centred).
        let zero = VideoFrame::from_rgb(vec![128; size.rgb_bytes()], size)?;
        let noise = self.host.process(zero)?.remove(0).to_tensor(&self.device)? - 128.0 / 255.0;
        Ok(vec![frame.with_tensor((input + noise).clamp(0.0, 1.0))?])
    }
}

#[test]
fn device_frames_are_stabilised_on_the_gpu_without_a_host_copy() {
    let compute = open_device(BackendChoice::Wgpu).expect("wgpu device (lavapipe in CI)");
    let inner = Box::new(DeviceNoisyStage {
        host: NoisyStage {
            amplitude: 20,
            state: 0x1234_5678,
        },
        device: compute.device.clone(),
    });
    let mut stage =
        StabiliseStage::new(inner, &compute, StabiliseSettings::default()).expect("stabiliser");
    let outputs: Vec<VideoFrame> = (0..6)
        .map(|t| stage.process(scene(t)).expect("frame").remove(0))
        .collect();
    for (t, frame) in outputs.iter().enumerate() {
        assert!(
            !frame.is_on_host() && frame.device_tensor().is_some(),
            "frame {t} went through the stabiliser on the device"
        );
    }
    let bytes: Vec<Vec<u8>> = outputs
        .into_iter()
        .map(|f| f.into_rgb().expect("read back"))
        .collect();
    let mut plain = NoisyStage {
        amplitude: 20,
        state: 0x1234_5678,
    };
    let raw: Vec<Vec<u8>> = (0..6).map(|t| one(&mut plain, scene(t))).collect();
    let stabilised = mean_abs_difference(&bytes[4], &bytes[5]);
    let flickering = mean_abs_difference(&raw[4], &raw[5]);
    assert!(
        stabilised < 0.6 * flickering,
        "stabilised frames differ by {stabilised:.2}, raw by {flickering:.2}"
    );
}
