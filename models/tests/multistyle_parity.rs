//! Parity of the burn port of `multistyle26.onnx` with onnxruntime.
//!
//! Fixtures come from `tools/multistyle_reference.py` (onnxruntime, CPU, float32) on crops of
//! the shared `astronaut.png`. Tolerance: max absolute difference 2e-4 on outputs in [0, 1]
//! (float32 with a different convolution order; measured about 1e-6 on flex and lavapipe).

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use streamdiff_models::device::{BackendChoice, open_device};
use streamdiff_models::multistyle::MultiStyleNet;
use streamdiff_models::paths::default_multistyle_path;
use streamdiff_models::style::StyleMix;
use streamdiff_testkit as testkit;
use streamdiff_types::FrameSize;

const MAX_ABS_ERROR: f32 = 2e-4;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/multistyle")
}

fn check_backend(choice: BackendChoice) {
    let Some(model_path) = testkit::require(testkit::installed(
        default_multistyle_path(),
        "default model",
    )) else {
        return;
    };
    let Some(photo_path) = testkit::require(testkit::data_file("images/astronaut.png")) else {
        return;
    };
    let compute = open_device(choice).expect("device opens");
    let model = MultiStyleNet::from_pretrained(&model_path, &compute.device).expect("model loads");
    let photo = image::open(&photo_path).expect("photo decodes").to_rgb8();
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("cases.json")).expect("cases.json"),
    )
    .expect("cases.json parses");

    for case in cases["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let crop: Vec<u32> = case["crop"]
            .as_array()
            .expect("crop")
            .iter()
            .map(|v| v.as_u64().expect("int") as u32)
            .collect();
        let (x, y, w, h) = (crop[0], crop[1], crop[2], crop[3]);
        let region = image::imageops::crop_imm(&photo, x, y, w, h).to_image();
        let weights: Vec<f32> = case["style_weights"]
            .as_array()
            .expect("weights")
            .iter()
            .map(|v| v.as_f64().expect("float") as f32)
            .collect();
        let spec = weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w > 0.0)
            .map(|(i, w)| format!("{i}:{w}"))
            .collect::<Vec<_>>()
            .join(",");
        let style = StyleMix::parse(&spec).expect("style");

        let input = streamdiff_models::image::rgb_to_tensor(
            region.as_raw(),
            FrameSize::new(w as usize, h as usize),
            &compute.device,
        );
        let output: Tensor<4> = model.stylize(input, &style);
        assert_eq!(
            output.dims(),
            [1, 3, h as usize, w as usize],
            "{name}: shape"
        );
        let got: TensorData = output.into_data();
        let got = got.as_slice::<f32>().expect("f32 output");

        let bytes = std::fs::read(fixture_dir().join(case["output"].as_str().expect("file")))
            .expect("fixture file");
        let expected: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got.len(), expected.len(), "{name}: element count");
        let max_error = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{} {name}: max abs error {max_error:.2e}", compute.backend);
        assert!(
            max_error <= MAX_ABS_ERROR,
            "{name} on {}: max abs error {max_error} > {MAX_ABS_ERROR}",
            compute.adapter
        );
    }
}

#[test]
fn matches_onnxruntime_on_flex() {
    check_backend(BackendChoice::Flex);
}

#[test]
fn matches_onnxruntime_on_wgpu() {
    check_backend(BackendChoice::Wgpu);
}

#[test]
fn missing_and_corrupt_model_files_are_clear_errors() {
    let compute = open_device(BackendChoice::Flex).expect("flex");
    let dir = std::env::temp_dir().join(format!("streamdiff-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let missing = dir.join("nope.onnx");
    let err = MultiStyleNet::from_pretrained(&missing, &compute.device).expect_err("missing");
    assert!(err.to_string().contains("make run"), "{err}");

    let corrupt = dir.join("corrupt.onnx");
    std::fs::write(&corrupt, b"this is not a protobuf \xff\xff\xff").expect("write");
    let err = MultiStyleNet::from_pretrained(&corrupt, &compute.device).expect_err("corrupt");
    assert!(err.to_string().contains("corrupt"), "{err}");

    // A valid ONNX file without our tensors: an empty protobuf message decodes, but has no graph.
    let empty = dir.join("empty.onnx");
    std::fs::write(&empty, b"").expect("write");
    let err = MultiStyleNet::from_pretrained(&empty, &compute.device).expect_err("empty");
    assert!(err.to_string().contains("corrupt"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
