//! Live control through the one control surface: the engine's prompt and the stabiliser's
//! strength changed through `controls()` of a boxed stage (the stabiliser wrapping the
//! StreamDiffusion engine on the tiny fixture model, burn-flex) while frames flow, with no frame
//! lost; and the same through the runner, with a real source, two sinks and the metrics.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use streamdiff_models::device::{BackendChoice, ComputeDevice, open_device};
use streamdiff_models::sd::pipeline::{LoadOptions, StableDiffusion};
use streamdiff_pipeline::io::source::{CaptureConfig, SourceSpec, StreamInfo};
use streamdiff_pipeline::stage::engine::settings::EngineSettings;
use streamdiff_pipeline::stage::engine::stage::EngineStage;
use streamdiff_pipeline::stage::engine::stream_batch::CfgType;
use streamdiff_pipeline::stage::stabilise::{StabiliseSettings, StabiliseStage};
use streamdiff_pipeline::{
    FrameSink, FrameStage, RunConfig, Runner, SettingsError, SinkError, VideoFrame,
};
use streamdiff_testkit::sd_fixture;
use streamdiff_types::FrameSize;

const PROMPT_A: &str = "a watercolor painting of an astronaut";
const PROMPT_B: &str = "an oil painting of a red fox";
const SIZE: FrameSize = FrameSize::new(48, 32);

fn compute() -> ComputeDevice {
    open_device(BackendChoice::Flex).expect("flex opens")
}

fn engine(compute: &ComputeDevice) -> EngineStage {
    let model = StableDiffusion::from_pretrained(
        sd_fixture("stream_tiny").to_str().expect("utf-8 path"),
        &LoadOptions::default(),
        &compute.device,
    )
    .expect("stream_tiny loads");
    let settings = EngineSettings {
        prompt: PROMPT_A.into(),
        cfg_type: CfgType::None,
        t_index_list: vec![32, 45],
        seed: 5,
        ..EngineSettings::default()
    };
    EngineStage::from_model(model, compute.clone(), settings).expect("engine stage")
}

/// A moving gradient, so that consecutive frames differ and stabilisation has work to do.
fn frame(sequence: u64) -> VideoFrame {
    let mut rgb = Vec::with_capacity(SIZE.rgb_bytes());
    for y in 0..SIZE.height_px {
        for x in 0..SIZE.width_px {
            let v = ((x * 5 + y * 3) as u64 + sequence * 4) % 256;
            rgb.extend_from_slice(&[v as u8, (255 - v) as u8, (v / 2) as u8]);
        }
    }
    let mut frame = VideoFrame::from_rgb(rgb, SIZE).expect("frame");
    frame.sequence = sequence;
    frame.pts = Duration::from_millis(40 * sequence);
    frame
}

/// Feeds `frames` frames; before frame `change_at`, `change` runs on the stage. After the
/// change the next frame waits a moment, so the prompt worker has the new embeddings ready
/// for the frame after (it is off the hot path: the stage never waits for it).
fn drive(
    stage: &mut dyn FrameStage,
    frames: u64,
    change_at: u64,
    change: impl Fn(&dyn FrameStage),
) -> Vec<VideoFrame> {
    let mut out = Vec::new();
    for sequence in 0..frames {
        if sequence == change_at {
            change(stage);
        }
        if sequence == change_at + 1 {
            std::thread::sleep(Duration::from_secs(2));
        }
        out.extend(stage.process(frame(sequence)).expect("process"));
    }
    out.extend(stage.finish().expect("finish"));
    out
}

fn rgb(frame: &VideoFrame) -> Vec<u8> {
    frame.rgb().expect("pixels").to_vec()
}

#[test]
fn prompt_and_strength_change_through_the_controls_of_a_boxed_wrapped_stage() {
    const FRAMES: u64 = 8;
    const CHANGE_AT: u64 = 4;
    let compute = compute();
    let mut wrapped: Box<dyn FrameStage> = Box::new(
        StabiliseStage::new(
            Box::new(engine(&compute)),
            &compute,
            StabiliseSettings { strength: 0.8 },
        )
        .expect("stabiliser"),
    );
    let controls = wrapped.controls();
    assert!(controls.style.is_none(), "no style network in this stage");
    let (engine_settings, stabilise) = (
        controls
            .engine
            .clone()
            .expect("the inner engine's settings"),
        controls
            .stabilise
            .clone()
            .expect("the stabiliser's settings"),
    );
    // Invalid values are refused and change nothing.
    assert_eq!(
        stabilise.try_update(|s| s.strength = 1.5),
        Err(SettingsError::StabiliseStrength(1.5))
    );
    assert!(
        engine_settings
            .try_update(|s| s.t_index_list = vec![60])
            .is_err()
    );
    assert_eq!(
        engine_settings.read(|s| s.t_index_list.clone()),
        vec![32, 45]
    );

    let out = drive(wrapped.as_mut(), FRAMES, CHANGE_AT, |_| {
        engine_settings
            .try_update(|s| s.prompt = PROMPT_B.into())
            .expect("valid prompt");
        stabilise
            .try_update(|s| s.strength = 0.0)
            .expect("valid strength");
    });
    // The reference: the engine alone, driven the same way, the prompt changed on its own
    // handle at the same frame.
    let mut plain: Box<dyn FrameStage> = Box::new(engine(&compute));
    let plain_settings = plain.controls().engine.expect("engine settings");
    let reference = drive(plain.as_mut(), FRAMES, CHANGE_AT, |_| {
        plain_settings.update(|s| s.prompt = PROMPT_B.into());
    });

    let sequences: Vec<u64> = out.iter().map(|f| f.sequence).collect();
    assert_eq!(sequences, (0..FRAMES).collect::<Vec<_>>(), "no frame lost");
    let engine_stats = wrapped
        .stats()
        .engine
        .expect("engine stats through the wrapper");
    assert_eq!(engine_stats.prompt_swaps, 1, "{engine_stats:?}");
    assert_eq!(
        (engine_stats.frames_in, engine_stats.frames_out),
        (FRAMES, FRAMES)
    );
    // The engine's outputs are one frame late (two steps): frames 0..CHANGE_AT-1 came out
    // while the stabiliser was on, the rest after it was turned off.
    let stabilised_until = CHANGE_AT as usize - 1;
    for k in 1..stabilised_until {
        assert_ne!(rgb(&out[k]), rgb(&reference[k]), "frame {k} is stabilised");
    }
    for k in stabilised_until..FRAMES as usize {
        assert_eq!(
            rgb(&out[k]),
            rgb(&reference[k]),
            "frame {k}: strength 0 passes the engine's output through"
        );
    }
    // And the prompt did change the picture: the last frame is prompt B's, not prompt A's.
    let mut only_a: Box<dyn FrameStage> = Box::new(engine(&compute));
    let all_a = drive(only_a.as_mut(), FRAMES, FRAMES, |_| {});
    assert_ne!(
        rgb(&out[FRAMES as usize - 1]),
        rgb(&all_a[FRAMES as usize - 1])
    );
    assert_eq!(rgb(&out[0]), rgb(&all_a[0]), "frame 0 is prompt A's");
}

/// A sink that hands every frame to the test.
struct Collect {
    name: &'static str,
    started: Option<StreamInfo>,
    frames: mpsc::Sender<(&'static str, u64, FrameSize)>,
    finished: bool,
}

impl FrameSink for Collect {
    fn name(&self) -> String {
        self.name.into()
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError> {
        self.started = Some(*stream);
        Ok(())
    }

    fn push(&mut self, frame: &VideoFrame) -> Result<(), SinkError> {
        assert!(self.started.is_some(), "started before the first frame");
        let _ = self.frames.send((self.name, frame.sequence, frame.size()));
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        assert!(!self.finished, "finished once");
        self.finished = true;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_applies_live_changes_while_frames_flow_into_every_sink() {
    const FRAMES: u64 = 24;
    let compute = compute();
    let stage = StabiliseStage::new(
        Box::new(engine(&compute)),
        &compute,
        StabiliseSettings::default(),
    )
    .expect("stabiliser");
    let mut runner = Runner::new(Box::new(stage));
    let (controls, metrics, input_tap) = (runner.controls(), runner.metrics(), runner.input_tap());
    assert!(input_tap.read(Option::is_none));
    let mut capture = CaptureConfig::new(SourceSpec::TestPattern { live: false }, SIZE.width_px);
    capture.test_pattern_frames = FRAMES;
    let (sender, frames) = mpsc::channel();
    let sinks: Vec<Box<dyn FrameSink>> = ["display", "recording"]
        .into_iter()
        .map(|name| {
            Box::new(Collect {
                name,
                started: None,
                frames: sender.clone(),
                finished: false,
            }) as Box<dyn FrameSink>
        })
        .collect();
    drop(sender);
    // A controller thread: once a few frames are out, it changes the prompt and the
    // strength, as the GUI or the relay would.
    let controller = {
        let (controls, metrics) = (controls.clone(), metrics.clone());
        std::thread::spawn(move || {
            while metrics.read(|m| m.frames_out) < 3 {
                std::thread::sleep(Duration::from_millis(10));
            }
            let engine = controls.engine.expect("engine");
            engine
                .try_update(|s| s.prompt = PROMPT_B.into())
                .expect("prompt");
            let stabilise = controls.stabilise.expect("stabilise");
            stabilise
                .try_update(|s| s.strength = 0.3)
                .expect("strength");
        })
    };
    let summary = runner
        .run(RunConfig::new(capture), sinks, Default::default())
        .await
        .expect("the run succeeds");
    controller.join().expect("controller");
    let received: Vec<(&str, u64, FrameSize)> = frames.try_iter().collect();
    for name in ["display", "recording"] {
        let sequences: Vec<u64> = received
            .iter()
            .filter(|(sink, _, _)| *sink == name)
            .map(|(_, sequence, _)| *sequence)
            .collect();
        assert_eq!(
            sequences,
            (0..FRAMES).collect::<Vec<_>>(),
            "{name}: every frame, in order"
        );
    }
    assert!(
        received
            .iter()
            .all(|(_, _, size)| size.long_side_px() == SIZE.width_px)
    );
    assert_eq!((summary.frames_in, summary.frames_out), (FRAMES, FRAMES));
    assert_eq!(summary.frames_dropped, 0);
    assert!(!summary.running);
    assert!(summary.fps > 0.0 && summary.latency_p50_ms > 0.0 && summary.stage_p50_ms > 0.0);
    assert_eq!(summary.backend, "flex");
    let engine = summary.engine.clone().expect("engine stats in the metrics");
    assert_eq!(engine.prompt_swaps, 1, "{engine:?}");
    assert_eq!(
        metrics.get(),
        summary,
        "the handle holds the final snapshot"
    );
    assert_eq!(
        controls.stabilise.expect("stabilise").get().strength,
        0.3,
        "the change stayed"
    );
    // The stage stays in the runner: a second source runs without loading again.
    let mut again = CaptureConfig::new(SourceSpec::TestPattern { live: false }, SIZE.width_px);
    again.test_pattern_frames = 3;
    let second = runner
        .run(RunConfig::new(again), Vec::new(), Default::default())
        .await
        .expect("a second run");
    assert_eq!(second.frames_out, 3);
    assert!(runner.stage().is_some());
}
