//! What a run reports, while it runs and at its end: one [`Metrics`] snapshot type.
//!
//! The runner keeps a [`Live<Metrics>`](crate::stage::Live) up to date (a few times a second and
//! at the end) and returns the final snapshot. A front-end reads it whenever it likes: the GUI
//! plots it, the relay serves it as Prometheus text, the element exposes it as properties, the
//! command line shows progress and prints the summary.

use std::time::Duration;

use streamdiff_types::FrameSize;

use crate::stage::engine::stage::EngineStats;

/// A snapshot of a run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Whether the run is still going.
    pub running: bool,
    /// The stage's name (model, backend, adapter).
    pub stage: String,
    /// `wgpu` or `flex`, when the stage says.
    pub backend: String,
    /// The compute adapter, e.g. `NVIDIA H200 (Vulkan)`, when the stage says.
    pub adapter: String,
    /// Frames that left the capture pipeline.
    pub frames_in: u64,
    /// Frames given to every output.
    pub frames_out: u64,
    /// Frames dropped because a newer one arrived first (live sources only).
    pub frames_dropped: u64,
    /// Frames answered without running the model (the similarity filter).
    pub frames_skipped: u64,
    /// Wall time since the run started.
    pub wall_time_s: f64,
    /// Output frames per second of wall time, over the whole run.
    pub fps: f64,
    /// Output frames per second over the last second or so.
    pub fps_recent: f64,
    /// Input frames per second over the last second or so.
    pub input_fps_recent: f64,
    /// Median capture-to-output latency over the run.
    pub latency_p50_ms: f64,
    /// 95th percentile capture-to-output latency over the run.
    pub latency_p95_ms: f64,
    /// Capture-to-output latency of the last frame out.
    pub latency_last_ms: f64,
    /// Median time the model stage spent on one frame.
    pub stage_p50_ms: f64,
    /// Time the model stage spent on the last frame.
    pub stage_last_ms: f64,
    /// Frames waiting in the input queue.
    pub input_queue_depth: usize,
    /// Frames waiting in the output queue.
    pub output_queue_depth: usize,
    /// Stream time of the last frame out.
    pub position_s: f64,
    /// The input's duration, for finite inputs.
    pub duration_s: Option<f64>,
    /// The size of the last frame out.
    pub output_size: Option<FrameSize>,
    /// The StreamDiffusion engine's counters, when the stage runs it.
    pub engine: Option<EngineStats>,
    /// A problem that ended the input early, if any (the output is still complete).
    pub input_warning: Option<String>,
}

/// Collects per-frame durations: exact percentiles over a run.
#[derive(Clone, Debug, Default)]
pub struct DurationStats {
    samples_ms: Vec<f64>,
}

impl DurationStats {
    /// Records one duration.
    pub fn record(&mut self, duration: Duration) {
        self.samples_ms.push(duration.as_secs_f64() * 1000.0);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples_ms.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples_ms.is_empty()
    }

    /// The last sample; 0 when empty.
    pub fn last_ms(&self) -> f64 {
        self.samples_ms.last().copied().unwrap_or(0.0)
    }

    /// The `p`-th percentile (0..=100) by nearest rank; 0 when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.samples_ms.is_empty() {
            return 0.0;
        }
        let mut samples = self.samples_ms.clone();
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        let index = rank.clamp(1, samples.len()) - 1;
        // Selection is linear in the samples: cheap enough to publish while a long run goes.
        let (_, value, _) = samples.select_nth_unstable_by(index, f64::total_cmp);
        *value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut stats = DurationStats::default();
        assert_eq!(stats.percentile_ms(50.0), 0.0);
        for ms in (1..=100).rev() {
            stats.record(Duration::from_millis(ms));
        }
        assert_eq!(stats.percentile_ms(50.0), 50.0);
        assert_eq!(stats.percentile_ms(95.0), 95.0);
        assert_eq!(stats.percentile_ms(100.0), 100.0);
        assert_eq!(stats.last_ms(), 1.0);
    }
}
