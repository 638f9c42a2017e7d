//! The kernel set the flow estimator and the stabiliser are written against.
//!
//! Two implementations: [`crate::cpu::CpuOps`] (the reference, plain Rust) and
//! [`crate::gpu::GpuOps`] (WGSL on burn's wgpu client). Buffers are flat `f32` arrays;
//! images are row-major planes, multi-channel data (flow, RGB) is interleaved per pixel.

use crate::ShaderError;

/// The size of a plane, in pixels: the workspace's one [`streamdiff_types::FrameSize`], under the short name the
/// kernels use.
pub use streamdiff_types::FrameSize as Size;

/// The grid of patches the inverse search runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchGrid {
    /// Side of a square patch, in pixels.
    pub patch_px: usize,
    /// Distance between patch origins, in pixels.
    pub stride_px: usize,
    /// Patches per row.
    pub columns: usize,
    /// Patch rows.
    pub rows: usize,
}

impl PatchGrid {
    /// Patches of `patch_px` every `stride_px`, the last row and column moved in to touch the
    /// far edge so every pixel is covered. `size` must be at least `patch_px` both ways.
    pub fn new(size: Size, patch_px: usize, stride_px: usize) -> Self {
        let count = |side: usize| (side - patch_px).div_ceil(stride_px) + 1;
        Self {
            patch_px,
            stride_px,
            columns: count(size.width_px),
            rows: count(size.height_px),
        }
    }

    /// Number of patches.
    pub fn len(&self) -> usize {
        self.columns * self.rows
    }

    /// Whether there are no patches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Settings of the inverse search on one level.
#[derive(Clone, Copy, Debug)]
pub struct SearchParams {
    /// Gauss–Newton iterations per patch.
    pub iterations: u32,
}

/// Weights of the variational refinement (brightness and gradient constancy, robust, with
/// normalised data terms; smoothness on the flow gradient).
#[derive(Clone, Copy, Debug)]
pub struct RefineParams {
    /// Smoothness weight.
    pub alpha: f32,
    /// Brightness-constancy weight.
    pub delta: f32,
    /// Gradient-constancy weight.
    pub gamma: f32,
    /// Fixed-point (outer) iterations.
    pub outer_iterations: u32,
    /// Red–black SOR sweeps per outer iteration.
    pub sor_iterations: u32,
    /// SOR relaxation factor.
    pub omega: f32,
}

/// Buffers and kernels; see the module docs.
pub trait FlowOps {
    /// A buffer of `f32`s on this implementation's device.
    type Buf: Clone;

    /// Copies host data to a new buffer.
    fn upload(&self, data: &[f32]) -> Result<Self::Buf, ShaderError>;
    /// Copies a buffer back to the host.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>, ShaderError>;
    /// A buffer of `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::Buf, ShaderError>;

    /// Luma (BT.601) of interleaved RGB, same value range.
    fn gray(&self, rgb: &Self::Buf, size: Size) -> Result<Self::Buf, ShaderError>;
    /// Blurs with the binomial [1 3 3 1]/8 kernel and halves (sides rounded up).
    fn downsample(&self, image: &Self::Buf, size: Size) -> Result<Self::Buf, ShaderError>;
    /// Central-difference gradient, interleaved (d/dx, d/dy).
    fn gradient(&self, image: &Self::Buf, size: Size) -> Result<Self::Buf, ShaderError>;
    /// Resamples a flow field bilinearly to `to`, scaling the vectors with the size ratio.
    fn upsample_flow(
        &self,
        flow: &Self::Buf,
        from: Size,
        to: Size,
    ) -> Result<Self::Buf, ShaderError>;
    /// Inverse search: one flow vector per patch, started from `flow` at the patch centre.
    #[allow(clippy::too_many_arguments)]
    fn patch_search(
        &self,
        image0: &Self::Buf,
        gradient0: &Self::Buf,
        image1: &Self::Buf,
        flow: &Self::Buf,
        size: Size,
        grid: PatchGrid,
        params: SearchParams,
    ) -> Result<Self::Buf, ShaderError>;
    /// Dense flow from patch flows, each patch weighted per pixel by its photometric fit.
    fn densify(
        &self,
        image0: &Self::Buf,
        image1: &Self::Buf,
        patch_flow: &Self::Buf,
        size: Size,
        grid: PatchGrid,
    ) -> Result<Self::Buf, ShaderError>;
    /// Variational refinement of a dense flow on one level.
    fn refine(
        &self,
        image0: &Self::Buf,
        image1: &Self::Buf,
        flow: &Self::Buf,
        size: Size,
        params: RefineParams,
    ) -> Result<Self::Buf, ShaderError>;
    /// Samples `image` (`channels` interleaved) at `x + flow(x)`, bilinear, edges clamped.
    fn warp(
        &self,
        image: &Self::Buf,
        flow: &Self::Buf,
        size: Size,
        channels: usize,
    ) -> Result<Self::Buf, ShaderError>;
    /// Forward–backward consistency: 1 where `backward` at `x + forward(x)` cancels
    /// `forward(x)` and the target is inside the frame, else 0.
    fn consistency(
        &self,
        forward: &Self::Buf,
        backward: &Self::Buf,
        size: Size,
    ) -> Result<Self::Buf, ShaderError>;
    /// The stabiliser's blend: `current*(1-w) + carried*w` per pixel (RGB), where
    /// `w = strength * mask * exp(-(|luma_now - luma_carried| / tolerance)^2)`.
    #[allow(clippy::too_many_arguments)]
    fn blend(
        &self,
        current: &Self::Buf,
        carried: &Self::Buf,
        mask: &Self::Buf,
        luma_now: &Self::Buf,
        luma_carried: &Self::Buf,
        size: Size,
        strength: f32,
        tolerance: f32,
    ) -> Result<Self::Buf, ShaderError>;
}
