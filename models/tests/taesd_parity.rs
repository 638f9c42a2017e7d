//! TAESD (`AutoencoderTiny`) against diffusers 0.35.2, and TAEF2's real weights.
//!
//! Parity: the fixture in `tests/fixtures/sd/taesd/` (random 12-channel weights, 64x64 image),
//! loaded from the diffusers folder and from the original `.pth` state dicts, on burn-flex and
//! on wgpu. Tolerance `|got - expected| <= 1e-5 + 1e-4 * |expected|` on every element.
//!
//! Real weights: TAEF2 (FLUX.2, 32 latent channels, fp16 `.pth`) from the shared test data
//! round-trips `astronaut.png` at 256x256 with a PSNR of at least 28 dB on wgpu.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{ATOL, F16_RANGE_FRACTION, F16_RELATIVE_L2, RTOL, device, float, read_io};
use streamdiff_models::device::BackendChoice;
use streamdiff_models::sd::SdError;
use streamdiff_models::sd::precision::{Precision, cast_module};
use streamdiff_models::sd::taesd::{Taesd, TaesdConfig};
use streamdiff_testkit as testkit;
use streamdiff_testkit::{assert_close_f16, assert_tensor_close, sd_fixture};
use streamdiff_types::FrameSize;

fn check_model(model: &Taesd, label: &str, device: &burn::tensor::Device) {
    let io = read_io(&sd_fixture("taesd/io.safetensors"));
    let latents = model.encode(float::<4>(&io["image"], device));
    assert_tensor_close(
        &format!("{label} encode"),
        latents,
        &io["latents"],
        ATOL,
        RTOL,
    );
    let decoded = model.decode(float::<4>(&io["latents"], device));
    assert_tensor_close(
        &format!("{label} decode"),
        decoded,
        &io["decoded"],
        ATOL,
        RTOL,
    );
    let decoded = model.decode(float::<4>(&io["latents_random"], device));
    assert_tensor_close(
        &format!("{label} decode (random latents)"),
        decoded,
        &io["decoded_random"],
        ATOL,
        RTOL,
    );
}

fn check_backend(choice: BackendChoice) {
    let (device, name) = device(choice);
    let dir = sd_fixture("taesd");
    let model = Taesd::from_pretrained(&dir, &device).expect("diffusers folder loads");
    check_model(&model, &format!("{name} diffusers"), &device);

    let config = TaesdConfig::from_diffusers_json(&dir.join("config.json")).expect("config");
    let model = Taesd::from_pth(
        &dir.join("taesd_encoder.pth"),
        &dir.join("taesd_decoder.pth"),
        &config,
        &device,
    )
    .expect(".pth state dicts load");
    check_model(&model, &format!("{name} pth"), &device);
}

/// TAESD cast to f16 against diffusers' f32 outputs: about 3 decimal digits per operation over
/// ~40 convolutions; the tolerance is well above the measured error (printed).
fn check_f16(choice: BackendChoice) {
    let (device, name) = device(choice);
    let model = Taesd::from_pretrained(&sd_fixture("taesd"), &device).expect("loads");
    let model = cast_module(model, Precision::F16);
    let io = read_io(&sd_fixture("taesd/io.safetensors"));
    let latents = model.encode(float::<4>(&io["image"], &device));
    assert_eq!(latents.dtype(), burn::tensor::DType::F32);
    let encode_error = assert_close_f16(
        &format!("{name} f16 encode"),
        latents,
        &io["latents"],
        F16_RELATIVE_L2,
        F16_RANGE_FRACTION,
    );
    let decoded = model.decode(float::<4>(&io["latents"], &device));
    let decode_error = assert_close_f16(
        &format!("{name} f16 decode"),
        decoded,
        &io["decoded"],
        F16_RELATIVE_L2,
        F16_RANGE_FRACTION,
    );
    println!(
        "{name} TAESD f16: relative L2 error encode {encode_error:.2e}, decode {decode_error:.2e}"
    );
}

#[test]
fn taesd_in_f16_matches_diffusers_on_flex() {
    check_f16(BackendChoice::Flex);
}

#[test]
fn taesd_in_f16_matches_diffusers_on_wgpu() {
    check_f16(BackendChoice::Wgpu);
}

#[test]
fn taesd_matches_diffusers_on_flex() {
    check_backend(BackendChoice::Flex);
}

#[test]
fn taesd_matches_diffusers_on_wgpu() {
    check_backend(BackendChoice::Wgpu);
}

/// A scratch folder for this process and test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("streamdiff-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn bad_weight_files_are_clear_errors() {
    let (device, _) = device(BackendChoice::Flex);
    let fixture = sd_fixture("taesd");
    let weights = common::read_io(&fixture.join("diffusion_pytorch_model.safetensors"));
    let dir = scratch("taesd-errors");
    std::fs::copy(fixture.join("config.json"), dir.join("config.json")).expect("copy");
    let target = dir.join("diffusion_pytorch_model.safetensors");
    let all: Vec<(String, TensorData)> = weights.into_iter().collect();

    // Missing tensor.
    let without: Vec<_> = all
        .iter()
        .filter(|(name, _)| name != "decoder.layers.18.bias")
        .cloned()
        .collect();
    common::write_safetensors(&target, &without);
    let err = Taesd::from_pretrained(&dir, &device).expect_err("missing tensor");
    assert!(matches!(err, SdError::MissingTensor { .. }), "{err}");
    assert!(
        err.to_string().contains("decoder.layers.19.conv.bias"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("diffusion_pytorch_model.safetensors"),
        "{err}"
    );

    // Unexpected tensor.
    let mut extra = all.clone();
    extra.push((
        "encoder.layers.99.weight".into(),
        TensorData::new(vec![0.0f32; 4], [4]),
    ));
    common::write_safetensors(&target, &extra);
    let err = Taesd::from_pretrained(&dir, &device).expect_err("unexpected tensor");
    assert!(matches!(err, SdError::UnexpectedTensor { .. }), "{err}");
    assert!(
        err.to_string().contains("encoder.layers.99.weight"),
        "{err}"
    );

    // Shape mismatch: a latent conv with 5 instead of 4 output channels.
    let mut wrong = all.clone();
    for (name, tensor) in &mut wrong {
        if name == "encoder.layers.14.bias" {
            *tensor = TensorData::new(vec![0.0f32; 5], [5]);
        }
    }
    common::write_safetensors(&target, &wrong);
    let err = Taesd::from_pretrained(&dir, &device).expect_err("shape mismatch");
    match &err {
        SdError::ShapeMismatch {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "encoder.layers.14.bias");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                (&[4][..], &[5][..])
            );
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }

    // Wrong dtype: integers where a float weight belongs.
    let mut ints = all.clone();
    for (name, tensor) in &mut ints {
        if name == "encoder.layers.14.bias" {
            *tensor = TensorData::new(vec![0i64; 4], [4]);
        }
    }
    common::write_safetensors(&target, &ints);
    let err = Taesd::from_pretrained(&dir, &device).expect_err("wrong dtype");
    assert!(matches!(err, SdError::WrongDtype { .. }), "{err}");
    assert!(err.to_string().contains("encoder.layers.14.bias"), "{err}");

    // Truncated files, safetensors and .pth.
    let bytes = std::fs::read(fixture.join("diffusion_pytorch_model.safetensors")).expect("read");
    std::fs::write(&target, &bytes[..bytes.len() / 2]).expect("write");
    let err = Taesd::from_pretrained(&dir, &device).expect_err("truncated safetensors");
    assert!(matches!(err, SdError::Corrupt { .. }), "{err}");
    let pth = std::fs::read(fixture.join("taesd_encoder.pth")).expect("read");
    let truncated = dir.join("taesd_encoder.pth");
    std::fs::write(&truncated, &pth[..pth.len() / 2]).expect("write");
    let config = TaesdConfig::from_diffusers_json(&dir.join("config.json")).expect("config");
    let err = streamdiff_models::sd::taesd::TaesdEncoder::from_pth(&truncated, &config, &device)
        .expect_err("truncated pth");
    assert!(matches!(err, SdError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("taesd_encoder.pth"), "{err}");

    // A missing file.
    std::fs::remove_file(&target).expect("remove");
    let err = Taesd::from_pretrained(&dir, &device).expect_err("missing file");
    assert!(matches!(err, SdError::MissingFile { .. }), "{err}");

    // The wrong architecture: TAEF2's config against TAESD weights.
    let err = Taesd::from_pth(
        &fixture.join("taesd_encoder.pth"),
        &fixture.join("taesd_decoder.pth"),
        &TaesdConfig::taef2(),
        &device,
    )
    .expect_err("wrong config");
    assert!(matches!(err, SdError::ShapeMismatch { .. }), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Peak signal-to-noise ratio of two images in `[0, 1]`, in dB.
fn psnr_db(a: Tensor<4>, b: Tensor<4>) -> f64 {
    let mse: f32 = (a - b).square().mean().into_scalar();
    10.0 * (1.0 / f64::from(mse)).log10()
}

#[test]
fn taef2_round_trip_psnr_on_wgpu() {
    let Some(encoder) = testkit::require(testkit::data_file("models/taef2/taef2_encoder.pth"))
    else {
        return;
    };
    let Some(decoder) = testkit::require(testkit::data_file("models/taef2/taef2_decoder.pth"))
    else {
        return;
    };
    let Some(photo) = testkit::require(testkit::data_file("images/astronaut.png")) else {
        return;
    };
    let (device, name) = device(BackendChoice::Wgpu);
    let model =
        Taesd::from_pth(&encoder, &decoder, &TaesdConfig::taef2(), &device).expect("TAEF2 loads");
    let photo = image::open(&photo).expect("photo decodes").to_rgb8();
    let side_px = 256;
    let small = image::imageops::resize(
        &photo,
        side_px,
        side_px,
        image::imageops::FilterType::CatmullRom,
    );
    let input = streamdiff_models::image::rgb_to_tensor(
        small.as_raw(),
        FrameSize::new(side_px as usize, side_px as usize),
        &device,
    );
    let latents = model.encoder.forward(input.clone());
    assert_eq!(latents.dims(), [1, 32, 32, 32], "TAEF2 latents");
    let decoded = model.decoder.forward(latents).clamp(0.0, 1.0);
    let psnr = psnr_db(decoded, input.clone());
    eprintln!("TAEF2 round trip on {name}: PSNR {psnr:.2} dB");
    assert!(psnr >= 28.0, "PSNR {psnr:.2} dB < 28 dB");
    // The check itself must be able to fail: a black image is far below.
    assert!(psnr_db(input.clone().zeros_like(), input) < 20.0);
}
