//! Helpers shared by the Stable Diffusion parity tests: fixture paths, tensor I/O and the
//! tolerance check `|got - expected| <= atol + rtol * |expected|`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use streamdiff_models::device::{BackendChoice, open_device};
use streamdiff_models::sd::weights::read_tensor_data;

/// Absolute floor of the fixture tolerance (tools/reference/README.md).
pub const ATOL: f32 = 1e-5;
/// Relative part of the fixture tolerance.
pub const RTOL: f32 = 1e-4;

/// `models/tests/fixtures/sd/<name>`.
pub fn sd_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sd")
        .join(name)
}

/// Opens `choice` and returns its device and a name for messages.
pub fn device(choice: BackendChoice) -> (Device, String) {
    let compute = open_device(choice).expect("device opens");
    (
        compute.device,
        format!("{} ({})", compute.backend, compute.adapter),
    )
}

/// Every tensor of a safetensors file.
pub fn read_io(path: &Path) -> BTreeMap<String, TensorData> {
    read_tensor_data(path).expect("fixture io.safetensors reads")
}

/// A float tensor from the fixture data.
pub fn float<const D: usize>(data: &TensorData, device: &Device) -> Tensor<D> {
    Tensor::from_data(data.clone().convert::<f32>(), device)
}

/// An int tensor from the fixture data (i64 on disk).
pub fn int<const D: usize>(data: &TensorData, device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(data.clone().convert::<i32>(), device)
}

/// Compares `got` with `expected` and returns (max abs error, worst error / allowed ratio).
/// Panics with `what` when a value is outside `atol + rtol * |expected|` or shapes differ.
pub fn assert_close<const D: usize>(
    what: &str,
    got: Tensor<D>,
    expected: &TensorData,
    atol: f32,
    rtol: f32,
) -> (f32, f32) {
    assert_eq!(
        got.dims().to_vec(),
        expected.shape().to_vec(),
        "{what}: shape"
    );
    let got = got.into_data().convert::<f32>();
    let got = got.as_slice::<f32>().expect("f32");
    let expected = expected.clone().convert::<f32>();
    let expected = expected.as_slice::<f32>().expect("f32");
    let mut max_abs = 0.0f32;
    let mut worst = 0.0f32;
    let mut worst_at = 0;
    for (index, (a, b)) in got.iter().zip(expected).enumerate() {
        assert!(a.is_finite(), "{what}: non-finite value at {index}");
        let error = (a - b).abs();
        max_abs = max_abs.max(error);
        let ratio = error / (atol + rtol * b.abs());
        if ratio > worst {
            worst = ratio;
            worst_at = index;
        }
    }
    eprintln!("{what}: max abs error {max_abs:.3e}, worst error/allowed {worst:.3}");
    assert!(
        worst <= 1.0,
        "{what}: element {worst_at} is {} but expected {} (|err| > {atol} + {rtol}*|expected|)",
        got[worst_at],
        expected[worst_at]
    );
    (max_abs, worst)
}

/// Writes a safetensors file by hand (the format is a JSON header and raw little-endian data).
pub fn write_safetensors(path: &Path, tensors: &[(String, TensorData)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, tensor) in tensors {
        let bytes = tensor.as_bytes();
        let dtype = match tensor.dtype() {
            burn::tensor::DType::F32 => "F32",
            burn::tensor::DType::F16 => "F16",
            burn::tensor::DType::I64 => "I64",
            burn::tensor::DType::I32 => "I32",
            other => panic!("unsupported dtype {other:?}"),
        };
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype,
                "shape": tensor.shape().to_vec(),
                "data_offsets": [data.len(), data.len() + bytes.len()],
            }),
        );
        data.extend_from_slice(bytes);
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    std::fs::write(path, file).expect("write safetensors");
}
