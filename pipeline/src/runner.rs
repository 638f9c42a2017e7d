//! Runs source → input queue → model stage → output queue → output, and reports a summary.
//!
//! Capture runs GStreamer's own threads and pushes into the input queue. The model stage and
//! the output each run on a dedicated thread (both block: on the GPU and on the encoder), and
//! talk to the async queues through the runtime handle. `stop` asks for a graceful end: EOS
//! flows from the source, everything queued is processed, the output file is finalised.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::PipelineError;
use crate::io::sink::{Output, OutputSpec};
use crate::io::source::{Capture, CaptureConfig, StreamInfo};
use crate::metrics::{DurationStats, RunSummary};
use crate::queue::{FrameQueue, QueuePolicy};
use crate::stage::FrameStage;
use crate::stage::frame::VideoFrame;

/// Everything a run needs besides the stage.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Where frames come from.
    pub capture: CaptureConfig,
    /// Where they go.
    pub output: OutputSpec,
    /// Frames the output queue holds.
    pub output_queue_capacity: usize,
    /// How long to wait for the output to finalise after the last frame.
    pub finish_timeout: Duration,
}

impl RunConfig {
    /// A run from `capture` to `output` with default queue sizes.
    pub fn new(capture: CaptureConfig, output: OutputSpec) -> Self {
        Self {
            capture,
            output,
            output_queue_capacity: 4,
            finish_timeout: Duration::from_secs(30),
        }
    }
}

/// Where a run is, for progress displays.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Stream time of the last frame written.
    pub position: Duration,
    /// The input's duration, for finite inputs.
    pub duration: Option<Duration>,
    /// Frames written so far.
    pub frames_out: u64,
    /// Frames dropped so far.
    pub frames_dropped: u64,
}

/// What the output thread hands back.
struct OutputReport {
    frames_out: u64,
    latency: DurationStats,
    result: Result<(), PipelineError>,
}

/// Runs the pipeline until the source ends, `stop` is cancelled, or something fails.
pub async fn run(
    config: RunConfig,
    mut stage: Box<dyn FrameStage>,
    progress: Option<watch::Sender<Progress>>,
    stop: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    config.output.check()?;
    let started = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    let input = Arc::new(FrameQueue::new(
        config.capture.queue_capacity,
        config.capture.queue_policy(),
    ));
    let output_queue = Arc::new(FrameQueue::new(
        config.output_queue_capacity,
        QueuePolicy::Backpressure,
    ));

    let capture = Capture::start(&config.capture, input.clone(), runtime.clone())?;
    let stream_info: Arc<Mutex<Option<StreamInfo>>> = Arc::new(Mutex::new(None));

    // Model stage thread.
    let stage_thread = {
        let input = input.clone();
        let output_queue = output_queue.clone();
        let runtime = runtime.clone();
        std::thread::Builder::new()
            .name("model-stage".into())
            .spawn(move || {
                let mut timings = DurationStats::default();
                let mut result = Ok(());
                let mut output_failed = false;
                while let Some(frame) = runtime.block_on(input.pop()) {
                    let begun = Instant::now();
                    match stage.process_aligned(frame) {
                        Ok(frames) => {
                            timings.record(begun.elapsed());
                            if push_all(&runtime, &output_queue, frames).is_err() {
                                output_failed = true;
                                break; // The output failed; it reports why.
                            }
                        }
                        Err(err) => {
                            result = Err(err);
                            input.close();
                            break;
                        }
                    }
                }
                // A delayed stage still holds frames: they come out at the end, so every
                // input frame has its output.
                if result.is_ok() && !output_failed {
                    match stage.finish() {
                        Ok(frames) => {
                            let _ = push_all(&runtime, &output_queue, frames);
                        }
                        Err(err) => result = Err(err),
                    }
                }
                output_queue.close();
                (timings, result)
            })
            .map_err(|err| PipelineError::Gstreamer(format!("cannot start thread: {err}")))?
    };

    // Output thread: starts the output on the first frame, when the size is known.
    let output_thread = {
        let output_queue = output_queue.clone();
        let input = input.clone();
        let runtime = runtime.clone();
        let spec = config.output.clone();
        let finish_timeout = config.finish_timeout;
        let stream_info = stream_info.clone();
        let progress = progress.clone();
        std::thread::Builder::new()
            .name("output".into())
            .spawn(move || {
                let mut report = OutputReport {
                    frames_out: 0,
                    latency: DurationStats::default(),
                    result: Ok(()),
                };
                let mut output: Option<Output> = None;
                while let Some(frame) = runtime.block_on(output_queue.pop()) {
                    if output.is_none() {
                        let info = stream_info_for(&frame, &stream_info);
                        match Output::start(&spec, info) {
                            Ok(started) => output = Some(started),
                            Err(err) => {
                                report.result = Err(err);
                                break;
                            }
                        }
                    }
                    let Some(sink) = output.as_ref() else { break };
                    let (captured_at, pts) = (frame.captured_at, frame.pts);
                    if let Err(err) = sink.push(frame) {
                        report.result = Err(err);
                        break;
                    }
                    report.latency.record(captured_at.elapsed());
                    report.frames_out += 1;
                    if let Some(progress) = &progress {
                        progress.send_modify(|p| {
                            p.position = pts;
                            p.frames_out = report.frames_out;
                            p.frames_dropped = input.dropped();
                        });
                    }
                }
                if report.result.is_err() {
                    // Unblock the stage and the capture; nothing more can be written.
                    output_queue.close();
                    input.close();
                }
                if let Some(sink) = output {
                    let finished = sink.finish(finish_timeout);
                    if report.result.is_ok() {
                        report.result = finished;
                    }
                }
                report
            })
            .map_err(|err| PipelineError::Gstreamer(format!("cannot start thread: {err}")))?
    };

    // Supervise: forward stop requests, keep the progress display's duration fresh.
    let mut stop_sent = false;
    while !stage_thread.is_finished() {
        if let Some(info) = capture.stream_info() {
            let mut shared = stream_info.lock().unwrap_or_else(|p| p.into_inner());
            shared.get_or_insert(info);
        }
        if let Some(progress) = &progress {
            let duration = capture.duration();
            progress.send_modify(|p| p.duration = duration);
        }
        if !stop_sent && stop.is_cancelled() {
            capture.request_stop();
            stop_sent = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.cancelled(), if !stop_sent => {}
        }
    }
    let (stage_timings, stage_result) = join(stage_thread)?;
    let frames_in = capture.frames_captured();
    let dropped = input.dropped();
    let capture_end = tokio::task::spawn_blocking(move || capture.finish())
        .await
        .map_err(|err| PipelineError::Gstreamer(format!("capture shutdown failed: {err}")))?;
    let report = tokio::task::spawn_blocking(move || join(output_thread))
        .await
        .map_err(|err| PipelineError::Gstreamer(format!("output shutdown failed: {err}")))??;

    stage_result?;
    if frames_in == 0 {
        return Err(PipelineError::Input(match capture_end.error {
            Some(reason) => format!("cannot read input {}: {reason}", config.capture.source),
            None => format!("input {} has no video frames", config.capture.source),
        }));
    }
    report.result?;

    let wall_time_s = started.elapsed().as_secs_f64();
    Ok(RunSummary {
        frames_in,
        frames_out: report.frames_out,
        frames_dropped: dropped,
        wall_time_s,
        fps: report.frames_out as f64 / wall_time_s.max(1e-9),
        latency_p50_ms: report.latency.percentile_ms(50.0),
        latency_p95_ms: report.latency.percentile_ms(95.0),
        stage_p50_ms: stage_timings.percentile_ms(50.0),
        input_warning: capture_end.error,
    })
}

/// The stream description for the output: the capture's frame rate and the frame's size.
fn stream_info_for(frame: &VideoFrame, shared: &Mutex<Option<StreamInfo>>) -> StreamInfo {
    let framerate = shared
        .lock()
        .map(|info| info.map(|i| i.framerate))
        .unwrap_or(None)
        .unwrap_or((0, 1));
    StreamInfo {
        width_px: frame.width_px,
        height_px: frame.height_px,
        framerate,
    }
}

fn join<T>(thread: std::thread::JoinHandle<T>) -> Result<T, PipelineError> {
    thread
        .join()
        .map_err(|_| PipelineError::Gstreamer("a pipeline thread panicked".into()))
}

/// Pushes frames to the output queue in order; an error means the output has gone.
fn push_all(
    runtime: &tokio::runtime::Handle,
    queue: &FrameQueue<VideoFrame>,
    frames: Vec<VideoFrame>,
) -> Result<(), ()> {
    for frame in frames {
        if runtime.block_on(queue.push(frame)).is_err() {
            return Err(());
        }
    }
    Ok(())
}
