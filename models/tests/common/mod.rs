//! Helpers shared by the Stable Diffusion parity tests: fixture paths, tensor I/O and the
//! tolerance check `|got - expected| <= atol + rtol * |expected|`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use streamdiff_models::device::{BackendChoice, open_device};
use streamdiff_models::sd::weights::read_tensor_data;

/// Absolute floor of the fixture tolerance (tools/reference/README.md).
pub const ATOL: f32 = 1e-5;
/// Relative part of the fixture tolerance.
pub const RTOL: f32 = 1e-4;
/// f16 compute against the f32 reference: relative L2 error of a whole output (see
/// [`assert_close_f16`]). Measured on the tiny fixtures: 2.5e-3 to 3.2e-3 on flex, 6.9e-3 to
/// 1.03e-2 on lavapipe (burn's wgpu f16 kernels accumulate more in f16).
pub const F16_RELATIVE_L2: f64 = 2e-2;
/// f16 compute: largest element error as a fraction of the output's largest magnitude.
pub const F16_RANGE_FRACTION: f32 = 0.02;

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

/// The half-precision check: f16 keeps ~3 significant digits per operation and burn's f16
/// kernels may accumulate in f16, so single elements near zero can be off by more than an
/// element-wise relative bound allows. Bounds the error of the whole tensor instead: relative
/// L2 error `|got - expected| / |expected|` at most `max_relative_l2`, and every element within
/// `max_range_fraction` of the largest magnitude of `expected`. Returns the relative L2 error.
pub fn assert_close_f16<const D: usize>(
    what: &str,
    got: Tensor<D>,
    expected: &TensorData,
    max_relative_l2: f64,
    max_range_fraction: f32,
) -> f64 {
    assert_eq!(
        got.dims().to_vec(),
        expected.shape().to_vec(),
        "{what}: shape"
    );
    let got = got.into_data().convert::<f32>();
    let got = got.as_slice::<f32>().expect("f32");
    let expected = expected.clone().convert::<f32>();
    let expected = expected.as_slice::<f32>().expect("f32");
    let range = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (mut error_sq, mut norm_sq, mut max_abs) = (0.0f64, 0.0f64, 0.0f32);
    for (a, b) in got.iter().zip(expected) {
        assert!(a.is_finite(), "{what}: non-finite value");
        error_sq += f64::from(a - b).powi(2);
        norm_sq += f64::from(*b).powi(2);
        max_abs = max_abs.max((a - b).abs());
    }
    let relative_l2 = (error_sq / norm_sq.max(f64::MIN_POSITIVE)).sqrt();
    eprintln!(
        "{what}: relative L2 error {relative_l2:.3e}, max abs error {max_abs:.3e} of range {range:.3}"
    );
    assert!(
        relative_l2 <= max_relative_l2,
        "{what}: relative L2 error {relative_l2:.3e} > {max_relative_l2:e}"
    );
    assert!(
        max_abs <= max_range_fraction * range,
        "{what}: max abs error {max_abs:.3e} > {max_range_fraction} x {range:.3}"
    );
    relative_l2
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

/// The 256 byte symbols of CLIP's byte-level alphabet in `bytes_to_unicode()` order: the
/// printable bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) as themselves, then the other bytes mapped to
/// U+0100 and up.
pub fn byte_symbols() -> Vec<String> {
    let printable = |b: u32| {
        (33..=126).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let shown = (0u32..256).filter(|&b| printable(b));
    let hidden = (256u32..).take(256 - 188);
    shown
        .chain(hidden)
        .map(|code| char::from_u32(code).expect("char").to_string())
        .collect()
}

/// Writes `vocab.json` and `merges.txt` for a tokenizer folder from the CLIP merges list, as
/// tools/reference/README.md describes; returns their sizes in bytes.
pub fn write_vocab_files(gz: &Path, dir: &Path) -> (usize, usize) {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(gz).expect("open gz"))
        .read_to_string(&mut text)
        .expect("gunzip");
    let lines: Vec<&str> = text.split('\n').collect();
    let merges = &lines[1..48895];
    let mut vocab: Vec<String> = byte_symbols();
    vocab.extend(byte_symbols().into_iter().map(|s| s + "</w>"));
    vocab.extend(merges.iter().map(|m| m.replace(' ', "")));
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    assert_eq!(vocab.len(), 49408);
    let entries: Vec<String> = vocab
        .iter()
        .enumerate()
        .map(|(id, token)| format!("{}: {id}", serde_json::to_string(token).expect("json")))
        .collect();
    let vocab_json = format!("{{{}}}", entries.join(", "));
    let merges_txt: String = std::iter::once("#version: 0.2\n".to_string())
        .chain(merges.iter().map(|m| format!("{m}\n")))
        .collect();
    std::fs::write(dir.join("vocab.json"), &vocab_json).expect("write vocab");
    std::fs::write(dir.join("merges.txt"), &merges_txt).expect("write merges");
    (vocab_json.len(), merges_txt.len())
}

/// A temporary `tokenizer/` folder with the given pad token; returns it and the file sizes.
pub fn tokenizer_dir(gz: &Path, name: &str, pad: &str) -> (PathBuf, (usize, usize)) {
    // Unique per call: tests running in parallel may ask for the same name.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "streamdiff-tok-{name}-{}-{call}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let sizes = write_vocab_files(gz, &dir);
    let special = serde_json::json!({
        "bos_token": {"content": "<|startoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false},
        "eos_token": {"content": "<|endoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false},
        "pad_token": pad,
        "unk_token": {"content": "<|endoftext|>", "lstrip": false, "normalized": true, "rstrip": false, "single_word": false},
    });
    std::fs::write(dir.join("special_tokens_map.json"), special.to_string()).expect("write");
    (dir, sizes)
}
