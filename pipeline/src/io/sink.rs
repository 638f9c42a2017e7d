//! Outputs: where processed frames go.
//!
//! [`FrameSink`] is the one interface the runner knows; it pushes every output frame to each
//! of its sinks in turn (fan-out: a window and a recording at once). Streamdiff ships a file
//! ([`GstSink::file`], H.264 in MP4/MKV) and a window ([`GstSink::window`]): a [`GstSink`] is an
//! `appsrc` feeding a GStreamer pipeline, which is also the quickest way to a new output (an
//! RTMP stream is a [`GstSink`] with an `flvmux ! rtmp2sink` tail). A sink that is not GStreamer at all (a
//! GUI texture, an element's src pad) implements the trait directly.
//!
//! A sink is started with the first frame's size and the stream's rate. A later frame of
//! another size (the source changed resolution) keeps flowing: a fixed-size sink (a file)
//! letterboxes it into its size with the aspect ratio kept; a window renegotiates and resizes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use streamdiff_types::FrameSize;

use super::gst::{describe_error, init_gstreamer};
use super::source::StreamInfo;
use crate::stage::frame::{FrameError, VideoFrame};

/// How long an output may take to finalise after its last frame.
pub const DEFAULT_FINISH_TIMEOUT: Duration = Duration::from_secs(30);
/// The frame rate an output assumes when the source does not say (a variable-rate stream).
pub const FALLBACK_FRAMERATE: (i32, i32) = (30, 1);

/// Something that takes the processed frames: a file, a window, a stream, a texture.
///
/// The runner calls [`start`](Self::start) once, when the first frame's size is known, then
/// [`push`](Self::push) for every frame in order, then [`finish`](Self::finish) once (also
/// after an error elsewhere, so files are finalised). All three run on the runner's output
/// thread; `push` may block to apply backpressure.
pub trait FrameSink: Send {
    /// What the sink writes to, for messages (`out.mp4`, `window`).
    fn name(&self) -> String;

    /// Prepares for frames of `stream` (the first frame's size, the source's rate).
    fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError>;

    /// Takes one frame. Frames of another size than the start size must be handled: fitted
    /// into the sink's size, or the sink renegotiates.
    fn push(&mut self, frame: &VideoFrame) -> Result<(), SinkError>;

    /// Ends the output (finalises a file). A sink never started has nothing to finish.
    fn finish(&mut self) -> Result<(), SinkError>;
}

/// Why an output failed, worded for the person running streamdiff.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file name whose extension names no container we write.
    #[error("cannot write {}: use a .mp4 or .mkv file name, or `window`", .path.display())]
    UnknownContainer {
        /// The file.
        path: PathBuf,
    },
    /// The output path is a folder.
    #[error("cannot write output {}: it is a folder", .path.display())]
    IsFolder {
        /// The path.
        path: PathBuf,
    },
    /// The output file or its folder cannot be created or written.
    #[error("cannot write output {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// GStreamer is missing, or the output pipeline cannot be built or started.
    #[error("cannot start the output {sink}: {reason}")]
    Start {
        /// The sink.
        sink: String,
        /// GStreamer's explanation.
        reason: String,
    },
    /// The output pipeline failed while running.
    #[error("the output {sink} stopped: {reason}")]
    Stopped {
        /// The sink.
        sink: String,
        /// GStreamer's explanation.
        reason: String,
    },
    /// The output did not finalise in time.
    #[error("the output {sink} did not finish within {} s", .timeout.as_secs())]
    Timeout {
        /// The sink.
        sink: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// A frame was pushed before [`FrameSink::start`].
    #[error("the output {sink} was given a frame before it was started")]
    NotStarted {
        /// The sink.
        sink: String,
    },
    /// The frame's pixels could not be read.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Makes the sink for a command-line output: `window`, or a `.mp4`/`.mkv` file (checked now,
/// see [`GstSink::file`]).
pub fn parse_sink(output: &str) -> Result<Box<dyn FrameSink>, SinkError> {
    match output {
        "window" => Ok(Box::new(GstSink::window())),
        path => Ok(Box::new(GstSink::file(path)?)),
    }
}

/// Builds a [`GstSink`]'s pipeline description for a stream.
type TailFn = Box<dyn Fn(&StreamInfo) -> String + Send>;

/// Frames into `appsrc` (packed RGB, the frame's timestamps), into a GStreamer pipeline
/// described like a `gst-launch-1.0` line.
pub struct GstSink {
    name: String,
    tail: TailFn,
    fixed_size: bool,
    properties: Vec<(String, String, String)>,
    finish_timeout: Duration,
    running: Option<Running>,
}

/// A started [`GstSink`].
struct Running {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    framerate: gst::Fraction,
    /// The size of the caps `appsrc` has now.
    caps_size: FrameSize,
}

impl GstSink {
    /// A sink called `name` whose pipeline after `appsrc` is `tail(stream)`, e.g.
    /// `"videoconvert ! autovideosink"`. Name elements to set properties on them later.
    pub fn new(
        name: impl Into<String>,
        tail: impl Fn(&StreamInfo) -> String + Send + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            tail: Box::new(tail),
            fixed_size: false,
            properties: Vec::new(),
            finish_timeout: DEFAULT_FINISH_TIMEOUT,
            running: None,
        }
    }

    /// Keeps the start size: frames of another size are scaled into it with black bars
    /// (aspect ratio kept), for encoders that cannot change size mid-stream.
    pub fn with_fixed_size(mut self) -> Self {
        self.fixed_size = true;
        self
    }

    /// Sets `property` of the element named `element` in the tail when the sink starts
    /// (values that would need quoting in a description, such as file paths).
    pub fn with_property(mut self, element: &str, property: &str, value: &str) -> Self {
        self.properties
            .push((element.into(), property.into(), value.into()));
        self
    }

    /// How long [`FrameSink::finish`] waits for the pipeline to finalise.
    pub fn with_finish_timeout(mut self, timeout: Duration) -> Self {
        self.finish_timeout = timeout;
        self
    }

    fn start_error(&self, reason: impl std::fmt::Display) -> SinkError {
        SinkError::Start {
            sink: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    fn caps(size: FrameSize, framerate: gst::Fraction) -> Result<gst::Caps, String> {
        gst_video::VideoInfo::builder(
            gst_video::VideoFormat::Rgb,
            size.width_px as u32,
            size.height_px as u32,
        )
        .fps(framerate)
        .build()
        .and_then(|info| info.to_caps())
        .map_err(|err| format!("bad output format: {err}"))
    }

    fn pending_error(&self) -> Option<String> {
        let bus = self.running.as_ref()?.pipeline.bus()?;
        let message = bus.pop_filtered(&[gst::MessageType::Error])?;
        match message.view() {
            gst::MessageView::Error(err) => Some(describe_error(err)),
            _ => None,
        }
    }
}

impl FrameSink for GstSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), SinkError> {
        init_gstreamer().map_err(|err| self.start_error(err))?;
        let (num, den) = match stream.framerate {
            (num, den) if num > 0 && den > 0 => (num, den),
            _ => FALLBACK_FRAMERATE,
        };
        let framerate = gst::Fraction::new(num, den);
        let size = stream.size;
        let caps = Self::caps(size, framerate).map_err(|err| self.start_error(err))?;
        let appsrc = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(false)
            // Backpressure: push blocks once a few frames are waiting for the encoder.
            .block(true)
            .max_bytes(size.rgb_bytes() as u64 * 4)
            .build();
        let mut description = String::new();
        if self.fixed_size {
            // `add-borders` keeps the display aspect ratio with black bars.
            description.push_str(&format!(
                "videoscale add-borders=true ! video/x-raw,width={},height={},pixel-aspect-ratio=1/1 ! ",
                size.width_px, size.height_px
            ));
        }
        description.push_str(&(self.tail)(&StreamInfo {
            size,
            framerate: (num, den),
        }));
        let tail = gst::parse::bin_from_description(&description, true).map_err(|err| {
            self.start_error(format!(
                "{err}; run scripts/setup.sh to install the plugins"
            ))
        })?;
        for (element, property, value) in &self.properties {
            let Some(target) = tail.by_name(element) else {
                return Err(self.start_error(format!("no element named `{element}`")));
            };
            target.set_property_from_str(property, value);
        }
        let pipeline = gst::Pipeline::new();
        pipeline
            .add_many([appsrc.upcast_ref(), tail.upcast_ref::<gst::Element>()])
            .map_err(|err| self.start_error(err))?;
        appsrc.link(&tail).map_err(|err| self.start_error(err))?;
        if pipeline.set_state(gst::State::Playing).is_err() {
            let reason = pipeline
                .bus()
                .and_then(|bus| {
                    bus.timed_pop_filtered(
                        gst::ClockTime::from_mseconds(500),
                        &[gst::MessageType::Error],
                    )
                })
                .and_then(|message| match message.view() {
                    gst::MessageView::Error(err) => Some(describe_error(err)),
                    _ => None,
                })
                .unwrap_or_else(|| "the output could not start".into());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(self.start_error(reason));
        }
        self.running = Some(Running {
            pipeline,
            appsrc,
            framerate,
            caps_size: size,
        });
        Ok(())
    }

    /// Sends one frame; blocks while the encoder is behind.
    fn push(&mut self, frame: &VideoFrame) -> Result<(), SinkError> {
        let name = self.name.clone();
        let Some(running) = self.running.as_mut() else {
            return Err(SinkError::NotStarted { sink: name });
        };
        let size = frame.size();
        if size != running.caps_size {
            // appsrc sends the new caps in order with the buffers: what follows renegotiates
            // (a window) or letterboxes into the start size (a fixed-size sink).
            let caps =
                Self::caps(size, running.framerate).map_err(|reason| SinkError::Stopped {
                    sink: name.clone(),
                    reason,
                })?;
            running.appsrc.set_caps(Some(&caps));
            running.caps_size = size;
        }
        let mut buffer = gst::Buffer::from_mut_slice(frame.rgb()?.to_vec());
        {
            let Some(buffer) = buffer.get_mut() else {
                return Err(SinkError::Stopped {
                    sink: name,
                    reason: "frame buffer is shared".into(),
                });
            };
            buffer.set_pts(gst::ClockTime::from_nseconds(frame.pts.as_nanos() as u64));
            if let Some(duration) = frame.duration {
                buffer.set_duration(gst::ClockTime::from_nseconds(duration.as_nanos() as u64));
            }
            // Our rows are tightly packed; say so, since GStreamer's default RGB stride is
            // rounded up to 4 bytes.
            gst_video::VideoMeta::add_full(
                buffer,
                gst_video::VideoFrameFlags::empty(),
                gst_video::VideoFormat::Rgb,
                size.width_px as u32,
                size.height_px as u32,
                &[0],
                &[(size.width_px * 3) as i32],
            )
            .map_err(|err| SinkError::Stopped {
                sink: name.clone(),
                reason: err.to_string(),
            })?;
        }
        if let Err(flow) = running.appsrc.push_buffer(buffer) {
            let reason = self
                .pending_error()
                .unwrap_or_else(|| format!("it refused a frame ({flow:?})"));
            return Err(SinkError::Stopped { sink: name, reason });
        }
        Ok(())
    }

    /// Ends the stream: EOS, wait for the pipeline to finish (or an error), then Null.
    fn finish(&mut self) -> Result<(), SinkError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let _ = running.appsrc.end_of_stream();
        let result = match running.pipeline.bus() {
            None => Err(SinkError::Stopped {
                sink: self.name.clone(),
                reason: "the output pipeline has no bus".into(),
            }),
            Some(bus) => match bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(self.finish_timeout.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            ) {
                Some(message) => match message.view() {
                    gst::MessageView::Error(err) => Err(SinkError::Stopped {
                        sink: self.name.clone(),
                        reason: describe_error(err),
                    }),
                    _ => Ok(()),
                },
                None => Err(SinkError::Timeout {
                    sink: self.name.clone(),
                    timeout: self.finish_timeout,
                }),
            },
        };
        let _ = running.pipeline.set_state(gst::State::Null);
        result
    }
}

impl Drop for GstSink {
    /// A sink dropped without [`FrameSink::finish`] (a failed run) still releases GStreamer.
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.pipeline.set_state(gst::State::Null);
        }
    }
}

impl GstSink {
    /// An H.264 file; the container follows the extension (`.mp4`, `.mov`, `.m4v`, `.mkv`).
    /// Frames keep the first frame's size; later sizes are letterboxed into it.
    ///
    /// Checks, before any work, that `path` can be written: a container we know, a folder
    /// that exists or can be made (it is made), not a folder itself, and writable. An existing
    /// file is left as it is until the first frame arrives.
    pub fn file(path: impl Into<PathBuf>) -> Result<Self, SinkError> {
        let path = path.into();
        let muxer = muxer_for(&path)?;
        check_writable(&path)?;
        let sink = Self::new(path.display().to_string(), move |stream: &StreamInfo| {
            let (num, den) = stream.framerate;
            let key_int = (num / den.max(1)).max(1) * 2;
            // x264 fed RGB picks High 4:4:4, which players reject: convert to I420 first.
            format!(
                "videoconvert ! video/x-raw,format=I420 ! \
                 x264enc tune=zerolatency speed-preset=veryfast pass=quant quantizer=18 \
                 key-int-max={key_int} ! h264parse ! {muxer} ! filesink name=file"
            )
        });
        Ok(sink
            .with_fixed_size()
            .with_property("file", "location", &path.to_string_lossy()))
    }

    /// A desktop window (GStreamer's `autovideosink`), shown in real time, opened at the first
    /// frame; it follows size changes.
    pub fn window() -> Self {
        Self::new("window", |_: &StreamInfo| {
            "videoconvert ! autovideosink".to_string()
        })
    }
}

fn muxer_for(path: &Path) -> Result<&'static str, SinkError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("mp4") | Some("mov") | Some("m4v") => Ok("mp4mux"),
        Some("mkv") => Ok("matroskamux"),
        _ => Err(SinkError::UnknownContainer {
            path: path.to_path_buf(),
        }),
    }
}

/// Whether `path` can be written, without touching an existing file's contents.
fn check_writable(path: &Path) -> Result<(), SinkError> {
    let cannot = |source: std::io::Error| SinkError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(cannot)?;
    }
    if path.is_dir() {
        return Err(SinkError::IsFolder {
            path: path.to_path_buf(),
        });
    }
    if path.exists() {
        // Opening for writing checks permission; without `truncate` the contents stay.
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(cannot)?;
    } else {
        // A file that can be created can be written; leave nothing behind until frames come.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(cannot)?;
        std::fs::remove_file(path).map_err(cannot)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("streamdiff-sink-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn checking_an_output_never_truncates_it() {
        let dir = temp_dir("keep");
        let path = dir.join("previous.mp4");
        std::fs::write(&path, b"an earlier recording").expect("write");
        GstSink::file(&path).expect("writable");
        assert_eq!(std::fs::read(&path).expect("read"), b"an earlier recording");
        let fresh = dir.join("nested/new.mkv");
        GstSink::file(&fresh).expect("the folder is made");
        assert!(!fresh.exists(), "nothing is created before the first frame");
        assert!(fresh.parent().is_some_and(Path::is_dir));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_outputs_are_explained() {
        let dir = temp_dir("bad");
        let folder = dir.join("folder.mp4");
        std::fs::create_dir_all(&folder).expect("folder");
        assert!(matches!(
            GstSink::file(&folder),
            Err(SinkError::IsFolder { .. })
        ));
        let gif = GstSink::file(dir.join("out.gif"))
            .err()
            .expect("unknown container");
        assert!(gif.to_string().contains(".mp4"), "{gif}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
