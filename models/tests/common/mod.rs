//! Helpers shared by the Stable Diffusion parity tests: devices, tensor I/O, the tolerances;
//! fixture paths and the tolerance checks come from `streamdiff-testkit`.

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
/// `assert_close_f16`). Measured on the tiny fixtures: 2.5e-3 to 3.2e-3 on flex, 6.9e-3 to
/// 1.03e-2 on lavapipe (burn's wgpu f16 kernels accumulate more in f16).
pub const F16_RELATIVE_L2: f64 = 2e-2;
/// f16 compute: largest element error as a fraction of the output's largest magnitude.
pub const F16_RANGE_FRACTION: f32 = 0.02;

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
