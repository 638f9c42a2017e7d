//! The UNet (`UNet2DConditionModel`) against diffusers 0.35.2: `tests/fixtures/sd/unet_sd15/`
//! (1x1-conv projections, one head count for all blocks, 2 resnets per down block) and
//! `unet_sd21/` (Linear projections, per-block head list, 1 resnet per down block), random
//! weights, two cases of batch 2 each, on burn-flex and on wgpu. Tolerance
//! `|got - expected| <= 1e-5 + 1e-4 * |expected|`, the general fixture tolerance (the README
//! would allow the UNet 2e-4 on GPU backends; lavapipe does not need it).

mod common;

use common::{ATOL, RTOL, assert_close, device, float, read_io, sd_fixture};
use streamdiff_models::device::BackendChoice;
use streamdiff_models::sd::unet::UNet2DConditionModel;

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
        assert_close(
            &format!("{name} {fixture} case {case}"),
            out,
            &io[&format!("out_{case}")],
            ATOL,
            RTOL,
        );
    }
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
