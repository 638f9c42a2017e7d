//! Choosing the compute device: wgpu (any GPU, or Mesa's lavapipe on CPU) or burn-flex (CPU).

use std::sync::OnceLock;

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuBackend;

use crate::ModelError;

/// Which backend to run models on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// A GPU through wgpu when one exists, else the faster CPU path (see `docs/PERFORMANCE.md`).
    Auto,
    /// burn's wgpu backend on the default adapter (lavapipe when the machine has no GPU).
    Wgpu,
    /// burn-flex, the pure-Rust CPU backend.
    Flex,
}

impl std::str::FromStr for BackendChoice {
    type Err = ModelError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "auto" => Ok(Self::Auto),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "flex" | "cpu" => Ok(Self::Flex),
            other => Err(ModelError::Device(format!(
                "unknown device `{other}`; use auto, wgpu or flex"
            ))),
        }
    }
}

/// A ready device and a human-readable description of it.
#[derive(Clone, Debug)]
pub struct ComputeDevice {
    /// The burn device tensors are created on.
    pub device: Device,
    /// `wgpu` or `flex`.
    pub backend: &'static str,
    /// The adapter's name, e.g. `NVIDIA H100 80GB HBM3` or `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub adapter: String,
    /// Whether the adapter is a CPU (lavapipe, flex).
    pub is_cpu: bool,
}

/// The wgpu runtime can be registered once per process; keep the first result.
static WGPU: OnceLock<Result<ComputeDevice, String>> = OnceLock::new();

fn wgpu_device() -> Result<ComputeDevice, ModelError> {
    WGPU.get_or_init(|| {
        let (device, setup) = Device::wgpu_options()
            .graphics_api(graphics_api_from_env())
            .init_with_setup()
            .map_err(|err| format!("no usable wgpu adapter: {err}"))?;
        let info = setup.adapter.get_info();
        Ok(ComputeDevice {
            device,
            backend: "wgpu",
            adapter: format!("{} ({:?})", info.name, info.backend),
            is_cpu: info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu,
        })
    })
    .clone()
    .map_err(ModelError::Device)
}

/// `WGPU_BACKEND` (the variable wgpu's own tools read) pins the graphics API; otherwise the
/// runtime picks one. Pinning Vulkan also keeps wgpu from probing OpenGL, which logs errors
/// on headless machines.
fn graphics_api_from_env() -> WgpuBackend {
    match std::env::var("WGPU_BACKEND")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "vulkan" | "vk" => WgpuBackend::Vulkan,
        "metal" | "mtl" => WgpuBackend::Metal,
        "dx12" | "d3d12" => WgpuBackend::Dx12,
        "gl" | "gles" | "opengl" => WgpuBackend::Gl,
        _ => WgpuBackend::Auto,
    }
}

fn flex_device() -> ComputeDevice {
    ComputeDevice {
        device: Device::flex(),
        backend: "flex",
        adapter: format!("burn-flex CPU ({} threads)", rayon_threads()),
        is_cpu: true,
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Opens the device for `choice`.
///
/// `Auto` takes a real GPU through wgpu when there is one. With only a CPU adapter it takes
/// burn-flex, which measured faster than lavapipe for the style network (docs/PERFORMANCE.md).
pub fn open_device(choice: BackendChoice) -> Result<ComputeDevice, ModelError> {
    match choice {
        BackendChoice::Wgpu => wgpu_device(),
        BackendChoice::Flex => Ok(flex_device()),
        BackendChoice::Auto => match wgpu_device() {
            Ok(device) if !device.is_cpu => Ok(device),
            _ => Ok(flex_device()),
        },
    }
}
