//! Dense optical flow, coarse to fine: on each pyramid level a DIS-style inverse search on a
//! grid of patches, densification weighted by photometric fit, and a variational refinement.
//! docs/FLOW.md says why this method and how accurate it is.

use crate::ShaderError;
use crate::ops::{FlowOps, PatchGrid, RefineParams, SearchParams, Size};

/// How hard the estimator works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowQuality {
    /// Stops one level above full resolution, fewer iterations: the live stabiliser.
    Fast,
    /// Full resolution, the default of `streamdiff flow`.
    Balanced,
    /// Full resolution, denser patches and more refinement: evaluation (`eval flicker`).
    High,
}

impl std::str::FromStr for FlowQuality {
    type Err = ShaderError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "fast" => Ok(Self::Fast),
            "balanced" => Ok(Self::Balanced),
            "high" => Ok(Self::High),
            other => Err(ShaderError::Shape(format!(
                "unknown flow quality `{other}`; use fast, balanced or high"
            ))),
        }
    }
}

/// All settings of the estimator.
#[derive(Clone, Copy, Debug)]
pub struct FlowParams {
    /// Patch side of the inverse search, in pixels.
    pub patch_px: usize,
    /// Patch stride, in pixels.
    pub stride_px: usize,
    /// Inverse-search iterations per patch.
    pub search: SearchParams,
    /// Variational refinement on every level.
    pub refine: RefineParams,
    /// The finest level computed (0 = full resolution); finer levels are upsampled.
    pub finest_level: usize,
}

impl FlowParams {
    /// The settings of a quality preset.
    pub fn preset(quality: FlowQuality) -> Self {
        let refine = RefineParams {
            alpha: 20.0,
            delta: 5.0,
            gamma: 10.0,
            outer_iterations: 5,
            sor_iterations: 5,
            omega: 1.6,
        };
        match quality {
            FlowQuality::Fast => Self {
                patch_px: 8,
                stride_px: 4,
                search: SearchParams { iterations: 12 },
                refine: RefineParams {
                    outer_iterations: 3,
                    ..refine
                },
                finest_level: 1,
            },
            FlowQuality::Balanced => Self {
                patch_px: 8,
                stride_px: 4,
                search: SearchParams { iterations: 16 },
                refine,
                finest_level: 0,
            },
            FlowQuality::High => Self {
                patch_px: 8,
                stride_px: 3,
                search: SearchParams { iterations: 25 },
                refine: RefineParams {
                    outer_iterations: 8,
                    ..refine
                },
                finest_level: 0,
            },
        }
    }

    /// The coarsest level for a frame of `size`: about four patches across the longer side,
    /// and never a level smaller than a patch.
    pub fn coarsest_level(&self, size: Size) -> usize {
        let longer = size.width_px.max(size.height_px) as f32;
        let wanted = (longer / (4.0 * self.patch_px as f32))
            .log2()
            .round()
            .max(0.0) as usize;
        let mut level = 0;
        let mut level_size = size;
        while level < wanted {
            let next = level_size.half();
            if next.width_px < self.patch_px || next.height_px < self.patch_px {
                break;
            }
            level_size = next;
            level += 1;
        }
        level.max(self.finest_level)
    }
}

/// Flow from `image0` to `image1` (luma planes of `size`, values 0..255): for each pixel of
/// `image0`, where it moved to in `image1`, interleaved (dx, dy) in pixels.
pub fn estimate_flow<O: FlowOps>(
    ops: &O,
    image0: &O::Buf,
    image1: &O::Buf,
    size: Size,
    params: &FlowParams,
) -> Result<O::Buf, ShaderError> {
    if size.width_px < params.patch_px || size.height_px < params.patch_px {
        return Err(ShaderError::Shape(format!(
            "frames of {}x{} are smaller than one {}-pixel patch",
            size.width_px, size.height_px, params.patch_px
        )));
    }
    let coarsest = params.coarsest_level(size);
    let mut pyramid = vec![(image0.clone(), image1.clone(), size)];
    for _ in 0..coarsest {
        let (i0, i1, s) = pyramid
            .last()
            .cloned()
            .ok_or_else(|| ShaderError::Shape("empty pyramid".to_string()))?;
        pyramid.push((ops.downsample(&i0, s)?, ops.downsample(&i1, s)?, s.half()));
    }
    let mut flow = ops.zeros(pyramid[coarsest].2.pixels() * 2)?;
    for level in (params.finest_level..=coarsest).rev() {
        let (i0, i1, s) = &pyramid[level];
        if level < coarsest {
            flow = ops.upsample_flow(&flow, pyramid[level + 1].2, *s)?;
        }
        let gradient0 = ops.gradient(i0, *s)?;
        let grid = PatchGrid::new(*s, params.patch_px, params.stride_px);
        let patches = ops.patch_search(i0, &gradient0, i1, &flow, *s, grid, params.search)?;
        flow = ops.densify(i0, i1, &patches, *s, grid)?;
        flow = ops.refine(i0, i1, &flow, *s, params.refine)?;
    }
    if params.finest_level > 0 {
        flow = ops.upsample_flow(&flow, pyramid[params.finest_level].2, size)?;
    }
    Ok(flow)
}

/// Average end-point error of `flow` against `truth`, over the pixels where `mask` (when
/// given) is true.
pub fn end_point_error(flow: &[f32], truth: &[f32], mask: Option<&[bool]>) -> f64 {
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for (p, (f, t)) in flow.chunks_exact(2).zip(truth.chunks_exact(2)).enumerate() {
        if mask.is_some_and(|m| !m[p]) {
            continue;
        }
        let du = f64::from(f[0] - t[0]);
        let dv = f64::from(f[1] - t[1]);
        sum += (du * du + dv * dv).sqrt();
        count += 1;
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Flow between packed 8-bit RGB frames on a burn device, downloaded to the host.
#[derive(Clone, Debug)]
pub struct FlowEstimator {
    ops: crate::gpu::AnyOps,
    params: FlowParams,
}

impl FlowEstimator {
    /// Kernels for `device` (WGSL on wgpu, the reference on flex) with `params`.
    pub fn new(device: &burn::tensor::Device, params: FlowParams) -> Result<Self, ShaderError> {
        Ok(Self {
            ops: crate::gpu::AnyOps::for_device(device)?,
            params,
        })
    }

    /// Whether the WGSL kernels run (rather than the CPU reference).
    pub fn on_gpu(&self) -> bool {
        matches!(self.ops, crate::gpu::AnyOps::Gpu(_))
    }

    /// Flow from `rgb0` to `rgb1` (both of `size`), interleaved (dx, dy) per pixel.
    pub fn flow_rgb8(&self, rgb0: &[u8], rgb1: &[u8], size: Size) -> Result<Vec<f32>, ShaderError> {
        for rgb in [rgb0, rgb1] {
            if rgb.len() != size.pixels() * 3 {
                return Err(ShaderError::Shape(format!(
                    "{} bytes do not make a {}x{} RGB frame",
                    rgb.len(),
                    size.width_px,
                    size.height_px
                )));
            }
        }
        fn run<O: FlowOps>(
            ops: &O,
            rgb0: &[u8],
            rgb1: &[u8],
            size: Size,
            params: &FlowParams,
        ) -> Result<Vec<f32>, ShaderError> {
            let upload = |rgb: &[u8]| {
                let values: Vec<f32> = rgb.iter().map(|&v| f32::from(v)).collect();
                ops.gray(&ops.upload(&values)?, size)
            };
            let flow = estimate_flow(ops, &upload(rgb0)?, &upload(rgb1)?, size, params)?;
            ops.download(&flow)
        }
        match &self.ops {
            crate::gpu::AnyOps::Cpu(ops) => run(ops, rgb0, rgb1, size, &self.params),
            crate::gpu::AnyOps::Gpu(ops) => run(ops, rgb0, rgb1, size, &self.params),
        }
    }
}
