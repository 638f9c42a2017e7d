//! Run statistics: counters and end-to-end latency percentiles.

use std::time::Duration;

/// What a finished run reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunSummary {
    /// Frames that left the capture pipeline.
    pub frames_in: u64,
    /// Frames written to the output.
    pub frames_out: u64,
    /// Frames dropped because a newer one arrived first (live sources only).
    pub frames_dropped: u64,
    /// Wall time from start to the output being finalised.
    pub wall_time_s: f64,
    /// Output frames per second of wall time.
    pub fps: f64,
    /// Median capture-to-output latency.
    pub latency_p50_ms: f64,
    /// 95th percentile capture-to-output latency.
    pub latency_p95_ms: f64,
    /// Median time the model stage spent on one frame.
    pub stage_p50_ms: f64,
    /// A problem that ended the input early, if any (the output is still complete).
    pub input_warning: Option<String>,
}

/// Collects per-frame durations.
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

    /// The `p`-th percentile (0..=100) by nearest rank; 0 when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.samples_ms.is_empty() {
            return 0.0;
        }
        let mut sorted = self.samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut stats = DurationStats::default();
        assert_eq!(stats.percentile_ms(50.0), 0.0);
        for ms in 1..=100 {
            stats.record(Duration::from_millis(ms));
        }
        assert_eq!(stats.percentile_ms(50.0), 50.0);
        assert_eq!(stats.percentile_ms(95.0), 95.0);
        assert_eq!(stats.percentile_ms(100.0), 100.0);
    }
}
