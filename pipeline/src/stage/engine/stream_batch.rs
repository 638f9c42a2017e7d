//! Stream Batch with Residual CFG: the latent state machine of StreamDiffusion's
//! `predict_x0_batch` / `unet_step` (0.1.1), independent of how the UNet is called.
//!
//! With `n = len(t_index_list)` steps and `f = frame_buffer_size` frames per call, the batch has
//! `B = n·f` rows: the `f` new frames at the first (noisiest) timestep, then the buffered frames,
//! each `f` rows one step further. One call runs ONE UNet batch over all rows, emits the last `f`
//! rows (frames that finished every step), and re-noises the other rows to their next timestep
//! with the fixed per-step noise (`init_noise`). A frame therefore comes out `n - 1` calls after
//! it went in: the pipeline delay.
//!
//! Residual CFG (`cfg_type`), active when `guidance_scale > 1`:
//! - `none`: no guidance (the reference forces guidance 1).
//! - `full`: classic CFG, the batch doubled with the negative prompt: `2B` UNet rows.
//! - `self`: the unconditional prediction is the "stock noise" (the noise the schedule put in,
//!   corrected by the last prediction) times `delta`: no extra UNet rows.
//! - `initialize`: as `self`, but the new frames' stock noise is a real negative-prompt
//!   prediction: `B + f` rows.
//!
//! For `f = 1` every operation is the reference's. For `f > 1` the reference (0.1.1) shifts its
//! buffers by one row rather than by `f` rows and fails with a shape error after the first call
//! when `n > 1`; here every shift is by `f` rows (one frame slot), the generalisation the
//! reference's own buffer sizes imply. The new frames all take the first noise row, as in the
//! reference.

use burn::tensor::{Device, Tensor, TensorData};

use super::scheduler::StreamSchedule;
use crate::stage::control::SettingsError;

/// How classifier-free guidance is approximated (StreamDiffusion's `cfg_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CfgType {
    /// No guidance.
    None,
    /// Classic CFG with the negative prompt: twice the UNet rows.
    Full,
    /// Residual CFG from the stock noise: no extra UNet rows.
    #[default]
    #[serde(rename = "self")]
    SelfNegative,
    /// Residual CFG whose new-frame stock noise is one negative-prompt evaluation per frame.
    Initialize,
}

impl std::str::FromStr for CfgType {
    type Err = SettingsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Self::None),
            "full" => Ok(Self::Full),
            "self" => Ok(Self::SelfNegative),
            "initialize" => Ok(Self::Initialize),
            other => Err(SettingsError::CfgType(other.to_string())),
        }
    }
}

impl std::fmt::Display for CfgType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Full => "full",
            Self::SelfNegative => "self",
            Self::Initialize => "initialize",
        })
    }
}

/// Guidance settings that may change between calls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guidance {
    /// The RCFG variant.
    pub cfg_type: CfgType,
    /// `guidance_scale`; guidance is on above 1.
    pub scale: f32,
    /// `delta`: the weight of the stock noise as the unconditional prediction (self/initialize).
    pub delta: f32,
}

impl Guidance {
    /// Whether guidance changes the prediction (the reference's `guidance_scale > 1`, and
    /// never for `none`).
    pub fn active(&self) -> bool {
        self.cfg_type != CfgType::None && self.scale > 1.0
    }

    /// UNet rows of one call for a batch of `rows` latent rows and `frames` new frames.
    pub fn unet_rows(&self, rows: usize, frames: usize) -> usize {
        match (self.active(), self.cfg_type) {
            (true, CfgType::Full) => 2 * rows,
            (true, CfgType::Initialize) => rows + frames,
            _ => rows,
        }
    }
}

/// The text conditioning: `[1, tokens, width]` each.
#[derive(Clone, Debug)]
pub struct PromptEmbeds {
    /// The prompt.
    pub cond: Tensor<3>,
    /// The negative prompt (used by `full` and `initialize`).
    pub uncond: Tensor<3>,
}

/// What one UNet evaluation is given: latents, timesteps and text context, row for row.
pub struct UnetBatch {
    /// `[rows, 4, h, w]`.
    pub sample: Tensor<4>,
    /// `[rows]`.
    pub timesteps: Tensor<1>,
    /// `[rows, tokens, width]`.
    pub context: Tensor<3>,
}

/// The schedule's numbers, one per latent row (`[B, 1, 1, 1]`; timesteps `[B]`).
#[derive(Clone, Debug)]
struct RowScalars {
    alpha: Tensor<4>,
    beta: Tensor<4>,
    c_skip: Tensor<4>,
    c_out: Tensor<4>,
    /// `alpha`/`beta` of each row's next step (1 for the last step's rows).
    alpha_next: Tensor<4>,
    beta_next: Tensor<4>,
    timesteps: Tensor<1>,
}

impl RowScalars {
    fn new(schedule: &StreamSchedule, frames: usize, device: &Device) -> Self {
        let rows = schedule.len() * frames;
        let steps = &schedule.steps;
        let per_row = |value: &dyn Fn(usize) -> f32| {
            let values: Vec<f32> = (0..rows).map(|row| value(row / frames)).collect();
            Tensor::<4>::from_data(TensorData::new(values, [rows, 1, 1, 1]), device)
        };
        let timesteps: Vec<f32> = (0..rows)
            .map(|row| steps[row / frames].timestep as f32)
            .collect();
        Self {
            alpha: per_row(&|step| steps[step].alpha_prod_t_sqrt),
            beta: per_row(&|step| steps[step].beta_prod_t_sqrt),
            c_skip: per_row(&|step| steps[step].c_skip),
            c_out: per_row(&|step| steps[step].c_out),
            alpha_next: per_row(&|step| steps.get(step + 1).map_or(1.0, |s| s.alpha_prod_t_sqrt)),
            beta_next: per_row(&|step| steps.get(step + 1).map_or(1.0, |s| s.beta_prod_t_sqrt)),
            timesteps: Tensor::<1>::from_data(TensorData::new(timesteps, [rows]), device),
        }
    }
}

/// The stream batch state.
#[derive(Debug)]
pub struct StreamBatch {
    schedule: StreamSchedule,
    frames: usize,
    latent_shape: [usize; 3],
    add_noise: bool,
    scalars: RowScalars,
    /// The fixed per-row noise, `[B, c, h, w]`.
    init_noise: Tensor<4>,
    /// RCFG's running estimate of each row's noise, `[B, c, h, w]`.
    stock_noise: Tensor<4>,
    /// The frames in flight, `[(n - 1)·f, c, h, w]`; `None` for one step.
    buffer: Option<Tensor<4>>,
    calls: u64,
}

impl StreamBatch {
    /// A batch for `schedule`, `frames` frames per call (`frame_buffer_size`) and latents of
    /// `latent_shape` (`[channels, height, width]`), with the fixed noise `init_noise`
    /// (`[n·f, c, h, w]`). The buffer starts at zero, as in the reference.
    pub fn new(
        schedule: StreamSchedule,
        frames: usize,
        latent_shape: [usize; 3],
        init_noise: Tensor<4>,
        add_noise: bool,
    ) -> Self {
        let device = init_noise.device();
        let rows = schedule.len() * frames;
        let [c, h, w] = latent_shape;
        let buffer =
            (schedule.len() > 1).then(|| Tensor::<4>::zeros([rows - frames, c, h, w], &device));
        let scalars = RowScalars::new(&schedule, frames, &device);
        Self {
            frames,
            latent_shape,
            add_noise,
            scalars,
            stock_noise: init_noise.zeros_like(),
            init_noise,
            buffer,
            schedule,
            calls: 0,
        }
    }

    /// The same batch with another schedule of the same length: the frames in flight continue
    /// at the new timesteps. Another length needs a new batch.
    pub fn with_schedule(self, schedule: StreamSchedule) -> Self {
        if schedule.len() != self.schedule.len() {
            let noise = self.init_noise.clone();
            let [c, h, w] = self.latent_shape;
            let rows = schedule.len() * self.frames;
            let noise = if noise.dims()[0] == rows {
                noise
            } else {
                noise
                    .narrow(0, 0, 1)
                    .repeat_dim(0, rows)
                    .reshape([rows, c, h, w])
            };
            return Self::new(
                schedule,
                self.frames,
                self.latent_shape,
                noise,
                self.add_noise,
            );
        }
        let scalars = RowScalars::new(&schedule, self.frames, &self.init_noise.device());
        Self {
            schedule,
            scalars,
            ..self
        }
    }

    /// The same batch with other fixed noise (`[B, c, h, w]`).
    pub fn with_init_noise(self, init_noise: Tensor<4>) -> Self {
        Self { init_noise, ..self }
    }

    /// The schedule.
    pub fn schedule(&self) -> &StreamSchedule {
        &self.schedule
    }

    /// Frames per call.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// `[channels, height, width]` of the latents.
    pub fn latent_shape(&self) -> [usize; 3] {
        self.latent_shape
    }

    /// Latent rows, `len(t_index_list) · frame_buffer_size`.
    pub fn rows(&self) -> usize {
        self.schedule.len() * self.frames
    }

    /// Calls (`step`) until an output frame is a real frame: `len(t_index_list) - 1`.
    pub fn delay_calls(&self) -> usize {
        self.schedule.len() - 1
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The fixed noise, `[B, c, h, w]`.
    pub fn init_noise(&self) -> &Tensor<4> {
        &self.init_noise
    }

    /// The frames in flight (`None` with one step).
    pub fn buffer(&self) -> Option<&Tensor<4>> {
        self.buffer.as_ref()
    }

    /// The RCFG stock noise.
    pub fn stock_noise(&self) -> &Tensor<4> {
        &self.stock_noise
    }

    /// img2img entry: the new frames' latents (`[f, c, h, w]`, already scaled) noised to the
    /// first timestep with the first noise row (the reference's `add_noise(latent,
    /// init_noise[0], 0)`).
    pub fn noise_new_frames(&self, latents: Tensor<4>) -> Tensor<4> {
        let [c, h, w] = self.latent_shape;
        let noise = self
            .init_noise
            .clone()
            .narrow(0, 0, 1)
            .reshape([1, c, h, w]);
        let alpha = self.schedule.steps[0].alpha_prod_t_sqrt;
        let beta = self.schedule.steps[0].beta_prod_t_sqrt;
        latents * alpha + noise * beta
    }

    /// One stream-batch call: `x_t_new` (`[f, c, h, w]`, the new frames at the first timestep),
    /// one UNet evaluation through `unet`, and the `[f, c, h, w]` denoised latents of the frames
    /// that finished their last step.
    pub fn step(
        &mut self,
        x_t_new: Tensor<4>,
        prompt: &PromptEmbeds,
        guidance: Guidance,
        unet: &mut dyn FnMut(UnetBatch) -> Tensor<4>,
    ) -> Tensor<4> {
        let f = self.frames;
        let rows = self.rows();
        let x_t = match self.buffer.take() {
            Some(buffer) => {
                // The stock noise moves one frame slot along with the latents.
                self.stock_noise = Tensor::cat(
                    vec![
                        self.init_noise.clone().narrow(0, 0, f),
                        self.stock_noise.clone().narrow(0, 0, rows - f),
                    ],
                    0,
                );
                Tensor::cat(vec![x_t_new, buffer], 0)
            }
            None => x_t_new,
        };

        let active = guidance.active();
        let cond = prompt.cond.clone().repeat_dim(0, rows);
        let batch = match (active, guidance.cfg_type) {
            (true, CfgType::Full) => UnetBatch {
                sample: Tensor::cat(vec![x_t.clone(), x_t.clone()], 0),
                timesteps: Tensor::cat(
                    vec![
                        self.scalars.timesteps.clone(),
                        self.scalars.timesteps.clone(),
                    ],
                    0,
                ),
                context: Tensor::cat(vec![prompt.uncond.clone().repeat_dim(0, rows), cond], 0),
            },
            (true, CfgType::Initialize) => UnetBatch {
                sample: Tensor::cat(vec![x_t.clone().narrow(0, 0, f), x_t.clone()], 0),
                timesteps: Tensor::cat(
                    vec![
                        self.scalars.timesteps.clone().narrow(0, 0, f),
                        self.scalars.timesteps.clone(),
                    ],
                    0,
                ),
                context: Tensor::cat(vec![prompt.uncond.clone().repeat_dim(0, f), cond], 0),
            },
            _ => UnetBatch {
                sample: x_t.clone(),
                timesteps: self.scalars.timesteps.clone(),
                context: cond,
            },
        };
        let model_pred = unet(batch);

        let (text, uncond) = match (active, guidance.cfg_type) {
            (true, CfgType::Full) => (
                model_pred.clone().narrow(0, rows, rows),
                Some(model_pred.narrow(0, 0, rows)),
            ),
            (true, CfgType::Initialize) => {
                let new_rows = model_pred.clone().narrow(0, 0, f);
                self.stock_noise = if rows == f {
                    new_rows
                } else {
                    Tensor::cat(
                        vec![new_rows, self.stock_noise.clone().narrow(0, f, rows - f)],
                        0,
                    )
                };
                (model_pred.narrow(0, f, rows), None)
            }
            _ => (model_pred, None),
        };
        let residual = matches!(
            guidance.cfg_type,
            CfgType::SelfNegative | CfgType::Initialize
        );
        let uncond = match uncond {
            Some(uncond) => Some(uncond),
            None if active && residual => Some(self.stock_noise.clone() * guidance.delta),
            None => None,
        };
        let model_pred = match uncond {
            Some(uncond) if active => uncond.clone() + (text - uncond) * guidance.scale,
            _ => text,
        };

        let denoised = self.scheduler_step(model_pred.clone(), x_t);
        if residual {
            let scaled_noise = self.scalars.beta.clone() * self.stock_noise.clone();
            let delta_x = self.scheduler_step(model_pred, scaled_noise);
            let delta_x =
                delta_x * self.scalars.alpha_next.clone() / self.scalars.beta_next.clone();
            // The fixed noise moves one frame slot along (a no-op with one step).
            let rolled = if rows == f {
                self.init_noise.clone()
            } else {
                Tensor::cat(
                    vec![
                        self.init_noise.clone().narrow(0, f, rows - f),
                        self.init_noise.clone().narrow(0, 0, f),
                    ],
                    0,
                )
            };
            self.stock_noise = rolled + delta_x;
        }
        self.calls += 1;

        if rows == f {
            return denoised;
        }
        let finished = denoised.clone().narrow(0, rows - f, f);
        let advancing = denoised.narrow(0, 0, rows - f);
        let alpha_next = self.scalars.alpha.clone().narrow(0, f, rows - f);
        let mut buffer = advancing * alpha_next;
        if self.add_noise {
            let beta_next = self.scalars.beta.clone().narrow(0, f, rows - f);
            buffer = buffer + self.init_noise.clone().narrow(0, f, rows - f) * beta_next;
        }
        self.buffer = Some(buffer);
        finished
    }

    /// `c_out · (x - β·ε) / α + c_skip · x`, row by row.
    fn scheduler_step(&self, model_pred: Tensor<4>, x: Tensor<4>) -> Tensor<4> {
        let predicted_x0 =
            (x.clone() - self.scalars.beta.clone() * model_pred) / self.scalars.alpha.clone();
        self.scalars.c_out.clone() * predicted_x0 + self.scalars.c_skip.clone() * x
    }
}

/// `[rows, c, h, w]` noise fixed by `seed` for a batch.
pub fn init_noise(seed: u64, rows: usize, latent_shape: [usize; 3], device: &Device) -> Tensor<4> {
    let [c, h, w] = latent_shape;
    super::noise::seeded_normal(seed, [rows, c, h, w], device)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};

    use super::*;
    use crate::stage::engine::scheduler::{SchedulerConfig, StreamSchedule};

    /// Every step count and cfg type runs, with the UNet rows StreamDiffusion uses: `self`
    /// adds none, `initialize` one per frame, `full` doubles the batch.
    #[test]
    fn every_cfg_type_and_step_count_runs_with_the_expected_unet_rows() {
        let device = Device::flex();
        let shape = [4, 2, 3];
        let prompt = PromptEmbeds {
            cond: Tensor::<3>::ones([1, 5, 6], &device),
            uncond: Tensor::<3>::zeros([1, 5, 6], &device),
        };
        let t_lists: [&[usize]; 4] = [&[32], &[32, 45], &[20, 32, 45], &[16, 24, 32, 45]];
        for frames in [1, 2] {
            for t_index_list in t_lists {
                for cfg_type in [
                    CfgType::None,
                    CfgType::Full,
                    CfgType::SelfNegative,
                    CfgType::Initialize,
                ] {
                    let schedule =
                        StreamSchedule::new(&SchedulerConfig::default(), 50, t_index_list)
                            .expect("schedule");
                    let rows = t_index_list.len() * frames;
                    let noise = init_noise(3, rows, shape, &device);
                    let mut batch = StreamBatch::new(schedule, frames, shape, noise, true);
                    let guidance = Guidance {
                        cfg_type,
                        scale: 1.5,
                        delta: 0.9,
                    };
                    let expected_rows = match cfg_type {
                        CfgType::Full => 2 * rows,
                        CfgType::Initialize => rows + frames,
                        _ => rows,
                    };
                    assert_eq!(guidance.unet_rows(rows, frames), expected_rows);
                    for _ in 0..3 {
                        let x_t =
                            batch.noise_new_frames(Tensor::<4>::ones([frames, 4, 2, 3], &device));
                        let out = batch.step(x_t, &prompt, guidance, &mut |input: UnetBatch| {
                            let [n, ..] = input.sample.dims();
                            assert_eq!(n, expected_rows, "{cfg_type} {t_index_list:?} f={frames}");
                            assert_eq!(input.timesteps.dims(), [n]);
                            assert_eq!(input.context.dims()[0], n);
                            input.sample * 0.5
                        });
                        assert_eq!(out.dims(), [frames, 4, 2, 3]);
                        assert_eq!(batch.stock_noise().dims(), [rows, 4, 2, 3]);
                    }
                }
            }
        }
    }
}
