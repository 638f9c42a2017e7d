//! Capture: a GStreamer pipeline from a test pattern, a file, a URI or a webcam to packed RGB
//! frames at the processing size, pushed into the input [`FrameQueue`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use streamdiff_models::device::ComputeDevice;
use streamdiff_types::FrameSize;

use super::gst::{describe_error, first_error, gst_err, init_gstreamer, make};
use crate::PipelineError;
use crate::queue::{FrameQueue, QueuePolicy};
use crate::stage::control::{Live, SettingsError};
use crate::stage::frame::VideoFrame;

/// Where frames come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// GStreamer's test pattern; `live` paces it like a camera and never ends on its own.
    TestPattern {
        /// Whether to behave like a live source.
        live: bool,
    },
    /// A local media file.
    File(PathBuf),
    /// Any URI GStreamer can open (`file://`, `http(s)://`, `rtsp://`, `rtmp://`, ...).
    Uri(String),
    /// `/dev/video<N>` through v4l2.
    Webcam(u32),
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TestPattern { live: false } => write!(f, "test"),
            Self::TestPattern { live: true } => write!(f, "test:live"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Uri(uri) => write!(f, "{uri}"),
            Self::Webcam(index) => write!(f, "webcam:{index}"),
        }
    }
}

impl SourceSpec {
    /// Parses `test`, `test:live`, `webcam`, `webcam:N`, a URI or a file path.
    pub fn parse(input: &str) -> Result<Self, PipelineError> {
        let input = input.trim();
        match input {
            "test" => return Ok(Self::TestPattern { live: false }),
            "test:live" => return Ok(Self::TestPattern { live: true }),
            "webcam" => return Ok(Self::Webcam(0)),
            _ => {}
        }
        if let Some(index) = input.strip_prefix("webcam:") {
            let index = index.parse().map_err(|_| {
                PipelineError::Input(format!("`{input}`: use webcam or webcam:N with N a number"))
            })?;
            return Ok(Self::Webcam(index));
        }
        if input.contains("://") {
            return Ok(Self::Uri(input.to_string()));
        }
        if input.is_empty() {
            return Err(PipelineError::Input("no input given".into()));
        }
        Ok(Self::File(PathBuf::from(input)))
    }

    /// Whether frames arrive in real time (then the newest frame wins when we fall behind).
    pub fn is_live(&self) -> bool {
        match self {
            Self::TestPattern { live } => *live,
            Self::File(_) => false,
            Self::Uri(uri) => !uri.starts_with("file://"),
            Self::Webcam(_) => true,
        }
    }
}

/// Processing sizes (the longer side, in pixels) the pipeline accepts.
pub const SIZE_RANGE_PX: std::ops::RangeInclusive<usize> = 32..=4096;
/// The processing size on a GPU.
pub const DEFAULT_GPU_SIZE_PX: usize = 512;
/// The processing size on a CPU (lavapipe, flex): a quarter of the pixels.
pub const DEFAULT_CPU_SIZE_PX: usize = 256;
/// Frames the input queue holds.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4;
/// Length of the non-live test pattern, in frames (5 s at 30 fps).
pub const DEFAULT_TEST_PATTERN_FRAMES: u64 = 150;

/// The processing size used when none is given: [`DEFAULT_GPU_SIZE_PX`] on a GPU,
/// [`DEFAULT_CPU_SIZE_PX`] on a CPU.
pub fn default_size_px(compute: &ComputeDevice) -> usize {
    if compute.is_cpu {
        DEFAULT_CPU_SIZE_PX
    } else {
        DEFAULT_GPU_SIZE_PX
    }
}

/// Checks a processing size against [`SIZE_RANGE_PX`].
pub fn check_size_px(size_px: usize) -> Result<(), SettingsError> {
    if SIZE_RANGE_PX.contains(&size_px) {
        Ok(())
    } else {
        Err(SettingsError::Size {
            size_px,
            min_px: *SIZE_RANGE_PX.start(),
            max_px: *SIZE_RANGE_PX.end(),
        })
    }
}

/// How to capture.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// The source.
    pub source: SourceSpec,
    /// Longer side of the frames handed to the model, in pixels (rounded to a multiple of 4;
    /// see [`FrameSize::fit_long_side`]). A source that changes size mid-stream keeps it.
    pub size_px: usize,
    /// Pace a file in real time and drop frames like a live source.
    pub realtime: bool,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    /// Length of the non-live test pattern, in frames.
    pub test_pattern_frames: u64,
    /// Frames the input queue holds.
    pub queue_capacity: usize,
}

impl CaptureConfig {
    /// Capture `source` at `size_px` with default settings.
    pub fn new(source: SourceSpec, size_px: usize) -> Self {
        Self {
            source,
            size_px,
            realtime: false,
            max_frames: None,
            test_pattern_frames: DEFAULT_TEST_PATTERN_FRAMES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }

    /// The queue policy this configuration needs.
    pub fn queue_policy(&self) -> QueuePolicy {
        if self.source.is_live() || self.realtime {
            QueuePolicy::NewestWins
        } else {
            QueuePolicy::Backpressure
        }
    }
}

/// A stream's frame size and rate: what the capture negotiated, and what an output starts with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamInfo {
    /// The frame size.
    pub size: FrameSize,
    /// Frame rate as a fraction `(numerator, denominator)`; `(0, 1)` when variable or unknown.
    pub framerate: (i32, i32),
}

/// How the capture ended.
#[derive(Clone, Debug, Default)]
pub struct CaptureEnd {
    /// An error that stopped the source, with GStreamer's explanation.
    pub error: Option<String>,
}

/// A running capture pipeline.
pub struct Capture {
    pipeline: gst::Pipeline,
    queue: Arc<FrameQueue<VideoFrame>>,
    info: Arc<OnceLock<StreamInfo>>,
    duration_ns: Arc<AtomicU64>,
    frames: Arc<AtomicU64>,
    bus_thread: Option<JoinHandle<CaptureEnd>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Capture {
    /// Builds and starts the capture. Frames go into `queue`; the queue is closed when the
    /// source ends, fails or reaches `max_frames`.
    pub fn start(
        config: &CaptureConfig,
        queue: Arc<FrameQueue<VideoFrame>>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, PipelineError> {
        init_gstreamer()?;
        let pipeline = gst::Pipeline::new();
        let convert = make("videoconvert")?;
        let scale = make("videoscale")?;
        let filter = make("capsfilter")?;
        let appsink = gst_app::AppSink::builder()
            .caps(
                &gst_video::VideoCapsBuilder::new()
                    .format(gst_video::VideoFormat::Rgb)
                    .build(),
            )
            // A file paced in real time syncs to the clock; otherwise take frames as they come.
            .sync(config.realtime && !config.source.is_live())
            .max_buffers(2)
            .build();
        pipeline
            .add_many([&convert, &scale, &filter, appsink.upcast_ref()])
            .map_err(gst_err)?;
        gst::Element::link_many([&convert, &scale, &filter, appsink.upcast_ref()])
            .map_err(gst_err)?;

        // When the decoded size is known, ask the scaler for the processing size.
        let size_px = config.size_px;
        if let Some(pad) = scale.static_pad("sink") {
            let filter = filter.clone();
            pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::EventView::Caps(caps)) = info.event().map(|e| e.view())
                    && let Ok(video) = gst_video::VideoInfo::from_caps(caps.caps())
                {
                    let par = video.par();
                    let display_width =
                        video.width() as f64 * par.numer() as f64 / par.denom().max(1) as f64;
                    let target =
                        FrameSize::new(display_width.round() as usize, video.height() as usize)
                            .fit_long_side(size_px);
                    let target = gst_video::VideoCapsBuilder::new()
                        .format(gst_video::VideoFormat::Rgb)
                        .width(target.width_px as i32)
                        .height(target.height_px as i32)
                        .pixel_aspect_ratio(gst::Fraction::new(1, 1))
                        .build();
                    filter.set_property("caps", &target);
                }
                gst::PadProbeReturn::Ok
            });
        }

        match &config.source {
            SourceSpec::TestPattern { live } => {
                let src = make("videotestsrc")?;
                src.set_property("is-live", *live);
                src.set_property("horizontal-speed", 4i32);
                if !*live {
                    src.set_property("num-buffers", config.test_pattern_frames as i32);
                }
                let caps = make("capsfilter")?;
                caps.set_property(
                    "caps",
                    gst_video::VideoCapsBuilder::new()
                        .width(640)
                        .height(360)
                        .framerate(gst::Fraction::new(30, 1))
                        .build(),
                );
                pipeline.add_many([&src, &caps]).map_err(gst_err)?;
                gst::Element::link_many([&src, &caps, &convert]).map_err(gst_err)?;
            }
            SourceSpec::Webcam(index) => {
                let device = format!("/dev/video{index}");
                if !std::path::Path::new(&device).exists() {
                    return Err(PipelineError::Input(format!(
                        "no webcam at {device} (is a camera connected, and may this user open it?)"
                    )));
                }
                let src = make("v4l2src")?;
                src.set_property("device", &device);
                pipeline.add(&src).map_err(gst_err)?;
                src.link(&convert).map_err(gst_err)?;
            }
            SourceSpec::File(path) => {
                if !path.is_file() {
                    return Err(PipelineError::Input(format!(
                        "input file {} not found",
                        path.display()
                    )));
                }
                let absolute = std::fs::canonicalize(path).map_err(|err| {
                    PipelineError::Input(format!("cannot open input {}: {err}", path.display()))
                })?;
                let uri = gst::glib::filename_to_uri(&absolute, None).map_err(|err| {
                    PipelineError::Input(format!("bad input path {}: {err}", path.display()))
                })?;
                add_decoder(&pipeline, uri.as_str(), &convert)?;
            }
            SourceSpec::Uri(uri) => add_decoder(&pipeline, uri, &convert)?,
        }

        let info = Arc::new(OnceLock::new());
        let frames = Arc::new(AtomicU64::new(0));
        let first_pts: Live<Option<gst::ClockTime>> = Live::new(None);
        let max_frames = config.max_frames;
        {
            let queue = queue.clone();
            let info = info.clone();
            let frames = frames.clone();
            appsink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let frame = sample_to_frame(&sample, &info, &first_pts, &frames)
                            .ok_or(gst::FlowError::Error)?;
                        if runtime.block_on(queue.push(frame)).is_err() {
                            return Err(gst::FlowError::Flushing);
                        }
                        let count = frames.fetch_add(1, Ordering::Relaxed) + 1;
                        if max_frames.is_some_and(|max| count >= max) {
                            queue.close();
                            return Err(gst::FlowError::Eos);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }

        let bus = pipeline
            .bus()
            .ok_or_else(|| PipelineError::Gstreamer("capture pipeline has no bus".into()))?;
        if pipeline.set_state(gst::State::Playing).is_err() {
            // The bus holds the reason; report it rather than the bare state-change failure.
            let reason = first_error(&bus).unwrap_or_else(|| "the source could not start".into());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(PipelineError::Input(format!(
                "cannot open input {}: {reason}",
                config.source
            )));
        }

        let duration_ns = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bus_thread = {
            let queue = queue.clone();
            let pipeline = pipeline.clone();
            let duration_ns = duration_ns.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("capture-bus".into())
                .spawn(move || watch_bus(&bus, &pipeline, &queue, &duration_ns, &stop))
                .map_err(|err| PipelineError::Gstreamer(format!("cannot start thread: {err}")))?
        };

        Ok(Self {
            pipeline,
            queue,
            info,
            duration_ns,
            frames,
            bus_thread: Some(bus_thread),
            stop,
        })
    }

    /// The negotiated frame size and rate, once the first frame has arrived.
    pub fn stream_info(&self) -> Option<StreamInfo> {
        self.info.get().copied()
    }

    /// The input's duration, when it has one.
    pub fn duration(&self) -> Option<Duration> {
        match self.duration_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Frames captured so far.
    pub fn frames_captured(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Asks the source to finish: EOS flows through, and the queue closes once it arrives.
    pub fn request_stop(&self) {
        self.pipeline.send_event(gst::event::Eos::new());
    }

    /// Stops the pipeline: EOS, a bounded wait for it on the bus, then Null.
    pub fn finish(mut self) -> CaptureEnd {
        self.shutdown()
    }

    fn shutdown(&mut self) -> CaptureEnd {
        let Some(thread) = self.bus_thread.take() else {
            return CaptureEnd::default();
        };
        if !self.queue.is_closed() {
            self.request_stop();
        }
        // The bus thread ends on EOS or error; do not wait forever for a source that ignores EOS.
        let deadline = Instant::now() + Duration::from_secs(3);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::Relaxed);
        // Null unblocks a streaming thread waiting in the appsink callback.
        self.queue.close();
        let _ = self.pipeline.set_state(gst::State::Null);
        thread.join().unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `uridecodebin` for files and URIs; video pads go to `video_sink`, others to a fakesink.
fn add_decoder(
    pipeline: &gst::Pipeline,
    uri: &str,
    video_sink: &gst::Element,
) -> Result<(), PipelineError> {
    let decoder = make("uridecodebin")?;
    decoder.set_property("uri", uri);
    pipeline.add(&decoder).map_err(gst_err)?;
    let pipeline_weak = pipeline.downgrade();
    let video_sink = video_sink.clone();
    decoder.connect_pad_added(move |_, pad| {
        let is_video = pad
            .current_caps()
            .and_then(|caps| caps.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        if is_video {
            if let Some(sink_pad) = video_sink.static_pad("sink")
                && !sink_pad.is_linked()
                && let Err(err) = pad.link(&sink_pad)
            {
                tracing::warn!("cannot link the decoded video: {err:?}");
            }
            return;
        }
        // Drain other streams (audio, subtitles) so they do not stall the decoder.
        if let Some(pipeline) = pipeline_weak.upgrade()
            && let Ok(fakesink) = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
            && pipeline.add(&fakesink).is_ok()
        {
            let _ = fakesink.sync_state_with_parent();
            if let Some(sink_pad) = fakesink.static_pad("sink") {
                let _ = pad.link(&sink_pad);
            }
        }
    });
    Ok(())
}

fn sample_to_frame(
    sample: &gst::Sample,
    info: &OnceLock<StreamInfo>,
    first_pts: &Live<Option<gst::ClockTime>>,
    frames: &AtomicU64,
) -> Option<VideoFrame> {
    let captured_at = Instant::now();
    let caps = sample.caps()?;
    let video = gst_video::VideoInfo::from_caps(caps).ok()?;
    let buffer = sample.buffer()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &video).ok()?;
    let size = FrameSize::new(video.width() as usize, video.height() as usize);
    let stride = usize::try_from(*frame.plane_stride().first()?).ok()?;
    let data = frame.plane_data(0).ok()?;
    let row_bytes = size.width_px * 3;
    let mut rgb = Vec::with_capacity(size.rgb_bytes());
    for row in 0..size.height_px {
        rgb.extend_from_slice(data.get(row * stride..row * stride + row_bytes)?);
    }
    let fps = video.fps();
    let _ = info.set(StreamInfo {
        size,
        framerate: (fps.numer(), fps.denom()),
    });
    let pts = buffer.pts().unwrap_or(gst::ClockTime::ZERO);
    let start = first_pts.update(|first| *first.get_or_insert(pts));
    let mut frame = VideoFrame::from_rgb(rgb, size).ok()?;
    frame.pts = Duration::from_nanos(pts.saturating_sub(start).nseconds());
    frame.duration = buffer
        .duration()
        .map(|d| Duration::from_nanos(d.nseconds()));
    frame.captured_at = captured_at;
    frame.sequence = frames.load(Ordering::Relaxed);
    Some(frame)
}

fn watch_bus(
    bus: &gst::Bus,
    pipeline: &gst::Pipeline,
    queue: &FrameQueue<VideoFrame>,
    duration_ns: &AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) -> CaptureEnd {
    let mut end = CaptureEnd::default();
    while !stop.load(Ordering::Relaxed) {
        if duration_ns.load(Ordering::Relaxed) == 0
            && let Some(duration) = pipeline.query_duration::<gst::ClockTime>()
        {
            duration_ns.store(duration.nseconds().max(1), Ordering::Relaxed);
        }
        let Some(message) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) else {
            continue;
        };
        match message.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(err) => {
                end.error = Some(describe_error(err));
                break;
            }
            _ => {}
        }
    }
    queue.close();
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inputs() {
        assert_eq!(
            SourceSpec::parse("test").expect("ok"),
            SourceSpec::TestPattern { live: false }
        );
        assert!(SourceSpec::parse("test:live").expect("ok").is_live());
        assert_eq!(
            SourceSpec::parse("webcam:2").expect("ok"),
            SourceSpec::Webcam(2)
        );
        assert!(SourceSpec::parse("webcam:x").is_err());
        assert!(
            SourceSpec::parse("rtmp://host/app/key")
                .expect("ok")
                .is_live()
        );
        assert!(
            !SourceSpec::parse("file:///tmp/a.mp4")
                .expect("ok")
                .is_live()
        );
        assert_eq!(
            SourceSpec::parse("clip.mp4").expect("ok"),
            SourceSpec::File("clip.mp4".into())
        );
    }

    #[test]
    fn processing_sizes_are_checked() {
        assert!(check_size_px(32).is_ok());
        assert!(check_size_px(4096).is_ok());
        let err = check_size_px(5).expect_err("too small");
        assert_eq!(err.to_string(), "size 5 is out of range (32..=4096 px)");
    }
}
