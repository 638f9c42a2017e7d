//! The UNet (`UNet2DConditionModel`) against diffusers 0.35.2: `tests/fixtures/sd/unet_sd15/`
//! (1x1-conv projections, one head count for all blocks, 2 resnets per down block) and
//! `unet_sd21/` (Linear projections, per-block head list, 1 resnet per down block), random
//! weights, two cases of batch 2 each, on burn-flex and on wgpu. Tolerance
//! `|got - expected| <= 1e-5 + 1e-4 * |expected|`, the general fixture tolerance (the README
//! would allow the UNet 2e-4 on GPU backends; lavapipe does not need it).

mod common;

use common::{ATOL, F16_RANGE_FRACTION, F16_RELATIVE_L2, RTOL, device, float, read_io};
use streamdiff_models::device::BackendChoice;
use streamdiff_models::sd::SdError;
use streamdiff_models::sd::precision::{Precision, cast_module};
use streamdiff_models::sd::unet::UNet2DConditionModel;
use streamdiff_testkit::{assert_close_f16, assert_tensor_close, sd_fixture};

fn check(choice: BackendChoice, fixture: &str) {
    let (device, name) = device(choice);
    let dir = sd_fixture(fixture);
    let model = UNet2DConditionModel::from_pretrained(&dir, &device).expect("UNet loads");
    let io = read_io(&dir.join("io.safetensors"));
    for case in 0..2 {
        let sample = float::<4>(&io[&format!("sample_{case}")], &device);
        let timesteps = float::<1>(&io[&format!("timestep_{case}")], &device);
        let context = float::<3>(&io[&format!("encoder_hidden_states_{case}")], &device);
        let out = model.forward(sample, timesteps, context);
        assert_tensor_close(
            &format!("{name} {fixture} case {case}"),
            out,
            &io[&format!("out_{case}")],
            ATOL,
            RTOL,
        );
    }
}

/// The UNet cast to f16 computes in f16 (its output differs from f32's) and still matches
/// diffusers' f32 output within the f16 tolerance; inputs and output stay f32.
fn check_f16(choice: BackendChoice, fixture: &str) {
    let (device, name) = device(choice);
    let dir = sd_fixture(fixture);
    let model = UNet2DConditionModel::from_pretrained(&dir, &device).expect("UNet loads");
    let io = read_io(&dir.join("io.safetensors"));
    let sample = float::<4>(&io["sample_0"], &device);
    let timesteps = float::<1>(&io["timestep_0"], &device);
    let context = float::<3>(&io["encoder_hidden_states_0"], &device);
    let full = model.forward(sample.clone(), timesteps.clone(), context.clone());
    let half = cast_module(model, Precision::F16).forward(sample, timesteps, context);
    assert_eq!(
        half.dtype(),
        burn::tensor::DType::F32,
        "output in the caller's dtype"
    );
    let changed: f32 = (half.clone() - full).abs().max().into_scalar();
    assert!(
        changed > 0.0,
        "{name}: f16 output equals f32 output: not computed in f16"
    );
    assert_close_f16(
        &format!("{name} {fixture} f16"),
        half,
        &io["out_0"],
        F16_RELATIVE_L2,
        F16_RANGE_FRACTION,
    );
}

#[test]
fn unet_sd21_in_f16_matches_diffusers_on_flex() {
    check_f16(BackendChoice::Flex, "unet_sd21");
}

#[test]
fn unet_sd21_in_f16_matches_diffusers_on_wgpu() {
    check_f16(BackendChoice::Wgpu, "unet_sd21");
}

#[test]
fn unet_sd15_matches_diffusers_on_flex() {
    check(BackendChoice::Flex, "unet_sd15");
}

#[test]
fn unet_sd15_matches_diffusers_on_wgpu() {
    check(BackendChoice::Wgpu, "unet_sd15");
}

#[test]
fn unet_sd21_matches_diffusers_on_flex() {
    check(BackendChoice::Flex, "unet_sd21");
}

#[test]
fn unet_sd21_matches_diffusers_on_wgpu() {
    check(BackendChoice::Wgpu, "unet_sd21");
}

#[test]
fn unsupported_configs_and_missing_weights_are_clear_errors() {
    let (device, _) = device(BackendChoice::Flex);
    let fixture = sd_fixture("unet_sd21");
    let dir = std::env::temp_dir().join(format!("streamdiff-unet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture.join("config.json")).expect("config"),
    )
    .expect("parses");

    // Settings outside the SD 1.x/2.x family are refused by name.
    for (key, value) in [
        ("class_embed_type", serde_json::json!("timestep")),
        (
            "mid_block_type",
            serde_json::json!("UNetMidBlock2DSimpleCrossAttn"),
        ),
        ("resnet_time_scale_shift", serde_json::json!("scale_shift")),
        ("attention_head_dim", serde_json::json!([2, 4, 8])),
        (
            "down_block_types",
            serde_json::json!(["CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"]),
        ),
    ] {
        let mut changed = config.clone();
        changed[key] = value;
        std::fs::write(dir.join("config.json"), changed.to_string()).expect("write");
        let err = UNet2DConditionModel::from_pretrained(&dir, &device).expect_err(key);
        assert!(
            matches!(err, SdError::BadConfig { .. }) && err.to_string().contains("config.json"),
            "{key}: {err}"
        );
    }

    // A config that does not match the weights: the first mismatching tensor is named.
    let mut wider = config.clone();
    wider["cross_attention_dim"] = serde_json::json!(64);
    std::fs::write(dir.join("config.json"), wider.to_string()).expect("write");
    std::fs::copy(
        fixture.join("diffusion_pytorch_model.safetensors"),
        dir.join("diffusion_pytorch_model.safetensors"),
    )
    .expect("copy");
    let err = UNet2DConditionModel::from_pretrained(&dir, &device).expect_err("shape");
    assert!(
        matches!(&err, SdError::ShapeMismatch { tensor, .. } if tensor.contains("attn2.to_k.weight")),
        "{err}"
    );

    // SD 1.5-style conv projections against SD 2.1's Linear ones.
    let mut conv = config;
    conv["use_linear_projection"] = serde_json::json!(false);
    std::fs::write(dir.join("config.json"), conv.to_string()).expect("write");
    let err = UNet2DConditionModel::from_pretrained(&dir, &device).expect_err("projection");
    assert!(
        matches!(
            err,
            SdError::ShapeMismatch { .. } | SdError::MissingTensor { .. }
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
