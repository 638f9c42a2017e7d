//! Stochastic Similarity Filter: skip a frame that is nearly the same as the last one processed.
//!
//! As StreamDiffusion's `SimilarImageFilter` (0.1.1): the cosine similarity `s` between the
//! frame and the last frame that went through (both as `[-1, 1]` pixels), a skip probability
//! `max(0, 1 - (1 - s) / (1 - threshold))` (0 when `threshold >= 1`), a uniform draw, and a
//! cap: once `skip_count` exceeds `max_skip_frames` the frame goes through and the count
//! restarts. Like the reference, the count restarts only there, not when a frame passes by
//! chance, so at most `max_skip_frames + 1` frames in a row are skipped. A skipped frame does
//! not enter the stream batch: the caller re-emits its previous output.
//!
//! The similarity is computed on the host from the 8-bit frame (no device round trip), in f64.
//! The draws come from a seeded generator, so a run is repeatable; [`SimilarityFilter::check_with`]
//! takes the draw from the caller (used to replay the reference's draws in tests).

use super::noise::SeededRng;

/// What the filter decided for one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SsfDecision {
    /// Whether the frame is skipped.
    pub skip: bool,
    /// Cosine similarity with the last frame that went through (`None` for the first frame).
    pub similarity: Option<f64>,
    /// The skip probability that was drawn against.
    pub skip_probability: f64,
    /// The frame went through only because the skip cap was reached.
    pub forced: bool,
}

/// Counters of the filter, for stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SsfCounters {
    /// Frames checked.
    pub checked: u64,
    /// Frames skipped.
    pub skipped: u64,
    /// Frames let through because the skip cap was reached.
    pub forced: u64,
    /// Longest run of consecutive skips seen.
    pub longest_skip_run: u64,
}

/// The filter's state.
#[derive(Clone, Debug)]
pub struct SimilarityFilter {
    threshold: f64,
    max_skip_frames: u32,
    previous: Option<Vec<f32>>,
    skip_count: u32,
    current_run: u64,
    rng: SeededRng,
    counters: SsfCounters,
}

impl SimilarityFilter {
    /// A filter with `threshold` (StreamDiffusion's default 0.98), `max_skip_frames` (10)
    /// and a seed for its draws.
    pub fn new(threshold: f64, max_skip_frames: u32, seed: u64) -> Self {
        Self {
            threshold,
            max_skip_frames,
            previous: None,
            skip_count: 0,
            current_run: 0,
            rng: SeededRng::new(seed),
            counters: SsfCounters::default(),
        }
    }

    /// Changes the threshold (live control); the state is kept.
    pub fn set_threshold(&mut self, threshold: f64) {
        self.threshold = threshold;
    }

    /// Changes the skip cap (live control).
    pub fn set_max_skip_frames(&mut self, max_skip_frames: u32) {
        self.max_skip_frames = max_skip_frames;
    }

    /// The counters so far.
    pub fn counters(&self) -> SsfCounters {
        self.counters
    }

    /// Forgets the last frame (after a size change the next frame always goes through).
    pub fn reset(&mut self) {
        self.previous = None;
    }

    /// Decides for a packed 8-bit RGB frame with the filter's own seeded draw.
    pub fn check_rgb(&mut self, rgb: &[u8]) -> SsfDecision {
        let pixels: Vec<f32> = rgb
            .iter()
            .map(|&v| f32::from(v) / 255.0 * 2.0 - 1.0)
            .collect();
        let draw = self.rng.uniform();
        self.check_with(pixels, draw)
    }

    /// Decides for a frame given as `[-1, 1]` pixel values, with the draw `uniform` in [0, 1].
    pub fn check_with(&mut self, pixels: Vec<f32>, uniform: f64) -> SsfDecision {
        self.counters.checked += 1;
        let Some(previous) = self.previous.as_ref().filter(|p| p.len() == pixels.len()) else {
            self.previous = Some(pixels);
            self.current_run = 0;
            return SsfDecision {
                skip: false,
                similarity: None,
                skip_probability: 0.0,
                forced: false,
            };
        };
        let similarity = cosine_similarity(previous, &pixels);
        let skip_probability = if self.threshold >= 1.0 {
            0.0
        } else {
            (1.0 - (1.0 - similarity) / (1.0 - self.threshold)).max(0.0)
        };
        let mut decision = SsfDecision {
            skip: false,
            similarity: Some(similarity),
            skip_probability,
            forced: false,
        };
        if skip_probability < uniform {
            self.previous = Some(pixels);
            self.current_run = 0;
        } else if self.skip_count > self.max_skip_frames {
            self.skip_count = 0;
            self.previous = Some(pixels);
            self.current_run = 0;
            self.counters.forced += 1;
            decision.forced = true;
        } else {
            self.skip_count += 1;
            self.current_run += 1;
            self.counters.skipped += 1;
            self.counters.longest_skip_run = self.counters.longest_skip_run.max(self.current_run);
            decision.skip = true;
        }
        decision
    }

    /// The reference's `skip_count` (skips since the cap last let a frame through).
    pub fn skip_count(&self) -> u32 {
        self.skip_count
    }
}

/// torch's `CosineSimilarity(eps=1e-6)` of two flattened frames, in f64.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut norm_a, mut norm_b) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    dot / (norm_a * norm_b).max(1e-12).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(value: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| value.wrapping_add((i % 7) as u8 * 30))
            .collect()
    }

    #[test]
    fn identical_frames_are_skipped_up_to_the_cap() {
        let mut filter = SimilarityFilter::new(0.98, 3, 1);
        let same = frame(10, 300);
        let decisions: Vec<SsfDecision> = (0..12).map(|_| filter.check_rgb(&same)).collect();
        // First frame always goes through; then skip_count runs 1..=4, the 5th is forced.
        let pattern: Vec<bool> = decisions.iter().map(|d| d.skip).collect();
        assert_eq!(
            pattern,
            [
                false, true, true, true, true, false, true, true, true, true, false, true
            ]
        );
        assert!(decisions[5].forced && decisions[10].forced);
        let counters = filter.counters();
        assert_eq!(
            (counters.skipped, counters.forced, counters.checked),
            (9, 2, 12)
        );
        assert_eq!(counters.longest_skip_run, 4, "max_skip_frames + 1 in a row");
    }

    #[test]
    fn a_changed_frame_is_never_skipped() {
        let mut filter = SimilarityFilter::new(0.98, 10, 2);
        filter.check_rgb(&frame(10, 300));
        for value in [90u8, 170, 250, 40] {
            let decision = filter.check_rgb(&frame(value, 300));
            assert!(!decision.skip, "{decision:?}");
            assert_eq!(decision.skip_probability, 0.0);
        }
    }

    #[test]
    fn skip_rate_follows_the_probability() {
        // Two frames whose similarity gives a skip probability near one half; alternate them
        // against the same previous frame by resetting the reference each time.
        let base: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let mut other = base.clone();
        for value in other.iter_mut().step_by(3) {
            *value = -*value;
        }
        let similarity = cosine_similarity(&base, &other);
        let threshold = 1.0 - (1.0 - similarity) * 2.0; // probability 0.5
        let mut rng = SeededRng::new(3);
        let trials = 4000;
        let mut skipped = 0;
        for _ in 0..trials {
            let mut filter = SimilarityFilter::new(threshold, 1000, 0);
            filter.check_with(base.clone(), 0.0);
            let decision = filter.check_with(other.clone(), rng.uniform());
            assert!((decision.skip_probability - 0.5).abs() < 1e-9);
            skipped += usize::from(decision.skip);
        }
        let rate = skipped as f64 / trials as f64;
        assert!((rate - 0.5).abs() < 0.03, "skip rate {rate}");
    }

    #[test]
    fn threshold_one_never_skips() {
        let mut filter = SimilarityFilter::new(1.0, 10, 4);
        let same = frame(10, 30);
        assert!((0..5).all(|_| !filter.check_rgb(&same).skip));
    }
}
