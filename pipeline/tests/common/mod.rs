//! Helpers shared by the engine tests: fixture paths, devices, tensor I/O and the tolerance
//! check `|got - expected| <= atol + rtol * |expected|`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use streamdiff_models::device::{BackendChoice, open_device};
use streamdiff_models::sd::weights::read_tensor_data;

/// `models/tests/fixtures/sd/<name>`.
pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/sd")
        .join(name)
}

/// Opens `choice` and returns its device and a name for messages.
pub fn open(choice: BackendChoice) -> (Device, String) {
    let compute = open_device(choice).expect("device opens");
    (
        compute.device,
        format!("{} ({})", compute.backend, compute.adapter),
    )
}

/// Every tensor of `stream/<name>.safetensors`.
pub fn read_case(name: &str) -> BTreeMap<String, TensorData> {
    read_tensor_data(&fixture_dir("stream").join(format!("{name}.safetensors")))
        .expect("fixture reads")
}

/// A float tensor from the fixture data.
pub fn float<const D: usize>(data: &TensorData, device: &Device) -> Tensor<D> {
    Tensor::from_data(data.clone().convert::<f32>(), device)
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
        let allowed = atol + rtol * b.abs();
        let ratio = if allowed > 0.0 {
            error / allowed
        } else if error > 0.0 {
            f32::INFINITY
        } else {
            0.0
        };
        if ratio > worst {
            worst = ratio;
            worst_at = index;
        }
    }
    if std::env::var_os("ENGINE_PARITY_VERBOSE").is_some() {
        eprintln!("{what}: max abs error {max_abs:.3e}, worst error/allowed {worst:.3}");
    }
    assert!(
        worst <= 1.0,
        "{what}: element {worst_at} is {} but expected {} (|err| {max_abs:.3e} > {atol} + {rtol}*|expected|)",
        got[worst_at],
        expected[worst_at]
    );
    (max_abs, worst)
}
