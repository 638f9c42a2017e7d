//! Helpers for streamdiff's end-to-end tests: finding the `streamdiff` binary, decoding videos
//! with GStreamer exactly as they are, and comparing images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use streamdiff_testkit::Unavailable;

/// One decoded frame, packed RGB.
#[derive(Clone, Debug)]
pub struct DecodedFrame {
    /// Packed RGB bytes.
    pub rgb: Vec<u8>,
    /// Width in pixels.
    pub width_px: usize,
    /// Height in pixels.
    pub height_px: usize,
    /// Presentation time.
    pub pts: Duration,
    /// Frame duration, when known.
    pub duration: Option<Duration>,
}

/// A whole decoded video.
#[derive(Clone, Debug, Default)]
pub struct DecodedVideo {
    /// Frames in order.
    pub frames: Vec<DecodedFrame>,
}

impl DecodedVideo {
    /// End of the last frame: its pts plus its duration.
    pub fn duration(&self) -> Duration {
        self.frames
            .last()
            .map(|f| f.pts + f.duration.unwrap_or_default())
            .unwrap_or_default()
    }
}

/// Decodes every video frame of `path` at its own size, as packed RGB.
pub fn decode_video(path: &Path) -> Result<DecodedVideo, String> {
    gst::init().map_err(|e| e.to_string())?;
    let uri = gst::glib::filename_to_uri(
        std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None,
    )
    .map_err(|e| e.to_string())?;
    let description = format!(
        "uridecodebin uri={uri} ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or("no appsink")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let mut video = DecodedVideo::default();
    while let Ok(sample) = sink.pull_sample() {
        let caps = sample.caps().ok_or("no caps")?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
        let buffer = sample.buffer().ok_or("no buffer")?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| e.to_string())?;
        let (w, h) = (info.width() as usize, info.height() as usize);
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data(0).map_err(|e| e.to_string())?;
        let mut rgb = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            rgb.extend_from_slice(&data[row * stride..row * stride + w * 3]);
        }
        video.frames.push(DecodedFrame {
            rgb,
            width_px: w,
            height_px: h,
            pts: Duration::from_nanos(buffer.pts().map_or(0, |t| t.nseconds())),
            duration: buffer
                .duration()
                .map(|d| Duration::from_nanos(d.nseconds())),
        });
    }
    let bus_error = pipeline.bus().and_then(|bus| {
        bus.pop_filtered(&[gst::MessageType::Error])
            .map(|m| format!("{m:?}"))
    });
    let _ = pipeline.set_state(gst::State::Null);
    match bus_error {
        Some(err) if video.frames.is_empty() => Err(err),
        _ => Ok(video),
    }
}

/// The installed default style model (skips or fails the test through
/// [`streamdiff_testkit::require`] when it is missing).
pub fn multistyle_model() -> Result<PathBuf, Unavailable> {
    streamdiff_testkit::installed(
        streamdiff_models::paths::default_multistyle_path(),
        "default model",
    )
}

/// BT.601 luma of packed RGB, rounded: the codec keeps luma at full resolution while chroma is
/// subsampled 2x2, so frames are compared on it.
pub fn luma(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            let y = 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
            y.round().clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// Runs `streamdiff` with `args` and checks it fails cleanly: a non-zero exit, no panic, and
/// exactly one `error:` line on stderr that mentions `needle` (case-insensitive), within a
/// minute.
pub fn expect_clear_failure(args: &[&str], needle: &str) {
    streamdiff_bin(); // Build time is not the program's time.
    let started = std::time::Instant::now();
    let output = run_streamdiff(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} should fail");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {stderr}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "{args:?}: `{}` should mention `{needle}`",
        lines[0]
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{args:?} took too long"
    );
}

/// Peak signal-to-noise ratio in dB between two byte images of equal size.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images differ in size");
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// The `streamdiff` binary of this workspace.
///
/// `cargo test --workspace` (and so `make test`) builds it, through the integration tests of
/// the `streamdiff` crate. When it is missing, or older than a source file of the crates it is
/// made of (a `cargo test -p streamdiff-e2e` after an edit), it is built here first, once.
pub fn streamdiff_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = streamdiff_testkit::workspace_root();
        // The test executable lives in target/<profile>/deps/.
        let profile_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| root.join("target/debug"));
        let bin = profile_dir.join("streamdiff");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let newest_source = ["app", "pipeline", "models"]
            .iter()
            .filter_map(|crate_dir| newest_modification(&root.join(crate_dir).join("src")))
            .max();
        if built.is_none() || newest_source > built {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "streamdiff"]).current_dir(&root);
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building streamdiff failed");
        }
        bin
    })
    .clone()
}

/// The latest modification time of any file below `dir`.
fn newest_modification(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_modification(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// Runs `streamdiff` with `args`, with the test environment (Vulkan, a runtime dir).
pub fn run_streamdiff(args: &[&str]) -> Output {
    streamdiff_command(args)
        .output()
        .expect("streamdiff starts")
}

/// A `streamdiff` command with the test environment set.
pub fn streamdiff_command(args: &[&str]) -> Command {
    let runtime_dir = std::env::temp_dir().join("streamdiff-test-runtime");
    let _ = std::fs::create_dir_all(&runtime_dir);
    let mut command = Command::new(streamdiff_bin());
    command
        .args(args)
        .env("WGPU_BACKEND", "vulkan")
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .env("NO_COLOR", "1");
    command
}

/// A fresh, empty temporary folder for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamdiff-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
