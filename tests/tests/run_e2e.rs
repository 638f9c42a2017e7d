//! `streamdiff run` end to end on the real Big Buck Bunny clip: the output has the input's
//! frame count and duration at the processing size, and a sampled frame equals the style
//! network applied to the matching input frame.

use streamdiff_e2e::{decode_video, luma, psnr, run_streamdiff, temp_dir};
use streamdiff_models::device::{BackendChoice, open_device};
use streamdiff_models::paths::default_multistyle_path;
use streamdiff_models::style::StyleMix;
use streamdiff_pipeline::io::decode::decode_frames;
use streamdiff_pipeline::io::source::SourceSpec;
use streamdiff_pipeline::stage::style::{StyleSettings, StyleStage};
use streamdiff_testkit as testkit;
use streamdiff_types::FrameSize;

/// Small frames keep the debug-build test quick; the path is the same at any size.
const SIZE_PX: usize = 96;
/// The output is H.264 (4:2:0, quantiser 18). Compared on luma, which the codec keeps at full
/// resolution, the output frame is ~36 dB from the model's own result (measured on lavapipe);
/// the unstylised input and the neighbouring frame's result score far lower.
const MIN_LUMA_PSNR_DB: f64 = 32.0;
const SAMPLE_FRAMES: [usize; 3] = [0, 60, 120];

#[test]
fn bigbuckbunny_through_streamdiff_run() {
    let Some(clip) = testkit::require(testkit::data_file("video/bigbuckbunny.mp4")) else {
        return;
    };
    let Some(model) = testkit::require(streamdiff_e2e::multistyle_model()) else {
        return;
    };
    let dir = temp_dir("bbb");
    let out = dir.join("bbb.mp4");
    let size = SIZE_PX.to_string();
    let result = run_streamdiff(&[
        "run",
        "--input",
        clip.to_str().expect("utf-8 path"),
        "--output",
        out.to_str().expect("utf-8 path"),
        "--size",
        &size,
        "--style",
        "style-19",
        "--device",
        "wgpu",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "streamdiff run failed: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&result.stdout).expect("the summary is JSON");

    let input = decode_video(&clip).expect("input decodes");
    let output = decode_video(&out).expect("output decodes");
    assert_eq!(
        output.frames.len(),
        input.frames.len(),
        "every input frame is in the output"
    );
    assert_eq!(summary["frames_in"], input.frames.len());
    assert_eq!(summary["frames_out"], input.frames.len());
    assert_eq!(summary["frames_dropped"], 0);

    let (input_w, input_h) = (input.frames[0].width_px, input.frames[0].height_px);
    let want = FrameSize::new(input_w, input_h).fit_long_side(SIZE_PX);
    for frame in &output.frames {
        assert_eq!(FrameSize::new(frame.width_px, frame.height_px), want);
    }
    let frame_time = input.frames[0]
        .duration
        .expect("input frames have durations");
    let (in_duration, out_duration) = (input.duration(), output.duration());
    assert!(
        out_duration.abs_diff(in_duration) <= frame_time,
        "durations differ: input {in_duration:?}, output {out_duration:?}"
    );

    // Reference: the same capture path, then the model, frame by frame.
    let captured = decode_frames(SourceSpec::File(clip.clone()), SIZE_PX, None)
        .expect("the clip decodes through the capture path");
    assert_eq!(captured.len(), input.frames.len());
    let compute = open_device(BackendChoice::Wgpu).expect("wgpu");
    let style = StyleMix::parse("style-19").expect("style");
    let stage = StyleStage::load(
        &model,
        compute,
        StyleSettings {
            style: style.clone(),
        },
    )
    .expect("model");
    assert_eq!(model, default_multistyle_path());
    let stylise = |index: usize| {
        let frame = &captured[index];
        stage
            .stylize_rgb(frame.rgb().expect("pixels"), frame.size(), &style)
            .expect("stylise")
    };
    for index in SAMPLE_FRAMES {
        let got = luma(&output.frames[index].rgb);
        let stylised_db = psnr(&got, &luma(&stylise(index)));
        let neighbour_db = psnr(&got, &luma(&stylise(index + 1)));
        let passthrough_db = psnr(&got, &luma(captured[index].rgb().expect("pixels")));
        eprintln!(
            "frame {index}: luma {stylised_db:.1} dB vs model, {neighbour_db:.1} dB vs the next \
             frame's result, {passthrough_db:.1} dB vs the input"
        );
        assert!(
            stylised_db >= MIN_LUMA_PSNR_DB,
            "frame {index}: output is {stylised_db:.1} dB from the model's result"
        );
        assert!(
            stylised_db > neighbour_db + 1.0,
            "frame {index}: output matches another frame better; timing is off"
        );
        assert!(
            stylised_db > passthrough_db + 10.0,
            "frame {index}: output looks like the input, not stylised"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
