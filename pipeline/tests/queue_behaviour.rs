//! The input queue under a slow consumer, with real GStreamer sources: a live source keeps the
//! newest frames and counts drops; a file source loses nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use streamdiff_pipeline::io::source::{Capture, CaptureConfig, SourceSpec};
use streamdiff_pipeline::queue::{FrameQueue, QueuePolicy};
use streamdiff_testkit as testkit;

/// A consumer much slower than the source's 30 or 25 fps.
const SLOW_CONSUMER: Duration = Duration::from_millis(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_source_newest_frame_wins_under_a_slow_consumer() {
    let mut config = CaptureConfig::new(SourceSpec::TestPattern { live: true }, 64);
    config.queue_capacity = 2;
    assert_eq!(config.queue_policy(), QueuePolicy::NewestWins);
    let queue = Arc::new(FrameQueue::new(
        config.queue_capacity,
        config.queue_policy(),
    ));
    let capture = Capture::start(&config, queue.clone(), tokio::runtime::Handle::current())
        .expect("live test pattern starts");

    let mut sequences = Vec::new();
    let mut ages = Vec::new();
    for _ in 0..8 {
        let frame = queue.pop().await.expect("live source keeps producing");
        ages.push(frame.captured_at.elapsed());
        sequences.push(frame.sequence);
        tokio::time::sleep(SLOW_CONSUMER).await;
    }
    let captured = capture.frames_captured();
    capture.finish();

    assert!(queue.dropped() > 0, "a slow consumer must cause drops");
    // 30 fps against one pop per 120 ms: each pop skips about three frames on average.
    let gaps: Vec<u64> = sequences.windows(2).map(|w| w[1] - w[0]).collect();
    let mean_gap = gaps.iter().sum::<u64>() as f64 / gaps.len() as f64;
    assert!(
        mean_gap >= 2.0,
        "frames between pops must be dropped, gaps {gaps:?}"
    );
    // Newest wins: a popped frame is at most a couple of frame times old (slack for a loaded
    // machine), never the 120 ms per frame a growing backlog would add up to.
    let oldest = ages.iter().skip(1).max().copied().unwrap_or_default();
    assert!(
        oldest < Duration::from_millis(400),
        "popped frames should be fresh, oldest was {oldest:?}"
    );
    assert_eq!(
        captured,
        queue.pushed(),
        "every captured frame went through the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_loses_no_frame_under_a_slow_consumer() {
    let Some(clip) = testkit::require(testkit::data_file("video/bigbuckbunny.mp4")) else {
        return;
    };
    let mut config = CaptureConfig::new(SourceSpec::File(clip), 64);
    config.queue_capacity = 2;
    assert_eq!(config.queue_policy(), QueuePolicy::Backpressure);
    let queue = Arc::new(FrameQueue::new(
        config.queue_capacity,
        config.queue_policy(),
    ));
    let capture = Capture::start(&config, queue.clone(), tokio::runtime::Handle::current())
        .expect("file source starts");

    let started = Instant::now();
    let mut sequences = Vec::new();
    while let Some(frame) = queue.pop().await {
        sequences.push(frame.sequence);
        // Slow for the first frames only, to keep the test short; backpressure is what's tested.
        if sequences.len() <= 10 {
            tokio::time::sleep(SLOW_CONSUMER).await;
        }
    }
    let end = capture.finish();
    assert!(end.error.is_none(), "decoding failed: {:?}", end.error);
    assert!(started.elapsed() >= SLOW_CONSUMER * 10);
    assert_eq!(queue.dropped(), 0, "a file source must not drop frames");
    // The clip has 132 video frames at 25 fps (gst-discoverer reports 5.312 s with the audio).
    assert_eq!(sequences.len(), 132, "every frame of the clip arrives");
    assert!(
        sequences.iter().enumerate().all(|(i, &s)| s == i as u64),
        "frames arrive in order without gaps"
    );
}
