//! `streamdiff run --model <tiny SD pipeline>` end to end on the real Big Buck Bunny clip: the
//! StreamDiffusion engine runs as the stage, the output file has one frame per input frame at
//! the processing size, the summary reports the engine, and sampled output frames are the
//! engine stage's own results for the same captured frames. (The tiny random model's outputs
//! look much alike from frame to frame, so the timing alignment itself is checked in
//! pipeline/tests/engine_behaviour.rs, where it is exact.)

use std::path::PathBuf;

use streamdiff_e2e::{decode_video, luma, psnr, run_streamdiff, temp_dir};
use streamdiff_models::device::{BackendChoice, open_device};
use streamdiff_models::sd::pipeline::{LoadOptions, StableDiffusion};
use streamdiff_pipeline::io::decode::decode_frames;
use streamdiff_pipeline::io::source::SourceSpec;
use streamdiff_pipeline::stage::FrameStage;
use streamdiff_pipeline::stage::engine::settings::EngineSettings;
use streamdiff_pipeline::stage::engine::stage::EngineStage;
use streamdiff_pipeline::stage::engine::stream_batch::CfgType;
use streamdiff_testkit as testkit;
use streamdiff_types::FrameSize;

const SIZE_PX: usize = 64;
const FRAMES: usize = 6;
const PROMPT: &str = "a watercolor painting";
/// H.264 at quantiser 18 on 64x36 frames: the output is about 34 dB (luma) from the engine's
/// own result, and about 10 dB from the unprocessed input.
const MIN_LUMA_PSNR_DB: f64 = 30.0;

fn tiny_model() -> PathBuf {
    testkit::sd_fixture("stream_tiny")
}

#[test]
fn tiny_stable_diffusion_through_streamdiff_run() {
    let Some(clip) = testkit::require(testkit::data_file("video/bigbuckbunny.mp4")) else {
        return;
    };
    let dir = temp_dir("engine");
    let out = dir.join("engine.mp4");
    let size = SIZE_PX.to_string();
    let frames = FRAMES.to_string();
    let model = tiny_model();
    let result = run_streamdiff(&[
        "run",
        "--input",
        clip.to_str().expect("utf-8 path"),
        "--output",
        out.to_str().expect("utf-8 path"),
        "--size",
        &size,
        "--frames",
        &frames,
        "--device",
        "flex",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--prompt",
        PROMPT,
        "--t-index",
        "20,32,45",
        "--cfg",
        "self",
        "--guidance",
        "1.4",
        "--seed",
        "7",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "streamdiff run failed: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&result.stdout).expect("the summary is JSON");
    assert_eq!(summary["frames_in"], FRAMES);
    assert_eq!(summary["frames_out"], FRAMES);
    let engine = &summary["engine"];
    assert_eq!(engine["delay_frames"], 2);
    assert_eq!(
        engine["unet_calls"],
        FRAMES + 2,
        "each frame once, plus the flush"
    );
    assert_eq!(engine["unet_rows"], 3);

    let output = decode_video(&out).expect("output decodes");
    assert_eq!(
        output.frames.len(),
        FRAMES,
        "every input frame is in the output"
    );
    let input = decode_video(&clip).expect("input decodes");
    let want =
        FrameSize::new(input.frames[0].width_px, input.frames[0].height_px).fit_long_side(SIZE_PX);
    for frame in &output.frames {
        assert_eq!(FrameSize::new(frame.width_px, frame.height_px), want);
    }

    // Reference: the same capture, through the engine stage in this process.
    let captured = decode_frames(SourceSpec::File(clip.clone()), SIZE_PX, Some(FRAMES as u64))
        .expect("the clip decodes through the capture path");
    assert_eq!(captured.len(), FRAMES);
    let compute = open_device(BackendChoice::Flex).expect("flex");
    let settings = EngineSettings {
        prompt: PROMPT.into(),
        guidance_scale: 1.4,
        cfg_type: CfgType::SelfNegative,
        t_index_list: vec![20, 32, 45],
        seed: 7,
        ..EngineSettings::default()
    };
    let sd = StableDiffusion::from_pretrained(
        model.to_str().expect("utf-8 path"),
        &LoadOptions::default(),
        &compute.device,
    )
    .expect("model loads");
    let mut stage = EngineStage::from_model(sd, compute, settings).expect("stage");
    let mut expected = Vec::new();
    for frame in captured.iter().cloned() {
        expected.extend(stage.process(frame).expect("process"));
    }
    expected.extend(stage.finish().expect("finish"));
    assert_eq!(expected.len(), FRAMES);
    for index in [0, FRAMES - 1] {
        let got = luma(&output.frames[index].rgb);
        let same_db = psnr(&got, &luma(expected[index].rgb().expect("pixels")));
        let other_db = psnr(
            &got,
            &luma(expected[(index + 2) % FRAMES].rgb().expect("pixels")),
        );
        let input_db = psnr(&got, &luma(captured[index].rgb().expect("pixels")));
        eprintln!(
            "frame {index}: luma {same_db:.1} dB vs the engine, {other_db:.1} dB vs another frame's result, {input_db:.1} dB vs the input"
        );
        assert!(
            same_db >= MIN_LUMA_PSNR_DB,
            "frame {index}: {same_db:.1} dB"
        );
        assert!(
            same_db > input_db + 10.0,
            "frame {index} looks like the input"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
