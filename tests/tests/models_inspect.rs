//! `streamdiff models inspect` on a diffusers folder built from the SD fixtures
//! (models/tests/fixtures/sd/), by path and by repo id through a Hugging Face cache named in
//! `HF_HUB_CACHE`, and on bad input (one `error:` line, a non-zero exit).

use std::path::{Path, PathBuf};
use std::process::Output;

use streamdiff_e2e::{run_streamdiff, streamdiff_command, temp_dir};
use streamdiff_models::sd::weights::read_tensors;
use streamdiff_testkit::workspace_root;

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("models/tests/fixtures/sd").join(name)
}

/// Builds a diffusers SD folder: the SD 1.5 tiny UNet and text encoder, a two-token tokenizer,
/// and (optionally) the tiny TAESD as `vae/`.
fn build_model(root: &Path, vae: bool) {
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("dir");
        std::fs::copy(from, to).expect("copy");
    };
    std::fs::create_dir_all(root).expect("root");
    std::fs::write(
        root.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}"#,
    )
    .expect("index");
    for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
        copy(
            &fixture("unet_sd15").join(name),
            &root.join("unet").join(name),
        );
        if vae {
            copy(&fixture("taesd").join(name), &root.join("vae").join(name));
        }
    }
    for name in ["config.json", "model.safetensors"] {
        copy(
            &fixture("text_encoder_sd15").join(name),
            &root.join("text_encoder").join(name),
        );
    }
    let tokenizer = root.join("tokenizer");
    std::fs::create_dir_all(&tokenizer).expect("tokenizer");
    std::fs::write(
        tokenizer.join("vocab.json"),
        r#"{"<|startoftext|>": 0, "<|endoftext|>": 1}"#,
    )
    .expect("vocab");
    std::fs::write(tokenizer.join("merges.txt"), "#version: 0.2\n").expect("merges");
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn tensor_count(path: &Path) -> usize {
    read_tensors(path).expect("fixture reads").len()
}

#[test]
fn inspect_shows_every_component_of_a_folder() {
    let root = temp_dir("inspect-folder");
    build_model(&root, true);
    let output = run_streamdiff(&["models", "inspect", root.to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let unet_tensors = tensor_count(&fixture("unet_sd15/diffusion_pytorch_model.safetensors"));
    let text_tensors = tensor_count(&fixture("text_encoder_sd15/model.safetensors"));
    for needle in [
        root.display().to_string(),
        "StableDiffusionPipeline".into(),
        "unet/diffusion_pytorch_model.safetensors (fp32 file), F32".into(),
        format!("in {unet_tensors} tensors"),
        "down [CrossAttnDownBlock2D, DownBlock2D]".into(),
        "up [UpBlock2D, CrossAttnUpBlock2D]".into(),
        "block_out_channels [16, 32]".into(),
        "attention heads [2, 2]".into(),
        "cross_attention_dim 32".into(),
        "text_encoder/model.safetensors (fp32 file), F32".into(),
        format!("in {text_tensors} tensors"),
        "hidden_size 32, layers 2, heads 4, hidden_act quick_gelu".into(),
        "vocab 2 tokens".into(),
        "TAESD: vae/diffusion_pytorch_model.safetensors".into(),
        "latent channels 4".into(),
    ] {
        assert!(stdout.contains(&needle), "missing `{needle}` in:\n{stdout}");
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn inspect_finds_a_repo_id_in_the_hub_cache() {
    let cache = temp_dir("inspect-hub");
    let repo = cache.join("models--test-org--tiny-sd");
    let snapshot = repo.join("snapshots/0123abcd");
    build_model(&snapshot, false);
    std::fs::create_dir_all(repo.join("refs")).expect("refs");
    std::fs::write(repo.join("refs/main"), "0123abcd").expect("refs/main");
    let output =
        streamdiff_command(&["models", "inspect", "test-org/tiny-sd", "--variant", "fp16"])
            .env("HF_HUB_CACHE", &cache)
            .output()
            .expect("streamdiff starts");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&snapshot.display().to_string()), "{stdout}");
    // fp16 asked for, only fp32 there: the fallback is taken and said.
    assert!(
        stdout.contains("unet/diffusion_pytorch_model.safetensors (fp32 file)"),
        "{stdout}"
    );
    // No vae/: said, not an error.
    assert!(stdout.contains("vae           none (optional"), "{stdout}");

    // A repo id that is not there: where it looked.
    let output = streamdiff_command(&["models", "inspect", "test-org/absent"])
        .env("HF_HUB_CACHE", &cache)
        .output()
        .expect("streamdiff starts");
    let line = single_error_line(&output);
    assert!(line.contains("models--test-org--absent"), "{line}");
    std::fs::remove_dir_all(&cache).ok();
}

/// Checks a failure is one `error:` line and returns it.
fn single_error_line(output: &Output) -> String {
    let (stdout, stderr) = text(output);
    assert!(!output.status.success(), "should fail: {stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

#[test]
fn inspect_of_a_missing_path_is_one_error_line() {
    let output = run_streamdiff(&["models", "inspect", "/nonexistent/streamdiff/sd-model"]);
    let line = single_error_line(&output);
    assert!(line.contains("/nonexistent/streamdiff/sd-model"), "{line}");
    assert!(line.contains("not found"), "{line}");
}

#[test]
fn inspect_of_a_folder_without_model_index_is_one_error_line() {
    let root = temp_dir("inspect-no-index");
    build_model(&root, true);
    std::fs::remove_file(root.join("model_index.json")).expect("remove");
    let output = run_streamdiff(&["models", "inspect", root.to_str().expect("utf-8")]);
    let line = single_error_line(&output);
    assert!(line.contains("model_index.json"), "{line}");
    std::fs::remove_dir_all(&root).ok();
}
