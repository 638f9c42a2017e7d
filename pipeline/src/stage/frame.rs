//! The unit of work flowing through the pipeline.
//!
//! A [`VideoFrame`] holds its pixels as packed 8-bit RGB bytes on the host, as a tensor on a
//! compute device, or both. A stage that leaves its result on the device ([`VideoFrame::with_tensor`])
//! lets the next stage or a GPU-drawn output take it from there without a host round trip; the
//! bytes are read back only when something asks for them ([`VideoFrame::rgb`]), once.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor};
use streamdiff_models::image::{rgb_to_tensor, tensor_to_rgb};
use streamdiff_types::FrameSize;

/// Pixels that do not make a frame, or a read-back that failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes do not match the stated size.
    #[error("{bytes} bytes do not make a {size} RGB frame ({expected} bytes)", expected = size.rgb_bytes())]
    Bytes {
        /// Bytes given.
        bytes: usize,
        /// Size stated.
        size: FrameSize,
    },
    /// A tensor that is not `[1, 3, height, width]`.
    #[error("a frame tensor must be [1, 3, height, width], got {0:?}")]
    TensorShape(Vec<usize>),
    /// Reading the pixels back from the device failed.
    #[error(transparent)]
    ReadBack(#[from] streamdiff_models::ModelError),
}

/// One video frame and its timing.
pub struct VideoFrame {
    size: FrameSize,
    /// Packed RGB, `size.rgb_bytes()` long, rows tightly packed, top row first. Set at
    /// construction for host frames, on first read for device frames.
    host: OnceLock<Vec<u8>>,
    /// `[1, 3, height, width]` values in `[0, 1]`, for frames a stage left on the device.
    device: Option<Tensor<4>>,
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
    /// A frame of packed RGB bytes (`size.rgb_bytes()` of them), with empty timing: pts 0,
    /// sequence 0, captured now. Set the timing fields after.
    pub fn from_rgb(rgb: Vec<u8>, size: FrameSize) -> Result<Self, FrameError> {
        check_bytes(&rgb, size)?;
        Ok(Self {
            size,
            host: OnceLock::from(rgb),
            device: None,
            pts: Duration::ZERO,
            duration: None,
            captured_at: Instant::now(),
            sequence: 0,
        })
    }

    /// A frame on the device: `[1, 3, height, width]` values in `[0, 1]`, with empty timing.
    pub fn from_tensor(tensor: Tensor<4>) -> Result<Self, FrameError> {
        let size = tensor_size(&tensor)?;
        Ok(Self {
            size,
            host: OnceLock::new(),
            device: Some(tensor),
            pts: Duration::ZERO,
            duration: None,
            captured_at: Instant::now(),
            sequence: 0,
        })
    }

    /// The same timing with new pixels: what a stage returns for its input.
    pub fn with_rgb(self, rgb: Vec<u8>, size: FrameSize) -> Result<Self, FrameError> {
        Ok(Self {
            pts: self.pts,
            duration: self.duration,
            captured_at: self.captured_at,
            sequence: self.sequence,
            ..Self::from_rgb(rgb, size)?
        })
    }

    /// The same timing with new pixels on the device (`[1, 3, height, width]` in `[0, 1]`).
    pub fn with_tensor(self, tensor: Tensor<4>) -> Result<Self, FrameError> {
        Ok(Self {
            pts: self.pts,
            duration: self.duration,
            captured_at: self.captured_at,
            sequence: self.sequence,
            ..Self::from_tensor(tensor)?
        })
    }

    /// The frame's size.
    pub fn size(&self) -> FrameSize {
        self.size
    }

    /// The pixels as packed RGB bytes; a device frame is read back on the first call.
    pub fn rgb(&self) -> Result<&[u8], FrameError> {
        if let Some(rgb) = self.host.get() {
            return Ok(rgb);
        }
        let rgb = self.read_back()?;
        Ok(self.host.get_or_init(|| rgb))
    }

    /// The pixels as packed RGB bytes, moved out when they are on the host.
    pub fn into_rgb(mut self) -> Result<Vec<u8>, FrameError> {
        match self.host.take() {
            Some(rgb) => Ok(rgb),
            None => self.read_back(),
        }
    }

    /// Whether the pixels are on the host already (reading them costs nothing).
    pub fn is_on_host(&self) -> bool {
        self.host.get().is_some()
    }

    /// The device tensor, when a stage left the frame on a device.
    pub fn device_tensor(&self) -> Option<&Tensor<4>> {
        self.device.as_ref()
    }

    /// The pixels as a `[1, 3, height, width]` tensor in `[0, 1]` on `device`: the frame's own
    /// tensor when it is there already, else an upload of the bytes.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor<4>, FrameError> {
        if let Some(tensor) = &self.device
            && tensor.device() == *device
        {
            return Ok(tensor.clone());
        }
        Ok(rgb_to_tensor(self.rgb()?, self.size, device))
    }

    /// The same frame with its pixels on `device` as well (an upload, unless they are there
    /// already): stages after this one share the tensor instead of uploading again, and the
    /// host bytes stay readable for free.
    pub fn uploaded(mut self, device: &Device) -> Result<Self, FrameError> {
        let tensor = self.to_tensor(device)?;
        self.device = Some(tensor);
        Ok(self)
    }

    fn read_back(&self) -> Result<Vec<u8>, FrameError> {
        match &self.device {
            Some(tensor) => Ok(tensor_to_rgb(tensor.clone())?),
            // Unreachable by construction: a frame has bytes or a tensor.
            None => Err(FrameError::Bytes {
                bytes: 0,
                size: self.size,
            }),
        }
    }
}

impl Clone for VideoFrame {
    fn clone(&self) -> Self {
        let host = OnceLock::new();
        if let Some(rgb) = self.host.get() {
            let _ = host.set(rgb.clone());
        }
        Self {
            size: self.size,
            host,
            device: self.device.clone(),
            pts: self.pts,
            duration: self.duration,
            captured_at: self.captured_at,
            sequence: self.sequence,
        }
    }
}

impl std::fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoFrame")
            .field("size", &self.size)
            .field("on_host", &self.is_on_host())
            .field("on_device", &self.device.is_some())
            .field("pts", &self.pts)
            .field("duration", &self.duration)
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

fn check_bytes(rgb: &[u8], size: FrameSize) -> Result<(), FrameError> {
    if rgb.len() == size.rgb_bytes() && !size.is_empty() {
        Ok(())
    } else {
        Err(FrameError::Bytes {
            bytes: rgb.len(),
            size,
        })
    }
}

fn tensor_size(tensor: &Tensor<4>) -> Result<FrameSize, FrameError> {
    match tensor.dims() {
        [1, 3, height_px, width_px] if height_px > 0 && width_px > 0 => {
            Ok(FrameSize::new(width_px, height_px))
        }
        dims => Err(FrameError::TensorShape(dims.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_must_match_the_size() {
        let size = FrameSize::new(4, 2);
        assert!(VideoFrame::from_rgb(vec![0; 24], size).is_ok());
        assert!(VideoFrame::from_rgb(vec![0; 23], size).is_err());
        assert!(VideoFrame::from_rgb(Vec::new(), FrameSize::new(0, 0)).is_err());
    }

    #[test]
    fn device_frames_read_back_once_and_keep_their_timing() {
        let device = Device::flex();
        let rgb: Vec<u8> = (0..24u8).map(|v| v * 10).collect();
        let mut frame = VideoFrame::from_rgb(rgb.clone(), FrameSize::new(4, 2)).expect("frame");
        frame.sequence = 7;
        frame.pts = Duration::from_millis(280);
        let tensor = frame.to_tensor(&device).expect("upload");
        let on_device = frame.with_tensor(tensor).expect("tensor frame");
        assert!(!on_device.is_on_host());
        assert_eq!(
            (on_device.sequence, on_device.pts),
            (7, Duration::from_millis(280))
        );
        assert_eq!(on_device.size(), FrameSize::new(4, 2));
        assert_eq!(on_device.rgb().expect("read back"), rgb.as_slice());
        assert!(on_device.is_on_host(), "the read-back is kept");
        assert_eq!(on_device.clone().into_rgb().expect("bytes"), rgb);
        assert!(VideoFrame::from_tensor(Tensor::<4>::zeros([1, 1, 2, 2], &device)).is_err());

        let both = VideoFrame::from_rgb(rgb.clone(), FrameSize::new(4, 2))
            .and_then(|f| f.uploaded(&device))
            .expect("uploaded");
        assert!(both.is_on_host() && both.device_tensor().is_some());
        assert_eq!(both.rgb().expect("bytes"), rgb.as_slice());
    }
}
