//! The engine's live settings, their defaults and their checks: the one source every
//! front-end (command line, GUI, element properties, relay API) reads.

use super::EngineConfig;
use super::stream_batch::{CfgType, Guidance};
use crate::stage::control::{SettingsError, Validate};

/// Steps of the LCM schedule the t-indices point into (StreamDiffusion uses 50).
pub const NUM_INFERENCE_STEPS: usize = 50;
/// StreamDiffusion's img2img default: two denoising steps.
pub const DEFAULT_T_INDEX_LIST: [usize; 2] = [32, 45];
/// Guidance scale (guidance is on above 1).
pub const DEFAULT_GUIDANCE_SCALE: f32 = 1.2;
/// RCFG delta.
pub const DEFAULT_DELTA: f32 = 1.0;
/// Residual CFG from the stock noise.
pub const DEFAULT_CFG_TYPE: CfgType = CfgType::SelfNegative;
/// Seed of the fixed per-step noise.
pub const DEFAULT_SEED: u64 = 2;
/// Similar frames skipped in a row before one is forced through.
pub const DEFAULT_SSF_MAX_SKIP_FRAMES: u32 = 10;

/// Settings that may change while frames flow, and the starting values of the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (used by `full` and `initialize` guidance).
    pub negative_prompt: String,
    /// `guidance_scale`.
    pub guidance_scale: f32,
    /// RCFG `delta`.
    pub delta: f32,
    /// The RCFG variant.
    pub cfg_type: CfgType,
    /// Indices into the [`NUM_INFERENCE_STEPS`]-step LCM schedule, noisiest first.
    pub t_index_list: Vec<usize>,
    /// Seed of the fixed noise.
    pub seed: u64,
    /// Similarity filter threshold; `None` turns the filter off.
    pub ssf_threshold: Option<f64>,
    /// The filter's skip cap (StreamDiffusion's `max_skip_frame`).
    pub ssf_max_skip_frames: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            guidance_scale: DEFAULT_GUIDANCE_SCALE,
            delta: DEFAULT_DELTA,
            cfg_type: DEFAULT_CFG_TYPE,
            t_index_list: DEFAULT_T_INDEX_LIST.to_vec(),
            seed: DEFAULT_SEED,
            ssf_threshold: None,
            ssf_max_skip_frames: DEFAULT_SSF_MAX_SKIP_FRAMES,
        }
    }
}

impl EngineSettings {
    /// The guidance these settings ask for.
    pub fn guidance(&self) -> Guidance {
        Guidance {
            cfg_type: self.cfg_type,
            scale: self.guidance_scale,
            delta: self.delta,
        }
    }

    /// The engine configuration that starts with these settings (one frame per call, noise
    /// added, the [`NUM_INFERENCE_STEPS`]-step schedule).
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            t_index_list: self.t_index_list.clone(),
            guidance: self.guidance(),
            seed: self.seed,
            ..EngineConfig::default()
        }
    }
}

impl Validate for EngineSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return Err(SettingsError::Guidance(self.guidance_scale));
        }
        if !self.delta.is_finite() {
            return Err(SettingsError::Delta(self.delta));
        }
        if self.t_index_list.is_empty() {
            return Err(SettingsError::EmptyTIndexList);
        }
        if let Some(&index) = self
            .t_index_list
            .iter()
            .find(|&&index| index >= NUM_INFERENCE_STEPS)
        {
            return Err(SettingsError::TIndexOutOfRange {
                index,
                steps: NUM_INFERENCE_STEPS,
            });
        }
        if let Some(threshold) = self.ssf_threshold
            && !(0.0..=1.0).contains(&threshold)
        {
            return Err(SettingsError::SsfThreshold(threshold));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_engine_defaults() {
        let settings = EngineSettings::default();
        settings.validate().expect("defaults are valid");
        assert_eq!(settings.engine_config(), EngineConfig::default());
    }

    #[test]
    fn bad_values_are_named() {
        let with = |change: fn(&mut EngineSettings)| {
            let mut settings = EngineSettings::default();
            change(&mut settings);
            settings.validate().expect_err("invalid").to_string()
        };
        assert!(with(|s| s.guidance_scale = -1.0).starts_with("guidance -1"));
        assert!(with(|s| s.delta = f32::NAN).starts_with("delta"));
        assert!(with(|s| s.t_index_list.clear()).starts_with("t-index"));
        assert!(with(|s| s.t_index_list = vec![32, 50]).starts_with("t-index 50 is out of range"));
        assert!(with(|s| s.ssf_threshold = Some(1.5)).starts_with("ssf 1.5"));
        assert!("bogus".parse::<CfgType>().is_err());
    }
}
