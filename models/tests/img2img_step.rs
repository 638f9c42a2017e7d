//! One StreamDiffusion-style img2img step through the SD 1.5 tiny components, chained stage to
//! stage on our own outputs (`tests/fixtures/sd/img2img_step/`, diffusers 0.35.2 with the LCM
//! scheduler at t = 359): tokenizer (when the shared CLIP vocabulary is there), text encoder,
//! TAESD encode, `add_noise`, UNet, the LCM step, TAESD decode. Each stage's output is compared
//! with the reference to `|got - expected| <= 1e-5 + 1e-4 * |expected|`, so a wiring error
//! between the modules (ids modulo the tiny vocabulary, latent scaling, image range) shows up.
//! The scheduler numbers come from the fixture's `params.json`.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{ATOL, RTOL, device, float, int, read_io};
use streamdiff_models::device::BackendChoice;
use streamdiff_models::sd::clip::ClipTextModel;
use streamdiff_models::sd::taesd::Taesd;
use streamdiff_models::sd::tokenizer::ClipTokenizer;
use streamdiff_models::sd::unet::UNet2DConditionModel;
use streamdiff_testkit as testkit;
use streamdiff_testkit::{assert_tensor_close, sd_fixture};

/// The tiny text encoder's vocabulary: the fixture feeds it the real ids modulo this.
const TINY_VOCAB: i64 = 1000;

fn check(choice: BackendChoice) {
    let (device, name) = device(choice);
    let dir = sd_fixture("img2img_step");
    let io = read_io(&dir.join("io.safetensors"));
    let params: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("params.json")).expect("params.json"),
    )
    .expect("parses");
    let number = |key: &str| params[key].as_f64().expect("number");

    if let Some(gz) = testkit::require(testkit::data_file(
        "tokenizers/clip/bpe_simple_vocab_16e6.txt.gz",
    )) {
        let (tokenizer_dir, _) = common::tokenizer_dir(&gz, "img2img", "<|endoftext|>");
        let tokenizer = ClipTokenizer::from_pretrained(&tokenizer_dir).expect("tokenizer");
        std::fs::remove_dir_all(&tokenizer_dir).ok();
        let prompt = params["prompt"].as_str().expect("prompt");
        let got: Vec<i64> = tokenizer
            .encode_padded(prompt)
            .into_iter()
            .map(i64::from)
            .collect();
        let expected = io["input_ids"].clone().convert::<i64>();
        assert_eq!(
            got.as_slice(),
            expected.as_slice::<i64>().expect("ids"),
            "input_ids"
        );
    }

    let ids: Tensor<2, Int> = int(&io["input_ids"], &device);
    let encoder_ids = ids.remainder_scalar(TINY_VOCAB);
    let expected_ids = io["text_encoder_input_ids"].clone().convert::<i64>();
    let got_ids = encoder_ids.clone().into_data().convert::<i64>();
    assert_eq!(
        got_ids.as_slice::<i64>().ok(),
        expected_ids.as_slice::<i64>().ok()
    );

    let text_encoder =
        ClipTextModel::from_pretrained(&sd_fixture("text_encoder_sd15"), &device).expect("clip");
    let prompt_embeds = text_encoder.forward(encoder_ids);
    assert_tensor_close(
        &format!("{name} prompt_embeds"),
        prompt_embeds.clone(),
        &io["prompt_embeds"],
        ATOL,
        RTOL,
    );

    let vae = Taesd::from_pretrained(&sd_fixture("taesd"), &device).expect("taesd");
    let image_u8 = io["image_u8"].clone();
    let image = streamdiff_models::image::rgb_to_tensor(
        image_u8.as_bytes(),
        streamdiff_types::FrameSize::new(64, 64),
        &device,
    ) * 2.0
        - 1.0;
    assert_tensor_close(
        &format!("{name} image"),
        image.clone(),
        &io["image"],
        ATOL,
        RTOL,
    );
    let latents = vae.encode(image) * vae.scaling_factor();
    assert_tensor_close(
        &format!("{name} latents"),
        latents.clone(),
        &io["latents"],
        ATOL,
        RTOL,
    );

    let (alpha, sigma) = (number("alpha_prod_t_sqrt"), number("beta_prod_t_sqrt"));
    let noise: Tensor<4> = float(&io["noise"], &device);
    let noisy = latents * alpha + noise * sigma;
    assert_tensor_close(
        &format!("{name} noisy_latents"),
        noisy.clone(),
        &io["noisy_latents"],
        ATOL,
        RTOL,
    );

    let unet =
        UNet2DConditionModel::from_pretrained(&sd_fixture("unet_sd15"), &device).expect("unet");
    let timestep = number("timestep") as f32;
    let timesteps = Tensor::<1>::from_data(TensorData::new(vec![timestep], [1]), &device);
    let model_pred = unet.forward(noisy.clone(), timesteps, prompt_embeds);
    assert_tensor_close(
        &format!("{name} model_pred"),
        model_pred.clone(),
        &io["model_pred"],
        ATOL,
        RTOL,
    );

    let pred_original = (noisy.clone() - model_pred * sigma) / alpha;
    assert_tensor_close(
        &format!("{name} pred_original_sample"),
        pred_original.clone(),
        &io["pred_original_sample"],
        ATOL,
        RTOL,
    );
    let denoised = pred_original * number("c_out") + noisy * number("c_skip");
    assert_tensor_close(
        &format!("{name} denoised"),
        denoised.clone(),
        &io["denoised"],
        ATOL,
        RTOL,
    );

    let decoded = vae.decode(denoised / vae.scaling_factor());
    assert_tensor_close(
        &format!("{name} decoded"),
        decoded,
        &io["decoded"],
        ATOL,
        RTOL,
    );
}

#[test]
fn img2img_step_matches_diffusers_on_flex() {
    check(BackendChoice::Flex);
}

#[test]
fn img2img_step_matches_diffusers_on_wgpu() {
    check(BackendChoice::Wgpu);
}
