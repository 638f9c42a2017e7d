//! Output: packed RGB frames through `appsrc` into an encoded file or a window.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::PipelineError;
use crate::io::source::{StreamInfo, describe_error, init_gstreamer};
use crate::stage::frame::VideoFrame;

/// Where stylised frames go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputSpec {
    /// An H.264 file; the container follows the extension (`.mp4`, `.mov`, `.mkv`).
    File(PathBuf),
    /// A desktop window.
    Window,
}

impl OutputSpec {
    /// Parses `window` or a file path.
    pub fn parse(output: &str) -> Self {
        match output {
            "window" => Self::Window,
            path => Self::File(PathBuf::from(path)),
        }
    }

    /// Fails early, before any work, if the output cannot be written: an unknown container,
    /// or a path that cannot be created. Creates missing parent folders.
    pub fn check(&self) -> Result<(), PipelineError> {
        let Self::File(path) = self else {
            return Ok(());
        };
        muxer_for(path)?;
        let cannot = |err: std::io::Error| {
            PipelineError::Output(format!("cannot write output {}: {err}", path.display()))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(cannot)?;
        }
        if path.is_dir() {
            return Err(PipelineError::Output(format!(
                "cannot write output {}: it is a folder",
                path.display()
            )));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(cannot)?;
        Ok(())
    }
}

fn muxer_for(path: &Path) -> Result<&'static str, PipelineError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("mp4") | Some("mov") | Some("m4v") => Ok("mp4mux"),
        Some("mkv") => Ok("matroskamux"),
        _ => Err(PipelineError::Output(format!(
            "cannot write {}: use a .mp4 or .mkv file name, or `window`",
            path.display()
        ))),
    }
}

/// A running output pipeline.
pub struct Output {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    info: gst_video::VideoInfo,
}

impl Output {
    /// Builds and starts the output for frames described by `stream`.
    pub fn start(spec: &OutputSpec, stream: StreamInfo) -> Result<Self, PipelineError> {
        init_gstreamer()?;
        let (num, den) = match stream.framerate {
            (num, den) if num > 0 && den > 0 => (num, den),
            _ => (30, 1),
        };
        let info = gst_video::VideoInfo::builder(
            gst_video::VideoFormat::Rgb,
            stream.width_px as u32,
            stream.height_px as u32,
        )
        .fps(gst::Fraction::new(num, den))
        .build()
        .map_err(|err| PipelineError::Output(format!("bad output format: {err}")))?;
        let caps = info
            .to_caps()
            .map_err(|err| PipelineError::Output(format!("bad output format: {err}")))?;
        let frame_bytes = (stream.width_px * stream.height_px * 3) as u64;
        let appsrc = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(false)
            // Backpressure: push blocks once a few frames are waiting for the encoder.
            .block(true)
            .max_bytes(frame_bytes * 4)
            .build();

        let description = match spec {
            OutputSpec::File(path) => {
                let muxer = muxer_for(path)?;
                let key_int = (num / den.max(1)).max(1) * 2;
                // x264 fed RGB picks High 4:4:4, which players reject: convert to I420 first.
                format!(
                    "videoconvert ! video/x-raw,format=I420 ! \
                     x264enc tune=zerolatency speed-preset=veryfast pass=quant quantizer=18 \
                     key-int-max={key_int} ! h264parse ! {muxer} ! filesink name=file"
                )
            }
            OutputSpec::Window => "videoconvert ! autovideosink".to_string(),
        };
        let tail = gst::parse::bin_from_description(&description, true).map_err(|err| {
            PipelineError::Output(format!(
                "cannot build the output ({err}); run scripts/setup.sh to install the plugins"
            ))
        })?;
        if let (OutputSpec::File(path), Some(file)) = (spec, tail.by_name("file")) {
            file.set_property("location", path.to_string_lossy().as_ref());
        }
        let pipeline = gst::Pipeline::new();
        pipeline
            .add_many([appsrc.upcast_ref(), tail.upcast_ref::<gst::Element>()])
            .map_err(|err| PipelineError::Output(err.to_string()))?;
        appsrc
            .link(&tail)
            .map_err(|err| PipelineError::Output(err.to_string()))?;
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
            return Err(PipelineError::Output(reason));
        }
        Ok(Self {
            pipeline,
            appsrc,
            info,
        })
    }

    /// Sends one frame; blocks while the encoder is behind. The pixels move into the buffer.
    pub fn push(&self, frame: VideoFrame) -> Result<(), PipelineError> {
        if frame.width_px != self.info.width() as usize
            || frame.height_px != self.info.height() as usize
            || !frame.is_consistent()
        {
            return Err(PipelineError::Output(format!(
                "frame of {}x{} does not match the output's {}x{}",
                frame.width_px,
                frame.height_px,
                self.info.width(),
                self.info.height()
            )));
        }
        let (width_px, height_px) = (frame.width_px, frame.height_px);
        let mut buffer = gst::Buffer::from_mut_slice(frame.rgb);
        {
            let buffer = buffer
                .get_mut()
                .ok_or_else(|| PipelineError::Output("frame buffer is shared".into()))?;
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
                width_px as u32,
                height_px as u32,
                &[0],
                &[(width_px * 3) as i32],
            )
            .map_err(|err| PipelineError::Output(err.to_string()))?;
        }
        self.appsrc.push_buffer(buffer).map_err(|flow| {
            let reason = self
                .pending_error()
                .unwrap_or_else(|| format!("the output stopped ({flow:?})"));
            PipelineError::Output(reason)
        })?;
        Ok(())
    }

    fn pending_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        let message = bus.pop_filtered(&[gst::MessageType::Error])?;
        match message.view() {
            gst::MessageView::Error(err) => Some(describe_error(err)),
            _ => None,
        }
    }

    /// Ends the stream: EOS, wait for the muxer to finish the file (or an error), then Null.
    pub fn finish(self, timeout: Duration) -> Result<(), PipelineError> {
        let _ = self.appsrc.end_of_stream();
        let bus = self
            .pipeline
            .bus()
            .ok_or_else(|| PipelineError::Output("output pipeline has no bus".into()))?;
        let result = match bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            Some(message) => match message.view() {
                gst::MessageView::Error(err) => Err(PipelineError::Output(describe_error(err))),
                _ => Ok(()),
            },
            None => Err(PipelineError::Output(format!(
                "the output did not finish within {} s",
                timeout.as_secs()
            ))),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        result
    }
}
