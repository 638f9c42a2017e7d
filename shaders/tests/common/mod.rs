//! Helpers shared by the shader tests: the wgpu device and the Sintel pairs.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuBackend;

use streamdiff_shaders::flo::read_flo;
use streamdiff_shaders::gpu::GpuOps;
use streamdiff_shaders::ops::Size;
use streamdiff_shaders::visual::read_rgb;
use streamdiff_testkit::{data_file, require};

/// burn's wgpu device (lavapipe here), on the graphics API `WGPU_BACKEND` names (the
/// Makefile pins Vulkan). Opened once per test binary: wgpu's runtime registers once.
pub fn wgpu_device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let api = match std::env::var("WGPU_BACKEND").unwrap_or_default().as_str() {
                "vulkan" | "vk" => WgpuBackend::Vulkan,
                _ => WgpuBackend::Auto,
            };
            Device::wgpu_options()
                .graphics_api(api)
                .init_with_setup()
                .expect("wgpu device (lavapipe in CI)")
                .0
        })
        .clone()
}

/// The WGSL kernels on burn's wgpu device.
pub fn gpu() -> GpuOps {
    GpuOps::new(&wgpu_device()).expect("kernels on burn's wgpu client")
}

/// A deterministic pseudo-random sequence (xorshift), values in `range`.
pub fn random(len: usize, seed: u64, range: std::ops::Range<f32>) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            range.start + unit * (range.end - range.start)
        })
        .collect()
}

/// Luma 0..255 of packed RGB.
pub fn luma(rgb: &[u8]) -> Vec<f32> {
    rgb.chunks_exact(3)
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect()
}

/// One Sintel pair with its ground truth and the matched-pixel mask (not occluded, valid).
pub struct SintelPair {
    pub name: String,
    pub image0: Vec<f32>,
    pub image1: Vec<f32>,
    pub size: Size,
    pub truth: Vec<f32>,
    pub matched: Vec<bool>,
    pub frame0: PathBuf,
    pub frame1: PathBuf,
    pub truth_path: PathBuf,
}

fn mask(path: &std::path::Path) -> Vec<bool> {
    let (rgb, _) = read_rgb(path).expect("mask png");
    rgb.chunks_exact(3).map(|p| p[0] > 127).collect()
}

/// Loads `flow/sintel/{pass}/{level}`, or `None` (skip) outside CI when the data is missing.
pub fn sintel(pass: &str, level: &str) -> Option<SintelPair> {
    let dir = format!("flow/sintel/{pass}/{level}");
    let frame0 = require(data_file(&format!("{dir}/frame_0002.png")))?;
    let frame1 = require(data_file(&format!("{dir}/frame_0003.png")))?;
    let truth_path = require(data_file(&format!("{dir}/gt/frame_0002.flo")))?;
    let occluded = require(data_file(&format!("{dir}/gt/occlusions/frame_0002.png")))?;
    let invalid = require(data_file(&format!("{dir}/gt/invalid/frame_0002.png")))?;
    let (rgb0, size) = read_rgb(&frame0).expect("frame 0");
    let (rgb1, _) = read_rgb(&frame1).expect("frame 1");
    let truth = read_flo(&truth_path).expect("ground truth");
    assert_eq!(truth.size, size);
    let matched = mask(&occluded)
        .iter()
        .zip(mask(&invalid))
        .map(|(o, i)| !o && !i)
        .collect();
    Some(SintelPair {
        name: format!("{pass}/{level}"),
        image0: luma(&rgb0),
        image1: luma(&rgb1),
        size,
        truth: truth.data,
        matched,
        frame0,
        frame1,
        truth_path,
    })
}
