//! Launching the `.wgsl` kernels on the wgpu client burn already holds.
//!
//! A burn tensor on the wgpu device is unwrapped to its cubecl primitive
//! ([`Tensor::try_into_primitive`]) only to borrow its compute client: every buffer and launch
//! below goes through that client, so the kernels share burn's device, queue and memory pool
//! and run in order with burn's own work. Kernels are burn's `SourceKernel`s: WGSL text that
//! cubecl hands to naga without translating it.

use burn::backend::Cube;
use burn::backend::wgpu::{CubeDim, KernelSource, SourceKernel, SourceTemplate};
use burn::tensor::{Device, Tensor};
use cubecl::CubeCount;
use cubecl::client::Client;
use cubecl::prelude::KernelId;
use cubecl::server::{Handle, KernelArguments};

use crate::ShaderError;
use crate::cpu::CpuOps;
use crate::ops::{FlowOps, PatchGrid, RefineParams, SearchParams, Size};

/// One kernel: its name (the compilation cache key) and its WGSL, entry point `main`.
#[derive(Debug)]
struct Kernel {
    name: &'static str,
    source: &'static str,
    /// Must equal the shader's `@workgroup_size`.
    workgroup: (u32, u32),
}

macro_rules! kernel {
    ($ident:ident, $file:literal, $wx:literal, $wy:literal) => {
        static $ident: Kernel = Kernel {
            name: $file,
            source: include_str!(concat!("wgsl/", $file, ".wgsl")),
            workgroup: ($wx, $wy),
        };
    };
}

kernel!(GRAY, "gray", 16, 16);
kernel!(DOWNSAMPLE, "downsample", 16, 16);
kernel!(GRADIENT, "gradient", 16, 16);
kernel!(UPSAMPLE_FLOW, "upsample_flow", 16, 16);
kernel!(PATCH_SEARCH, "patch_search", 8, 8);
kernel!(DENSIFY, "densify", 16, 16);
kernel!(WARP, "warp", 16, 16);
kernel!(REFINE_DERIVATIVES, "refine_derivatives", 16, 16);
kernel!(REFINE_COEFFICIENTS, "refine_coefficients", 16, 16);
kernel!(REFINE_SOR, "refine_sor", 16, 16);
kernel!(ADD, "add", 16, 16);
kernel!(CONSISTENCY, "consistency", 16, 16);
kernel!(BLEND, "blend", 16, 16);

/// Adapter from a static [`Kernel`] to burn's template kernel trait.
struct Wgsl(&'static Kernel);

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.0.source)
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.0.name)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// A buffer of `f32`s in burn's wgpu memory.
#[derive(Clone, Debug)]
pub struct GpuBuf {
    handle: Handle,
    len: usize,
}

impl GpuBuf {
    /// Number of `f32`s.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The WGSL implementation of [`FlowOps`], on burn's wgpu client.
#[derive(Clone)]
pub struct GpuOps {
    client: Client,
}

impl std::fmt::Debug for GpuOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuOps")
            .field("runtime", &self.client.name())
            .finish()
    }
}

impl GpuOps {
    /// Borrows the compute client of `device`, which must be burn's wgpu device.
    pub fn new(device: &Device) -> Result<Self, ShaderError> {
        let probe = Tensor::<1>::zeros([1], device);
        let primitive = probe.try_into_primitive::<Cube>().map_err(|err| {
            ShaderError::Device(format!(
                "the WGSL kernels need burn's wgpu device, not {device:?} ({err:?})"
            ))
        })?;
        let client = primitive.client.clone();
        if !client.name().to_ascii_lowercase().contains("wgpu") {
            return Err(ShaderError::Device(format!(
                "the WGSL kernels need burn's wgpu device; this one runs on `{}`",
                client.name()
            )));
        }
        Ok(Self { client })
    }

    /// Waits for every launched kernel (for timings).
    pub fn sync(&self) -> Result<(), ShaderError> {
        cubecl::future::block_on(self.client.sync())
            .map_err(|err| ShaderError::Device(err.to_string()))
    }

    fn empty(&self, len: usize) -> GpuBuf {
        GpuBuf {
            handle: self.client.empty(len.max(1) * 4),
            len,
        }
    }

    fn launch(
        &self,
        kernel: &'static Kernel,
        buffers: &[&GpuBuf],
        params: &[u32],
        invocations: (usize, usize),
    ) {
        let params: Vec<u8> = params.iter().flat_map(|p| p.to_le_bytes()).collect();
        let params = self.client.create_from_slice(&params);
        let mut bindings: Vec<_> = buffers.iter().map(|b| b.handle.clone().binding()).collect();
        bindings.push(params.binding());
        let (wx, wy) = kernel.workgroup;
        let count = CubeCount::Static(
            (invocations.0 as u32).div_ceil(wx).max(1),
            (invocations.1 as u32).div_ceil(wy).max(1),
            1,
        );
        self.client.launch(
            Box::new(SourceKernel::new(Wgsl(kernel), CubeDim::new_2d(wx, wy))),
            count,
            KernelArguments::new().with_buffers(bindings),
        );
    }
}

fn check_len(what: &str, buf: &GpuBuf, len: usize) -> Result<(), ShaderError> {
    if buf.len == len {
        Ok(())
    } else {
        Err(ShaderError::Shape(format!(
            "{what}: expected {len} values, got {}",
            buf.len
        )))
    }
}

fn dims(size: Size) -> [u32; 2] {
    [size.width_px as u32, size.height_px as u32]
}

impl FlowOps for GpuOps {
    type Buf = GpuBuf;

    fn upload(&self, data: &[f32]) -> Result<Self::Buf, ShaderError> {
        if data.is_empty() {
            return Ok(self.empty(0));
        }
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(GpuBuf {
            handle: self.client.create_from_slice(&bytes),
            len: data.len(),
        })
    }

    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>, ShaderError> {
        if buf.len == 0 {
            return Ok(Vec::new());
        }
        let bytes = self
            .client
            .read_one(buf.handle.clone())
            .map_err(|err| ShaderError::Device(err.to_string()))?;
        Ok(bytes[..buf.len * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn zeros(&self, len: usize) -> Result<Self::Buf, ShaderError> {
        self.upload(&vec![0.0; len])
    }

    fn gray(&self, rgb: &Self::Buf, size: Size) -> Result<Self::Buf, ShaderError> {
        check_len("rgb", rgb, size.pixels() * 3)?;
        let out = self.empty(size.pixels());
        self.launch(
            &GRAY,
            &[rgb, &out],
            &dims(size),
            (size.width_px, size.height_px),
        );
        Ok(out)
    }

    fn downsample(&self, image: &Self::Buf, size: Size) -> Result<Self::Buf, ShaderError> {
        check_len("image", image, size.pixels())?;
        let half = size.half();
        let out = self.empty(half.pixels());
        let [w, h] = dims(size);
        let [hw, hh] = dims(half);
        self.launch(
            &DOWNSAMPLE,
            &[image, &out],
            &[w, h, hw, hh],
            (half.width_px, half.height_px),
        );
        Ok(out)
    }

    fn gradient(&self, image: &Self::Buf, size: Size) -> Result<Self::Buf, ShaderError> {
        check_len("image", image, size.pixels())?;
        let out = self.empty(size.pixels() * 2);
        self.launch(
            &GRADIENT,
            &[image, &out],
            &dims(size),
            (size.width_px, size.height_px),
        );
        Ok(out)
    }

    fn upsample_flow(
        &self,
        flow: &Self::Buf,
        from: Size,
        to: Size,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("flow", flow, from.pixels() * 2)?;
        let out = self.empty(to.pixels() * 2);
        let [fw, fh] = dims(from);
        let [tw, th] = dims(to);
        self.launch(
            &UPSAMPLE_FLOW,
            &[flow, &out],
            &[fw, fh, tw, th],
            (to.width_px, to.height_px),
        );
        Ok(out)
    }

    fn patch_search(
        &self,
        image0: &Self::Buf,
        gradient0: &Self::Buf,
        image1: &Self::Buf,
        flow: &Self::Buf,
        size: Size,
        grid: PatchGrid,
        params: SearchParams,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("image0", image0, size.pixels())?;
        check_len("image1", image1, size.pixels())?;
        check_len("gradient0", gradient0, size.pixels() * 2)?;
        check_len("flow", flow, size.pixels() * 2)?;
        let out = self.empty(grid.len() * 2);
        let [w, h] = dims(size);
        self.launch(
            &PATCH_SEARCH,
            &[image0, gradient0, image1, flow, &out],
            &[
                w,
                h,
                grid.patch_px as u32,
                grid.stride_px as u32,
                grid.columns as u32,
                grid.rows as u32,
                params.iterations,
            ],
            (grid.columns, grid.rows),
        );
        Ok(out)
    }

    fn densify(
        &self,
        image0: &Self::Buf,
        image1: &Self::Buf,
        patch_flow: &Self::Buf,
        size: Size,
        grid: PatchGrid,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("image0", image0, size.pixels())?;
        check_len("image1", image1, size.pixels())?;
        check_len("patch_flow", patch_flow, grid.len() * 2)?;
        let out = self.empty(size.pixels() * 2);
        let [w, h] = dims(size);
        self.launch(
            &DENSIFY,
            &[image0, image1, patch_flow, &out],
            &[
                w,
                h,
                grid.patch_px as u32,
                grid.stride_px as u32,
                grid.columns as u32,
                grid.rows as u32,
            ],
            (size.width_px, size.height_px),
        );
        Ok(out)
    }

    fn refine(
        &self,
        image0: &Self::Buf,
        image1: &Self::Buf,
        flow: &Self::Buf,
        size: Size,
        params: RefineParams,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("image0", image0, size.pixels())?;
        check_len("flow", flow, size.pixels() * 2)?;
        let warped = self.warp(image1, flow, size, 1)?;
        let [w, h] = dims(size);
        let grid = (size.width_px, size.height_px);
        let derivatives = self.empty(size.pixels() * 8);
        self.launch(
            &REFINE_DERIVATIVES,
            &[image0, &warped, &derivatives],
            &[w, h],
            grid,
        );
        let increment = self.zeros(size.pixels() * 2)?;
        let coefficients = self.empty(size.pixels() * 6);
        for _ in 0..params.outer_iterations {
            self.launch(
                &REFINE_COEFFICIENTS,
                &[&derivatives, flow, &increment, &coefficients],
                &[
                    w,
                    h,
                    params.alpha.to_bits(),
                    params.delta.to_bits(),
                    params.gamma.to_bits(),
                ],
                grid,
            );
            for _ in 0..params.sor_iterations {
                for parity in 0..2 {
                    self.launch(
                        &REFINE_SOR,
                        &[&coefficients, flow, &increment],
                        &[w, h, params.omega.to_bits(), parity],
                        grid,
                    );
                }
            }
        }
        let out = self.empty(size.pixels() * 2);
        let len = size.pixels() * 2;
        let row = 1024usize;
        self.launch(
            &ADD,
            &[flow, &increment, &out],
            &[len as u32, row as u32],
            (row, len.div_ceil(row)),
        );
        Ok(out)
    }

    fn warp(
        &self,
        image: &Self::Buf,
        flow: &Self::Buf,
        size: Size,
        channels: usize,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("image", image, size.pixels() * channels)?;
        check_len("flow", flow, size.pixels() * 2)?;
        let out = self.empty(size.pixels() * channels);
        let [w, h] = dims(size);
        self.launch(
            &WARP,
            &[image, flow, &out],
            &[w, h, channels as u32],
            (size.width_px, size.height_px),
        );
        Ok(out)
    }

    fn consistency(
        &self,
        forward: &Self::Buf,
        backward: &Self::Buf,
        size: Size,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("forward", forward, size.pixels() * 2)?;
        check_len("backward", backward, size.pixels() * 2)?;
        let out = self.empty(size.pixels());
        self.launch(
            &CONSISTENCY,
            &[forward, backward, &out],
            &dims(size),
            (size.width_px, size.height_px),
        );
        Ok(out)
    }

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
    ) -> Result<Self::Buf, ShaderError> {
        check_len("current", current, size.pixels() * 3)?;
        check_len("carried", carried, size.pixels() * 3)?;
        check_len("mask", mask, size.pixels())?;
        check_len("luma_now", luma_now, size.pixels())?;
        check_len("luma_carried", luma_carried, size.pixels())?;
        let out = self.empty(size.pixels() * 3);
        let [w, h] = dims(size);
        self.launch(
            &BLEND,
            &[current, carried, mask, luma_now, luma_carried, &out],
            &[w, h, strength.to_bits(), tolerance.to_bits()],
            (size.width_px, size.height_px),
        );
        Ok(out)
    }
}

/// [`CpuOps`] or [`GpuOps`], chosen by the device: the WGSL kernels on burn's wgpu device, the
/// reference on burn-flex.
#[derive(Clone, Debug)]
pub enum AnyOps {
    /// The plain-Rust reference.
    Cpu(CpuOps),
    /// The WGSL kernels.
    Gpu(GpuOps),
}

impl AnyOps {
    /// The kernels for `device`.
    pub fn for_device(device: &Device) -> Result<Self, ShaderError> {
        if *device == Device::flex() {
            Ok(Self::Cpu(CpuOps))
        } else {
            Ok(Self::Gpu(GpuOps::new(device)?))
        }
    }
}

impl GpuBuf {
    /// The data of a float tensor on burn's wgpu device, as a kernel buffer, without a copy:
    /// the buffer is the tensor's own memory (made contiguous first if it is a view).
    pub fn from_tensor(tensor: Tensor<1>) -> Result<Self, ShaderError> {
        // A reshape of a strided view lays the data out contiguously; of a contiguous one it
        // is free.
        let len = tensor.dims()[0];
        let primitive = tensor
            .reshape([len])
            .try_into_primitive::<Cube>()
            .map_err(|err| {
                ShaderError::Device(format!(
                    "the WGSL kernels need a tensor on burn's wgpu device ({err:?})"
                ))
            })?;
        if primitive.dtype != burn::tensor::DType::F32 || !primitive.is_contiguous() {
            return Err(ShaderError::Shape(format!(
                "the WGSL kernels need contiguous f32 data, got {:?}",
                primitive.dtype
            )));
        }
        Ok(Self {
            handle: primitive.handle,
            len,
        })
    }

    /// The buffer as a `[len]` float tensor on `device` (burn's wgpu device), without a copy.
    pub fn into_tensor(self, device: &Device) -> Result<Tensor<1>, ShaderError> {
        // A one-value tensor on the device lends its client and device handle.
        let probe = Tensor::<1>::zeros([1], device)
            .try_into_primitive::<Cube>()
            .map_err(|err| {
                ShaderError::Device(format!(
                    "the WGSL kernels need burn's wgpu device, not {device:?} ({err:?})"
                ))
            })?;
        let tensor = burn::backend::wgpu::CubeTensor::new_contiguous(
            probe.client,
            probe.device,
            burn::tensor::Shape::new([self.len]),
            self.handle,
            burn::tensor::DType::F32,
        );
        Ok(Tensor::from_primitive::<Cube>(tensor))
    }
}
