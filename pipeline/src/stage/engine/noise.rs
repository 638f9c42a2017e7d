//! Seeded random numbers made on the host, so that a seed gives the same noise and the same
//! filter decisions on every backend (burn's own random tensors depend on the device).

use burn::tensor::{Device, Tensor, TensorData};

/// SplitMix64: small, fast, and good enough for noise and coin flips.
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal values (Box–Muller).
    pub fn normals(&mut self, count: usize) -> Vec<f32> {
        let mut values = Vec::with_capacity(count + 1);
        while values.len() < count {
            // 1 - u is in (0, 1], so the logarithm is finite.
            let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
            let angle = std::f64::consts::TAU * self.uniform();
            values.push((radius * angle.cos()) as f32);
            values.push((radius * angle.sin()) as f32);
        }
        values.truncate(count);
        values
    }
}

/// A `shape` tensor of N(0, 1) noise fixed by `seed`.
pub fn seeded_normal(seed: u64, shape: [usize; 4], device: &Device) -> Tensor<4> {
    let count = shape.iter().product();
    Tensor::from_data(
        TensorData::new(SeededRng::new(seed).normals(count), shape),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_repeatable_and_standard() {
        let a = SeededRng::new(7).normals(20_000);
        assert_eq!(a, SeededRng::new(7).normals(20_000));
        assert_ne!(a, SeededRng::new(8).normals(20_000));
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
        let var = a
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        let mut rng = SeededRng::new(1);
        assert!(
            (0..1000)
                .map(|_| rng.uniform())
                .all(|u| (0.0..1.0).contains(&u))
        );
    }
}
