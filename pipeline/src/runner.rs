//! Runs source → input queue → model stage → output queue → sinks, and reports [`Metrics`].
//!
//! Capture runs GStreamer's own threads and pushes into the input queue. The model stage and
//! the outputs each run on a dedicated thread (both block: on the GPU and on the encoder), and
//! talk to the async queues through the runtime handle. `stop` asks for a graceful end: EOS
//! flows from the source, everything queued is processed, the outputs are finalised.
//!
//! Every front-end drives this one runner: the command line, the GUI (a texture sink and a
//! recording sink at once), the relay (an RTMP sink). [`Runner::controls`] and
//! [`Runner::metrics`] are the handles they change settings and read statistics through, at any
//! time; the stage stays in the runner between runs, so a new source needs no model reload.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::PipelineError;
use crate::io::sink::{FrameSink, SinkError};
use crate::io::source::{Capture, CaptureConfig, StreamInfo};
use crate::metrics::{DurationStats, Metrics};
use crate::queue::{FrameQueue, QueuePolicy};
use crate::stage::control::{Live, StageControls};
use crate::stage::{FrameStage, VideoFrame};

/// Frames the output queue holds.
pub const DEFAULT_OUTPUT_QUEUE_CAPACITY: usize = 4;
/// How often the run-long percentiles in [`Metrics`] are recomputed while running.
const PERCENTILE_INTERVAL: Duration = Duration::from_millis(250);
/// The window of [`Metrics::fps_recent`].
const RECENT_WINDOW: Duration = Duration::from_secs(1);

/// Everything a run needs besides the stage and the sinks.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Where frames come from.
    pub capture: CaptureConfig,
    /// Frames the output queue holds.
    pub output_queue_capacity: usize,
}

impl RunConfig {
    /// A run from `capture` with default queue sizes.
    pub fn new(capture: CaptureConfig) -> Self {
        Self {
            capture,
            output_queue_capacity: DEFAULT_OUTPUT_QUEUE_CAPACITY,
        }
    }
}

/// A stage, ready to run on any number of sources one after the other.
pub struct Runner {
    stage: Option<Box<dyn FrameStage>>,
    controls: StageControls,
    metrics: Live<Metrics>,
    input_tap: Option<Live<Option<VideoFrame>>>,
}

impl Runner {
    /// A runner for `stage` (boxed and wrapped as it will run).
    pub fn new(stage: Box<dyn FrameStage>) -> Self {
        let controls = stage.controls();
        let metrics = Live::new(Metrics {
            stage: stage.name(),
            backend: stage
                .compute()
                .map(|c| c.backend.to_string())
                .unwrap_or_default(),
            adapter: stage
                .compute()
                .map(|c| c.adapter.clone())
                .unwrap_or_default(),
            engine: stage.stats().engine,
            ..Metrics::default()
        });
        Self {
            stage: Some(stage),
            controls,
            metrics,
            input_tap: None,
        }
    }

    /// A handle that always holds the newest input frame (before the stage), for a task that
    /// samples the input at its own rate (the captioner). Costs one frame copy per frame once
    /// asked for; every call returns the same handle.
    pub fn input_tap(&mut self) -> Live<Option<VideoFrame>> {
        self.input_tap
            .get_or_insert_with(|| Live::new(None))
            .clone()
    }

    /// The stage's live settings, valid across runs.
    pub fn controls(&self) -> StageControls {
        self.controls.clone()
    }

    /// The metrics of the current (or last) run, updated while it runs.
    pub fn metrics(&self) -> Live<Metrics> {
        self.metrics.clone()
    }

    /// The stage, between runs.
    pub fn stage(&self) -> Option<&dyn FrameStage> {
        self.stage.as_deref()
    }

    /// The stage back, `None` if a run lost it (a panic in the stage).
    pub fn into_stage(self) -> Option<Box<dyn FrameStage>> {
        self.stage
    }

    /// Runs `config`'s source through the stage into every sink (in the given order) until
    /// the source ends, `stop` is cancelled, or something fails. Returns the final metrics.
    /// Must be awaited inside a multi-threaded tokio runtime.
    pub async fn run(
        &mut self,
        config: RunConfig,
        sinks: Vec<Box<dyn FrameSink>>,
        stop: CancellationToken,
    ) -> Result<Metrics, PipelineError> {
        let stage = self.stage.take().ok_or(PipelineError::StageLost)?;
        let (stage, result) = run_stage(
            &config,
            stage,
            sinks,
            stop,
            &self.metrics,
            self.input_tap.clone(),
        )
        .await;
        self.stage = stage;
        result
    }

    /// [`Runner::run`] on a runtime of its own, for callers outside async code (a GUI
    /// worker thread). Not from inside a tokio runtime.
    pub fn run_blocking(
        &mut self,
        config: RunConfig,
        sinks: Vec<Box<dyn FrameSink>>,
        stop: CancellationToken,
    ) -> Result<Metrics, PipelineError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|err| PipelineError::Gstreamer(format!("cannot start the runtime: {err}")))?;
        runtime.block_on(self.run(config, sinks, stop))
    }
}

/// What the stage thread hands back.
struct StageReport {
    stage: Box<dyn FrameStage>,
    result: Result<(), PipelineError>,
}

/// What the output thread hands back.
struct OutputReport {
    result: Result<(), SinkError>,
}

/// One run; gives the stage back unless a thread lost it.
async fn run_stage(
    config: &RunConfig,
    stage: Box<dyn FrameStage>,
    sinks: Vec<Box<dyn FrameSink>>,
    stop: CancellationToken,
    metrics: &Live<Metrics>,
    input_tap: Option<Live<Option<VideoFrame>>>,
) -> (Option<Box<dyn FrameStage>>, Result<Metrics, PipelineError>) {
    let started = Instant::now();
    metrics.update(|m| {
        *m = Metrics {
            running: true,
            stage: m.stage.clone(),
            backend: m.backend.clone(),
            adapter: m.adapter.clone(),
            engine: stage.stats().engine,
            ..Metrics::default()
        }
    });
    let runtime = tokio::runtime::Handle::current();
    let input = Arc::new(FrameQueue::new(
        config.capture.queue_capacity,
        config.capture.queue_policy(),
    ));
    let output_queue = Arc::new(FrameQueue::new(
        config.output_queue_capacity,
        QueuePolicy::Backpressure,
    ));
    let capture = match Capture::start(&config.capture, input.clone(), runtime.clone()) {
        Ok(capture) => capture,
        Err(err) => {
            metrics.update(|m| m.running = false);
            return (Some(stage), Err(err));
        }
    };
    let stream_info: Live<Option<StreamInfo>> = Live::new(None);

    let stage_thread = spawn("model-stage", {
        let (input, output_queue) = (input.clone(), output_queue.clone());
        let (runtime, metrics) = (runtime.clone(), metrics.clone());
        move || stage_loop(stage, &input, &output_queue, &runtime, &metrics, input_tap)
    });
    let stage_thread = match stage_thread {
        Ok(thread) => thread,
        Err(err) => {
            metrics.update(|m| m.running = false);
            return (None, Err(err));
        }
    };
    let output_thread = spawn("output", {
        let (input, output_queue) = (input.clone(), output_queue.clone());
        let (runtime, metrics, stream_info) =
            (runtime.clone(), metrics.clone(), stream_info.clone());
        move || {
            output_loop(
                sinks,
                &input,
                &output_queue,
                &runtime,
                &metrics,
                &stream_info,
            )
        }
    });

    // Supervise: forward stop requests, keep the stream info and the counters fresh.
    let mut stop_sent = false;
    let mut recent: VecDeque<(Instant, u64, u64)> = VecDeque::new();
    while !stage_thread.is_finished() {
        if let Some(info) = capture.stream_info() {
            stream_info.update(|shared| {
                shared.get_or_insert(info);
            });
        }
        let now = Instant::now();
        let frames_in = capture.frames_captured();
        let frames_out = metrics.read(|m| m.frames_out);
        recent.push_back((now, frames_in, frames_out));
        while recent
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > RECENT_WINDOW)
        {
            recent.pop_front();
        }
        let (input_fps, output_fps) = match recent.front() {
            Some((at, first_in, first_out)) if now > *at => {
                let span = now.duration_since(*at).as_secs_f64();
                (
                    (frames_in - first_in) as f64 / span,
                    (frames_out - first_out) as f64 / span,
                )
            }
            _ => (0.0, 0.0),
        };
        let wall_time_s = started.elapsed().as_secs_f64();
        let duration = capture.duration();
        metrics.update(|m| {
            m.frames_in = frames_in;
            m.frames_dropped = input.dropped();
            m.input_queue_depth = input.len();
            m.output_queue_depth = output_queue.len();
            m.wall_time_s = wall_time_s;
            m.fps = m.frames_out as f64 / wall_time_s.max(1e-9);
            m.input_fps_recent = input_fps;
            m.fps_recent = output_fps;
            m.duration_s = duration.map(|d| d.as_secs_f64());
        });
        if !stop_sent && stop.is_cancelled() {
            capture.request_stop();
            stop_sent = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.cancelled(), if !stop_sent => {}
        }
    }
    let stage_report = join(stage_thread);
    let frames_in = capture.frames_captured();
    let dropped = input.dropped();
    let capture_end = match tokio::task::spawn_blocking(move || capture.finish()).await {
        Ok(end) => end,
        Err(err) => {
            return (
                stage_report.ok().map(|r| r.stage),
                Err(PipelineError::Gstreamer(format!(
                    "capture shutdown failed: {err}"
                ))),
            );
        }
    };
    let output_report = match output_thread {
        Ok(thread) => tokio::task::spawn_blocking(move || join(thread))
            .await
            .map_err(|err| PipelineError::Gstreamer(format!("output shutdown failed: {err}")))
            .and_then(|joined| joined),
        Err(err) => Err(err),
    };
    let wall_time_s = started.elapsed().as_secs_f64();
    let summary = metrics.update(|m| {
        m.running = false;
        m.frames_in = frames_in;
        m.frames_dropped = dropped;
        m.input_queue_depth = 0;
        m.output_queue_depth = 0;
        m.wall_time_s = wall_time_s;
        m.fps = m.frames_out as f64 / wall_time_s.max(1e-9);
        m.input_warning.clone_from(&capture_end.error);
        m.clone()
    });

    let (stage, stage_result) = match stage_report {
        Ok(report) => (Some(report.stage), report.result),
        Err(err) => (None, Err(err)),
    };
    let result = (|| {
        stage_result?;
        if frames_in == 0 {
            return Err(PipelineError::Input(match capture_end.error {
                Some(reason) => format!("cannot read input {}: {reason}", config.capture.source),
                None => format!("input {} has no video frames", config.capture.source),
            }));
        }
        output_report?.result?;
        Ok(summary)
    })();
    (stage, result)
}

fn spawn<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, PipelineError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|err| PipelineError::Gstreamer(format!("cannot start thread: {err}")))
}

fn join<T>(thread: std::thread::JoinHandle<T>) -> Result<T, PipelineError> {
    thread
        .join()
        .map_err(|_| PipelineError::Gstreamer("a pipeline thread panicked".into()))
}

/// The model-stage thread: pops, processes, pushes; at the end the held-back frames.
fn stage_loop(
    mut stage: Box<dyn FrameStage>,
    input: &FrameQueue<VideoFrame>,
    output_queue: &FrameQueue<VideoFrame>,
    runtime: &tokio::runtime::Handle,
    metrics: &Live<Metrics>,
    input_tap: Option<Live<Option<VideoFrame>>>,
) -> StageReport {
    let mut timings = DurationStats::default();
    let mut published = Instant::now();
    let mut result = Ok(());
    let mut output_failed = false;
    let publish = |timings: &DurationStats, stage: &dyn FrameStage, percentiles: bool| {
        let stats = stage.stats();
        let p50 = percentiles.then(|| timings.percentile_ms(50.0));
        metrics.update(|m| {
            m.stage_last_ms = timings.last_ms();
            if let Some(p50) = p50 {
                m.stage_p50_ms = p50;
            }
            m.frames_skipped = stats.frames_skipped();
            m.engine = stats.engine;
        });
    };
    while let Some(frame) = runtime.block_on(input.pop()) {
        if let Some(tap) = &input_tap {
            tap.set(Some(frame.clone()));
        }
        let begun = Instant::now();
        match stage.process(frame) {
            Ok(frames) => {
                timings.record(begun.elapsed());
                let percentiles = published.elapsed() >= PERCENTILE_INTERVAL;
                if percentiles {
                    published = Instant::now();
                }
                publish(&timings, stage.as_ref(), percentiles);
                if push_all(runtime, output_queue, frames).is_err() {
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
    // A delayed stage still holds frames: they come out at the end, so every input frame has
    // its output.
    if result.is_ok() && !output_failed {
        match stage.finish() {
            Ok(frames) => {
                let _ = push_all(runtime, output_queue, frames);
            }
            Err(err) => result = Err(err),
        }
    }
    if result.is_err() || output_failed {
        // Ready for another stream.
        stage.reset();
    }
    publish(&timings, stage.as_ref(), true);
    output_queue.close();
    StageReport { stage, result }
}

/// The output thread: starts every sink at the first frame (size known), then fans out.
fn output_loop(
    mut sinks: Vec<Box<dyn FrameSink>>,
    input: &FrameQueue<VideoFrame>,
    output_queue: &FrameQueue<VideoFrame>,
    runtime: &tokio::runtime::Handle,
    metrics: &Live<Metrics>,
    stream_info: &Live<Option<StreamInfo>>,
) -> OutputReport {
    let mut latency = DurationStats::default();
    let mut result = Ok(());
    let mut started = false;
    let mut published = Instant::now();
    'frames: while let Some(frame) = runtime.block_on(output_queue.pop()) {
        if !started {
            let framerate = stream_info
                .read(|info| info.map(|i| i.framerate))
                .unwrap_or((0, 1));
            let info = StreamInfo {
                size: frame.size(),
                framerate,
            };
            for sink in &mut sinks {
                if let Err(err) = sink.start(&info) {
                    result = Err(err);
                    break 'frames;
                }
            }
            started = true;
        }
        for sink in &mut sinks {
            if let Err(err) = sink.push(&frame) {
                result = Err(err);
                break 'frames;
            }
        }
        latency.record(frame.captured_at.elapsed());
        let percentiles = published.elapsed() >= PERCENTILE_INTERVAL;
        if percentiles {
            published = Instant::now();
        }
        publish_output(metrics, &latency, &frame, percentiles);
    }
    if result.is_err() {
        // Unblock the stage and the capture; nothing more can be written.
        output_queue.close();
        input.close();
    }
    // Finalise every sink, even after an error in one of them: files stay playable.
    for sink in &mut sinks {
        let finished = sink.finish();
        if result.is_ok() {
            result = finished;
        }
    }
    metrics.update(|m| {
        m.latency_p50_ms = latency.percentile_ms(50.0);
        m.latency_p95_ms = latency.percentile_ms(95.0);
    });
    OutputReport { result }
}

fn publish_output(
    metrics: &Live<Metrics>,
    latency: &DurationStats,
    frame: &VideoFrame,
    percentiles: bool,
) {
    let p = percentiles.then(|| (latency.percentile_ms(50.0), latency.percentile_ms(95.0)));
    metrics.update(|m| {
        m.frames_out += 1;
        m.latency_last_ms = latency.last_ms();
        if let Some((p50, p95)) = p {
            m.latency_p50_ms = p50;
            m.latency_p95_ms = p95;
        }
        m.position_s = frame.pts.as_secs_f64();
        m.output_size = Some(frame.size());
    });
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
