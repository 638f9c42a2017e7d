//! Helpers shared by the engine tests: devices and tensor I/O; fixture paths and the tolerance
//! check come from `streamdiff-testkit`.

#![allow(dead_code)]

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use streamdiff_models::device::{BackendChoice, open_device};
use streamdiff_models::sd::weights::read_tensor_data;
use streamdiff_testkit::sd_fixture;

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
    read_tensor_data(&sd_fixture("stream").join(format!("{name}.safetensors")))
        .expect("fixture reads")
}

/// A float tensor from the fixture data.
pub fn float<const D: usize>(data: &TensorData, device: &Device) -> Tensor<D> {
    Tensor::from_data(data.clone().convert::<f32>(), device)
}
