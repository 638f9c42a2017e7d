//! The unit of work flowing through the pipeline.

use std::time::{Duration, Instant};

/// One packed 8-bit RGB video frame with its timing.
#[derive(Clone, Debug)]
pub struct VideoFrame {
    /// `width_px * height_px * 3` bytes, rows tightly packed, top row first.
    pub rgb: Vec<u8>,
    /// Width in pixels.
    pub width_px: usize,
    /// Height in pixels.
    pub height_px: usize,
    /// Presentation time relative to the start of the stream.
    pub pts: Duration,
    /// How long the frame is shown, when the source says.
    pub duration: Option<Duration>,
    /// When the frame left the capture pipeline; end-to-end latency is measured from here.
    pub captured_at: Instant,
    /// Position in capture order, starting at 0 (drops leave gaps).
    pub sequence: u64,
}

impl VideoFrame {
    /// Checks that the pixel buffer matches the stated size.
    pub fn is_consistent(&self) -> bool {
        self.rgb.len() == self.width_px * self.height_px * 3
    }
}
