//! Compute precision of the SD modules: f32 (the default, what the parity tests hold to 1e-4)
//! or f16 (half the memory traffic; what diffusers users run on GPUs).
//!
//! A module is loaded (or initialised) in f32 and then cast parameter by parameter with
//! [`cast_module`]. Its `forward` casts the inputs to the module's precision and the output
//! back to the caller's dtype, so callers (the scheduler maths, the parity tests) keep working
//! in f32 whatever the module computes in. burn widens the statistics of GroupNorm and
//! LayerNorm to f32 by itself, so the norms do not overflow in f16.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, FloatDType, Tensor};

use super::SdError;

/// The float precision a module computes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit IEEE floats; needs a device with f16 arithmetic (wgpu's `shader-f16`).
    F16,
}

impl Precision {
    /// burn's dtype for this precision.
    pub fn dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
        }
    }

    /// `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = SdError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            other => Err(SdError::UnknownPrecision(other.to_owned())),
        }
    }
}

/// Casts every float parameter of `module` to `precision`.
pub fn cast_module<M: Module>(module: M, precision: Precision) -> M {
    module.map(&mut CastFloats {
        dtype: precision.dtype(),
    })
}

struct CastFloats {
    dtype: FloatDType,
}

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.dtype;
        param.map(|tensor| tensor.cast(dtype))
    }
}

/// `tensor` in `dtype` (no work when it already is).
pub(crate) fn to_dtype<const D: usize>(tensor: Tensor<D>, dtype: DType) -> Tensor<D> {
    if tensor.dtype() == dtype {
        tensor
    } else {
        tensor.cast(FloatDType::from(dtype))
    }
}
