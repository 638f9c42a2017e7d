//! The StreamDiffusion stream-batch engine: a Stable Diffusion model (UNet, text encoder,
//! TAESD) driven the way StreamDiffusion drives it, frame after frame.
//!
//! - [`scheduler`]: the LCM sub-schedule (`t_index_list`, `sqrt(ᾱ)`, `sqrt(1-ᾱ)`, `c_skip`, `c_out`).
//! - [`stream_batch`]: Stream Batch and Residual CFG, the latent state machine.
//! - [`ssf`]: the Stochastic Similarity Filter.
//! - [`noise`]: seeded host-side noise, the same on every backend.
//! - [`settings`]: the live settings, their defaults and checks.
//! - [`stage`]: the live [`crate::stage::FrameStage`] with live control and honest timing.
//!
//! [`StreamEngine`] here owns the models and one [`stream_batch::StreamBatch`] for the current
//! frame size, and offers the three parts of a frame (encode, denoise, decode) separately so a
//! benchmark can time them. docs/ENGINE.md explains the whole.

pub mod noise;
pub mod scheduler;
pub mod settings;
pub mod ssf;
pub mod stage;
pub mod stream_batch;

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use streamdiff_models::sd::clip::ClipTextModel;
use streamdiff_models::sd::pipeline::StableDiffusion;
use streamdiff_models::sd::taesd::Taesd;
use streamdiff_models::sd::tokenizer::ClipTokenizer;
use streamdiff_models::sd::unet::UNet2DConditionModel;

use streamdiff_types::FrameSize;

use crate::PipelineError;
use scheduler::{SchedulerConfig, StreamSchedule};
use settings::{
    DEFAULT_CFG_TYPE, DEFAULT_DELTA, DEFAULT_GUIDANCE_SCALE, DEFAULT_SEED, DEFAULT_T_INDEX_LIST,
    NUM_INFERENCE_STEPS,
};
use stream_batch::{Guidance, PromptEmbeds, StreamBatch, UnetBatch, init_noise};

/// The image-to-latent scale of SD's autoencoders: latents are 1/8 of the image per side.
pub const LATENT_SCALE: usize = 8;

/// Settings fixed when the engine is built, and the starting values of the live ones.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Indices into the LCM schedule, noisiest first; `[32, 45]` is StreamDiffusion's img2img default.
    pub t_index_list: Vec<usize>,
    /// Steps of the LCM schedule the indices point into (StreamDiffusion uses 50).
    pub num_inference_steps: usize,
    /// Frames per call (`frame_buffer_size`).
    pub frame_buffer_size: usize,
    /// Guidance.
    pub guidance: Guidance,
    /// Whether the buffered frames are re-noised with the fixed noise (StreamDiffusion's default).
    pub do_add_noise: bool,
    /// Seed of the fixed per-step noise.
    pub seed: u64,
}

impl Default for EngineConfig {
    /// The defaults of [`settings`], one frame per call, noise added.
    fn default() -> Self {
        Self {
            t_index_list: DEFAULT_T_INDEX_LIST.to_vec(),
            num_inference_steps: NUM_INFERENCE_STEPS,
            frame_buffer_size: 1,
            guidance: Guidance {
                cfg_type: DEFAULT_CFG_TYPE,
                scale: DEFAULT_GUIDANCE_SCALE,
                delta: DEFAULT_DELTA,
            },
            do_add_noise: true,
            seed: DEFAULT_SEED,
        }
    }
}

/// Tokenizer and text encoder: prompt text to `[1, 77, width]` embeddings.
pub struct PromptEncoder {
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    device: Device,
}

impl PromptEncoder {
    /// Wraps a loaded tokenizer and text encoder.
    pub fn new(tokenizer: ClipTokenizer, text_encoder: ClipTextModel, device: Device) -> Self {
        Self {
            tokenizer,
            text_encoder,
            device,
        }
    }

    /// The embeddings of one prompt (diffusers' `encode_prompt`: padded ids, `last_hidden_state`).
    pub fn encode(&self, text: &str) -> Tensor<3> {
        let ids: Vec<i32> = self
            .tokenizer
            .encode_padded(text)
            .into_iter()
            .map(|id| id as i32)
            .collect();
        let tokens = ids.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, tokens]), &self.device);
        self.text_encoder.forward(ids)
    }

    /// Prompt and negative prompt.
    pub fn encode_pair(&self, prompt: &str, negative_prompt: &str) -> PromptEmbeds {
        PromptEmbeds {
            cond: self.encode(prompt),
            uncond: self.encode(negative_prompt),
        }
    }
}

/// The engine: models and the stream batch of the current frame size.
pub struct StreamEngine {
    unet: UNet2DConditionModel,
    vae: Taesd,
    scheduler: SchedulerConfig,
    config: EngineConfig,
    prompt: PromptEmbeds,
    batch: Option<StreamBatch>,
    /// The frames the batch was made for.
    image_size: Option<FrameSize>,
    /// What the frames are resized to for the models (see [`processing_size`]).
    processing_size: Option<FrameSize>,
    /// Processing sizes are multiples of this (8 × the UNet's total downsampling).
    pixel_multiple: usize,
    device: Device,
}

/// A loaded model split into what the engine needs and what encodes prompts.
pub struct EngineParts {
    /// The engine (with the first prompt's embeddings).
    pub engine: StreamEngine,
    /// Tokenizer and text encoder, for later prompts.
    pub prompts: PromptEncoder,
}

impl StreamEngine {
    /// An engine over a UNet and a TAESD, starting with `prompt`.
    pub fn new(
        unet: UNet2DConditionModel,
        vae: Taesd,
        scheduler: SchedulerConfig,
        config: EngineConfig,
        prompt: PromptEmbeds,
        device: Device,
    ) -> Result<Self, PipelineError> {
        if config.frame_buffer_size == 0 {
            return Err(PipelineError::Engine(
                "frame_buffer_size must be at least 1".into(),
            ));
        }
        // Validate the schedule now rather than at the first frame.
        StreamSchedule::new(&scheduler, config.num_inference_steps, &config.t_index_list)?;
        Ok(Self {
            unet,
            vae,
            scheduler,
            config,
            prompt,
            batch: None,
            image_size: None,
            processing_size: None,
            pixel_multiple: LATENT_SCALE,
            device,
        })
    }

    /// Sets the multiple that processing sizes are rounded to: `8 · 2^(levels - 1)` for a UNet
    /// with `levels` resolution levels, whose skip connections need latents divisible by its
    /// downsampling ([`Self::from_model`] sets it from the UNet's config).
    pub fn with_pixel_multiple(mut self, pixel_multiple: usize) -> Self {
        self.pixel_multiple = pixel_multiple.max(LATENT_SCALE);
        self.batch = None;
        self
    }

    /// The size frames are processed at (after [`Self::prepare`]).
    pub fn processing_size(&self) -> Option<FrameSize> {
        self.processing_size
    }

    /// Builds the engine from a loaded model (its scheduler config read from `scheduler/`
    /// when there, SD's otherwise), encoding `prompt` and `negative_prompt` once.
    pub fn from_model(
        model: StableDiffusion,
        config: EngineConfig,
        prompt: &str,
        negative_prompt: &str,
        device: Device,
    ) -> Result<EngineParts, PipelineError> {
        let scheduler_path = model.layout.root.join("scheduler/scheduler_config.json");
        let scheduler = if scheduler_path.is_file() {
            SchedulerConfig::from_json(&scheduler_path)?
        } else {
            SchedulerConfig::default()
        };
        let vae = model.autoencoder.ok_or_else(|| {
            PipelineError::Engine(format!(
                "{} has no autoencoder streamdiff can run (only TAESD is implemented); name one with --taesd",
                model.layout.root.display()
            ))
        })?;
        let prompts = PromptEncoder::new(model.tokenizer, model.text_encoder, device.clone());
        let embeds = prompts.encode_pair(prompt, negative_prompt);
        let levels = model.layout.unet_config.block_out_channels.len().max(1);
        let engine = Self::new(model.unet, vae, scheduler, config, embeds, device)?
            .with_pixel_multiple(LATENT_SCALE << (levels - 1));
        Ok(EngineParts { engine, prompts })
    }

    /// The current configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The device the models run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The stream batch (`None` before the first frame).
    pub fn batch(&self) -> Option<&StreamBatch> {
        self.batch.as_ref()
    }

    /// Calls until the first real output: `len(t_index_list) - 1`.
    pub fn delay_calls(&self) -> usize {
        self.config.t_index_list.len() - 1
    }

    /// UNet rows of one call with the current settings.
    pub fn unet_rows(&self) -> usize {
        let frames = self.config.frame_buffer_size;
        self.config
            .guidance
            .unet_rows(self.config.t_index_list.len() * frames, frames)
    }

    /// Swaps the text conditioning (takes effect at the next call).
    pub fn set_prompt(&mut self, prompt: PromptEmbeds) {
        self.prompt = prompt;
    }

    /// Changes guidance (next call).
    pub fn set_guidance(&mut self, guidance: Guidance) {
        self.config.guidance = guidance;
    }

    /// Changes the schedule. Same length: the frames in flight carry on with the new
    /// timesteps. Another length: the batch is rebuilt (the caller flushes first).
    pub fn set_t_index_list(&mut self, t_index_list: &[usize]) -> Result<(), PipelineError> {
        let schedule = StreamSchedule::new(
            &self.scheduler,
            self.config.num_inference_steps,
            t_index_list,
        )?;
        let same_length = t_index_list.len() == self.config.t_index_list.len();
        self.config.t_index_list = t_index_list.to_vec();
        match self.batch.take() {
            Some(batch) if same_length => self.batch = Some(batch.with_schedule(schedule)),
            _ => self.batch = None,
        }
        Ok(())
    }

    /// Changes the seed: new fixed noise from the next call.
    pub fn set_seed(&mut self, seed: u64) {
        self.config.seed = seed;
        if let Some(batch) = self.batch.take() {
            let noise = init_noise(seed, batch.rows(), batch.latent_shape(), &self.device);
            self.batch = Some(batch.with_init_noise(noise));
        }
    }

    /// Replaces the fixed noise (parity tests inject the reference's).
    pub fn set_init_noise(&mut self, noise: Tensor<4>) -> Result<(), PipelineError> {
        let batch = self.batch.take().ok_or_else(|| {
            PipelineError::Engine("set_init_noise needs a frame size (call prepare)".into())
        })?;
        self.batch = Some(batch.with_init_noise(noise));
        Ok(())
    }

    /// Drops the stream batch: the next frame starts a fresh one.
    pub fn reset(&mut self) {
        self.batch = None;
    }

    /// Makes sure the stream batch fits frames of `size`; a new size allocates new buffers.
    /// Returns whether it did.
    pub fn prepare(&mut self, size: FrameSize) -> Result<bool, PipelineError> {
        if self.batch.is_some() && self.image_size == Some(size) {
            return Ok(false);
        }
        let processing = processing_size(size, self.pixel_multiple)?;
        let (latent_h, latent_w) = (
            processing.height_px / LATENT_SCALE,
            processing.width_px / LATENT_SCALE,
        );
        let schedule = StreamSchedule::new(
            &self.scheduler,
            self.config.num_inference_steps,
            &self.config.t_index_list,
        )?;
        let latent_shape = [4, latent_h, latent_w];
        let rows = schedule.len() * self.config.frame_buffer_size;
        let noise = init_noise(self.config.seed, rows, latent_shape, &self.device);
        self.batch = Some(StreamBatch::new(
            schedule,
            self.config.frame_buffer_size,
            latent_shape,
            noise,
            self.config.do_add_noise,
        ));
        self.image_size = Some(size);
        self.processing_size = Some(processing);
        Ok(true)
    }

    /// TAESD encode of `[f, 3, H, W]` images in `[-1, 1]` to scaled latents, resized to the
    /// processing size first where it differs.
    pub fn encode(&self, images: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = images.dims();
        let images = match self.processing_size {
            Some(size) if size != FrameSize::new(w, h) => resize(images, size),
            _ => images,
        };
        self.vae.encode(images) * self.vae.scaling_factor()
    }

    /// One stream-batch call on new-frame latents already at the first timestep
    /// (`[f, 4, h, w]`): returns the finished frames' denoised latents.
    pub fn denoise(&mut self, x_t_new: Tensor<4>) -> Result<Tensor<4>, PipelineError> {
        let guidance = self.config.guidance;
        let batch = self.batch.as_mut().ok_or_else(|| {
            PipelineError::Engine("denoise needs a frame size (call prepare)".into())
        })?;
        let [f, c, h, w] = x_t_new.dims();
        if f != batch.frames() || [c, h, w] != batch.latent_shape() {
            return Err(PipelineError::Engine(format!(
                "latents {:?} do not fit the stream batch ({} frames of {:?})",
                x_t_new.dims(),
                batch.frames(),
                batch.latent_shape()
            )));
        }
        let unet = &self.unet;
        Ok(
            batch.step(x_t_new, &self.prompt, guidance, &mut |input: UnetBatch| {
                unet.forward(input.sample, input.timesteps, input.context)
            }),
        )
    }

    /// TAESD decode of denoised latents to `[f, 3, H, W]` images in about `[-1, 1]`, at the
    /// size given to [`Self::prepare`].
    pub fn decode(&self, x0: Tensor<4>) -> Tensor<4> {
        let images = self.vae.decode(x0 / self.vae.scaling_factor());
        let [_, _, h, w] = images.dims();
        match self.image_size {
            Some(size) if size != FrameSize::new(w, h) => resize(images, size),
            _ => images,
        }
    }

    /// A whole img2img call: `[f, 3, H, W]` images in `[-1, 1]` to the images of the frames
    /// that finished (the one that went in `len(t_index_list) - 1` calls ago).
    pub fn img2img(&mut self, images: Tensor<4>) -> Result<Tensor<4>, PipelineError> {
        let [_, _, h, w] = images.dims();
        self.prepare(FrameSize::new(w, h))?;
        let latents = self.encode(images);
        let x_t = self.noised(latents)?;
        let x0 = self.denoise(x_t)?;
        Ok(self.decode(x0))
    }

    /// The new frames' latents noised to the first timestep.
    pub fn noised(&self, latents: Tensor<4>) -> Result<Tensor<4>, PipelineError> {
        let batch = self.batch.as_ref().ok_or_else(|| {
            PipelineError::Engine("noised needs a frame size (call prepare)".into())
        })?;
        Ok(batch.noise_new_frames(latents))
    }

    /// A txt2img call: `noise` (`[f, 4, h, w]`) is the new frames' pure-noise latents.
    pub fn txt2img(
        &mut self,
        noise: Tensor<4>,
        size: FrameSize,
    ) -> Result<Tensor<4>, PipelineError> {
        self.prepare(size)?;
        let x0 = self.denoise(noise)?;
        Ok(self.decode(x0))
    }
}

/// The size a frame of `size` is processed at: each side rounded to the nearest multiple of
/// `multiple` (at least one multiple). Frames smaller than 8 px on a side are refused.
pub fn processing_size(size: FrameSize, multiple: usize) -> Result<FrameSize, PipelineError> {
    if size.height_px < LATENT_SCALE || size.width_px < LATENT_SCALE {
        return Err(PipelineError::Engine(format!(
            "frames of {size} px are too small for the engine (at least {LATENT_SCALE}x{LATENT_SCALE})"
        )));
    }
    let round = |side: usize| ((side + multiple / 2) / multiple).max(1) * multiple;
    Ok(FrameSize::new(round(size.width_px), round(size.height_px)))
}

fn resize(images: Tensor<4>, size: FrameSize) -> Tensor<4> {
    interpolate(
        images,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_output_size([size.height_px, size.width_px]),
    )
}

#[cfg(test)]
mod tests {
    use super::processing_size;
    use streamdiff_types::FrameSize;

    #[test]
    fn processing_sizes_round_to_the_unet_multiple() {
        let size = |w, h, multiple| processing_size(FrameSize::new(w, h), multiple).expect("ok");
        assert_eq!(size(512, 512, 64), FrameSize::new(512, 512));
        assert_eq!(size(512, 288, 64), FrameSize::new(512, 320));
        assert_eq!(size(480, 270, 64), FrameSize::new(512, 256));
        assert_eq!(size(30, 20, 64), FrameSize::new(64, 64));
        assert_eq!(size(48, 32, 16), FrameSize::new(48, 32));
        assert!(processing_size(FrameSize::new(64, 4), 8).is_err());
    }
}
