//! The CLIP text encoder against transformers 4.57.1 (`tests/fixtures/sd/text_encoder_sd15/`,
//! quick_gelu, and `text_encoder_sd21/`, exact gelu; random weights, 2 layers), on burn-flex and
//! on wgpu: `last_hidden_state` and every hidden state, to `|got - expected| <= 1e-5 + 1e-4 *
//! |expected|`.

mod common;

use common::{ATOL, RTOL, device, int, read_io};
use streamdiff_models::device::BackendChoice;
use streamdiff_models::sd::clip::{ClipActivation, ClipTextConfig, ClipTextModel};
use streamdiff_testkit::{assert_tensor_close, sd_fixture};

fn check(choice: BackendChoice, fixture: &str, activation: ClipActivation) {
    let (device, name) = device(choice);
    let dir = sd_fixture(fixture);
    let config = ClipTextConfig::from_transformers_json(&dir.join("config.json")).expect("config");
    assert_eq!(config.hidden_act, activation);
    let model = ClipTextModel::from_pretrained(&dir, &device).expect("text encoder loads");
    let io = read_io(&dir.join("io.safetensors"));
    let (last, hidden) = model.forward_with_hidden_states(int::<2>(&io["input_ids"], &device));
    assert_eq!(hidden.len(), 3, "embeddings + 2 layers");
    for (index, state) in hidden.into_iter().enumerate() {
        let key = format!("hidden_states_{index}");
        assert_tensor_close(
            &format!("{name} {fixture} {key}"),
            state,
            &io[&key],
            ATOL,
            RTOL,
        );
    }
    assert_tensor_close(
        &format!("{name} {fixture} last_hidden_state"),
        last,
        &io["last_hidden_state"],
        ATOL,
        RTOL,
    );
}

#[test]
fn clip_sd15_matches_transformers_on_flex() {
    check(
        BackendChoice::Flex,
        "text_encoder_sd15",
        ClipActivation::QuickGelu,
    );
}

#[test]
fn clip_sd15_matches_transformers_on_wgpu() {
    check(
        BackendChoice::Wgpu,
        "text_encoder_sd15",
        ClipActivation::QuickGelu,
    );
}

#[test]
fn clip_sd21_matches_transformers_on_flex() {
    check(
        BackendChoice::Flex,
        "text_encoder_sd21",
        ClipActivation::Gelu,
    );
}

#[test]
fn clip_sd21_matches_transformers_on_wgpu() {
    check(
        BackendChoice::Wgpu,
        "text_encoder_sd21",
        ClipActivation::Gelu,
    );
}

#[test]
fn position_ids_buffer_is_ignored_and_unknown_tensors_rejected() {
    let (device, _) = device(BackendChoice::Flex);
    let fixture = sd_fixture("text_encoder_sd15");
    let dir = std::env::temp_dir().join(format!("streamdiff-clip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(fixture.join("config.json"), dir.join("config.json")).expect("copy");
    let mut tensors: Vec<_> = read_io(&fixture.join("model.safetensors"))
        .into_iter()
        .collect();

    // Older checkpoints store the constant position_ids buffer: it loads.
    tensors.push((
        "text_model.embeddings.position_ids".into(),
        burn::tensor::TensorData::new((0..77i64).collect::<Vec<_>>(), [1, 77]),
    ));
    common::write_safetensors(&dir.join("model.safetensors"), &tensors);
    ClipTextModel::from_pretrained(&dir, &device).expect("position_ids is ignored");

    // Anything else unknown is an error naming the tensor.
    tensors.push((
        "text_model.encoder.layers.2.mlp.fc1.bias".into(),
        burn::tensor::TensorData::new(vec![0.0f32; 37], [37]),
    ));
    common::write_safetensors(&dir.join("model.safetensors"), &tensors);
    let err = ClipTextModel::from_pretrained(&dir, &device).expect_err("unexpected tensor");
    assert!(
        err.to_string()
            .contains("text_model.encoder.layers.2.mlp.fc1.bias"),
        "{err}"
    );

    // A Linear weight with the wrong shape names the file's tensor, not the burn path.
    let tensors: Vec<_> = tensors
        .into_iter()
        .filter(|(name, _)| name != "text_model.encoder.layers.2.mlp.fc1.bias")
        .map(|(name, data)| {
            if name == "text_model.encoder.layers.0.mlp.fc1.weight" {
                (
                    name,
                    burn::tensor::TensorData::new(vec![0.0f32; 36 * 32], [36, 32]),
                )
            } else {
                (name, data)
            }
        })
        .collect();
    common::write_safetensors(&dir.join("model.safetensors"), &tensors);
    let err = ClipTextModel::from_pretrained(&dir, &device).expect_err("shape mismatch");
    assert!(
        err.to_string()
            .contains("text_model.encoder.layers.0.mlp.fc1.weight"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
