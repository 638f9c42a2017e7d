//! Behaviour of the stream-batch engine and its stage on the tiny fixture model (burn-flex):
//! steady state against plain sequential denoising, honest timing (every input gives one output,
//! with its own timestamp), the similarity filter inside the stage, live prompt changes, and a
//! frame-size change.

mod common;

use std::time::Duration;

use burn::tensor::{Tensor, TensorData};
use common::read_case;
use streamdiff_models::device::{BackendChoice, ComputeDevice, open_device};
use streamdiff_models::image::tensor_to_rgb;
use streamdiff_models::sd::pipeline::{LoadOptions, StableDiffusion};
use streamdiff_pipeline::stage::engine::settings::EngineSettings;
use streamdiff_pipeline::stage::engine::stage::{EngineStage, EngineStats};
use streamdiff_pipeline::stage::engine::stream_batch::{CfgType, Guidance, PromptEmbeds};
use streamdiff_pipeline::stage::engine::{EngineConfig, EngineParts, StreamEngine};
use streamdiff_pipeline::stage::{FrameStage, VideoFrame};
use streamdiff_testkit::{assert_tensor_close, sd_fixture};
use streamdiff_types::FrameSize;

const PROMPT_A: &str = "a watercolor painting of an astronaut";
const PROMPT_B: &str = "an oil painting of a red fox";

fn compute() -> ComputeDevice {
    open_device(BackendChoice::Flex).expect("flex opens")
}

fn tiny_model(compute: &ComputeDevice) -> StableDiffusion {
    StableDiffusion::from_pretrained(
        sd_fixture("stream_tiny").to_str().expect("utf-8 path"),
        &LoadOptions::default(),
        &compute.device,
    )
    .expect("stream_tiny loads")
}

fn load_parts(config: EngineConfig, prompt: &str, compute: &ComputeDevice) -> EngineParts {
    StreamEngine::from_model(
        tiny_model(compute),
        config,
        prompt,
        "",
        compute.device.clone(),
    )
    .expect("engine")
}

fn stage(settings: EngineSettings) -> EngineStage {
    let compute = compute();
    EngineStage::from_model(tiny_model(&compute), compute, settings).expect("stage")
}

/// The fixture's 48x32 frames, packed RGB.
fn fixture_frames() -> Vec<Vec<u8>> {
    let frames = read_case("frames")["frames_u8"].clone();
    let bytes = frames.as_bytes();
    let size = 32 * 48 * 3;
    bytes.chunks(size).map(<[u8]>::to_vec).collect()
}

fn video_frame(rgb: Vec<u8>, sequence: u64, width_px: usize, height_px: usize) -> VideoFrame {
    let mut frame = VideoFrame::from_rgb(rgb, FrameSize::new(width_px, height_px)).expect("frame");
    frame.pts = Duration::from_millis(40 * sequence);
    frame.duration = Some(Duration::from_millis(40));
    frame.sequence = sequence;
    frame
}

fn rgb(frame: &VideoFrame) -> Vec<u8> {
    frame.rgb().expect("pixels").to_vec()
}

fn to_image(rgb: &[u8], device: &burn::tensor::Device) -> Tensor<4> {
    let values: Vec<f32> = rgb
        .iter()
        .map(|&v| f32::from(v) / 255.0 * 2.0 - 1.0)
        .collect();
    Tensor::<4>::from_data(TensorData::new(values, [1, 32, 48, 3]), device).permute([0, 3, 1, 2])
}

fn settings(cfg_type: CfgType, t_index_list: Vec<usize>) -> EngineSettings {
    EngineSettings {
        prompt: PROMPT_A.into(),
        negative_prompt: String::new(),
        guidance_scale: 1.5,
        delta: 1.0,
        cfg_type,
        t_index_list,
        seed: 5,
        ssf_threshold: None,
        ssf_max_skip_frames: 10,
    }
}

/// Denoises each frame on its own, step by step, with the batch's noise rows (classic CFG
/// with the negative prompt when guidance is `full`).
fn sequential(
    engine: &StreamEngine,
    unet: &streamdiff_models::sd::unet::UNet2DConditionModel,
    prompt: &PromptEmbeds,
    latents: Tensor<4>,
    slot: usize,
) -> Tensor<4> {
    let guidance = engine.config().guidance;
    let batch = engine.batch().expect("batch");
    let frames = batch.frames();
    let [c, h, w] = batch.latent_shape();
    let noise = |row: usize| {
        batch
            .init_noise()
            .clone()
            .narrow(0, row, 1)
            .reshape([1, c, h, w])
    };
    let steps = &batch.schedule().steps;
    let device = latents.device();
    let mut x = latents * steps[0].alpha_prod_t_sqrt + noise(0) * steps[0].beta_prod_t_sqrt;
    let mut x0 = x.clone();
    for (index, step) in steps.iter().enumerate() {
        let timestep =
            Tensor::<1>::from_data(TensorData::new(vec![step.timestep as f32], [1]), &device);
        let mut eps = unet.forward(x.clone(), timestep.clone(), prompt.cond.clone());
        if guidance.active() && guidance.cfg_type == CfgType::Full {
            let uncond = unet.forward(x.clone(), timestep, prompt.uncond.clone());
            eps = uncond.clone() + (eps - uncond) * guidance.scale;
        }
        let predicted = (x.clone() - eps * step.beta_prod_t_sqrt) / step.alpha_prod_t_sqrt;
        x0 = predicted * step.c_out + x.clone() * step.c_skip;
        if let Some(next) = steps.get(index + 1) {
            x = x0.clone() * next.alpha_prod_t_sqrt
                + noise((index + 1) * frames + slot) * next.beta_prod_t_sqrt;
        }
    }
    x0
}

fn check_steady_state(frames_per_call: usize, cfg_type: CfgType) {
    let compute = compute();
    let config = EngineConfig {
        t_index_list: vec![16, 32, 45],
        frame_buffer_size: frames_per_call,
        guidance: Guidance {
            cfg_type,
            scale: 1.5,
            delta: 1.0,
        },
        seed: 9,
        ..EngineConfig::default()
    };
    let parts = load_parts(config, PROMPT_A, &compute);
    let mut engine = parts.engine;
    let device = compute.device.clone();
    let unet = streamdiff_models::sd::unet::UNet2DConditionModel::from_pretrained(
        &sd_fixture("unet_sd21"),
        &device,
    )
    .expect("unet");
    let frames = fixture_frames();
    // A constant input: frame 0 (and frame 3 in the second slot).
    let images: Vec<Tensor<4>> = [0, 3]
        .iter()
        .take(frames_per_call)
        .map(|&i| to_image(&frames[i], &device))
        .collect();
    let input = Tensor::cat(images, 0);
    engine.prepare(FrameSize::new(48, 32)).expect("prepare");
    let latents = engine.encode(input);
    let prompt = parts.prompts.encode_pair(PROMPT_A, "");
    let expected: Vec<Tensor<4>> = (0..frames_per_call)
        .map(|slot| {
            sequential(
                &engine,
                &unet,
                &prompt,
                latents.clone().narrow(0, slot, 1),
                slot,
            )
        })
        .collect();
    let expected = Tensor::cat(expected, 0).into_data();
    for call in 0..5 {
        let x_t = engine.noised(latents.clone()).expect("noised");
        let x0 = engine.denoise(x_t).expect("denoise");
        if call >= engine.delay_calls() {
            assert_tensor_close(
                &format!("steady state f={frames_per_call} {cfg_type} call {call}"),
                x0,
                &expected,
                1e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn steady_state_equals_sequential_denoising() {
    check_steady_state(1, CfgType::None);
    check_steady_state(1, CfgType::Full);
}

#[test]
fn steady_state_with_two_frames_per_call() {
    check_steady_state(2, CfgType::None);
}

fn run_frames(stage: &mut EngineStage, frames: &[Vec<u8>]) -> Vec<VideoFrame> {
    let mut out = Vec::new();
    for (i, rgb) in frames.iter().enumerate() {
        out.extend(
            stage
                .process(video_frame(rgb.clone(), i as u64, 48, 32))
                .expect("process"),
        );
    }
    out.extend(stage.finish().expect("finish"));
    out
}

fn stats(stage: &EngineStage) -> EngineStats {
    stage.stats().engine.expect("engine stats")
}

#[test]
fn every_input_gives_one_output_with_its_own_timestamp() {
    let frames = fixture_frames()[..6].to_vec();
    let mut stage = stage(settings(CfgType::SelfNegative, vec![16, 32, 45]));
    assert_eq!(stage.delay_frames(), 2);
    let first = stage
        .process(video_frame(frames[0].clone(), 0, 48, 32))
        .expect("process");
    assert!(first.is_empty(), "nothing comes out while the batch fills");
    let mut out = first;
    for (i, rgb) in frames.iter().enumerate().skip(1) {
        out.extend(
            stage
                .process(video_frame(rgb.clone(), i as u64, 48, 32))
                .expect("process"),
        );
    }
    assert_eq!(out.len(), 4, "six in, four out before the flush");
    out.extend(stage.finish().expect("finish"));
    let sequences: Vec<u64> = out.iter().map(|f| f.sequence).collect();
    assert_eq!(sequences, vec![0, 1, 2, 3, 4, 5]);
    assert!(
        out.iter().all(|f| !f.is_on_host()),
        "the engine's outputs stay on the device until something reads them"
    );
    for frame in &out {
        assert_eq!(frame.pts, Duration::from_millis(40 * frame.sequence));
        assert_eq!(frame.size(), FrameSize::new(48, 32));
    }
    let stats = stats(&stage);
    assert_eq!((stats.frames_in, stats.frames_out), (6, 6));
    assert_eq!(stats.unet_calls, 8, "six calls and a two-call flush");
    assert_eq!(stats.flush_calls, 2);
    assert_eq!(stats.unet_rows, 3, "self guidance adds no rows");

    // StreamDiffusion's own `__call__` (the engine called frame by frame, each output labelled
    // with the newest frame): its output k is aligned output k - 2.
    let compute = compute();
    let settings = settings(CfgType::SelfNegative, vec![16, 32, 45]);
    let mut engine = load_parts(settings.engine_config(), PROMPT_A, &compute).engine;
    let direct: Vec<Vec<u8>> = frames
        .iter()
        .map(|rgb| {
            let image = to_image(rgb, &compute.device);
            let images = engine.img2img(image).expect("img2img");
            tensor_to_rgb((images + 1.0) / 2.0).expect("read back")
        })
        .collect();
    for k in 2..6 {
        assert_eq!(
            direct[k],
            rgb(&out[k - 2]),
            "aligned output {} is unaligned output {k}",
            k - 2
        );
    }
}

#[test]
fn similarity_filter_skips_repeats_and_re_emits_the_previous_output() {
    let frames = fixture_frames();
    let mut with_ssf = settings(CfgType::None, vec![32, 45]);
    with_ssf.ssf_threshold = Some(0.98);
    with_ssf.ssf_max_skip_frames = 2;
    let mut stage = stage(with_ssf);
    // 0 x5 (repeats), then 1 and 2 (real changes), then 2 again.
    let inputs: Vec<Vec<u8>> = [0, 0, 0, 0, 0, 1, 2, 2]
        .iter()
        .map(|&i| frames[i].clone())
        .collect();
    let out = run_frames(&mut stage, &inputs);
    assert_eq!(out.len(), inputs.len(), "no frame lost");
    let stats = stats(&stage);
    // Identical frames have similarity 1: skipped until the cap lets one through
    // (skip_count 1, 2, 3 > 2 -> forced), so calls 1-3 skip, 4 is forced.
    assert_eq!(stats.ssf.skipped, 4, "{stats:?}");
    assert_eq!(stats.ssf.forced, 1);
    assert_eq!(stats.ssf.longest_skip_run, 3);
    assert_eq!(
        stats.unet_calls,
        4 + 1,
        "four processed frames and a one-call flush"
    );
    // Skips re-emit the previous output.
    for k in [1, 2, 3] {
        assert_eq!(rgb(&out[k]), rgb(&out[0]), "skip {k} re-emits output 0");
    }
    assert_eq!(
        rgb(&out[7]),
        rgb(&out[6]),
        "the repeat of frame 2 is skipped"
    );
    // A changed frame is never skipped: its output is new.
    assert_ne!(rgb(&out[5]), rgb(&out[4]));
    assert_ne!(rgb(&out[6]), rgb(&out[5]));
}

#[test]
fn prompt_change_takes_effect_within_the_pipeline_delay_and_loses_no_frame() {
    let frames = fixture_frames()[..6].to_vec();
    let base = settings(CfgType::None, vec![32, 45]);
    let reference = |prompt: &str| {
        let mut settings = base.clone();
        settings.prompt = prompt.into();
        run_frames(&mut stage(settings), &frames)
    };
    let all_a = reference(PROMPT_A);
    let all_b = reference(PROMPT_B);

    let mut live = stage(base);
    let handle = live.controls().engine.expect("engine controls");
    let mut out = Vec::new();
    for (i, rgb) in frames.iter().enumerate() {
        if i == 3 {
            handle.update(|settings| settings.prompt = PROMPT_B.into());
            assert!(
                live.wait_for_prompt(Duration::from_secs(60))
                    .expect("prompt worker"),
                "the embeddings are computed off the hot path"
            );
        }
        out.extend(
            live.process(video_frame(rgb.clone(), i as u64, 48, 32))
                .expect("process"),
        );
    }
    out.extend(live.finish().expect("finish"));
    assert_eq!(out.len(), 6, "no frame lost around the change");
    assert_eq!(stats(&live).prompt_swaps, 1);
    // Frames whose steps all ran before the swap are prompt A's; frames that entered after it
    // are prompt B's: the change is complete len(t_index_list) - 1 = 1 frame after the swap.
    for k in 0..2 {
        assert_eq!(rgb(&out[k]), rgb(&all_a[k]), "frame {k} is prompt A's");
    }
    assert_ne!(
        rgb(&out[2]),
        rgb(&all_a[2]),
        "frame 2 finished with prompt B"
    );
    for k in 3..6 {
        assert_eq!(rgb(&out[k]), rgb(&all_b[k]), "frame {k} is prompt B's");
    }
    assert_ne!(
        rgb(&all_a[4]),
        rgb(&all_b[4]),
        "the prompts differ in the output"
    );
}

#[test]
fn live_settings_and_size_change_keep_every_frame() {
    let frames = fixture_frames()[..4].to_vec();
    let mut stage = stage(settings(CfgType::SelfNegative, vec![32, 45]));
    let handle = stage.controls().engine.expect("engine controls");
    let mut out = Vec::new();
    let mut sequence = 0u64;
    let mut feed = |stage: &mut EngineStage, rgb: Vec<u8>, w: usize, h: usize| {
        let produced = stage
            .process(video_frame(rgb, sequence, w, h))
            .expect("process");
        sequence += 1;
        produced
    };
    for rgb in &frames {
        out.extend(feed(&mut stage, rgb.clone(), 48, 32));
    }
    // Guidance, cfg type, seed and a longer schedule: applied at the next frame.
    handle
        .try_update(|settings| {
            settings.guidance_scale = 1.8;
            settings.cfg_type = CfgType::Initialize;
            settings.seed = 77;
            settings.t_index_list = vec![20, 32, 45];
        })
        .expect("valid settings");
    for rgb in &frames {
        out.extend(feed(&mut stage, rgb.clone(), 48, 32));
    }
    assert_eq!(stage.delay_frames(), 2);
    assert_eq!(stats(&stage).unet_rows, 4, "initialize adds one row");
    // A new frame size (24x16): the frames in flight come out, new buffers are made.
    let small: Vec<u8> = frames[0]
        .chunks(3)
        .step_by(2)
        .take(24 * 16)
        .flatten()
        .copied()
        .collect();
    for _ in 0..3 {
        out.extend(feed(&mut stage, small.clone(), 24, 16));
    }
    out.extend(stage.finish().expect("finish"));
    let sequences: Vec<u64> = out.iter().map(|f| f.sequence).collect();
    assert_eq!(sequences, (0..11).collect::<Vec<u64>>());
    assert!(out[8..].iter().all(|f| f.size() == FrameSize::new(24, 16)));
    let stats = stats(&stage);
    assert_eq!(
        stats.reallocations, 3,
        "first size, new schedule length, new size"
    );
    assert_eq!((stats.frames_in, stats.frames_out), (11, 11));
}

#[test]
fn stabilisation_around_the_engine_keeps_every_frame_in_order() {
    use streamdiff_pipeline::stage::stabilise::{StabiliseSettings, StabiliseStage};

    let frames = fixture_frames()[..5].to_vec();
    let inner = stage(settings(CfgType::SelfNegative, vec![16, 32, 45]));
    let mut stabilised = StabiliseStage::new(
        Box::new(inner),
        &compute(),
        StabiliseSettings { strength: 0.8 },
    )
    .expect("stabiliser");
    assert_eq!(stabilised.delay_frames(), 2);
    let mut out = Vec::new();
    for (i, rgb) in frames.iter().enumerate() {
        out.extend(
            stabilised
                .process(video_frame(rgb.clone(), i as u64, 48, 32))
                .expect("process"),
        );
    }
    out.extend(stabilised.finish().expect("finish"));
    let sequences: Vec<u64> = out.iter().map(|f| f.sequence).collect();
    assert_eq!(sequences, vec![0, 1, 2, 3, 4]);
    assert!(out.iter().all(|f| f.size() == FrameSize::new(48, 32)));
}
