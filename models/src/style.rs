//! Style selections for the multistyle network: single styles, blends and named presets.

use burn::tensor::{Device, Tensor, TensorData};

use crate::ModelError;

/// Number of styles in the default network.
pub const NUM_STYLES: usize = 26;

/// Named blends shipped with streamdiff, `(name, spec)`. Single styles are `style-N`.
pub const BLEND_PRESETS: &[(&str, &str)] = &[
    ("dusk", "19:0.6,7:0.4"),
    ("ink", "3:0.5,12:0.5"),
    ("pastel", "1:0.34,10:0.33,22:0.33"),
    ("mosaic", "5:0.7,16:0.3"),
];

/// The style preset used when none is given.
pub const DEFAULT_STYLE: &str = "style-19";

/// Normalised style weights (non-negative, summing to 1).
#[derive(Clone, Debug, PartialEq)]
pub struct StyleMix {
    weights: Vec<f32>,
}

impl StyleMix {
    /// One style on its own.
    pub fn single(index: usize) -> Result<Self, ModelError> {
        Self::parse(&index.to_string())
    }

    /// Parses a preset name (`style-7`, `dusk`), an index (`7`) or a blend (`3:0.5,12:0.5`).
    pub fn parse(spec: &str) -> Result<Self, ModelError> {
        let spec = spec.trim();
        if let Some((_, blend)) = BLEND_PRESETS.iter().find(|(name, _)| *name == spec) {
            return Self::parse(blend);
        }
        let spec = spec.strip_prefix("style-").unwrap_or(spec);
        let bad = |reason: String| ModelError::BadStyle {
            spec: spec.to_string(),
            reason,
        };
        let mut weights = vec![0.0f32; NUM_STYLES];
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (index, weight) = match part.split_once(':') {
                Some((index, weight)) => (index.trim(), weight.trim()),
                None => (part, "1"),
            };
            let index: usize = index
                .parse()
                .map_err(|_| bad(format!("`{index}` is not a style index or preset name")))?;
            if index >= NUM_STYLES {
                return Err(bad(format!(
                    "style index must be 0 to {}, got {index}",
                    NUM_STYLES - 1
                )));
            }
            let weight: f32 = weight
                .parse()
                .map_err(|_| bad(format!("`{weight}` is not a number")))?;
            if !weight.is_finite() || weight < 0.0 {
                return Err(bad("weights must be non-negative numbers".into()));
            }
            weights[index] += weight;
        }
        let total: f32 = weights.iter().sum();
        if total <= 0.0 {
            return Err(bad("give at least one style with a positive weight".into()));
        }
        weights.iter_mut().for_each(|w| *w /= total);
        Ok(Self { weights })
    }

    /// The normalised weights, one per style.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The weights as a `[1, num_styles]` row on `device`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(self.weights.clone(), [1, self.weights.len()]),
            device,
        )
    }
}

impl Default for StyleMix {
    /// [`DEFAULT_STYLE`].
    fn default() -> Self {
        // DEFAULT_STYLE is a shipped preset and always parses (tested); style 0 is the fallback
        // that needs no parsing.
        Self::parse(DEFAULT_STYLE).unwrap_or_else(|_| {
            let mut weights = vec![0.0; NUM_STYLES];
            weights[0] = 1.0;
            Self { weights }
        })
    }
}

/// Every preset name: `style-0` … `style-25`, then the named blends.
pub fn preset_names() -> Vec<String> {
    (0..NUM_STYLES)
        .map(|i| format!("style-{i}"))
        .chain(BLEND_PRESETS.iter().map(|(name, _)| name.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_singles_blends_and_presets() {
        let single = StyleMix::parse("style-7").expect("preset");
        assert_eq!(single.weights()[7], 1.0);
        assert_eq!(single, StyleMix::parse("7").expect("index"));
        let blend = StyleMix::parse("3:1,12:3").expect("blend");
        assert!((blend.weights()[3] - 0.25).abs() < 1e-6);
        assert!((blend.weights()[12] - 0.75).abs() < 1e-6);
        assert_eq!(
            StyleMix::default(),
            StyleMix::parse(DEFAULT_STYLE).expect("default")
        );
        for name in preset_names() {
            let mix = StyleMix::parse(&name).expect("every preset parses");
            assert!((mix.weights().iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn rejects_bad_specs() {
        for spec in ["40", "style-26", "x", "3:-1", "3:0", "", "3:abc"] {
            assert!(StyleMix::parse(spec).is_err(), "{spec} should be rejected");
        }
    }
}
