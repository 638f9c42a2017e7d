//! Decoding a whole (short) source into memory: the evaluation tools compare frame sequences.

use std::sync::Arc;

use crate::PipelineError;
use crate::io::source::{Capture, CaptureConfig, SourceSpec};
use crate::queue::{FrameQueue, QueuePolicy};
use crate::stage::frame::VideoFrame;

/// Every frame of `source` (at most `max_frames`), scaled so the longer side is `size_px`.
pub fn decode_frames(
    source: SourceSpec,
    size_px: usize,
    max_frames: Option<u64>,
) -> Result<Vec<VideoFrame>, PipelineError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|err| PipelineError::Input(format!("cannot start the async runtime: {err}")))?;
    let mut config = CaptureConfig::new(source, size_px);
    config.max_frames = max_frames;
    let queue = Arc::new(FrameQueue::new(
        config.queue_capacity,
        QueuePolicy::Backpressure,
    ));
    let capture = Capture::start(&config, queue.clone(), runtime.handle().clone())?;
    let mut frames = Vec::new();
    while let Some(frame) = runtime.block_on(queue.pop()) {
        frames.push(frame);
    }
    if let Some(error) = capture.finish().error {
        return Err(PipelineError::Input(error));
    }
    Ok(frames)
}
