//! Plain types every streamdiff crate shares. This crate sits below all others (the kernels in
//! `shaders/`, the models, the pipeline, the front-ends) and depends on nothing, so any of them
//! can use its types without pulling in burn or GStreamer.

use std::fmt;
use std::str::FromStr;

/// The size of a video frame or an image plane, in pixels.
///
/// The one size convention of the workspace: not `(w, h)` tuples, not `[height, width]` arrays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FrameSize {
    /// Width in pixels.
    pub width_px: usize,
    /// Height in pixels.
    pub height_px: usize,
}

impl FrameSize {
    /// A size of `width_px` by `height_px`.
    pub const fn new(width_px: usize, height_px: usize) -> Self {
        Self {
            width_px,
            height_px,
        }
    }

    /// Number of pixels.
    pub const fn pixels(&self) -> usize {
        self.width_px * self.height_px
    }

    /// Bytes of one packed 8-bit RGB frame of this size.
    pub const fn rgb_bytes(&self) -> usize {
        self.pixels() * 3
    }

    /// Whether either side is zero.
    pub const fn is_empty(&self) -> bool {
        self.width_px == 0 || self.height_px == 0
    }

    /// The longer side.
    pub fn long_side_px(&self) -> usize {
        self.width_px.max(self.height_px)
    }

    /// The next-coarser pyramid level: halved, rounded up.
    pub fn half(&self) -> Self {
        Self::new(self.width_px.div_ceil(2), self.height_px.div_ceil(2))
    }

    /// The processing size for a source of this (display) size: the longer side becomes
    /// `long_side_px`, the aspect ratio is kept, and both sides are rounded to a multiple of
    /// 4 (at least 16), which every encoder and the models accept.
    pub fn fit_long_side(&self, long_side_px: usize) -> Self {
        let round4 = |v: f64| ((v / 4.0).round() as usize * 4).max(16);
        let (w, h) = (self.width_px.max(1) as f64, self.height_px.max(1) as f64);
        let long = long_side_px as f64;
        if w >= h {
            Self::new(round4(long), round4(long * h / w))
        } else {
            Self::new(round4(long * w / h), round4(long))
        }
    }

    /// The largest size of this aspect ratio that fits inside `bounds` (a letterbox or
    /// pillarbox picture), at least 1x1.
    pub fn fit_within(&self, bounds: FrameSize) -> Self {
        if self.is_empty() || bounds.is_empty() {
            return Self::new(bounds.width_px.max(1), bounds.height_px.max(1));
        }
        // Compare w/h ratios exactly in integers: self.w * bounds.h vs bounds.w * self.h.
        let (w, h) = (self.width_px as u128, self.height_px as u128);
        let (bw, bh) = (bounds.width_px as u128, bounds.height_px as u128);
        if w * bh >= bw * h {
            // Wider than the bounds: full width, bars above and below.
            Self::new(bounds.width_px, ((bw * h + w / 2) / w).max(1) as usize)
        } else {
            Self::new(((bh * w + h / 2) / h).max(1) as usize, bounds.height_px)
        }
    }
}

impl fmt::Display for FrameSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width_px, self.height_px)
    }
}

/// A size that is not `WIDTHxHEIGHT` in whole pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseFrameSizeError(String);

impl fmt::Display for ParseFrameSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "size `{}`: use WIDTHxHEIGHT, e.g. 640x480", self.0)
    }
}

impl std::error::Error for ParseFrameSizeError {}

impl FromStr for FrameSize {
    type Err = ParseFrameSizeError;

    /// Parses `640x480` (also `640X480`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseFrameSizeError(text.to_string());
        let (w, h) = text.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let width_px = w.trim().parse().map_err(|_| bad())?;
        let height_px = h.trim().parse().map_err(|_| bad())?;
        Ok(Self::new(width_px, height_px))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_long_side_and_rounds_to_four() {
        let fit = |w, h, long| FrameSize::new(w, h).fit_long_side(long);
        assert_eq!(fit(1280, 720, 256), FrameSize::new(256, 144));
        assert_eq!(fit(720, 1280, 256), FrameSize::new(144, 256));
        assert_eq!(fit(832, 480, 250), FrameSize::new(252, 144));
        assert_eq!(fit(100, 100, 64), FrameSize::new(64, 64));
    }

    #[test]
    fn fits_within_bounds_keeping_the_aspect_ratio() {
        let bounds = FrameSize::new(128, 96);
        assert_eq!(
            FrameSize::new(128, 72).fit_within(bounds),
            FrameSize::new(128, 72)
        );
        assert_eq!(
            FrameSize::new(256, 144).fit_within(bounds),
            FrameSize::new(128, 72)
        );
        assert_eq!(
            FrameSize::new(96, 128).fit_within(bounds),
            FrameSize::new(72, 96)
        );
        assert_eq!(
            FrameSize::new(64, 48).fit_within(bounds),
            FrameSize::new(128, 96)
        );
    }

    #[test]
    fn parses_and_prints() {
        let size: FrameSize = "640x480".parse().expect("parses");
        assert_eq!(size, FrameSize::new(640, 480));
        assert_eq!(size.to_string(), "640x480");
        assert_eq!(size.pixels(), 640 * 480);
        assert_eq!(size.rgb_bytes(), 640 * 480 * 3);
        assert_eq!(FrameSize::new(5, 3).half(), FrameSize::new(3, 2));
        for bad in ["640", "x480", "640x", "axb", "-1x2"] {
            assert!(bad.parse::<FrameSize>().is_err(), "{bad}");
        }
    }
}
