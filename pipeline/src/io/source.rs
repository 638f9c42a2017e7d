//! Capture: a GStreamer pipeline from a test pattern, a file, a URI or a webcam to packed RGB
//! frames at the processing size, pushed into the input [`FrameQueue`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use crate::PipelineError;
use crate::queue::{FrameQueue, QueuePolicy};
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

/// How to capture.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// The source.
    pub source: SourceSpec,
    /// Longer side of the frames handed to the model, in pixels (rounded to a multiple of 4).
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
            test_pattern_frames: 150,
            queue_capacity: 4,
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

/// What the capture negotiated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamInfo {
    /// Width in pixels.
    pub width_px: usize,
    /// Height in pixels.
    pub height_px: usize,
    /// Frame rate as a fraction; `0/1` when variable or unknown.
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

/// Initialises GStreamer once, with a clear error if it is missing.
pub fn init_gstreamer() -> Result<(), PipelineError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|err| err.to_string()))
        .clone()
        .map_err(|err| PipelineError::Gstreamer(format!("GStreamer failed to start: {err}")))
}

fn make(factory: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        PipelineError::Gstreamer(format!(
            "GStreamer element `{factory}` is missing; run scripts/setup.sh to install the plugins"
        ))
    })
}

/// Output size for an input of `width`x`height` (display aspect): the longer side becomes
/// `size_px`, both sides rounded to a multiple of 4 (at least 16).
pub fn fit_size(width_px: usize, height_px: usize, size_px: usize) -> (usize, usize) {
    let round4 = |v: f64| ((v / 4.0).round() as usize * 4).max(16);
    let (w, h) = (width_px.max(1) as f64, height_px.max(1) as f64);
    let long = size_px as f64;
    if w >= h {
        (round4(long), round4(long * h / w))
    } else {
        (round4(long * w / h), round4(long))
    }
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
                    let (w, h) = fit_size(
                        display_width.round() as usize,
                        video.height() as usize,
                        size_px,
                    );
                    let target = gst_video::VideoCapsBuilder::new()
                        .format(gst_video::VideoFormat::Rgb)
                        .width(w as i32)
                        .height(h as i32)
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
        let first_pts: Arc<Mutex<Option<gst::ClockTime>>> = Arc::new(Mutex::new(None));
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

fn gst_err(err: impl std::fmt::Display) -> PipelineError {
    PipelineError::Gstreamer(err.to_string())
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
    first_pts: &Mutex<Option<gst::ClockTime>>,
    frames: &AtomicU64,
) -> Option<VideoFrame> {
    let captured_at = Instant::now();
    let caps = sample.caps()?;
    let video = gst_video::VideoInfo::from_caps(caps).ok()?;
    let buffer = sample.buffer()?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &video).ok()?;
    let (width, height) = (video.width() as usize, video.height() as usize);
    let stride = usize::try_from(*frame.plane_stride().first()?).ok()?;
    let data = frame.plane_data(0).ok()?;
    let row_bytes = width * 3;
    let mut rgb = Vec::with_capacity(row_bytes * height);
    for row in 0..height {
        rgb.extend_from_slice(data.get(row * stride..row * stride + row_bytes)?);
    }
    let fps = video.fps();
    let _ = info.set(StreamInfo {
        width_px: width,
        height_px: height,
        framerate: (fps.numer(), fps.denom()),
    });
    let pts = buffer.pts().unwrap_or(gst::ClockTime::ZERO);
    let start = {
        let mut first = first_pts.lock().unwrap_or_else(|p| p.into_inner());
        *first.get_or_insert(pts)
    };
    Some(VideoFrame {
        rgb,
        width_px: width,
        height_px: height,
        pts: Duration::from_nanos(pts.saturating_sub(start).nseconds()),
        duration: buffer
            .duration()
            .map(|d| Duration::from_nanos(d.nseconds())),
        captured_at,
        sequence: frames.load(Ordering::Relaxed),
    })
}

/// The first error message waiting on the bus, as one line.
fn first_error(bus: &gst::Bus) -> Option<String> {
    while let Some(message) = bus.timed_pop_filtered(
        gst::ClockTime::from_mseconds(500),
        &[gst::MessageType::Error],
    ) {
        if let gst::MessageView::Error(err) = message.view() {
            return Some(describe_error(err));
        }
    }
    None
}

/// GStreamer's message plus the short debug detail when it says more.
pub(crate) fn describe_error(err: &gst::message::Error) -> String {
    let main = err.error().to_string();
    match err.debug() {
        Some(debug) => {
            // The debug string starts with a source-code location; keep only its last line.
            let detail = debug.lines().last().unwrap_or_default().trim().to_string();
            if detail.is_empty() || main.contains(&detail) {
                main
            } else {
                format!("{main} ({detail})")
            }
        }
        None => main,
    }
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
    fn fits_long_side_and_rounds_to_four() {
        assert_eq!(fit_size(1280, 720, 256), (256, 144));
        assert_eq!(fit_size(720, 1280, 256), (144, 256));
        assert_eq!(fit_size(832, 480, 250), (252, 144));
        assert_eq!(fit_size(100, 100, 64), (64, 64));
    }
}
