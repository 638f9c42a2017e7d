//! The LCM-style discrete schedule StreamDiffusion uses for SD-Turbo and LCM models.
//!
//! StreamDiffusion (0.1.1) builds a diffusers `LCMScheduler` from the model's scheduler config,
//! calls `set_timesteps(num_inference_steps)` and keeps only the timesteps at `t_index_list`.
//! For each of them it needs `sqrt(ᾱ_t)`, `sqrt(1 - ᾱ_t)` and the consistency-model boundary
//! scalings `c_skip`, `c_out`. The arithmetic here follows diffusers 0.24.0 in f32, the precision
//! the reference runs in (`betas` by torch's f32 `linspace`, `cumprod` accumulated in f64 as
//! torch does on CPU), so the numbers agree to the last bit or two.
//!
//! img2img strength is expressed through `t_index_list`: a larger first index starts from a
//! less noisy timestep and keeps more of the input.

use std::path::Path;

use crate::PipelineError;

/// What the schedule needs from a diffusers `scheduler_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// `num_train_timesteps` (1000 for every SD model).
    pub num_train_timesteps: usize,
    /// `beta_start`.
    pub beta_start: f64,
    /// `beta_end`.
    pub beta_end: f64,
    /// `beta_schedule`: `scaled_linear` or `linear`.
    pub beta_schedule: BetaSchedule,
    /// `original_inference_steps` of the LCM schedule (50 unless the config says otherwise).
    pub original_inference_steps: usize,
    /// `timestep_scaling` of the boundary condition (10).
    pub timestep_scaling: f32,
}

/// How the betas are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `linspace(sqrt(start), sqrt(end))²` (every SD 1.x/2.x model).
    ScaledLinear,
    /// `linspace(start, end)`.
    Linear,
}

impl Default for SchedulerConfig {
    /// SD 1.5 / 2.1 / SD-Turbo: scaled_linear betas from 0.00085 to 0.012 over 1000 steps.
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            original_inference_steps: 50,
            timestep_scaling: 10.0,
        }
    }
}

impl SchedulerConfig {
    /// Reads `scheduler_config.json` (any diffusers scheduler class: only the betas are used,
    /// as `LCMScheduler.from_config` does). Missing keys take diffusers' defaults.
    pub fn from_json(path: &Path) -> Result<Self, PipelineError> {
        let bad = |reason: String| PipelineError::Engine(format!("{}: {reason}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|err| bad(err.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|err| bad(err.to_string()))?;
        let defaults = Self::default();
        let number = |key: &str, default: f64| json[key].as_f64().unwrap_or(default);
        let beta_schedule = match json["beta_schedule"].as_str() {
            None | Some("scaled_linear") => BetaSchedule::ScaledLinear,
            Some("linear") => BetaSchedule::Linear,
            Some(other) => return Err(bad(format!("beta_schedule `{other}` is not supported"))),
        };
        if !json["trained_betas"].is_null() {
            return Err(bad("trained_betas are not supported".into()));
        }
        Ok(Self {
            num_train_timesteps: number("num_train_timesteps", 1000.0) as usize,
            beta_start: number("beta_start", defaults.beta_start),
            beta_end: number("beta_end", defaults.beta_end),
            beta_schedule,
            original_inference_steps: number("original_inference_steps", 50.0) as usize,
            timestep_scaling: number("timestep_scaling", 10.0) as f32,
        })
    }

    /// `alphas_cumprod` as torch computes it in f32.
    pub fn alphas_cumprod(&self) -> Vec<f32> {
        let n = self.num_train_timesteps;
        let betas: Vec<f32> = match self.beta_schedule {
            BetaSchedule::ScaledLinear => {
                linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::Linear => linspace_f32(self.beta_start, self.beta_end, n),
        };
        // torch's CPU cumprod accumulates in f64 and stores each partial product as f32.
        let mut product = 1.0f64;
        betas
            .iter()
            .map(|&beta| {
                product *= f64::from(1.0f32 - beta);
                product as f32
            })
            .collect()
    }

    /// diffusers 0.24 `LCMScheduler.set_timesteps(num_inference_steps)`: descending timesteps.
    pub fn lcm_timesteps(&self, num_inference_steps: usize) -> Result<Vec<usize>, PipelineError> {
        let original = self.original_inference_steps;
        if original == 0 || original > self.num_train_timesteps {
            return Err(PipelineError::Engine(format!(
                "original_inference_steps {original} must be in 1..={}",
                self.num_train_timesteps
            )));
        }
        if num_inference_steps == 0 || num_inference_steps > original {
            return Err(PipelineError::Engine(format!(
                "num_inference_steps {num_inference_steps} must be in 1..={original}"
            )));
        }
        let k = self.num_train_timesteps / original;
        // lcm_origin_timesteps = [1..=original] * k - 1, reversed, then floor(linspace(0, len,
        // num, endpoint=False)) picks indices (numpy's arithmetic, in f64).
        let origin: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
        let step = origin.len() as f64 / num_inference_steps as f64;
        Ok((0..num_inference_steps)
            .map(|i| origin[((i as f64) * step).floor() as usize])
            .collect())
    }
}

/// torch.linspace in f32 on CPU: the first half counts up from `start`, the second down from `end`.
fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// The numbers of one denoising step of the stream batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepScalars {
    /// The UNet timestep.
    pub timestep: usize,
    /// `sqrt(ᾱ_t)`.
    pub alpha_prod_t_sqrt: f32,
    /// `sqrt(1 - ᾱ_t)`.
    pub beta_prod_t_sqrt: f32,
    /// Boundary condition: weight of the noisy sample.
    pub c_skip: f32,
    /// Boundary condition: weight of the predicted clean sample.
    pub c_out: f32,
}

/// The sub-schedule of a stream: one [`StepScalars`] per entry of `t_index_list`.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSchedule {
    /// `num_inference_steps` of the LCM schedule the indices point into.
    pub num_inference_steps: usize,
    /// The chosen indices, first (noisiest) first.
    pub t_index_list: Vec<usize>,
    /// One entry per index.
    pub steps: Vec<StepScalars>,
}

impl StreamSchedule {
    /// The sub-schedule for `t_index_list` of an LCM schedule with `num_inference_steps`.
    pub fn new(
        config: &SchedulerConfig,
        num_inference_steps: usize,
        t_index_list: &[usize],
    ) -> Result<Self, PipelineError> {
        if t_index_list.is_empty() {
            return Err(PipelineError::Engine(
                "t_index_list needs at least one index".into(),
            ));
        }
        let timesteps = config.lcm_timesteps(num_inference_steps)?;
        let alphas_cumprod = config.alphas_cumprod();
        let sigma_data = 0.5f32;
        let steps = t_index_list
            .iter()
            .map(|&index| {
                let &timestep = timesteps.get(index).ok_or_else(|| {
                    PipelineError::Engine(format!(
                        "t_index {index} is out of range: the schedule has {num_inference_steps} steps (0..={})",
                        num_inference_steps - 1
                    ))
                })?;
                let alpha_bar = alphas_cumprod[timestep];
                let scaled = timestep as f32 * config.timestep_scaling;
                let denominator = scaled * scaled + sigma_data * sigma_data;
                Ok(StepScalars {
                    timestep,
                    alpha_prod_t_sqrt: alpha_bar.sqrt(),
                    beta_prod_t_sqrt: (1.0 - alpha_bar).sqrt(),
                    c_skip: sigma_data * sigma_data / denominator,
                    c_out: scaled / denominator.sqrt(),
                })
            })
            .collect::<Result<Vec<_>, PipelineError>>()?;
        Ok(Self {
            num_inference_steps,
            t_index_list: t_index_list.to_vec(),
            steps,
        })
    }

    /// Denoising steps per frame, `len(t_index_list)`.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Never true: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcm_timesteps_match_diffusers() {
        let config = SchedulerConfig::default();
        let fifty = config.lcm_timesteps(50).expect("50 steps");
        assert_eq!(fifty.len(), 50);
        assert_eq!(
            (fifty[0], fifty[32], fifty[45], fifty[49]),
            (999, 359, 99, 19)
        );
        // floor(linspace(0, 50, 4, endpoint=False)) = [0, 12, 25, 37].
        assert_eq!(
            config.lcm_timesteps(4).expect("4"),
            vec![999, 759, 499, 259]
        );
        assert_eq!(config.lcm_timesteps(1).expect("1"), vec![999]);
        assert!(config.lcm_timesteps(51).is_err());
        assert!(config.lcm_timesteps(0).is_err());
    }

    #[test]
    fn scalars_match_the_img2img_step_fixture() {
        // models/tests/fixtures/sd/img2img_step/params.json: t = 359.
        let schedule =
            StreamSchedule::new(&SchedulerConfig::default(), 50, &[32]).expect("schedule");
        let step = schedule.steps[0];
        assert_eq!(step.timestep, 359);
        assert!((step.alpha_prod_t_sqrt.powi(2) - 0.491_500).abs() < 1e-6);
        assert!((step.c_out - 1.0).abs() < 1e-6);
        assert!((step.c_skip - 1.94e-8).abs() < 1e-10);
        assert!(StreamSchedule::new(&SchedulerConfig::default(), 50, &[50]).is_err());
        assert!(StreamSchedule::new(&SchedulerConfig::default(), 50, &[]).is_err());
    }

    #[test]
    fn boundary_condition_is_identity_far_from_zero_and_skip_at_zero() {
        let config = SchedulerConfig {
            original_inference_steps: 1000,
            ..SchedulerConfig::default()
        };
        let schedule =
            StreamSchedule::new(&config, 1000, &[999]).expect("t = 0 is reachable with 1000 steps");
        let step = schedule.steps[0];
        assert_eq!(step.timestep, 0);
        assert_eq!((step.c_skip, step.c_out), (1.0, 0.0));
    }
}
