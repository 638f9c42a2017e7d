//! TAESD, the tiny autoencoder for Stable Diffusion latents (diffusers `AutoencoderTiny`), and
//! its relatives with other latent channel counts (TAEF2: 32 channels and a `pool` branch).
//!
//! Both halves are `nn.Sequential` stacks in the reference (madebyollin/taesd `taesd.py`), and
//! the burn modules keep that order: layer `i` of [`TaesdEncoder`] and [`TaesdDecoder`] is index
//! `i` of the original state dicts (`taesd_encoder.pth`, `taesd_decoder.pth`, whose decoder
//! starts with the parameter-free `Clamp` at index 0). The diffusers layout
//! (`diffusion_pytorch_model.safetensors`) is the same network under other key names.
//!
//! Scaling: the raw networks ([`TaesdEncoder::forward`], [`TaesdDecoder::forward`]) take and
//! give images in `[0, 1]`; [`Taesd::encode`] and [`Taesd::decode`] follow diffusers and use
//! `[-1, 1]` (the decoder output is not clamped).

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, tanh};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};
use burn_store::KeyRemapper;
use serde::Deserialize;

use super::SdError;
use super::ops::conv2d;
use super::precision::to_dtype;
use super::weights::{load_module, remapper};

/// The decoder's `tanh(z / m) * m` soft clamp of its input latents, `m` in latent units.
const LATENT_CLAMP_MAGNITUDE: f64 = 3.0;
/// Upsampling factor between decoder stages (nearest neighbour), per side.
const UPSAMPLE_FACTOR: usize = 2;

/// Shape of a TAESD autoencoder. The defaults are those of the SD 1.x/2.x TAESD.
#[derive(Config, Debug)]
pub struct TaesdConfig {
    /// Image channels (RGB).
    #[config(default = 3)]
    pub image_channels: usize,
    /// Latent channels: 4 for SD 1.x/2.x, 16 for SD3/FLUX.1, 32 for FLUX.2.
    #[config(default = 4)]
    pub latent_channels: usize,
    /// Channels of each encoder stage (full resolution first).
    #[config(default = "vec![64, 64, 64, 64]")]
    pub encoder_block_channels: Vec<usize>,
    /// Residual blocks in each encoder stage.
    #[config(default = "vec![1, 3, 3, 3]")]
    pub num_encoder_blocks: Vec<usize>,
    /// Channels of each decoder stage (lowest resolution first).
    #[config(default = "vec![64, 64, 64, 64]")]
    pub decoder_block_channels: Vec<usize>,
    /// Residual blocks in each decoder stage.
    #[config(default = "vec![3, 3, 3, 1]")]
    pub num_decoder_blocks: Vec<usize>,
    /// Whether the blocks at the lowest resolution (the encoder's last stage, the decoder's
    /// first) carry the `pool` branch: TAEF2's `use_midblock_gn`.
    #[config(default = false)]
    pub midblock_pool: bool,
    /// Width of the pool branch, as a multiple of the block's channels.
    #[config(default = 4)]
    pub pool_expansion: usize,
    /// GroupNorm groups in the pool branch.
    #[config(default = 4)]
    pub pool_groups: usize,
    /// Factor SD pipelines multiply latents by after encoding (1.0 for TAESD).
    #[config(default = 1.0)]
    pub scaling_factor: f64,
}

impl TaesdConfig {
    /// TAEF2, the FLUX.2 tiny autoencoder: 32 latent channels and pool branches.
    pub fn taef2() -> Self {
        Self::new()
            .with_latent_channels(32)
            .with_midblock_pool(true)
    }

    /// A model with freshly initialised weights.
    pub fn init(&self, device: &Device) -> Taesd {
        Taesd {
            encoder: self.init_encoder(device),
            decoder: self.init_decoder(device),
            scaling_factor: self.scaling_factor,
        }
    }

    /// The encoder alone.
    pub fn init_encoder(&self, device: &Device) -> TaesdEncoder {
        let channels = &self.encoder_block_channels;
        let stages = channels.len().min(self.num_encoder_blocks.len());
        let mut layers = Vec::new();
        let mut previous = self.image_channels;
        for (stage, (&width, &blocks)) in channels.iter().zip(&self.num_encoder_blocks).enumerate()
        {
            layers.push(if stage == 0 {
                TaeLayer::conv(conv3x3(previous, width, 1, true, device))
            } else {
                TaeLayer::conv(conv3x3(previous, width, 2, false, device))
            });
            let pool = self.midblock_pool && stage + 1 == stages;
            for _ in 0..blocks {
                layers.push(TaeLayer::block(self.block(width, width, pool, device)));
            }
            previous = width;
        }
        layers.push(TaeLayer::conv(conv3x3(
            previous,
            self.latent_channels,
            1,
            true,
            device,
        )));
        TaesdEncoder { layers }
    }

    /// The decoder alone.
    pub fn init_decoder(&self, device: &Device) -> TaesdDecoder {
        let channels = &self.decoder_block_channels;
        let stages = channels.len().min(self.num_decoder_blocks.len());
        let first = channels.first().copied().unwrap_or(self.latent_channels);
        let mut layers = vec![
            TaeLayer::op(LayerOp::Clamp),
            TaeLayer::conv(conv3x3(self.latent_channels, first, 1, true, device)),
            TaeLayer::op(LayerOp::Relu),
        ];
        for stage in 0..stages {
            let width = channels[stage];
            let pool = self.midblock_pool && stage == 0;
            for _ in 0..self.num_decoder_blocks[stage] {
                layers.push(TaeLayer::block(self.block(width, width, pool, device)));
            }
            if stage + 1 < stages {
                layers.push(TaeLayer::op(LayerOp::Upsample));
                let next = channels[stage + 1];
                layers.push(TaeLayer::conv(conv3x3(width, next, 1, false, device)));
            } else {
                layers.push(TaeLayer::conv(conv3x3(
                    width,
                    self.image_channels,
                    1,
                    true,
                    device,
                )));
            }
        }
        TaesdDecoder { layers }
    }

    fn block(&self, input: usize, output: usize, pool: bool, device: &Device) -> TinyBlock {
        let conv = vec![
            conv3x3(input, output, 1, true, device),
            conv3x3(output, output, 1, true, device),
            conv3x3(output, output, 1, true, device),
        ];
        let skip = (input != output).then(|| conv1x1(input, output, device));
        let pool = pool.then(|| {
            let hidden = input * self.pool_expansion;
            PoolBranch {
                expand: conv1x1(input, hidden, device),
                norm: GroupNormConfig::new(self.pool_groups, hidden).init(device),
                project: conv1x1(hidden, input, device),
            }
        });
        TinyBlock { conv, skip, pool }
    }
}

fn conv3x3(input: usize, output: usize, stride: usize, bias: bool, device: &Device) -> Conv2d {
    Conv2dConfig::new([input, output], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(bias)
        .init(device)
}

fn conv1x1(input: usize, output: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([input, output], [1, 1])
        .with_bias(false)
        .init(device)
}

/// TAEF2's extra branch, added to a block's input: 1x1 conv up, GroupNorm, ReLU, 1x1 conv down
/// (no biases). Its state-dict keys are `pool.0`, `pool.1`, `pool.3`.
#[derive(Module, Debug)]
pub struct PoolBranch {
    expand: Conv2d,
    norm: GroupNorm,
    project: Conv2d,
}

impl PoolBranch {
    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.expand, input);
        conv2d(&self.project, relu(self.norm.forward(x)))
    }
}

/// The residual block: `relu(conv(x) + skip(x))`, `conv` being three 3x3 convolutions with
/// ReLUs between them, after `x += pool(x)` where the block has a pool branch.
#[derive(Module, Debug)]
pub struct TinyBlock {
    conv: Vec<Conv2d>,
    skip: Option<Conv2d>,
    pool: Option<PoolBranch>,
}

impl TinyBlock {
    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let input = match &self.pool {
            Some(pool) => input.clone() + pool.forward(input),
            None => input,
        };
        let last = self.conv.len().saturating_sub(1);
        let mut x = input.clone();
        for (index, conv) in self.conv.iter().enumerate() {
            x = conv2d(conv, x);
            if index < last {
                x = relu(x);
            }
        }
        let skip = match &self.skip {
            Some(skip) => conv2d(skip, input),
            None => input,
        };
        relu(x + skip)
    }
}

/// What a layer without parameters does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerOp {
    /// A convolution or a residual block (the layer's parameters say which).
    Weights,
    /// `tanh(z / 3) * 3`.
    Clamp,
    /// ReLU.
    Relu,
    /// Nearest-neighbour upsampling by [`UPSAMPLE_FACTOR`].
    Upsample,
}

/// One entry of the `nn.Sequential`: a convolution, a residual block, or a parameter-free op.
#[derive(Module, Debug)]
pub struct TaeLayer {
    conv: Option<Conv2d>,
    block: Option<TinyBlock>,
    #[module(skip)]
    op: LayerOp,
}

impl TaeLayer {
    fn conv(conv: Conv2d) -> Self {
        Self {
            conv: Some(conv),
            block: None,
            op: LayerOp::Weights,
        }
    }

    fn block(block: TinyBlock) -> Self {
        Self {
            conv: None,
            block: Some(block),
            op: LayerOp::Weights,
        }
    }

    fn op(op: LayerOp) -> Self {
        Self {
            conv: None,
            block: None,
            op,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if let Some(conv) = &self.conv {
            return conv2d(conv, x);
        }
        if let Some(block) = &self.block {
            return block.forward(x);
        }
        match self.op {
            LayerOp::Weights => x,
            LayerOp::Clamp => tanh(x / LATENT_CLAMP_MAGNITUDE) * LATENT_CLAMP_MAGNITUDE,
            LayerOp::Relu => relu(x),
            LayerOp::Upsample => {
                let factor = UPSAMPLE_FACTOR as f32;
                interpolate(
                    x,
                    InterpolateOptions::new(InterpolateMode::Nearest)
                        .with_scale_factor([factor, factor]),
                )
            }
        }
    }
}

/// The encoder: images in `[0, 1]` to latents at 1/8 of the size.
#[derive(Module, Debug)]
pub struct TaesdEncoder {
    layers: Vec<TaeLayer>,
}

impl TaesdEncoder {
    /// Loads `taesd_encoder.pth` (or TAEF2's `taef2_encoder.pth`; fp16 or fp32).
    pub fn from_pth(path: &Path, config: &TaesdConfig, device: &Device) -> Result<Self, SdError> {
        load_module(config.init_encoder(device), path, &pth_remapper("")?)
    }

    /// `[batch, 3, height, width]` in `[0, 1]`, sides multiples of 8, to
    /// `[batch, latent_channels, height / 8, width / 8]`.
    ///
    /// Computes in the precision of the weights; the result has `image`'s dtype.
    pub fn forward(&self, image: Tensor<4>) -> Tensor<4> {
        run_layers(&self.layers, image)
    }
}

/// The decoder: latents to images in about `[0, 1]` (not clamped).
#[derive(Module, Debug)]
pub struct TaesdDecoder {
    layers: Vec<TaeLayer>,
}

impl TaesdDecoder {
    /// Loads `taesd_decoder.pth` (or TAEF2's `taef2_decoder.pth`; fp16 or fp32).
    pub fn from_pth(path: &Path, config: &TaesdConfig, device: &Device) -> Result<Self, SdError> {
        load_module(config.init_decoder(device), path, &pth_remapper("")?)
    }

    /// `[batch, latent_channels, h, w]` to `[batch, 3, 8h, 8w]` in about `[0, 1]`.
    ///
    /// Computes in the precision of the weights; the result has `latents`' dtype.
    pub fn forward(&self, latents: Tensor<4>) -> Tensor<4> {
        run_layers(&self.layers, latents)
    }
}

/// The `nn.Sequential` in the dtype of its first convolution's weights, returned in the input's.
fn run_layers(layers: &[TaeLayer], input: Tensor<4>) -> Tensor<4> {
    let caller_dtype = input.dtype();
    let dtype = layers
        .iter()
        .find_map(|layer| layer.conv.as_ref())
        .map_or(caller_dtype, |conv| conv.weight.val().dtype());
    let out = layers
        .iter()
        .fold(to_dtype(input, dtype), |x, layer| layer.forward(x));
    to_dtype(out, caller_dtype)
}

/// Encoder and decoder together, with diffusers' `AutoencoderTiny` conventions.
#[derive(Module, Debug)]
pub struct Taesd {
    /// The encoder (raw, `[0, 1]` images).
    pub encoder: TaesdEncoder,
    /// The decoder (raw, `[0, 1]` images).
    pub decoder: TaesdDecoder,
    #[module(skip)]
    scaling_factor: f64,
}

/// The keys of a diffusers `AutoencoderTiny` `config.json` that shape the network.
#[derive(Deserialize)]
struct DiffusersConfig {
    in_channels: usize,
    out_channels: usize,
    latent_channels: usize,
    encoder_block_out_channels: Vec<usize>,
    decoder_block_out_channels: Vec<usize>,
    num_encoder_blocks: Vec<usize>,
    num_decoder_blocks: Vec<usize>,
    act_fn: String,
    upsample_fn: String,
    upsampling_scaling_factor: usize,
    #[serde(default = "one")]
    scaling_factor: f64,
    #[serde(default)]
    shift_factor: f64,
}

fn one() -> f64 {
    1.0
}

impl TaesdConfig {
    /// Reads a diffusers `AutoencoderTiny` `config.json`.
    pub fn from_diffusers_json(path: &Path) -> Result<Self, SdError> {
        let text = super::read_text(path)?;
        let raw: DiffusersConfig =
            serde_json::from_str(&text).map_err(|err| SdError::BadConfig {
                path: path.to_path_buf(),
                reason: err.to_string(),
            })?;
        let bad = |reason: String| SdError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        if raw.act_fn != "relu" {
            return Err(bad(format!("act_fn `{}` (only relu)", raw.act_fn)));
        }
        if raw.upsample_fn != "nearest" || raw.upsampling_scaling_factor != UPSAMPLE_FACTOR {
            return Err(bad(format!(
                "upsampling `{}` x{} (only nearest x{UPSAMPLE_FACTOR})",
                raw.upsample_fn, raw.upsampling_scaling_factor
            )));
        }
        if raw.shift_factor != 0.0 {
            return Err(bad(format!(
                "shift_factor {} (only 0 is supported)",
                raw.shift_factor
            )));
        }
        if raw.in_channels != raw.out_channels {
            return Err(bad(format!(
                "in_channels {} differs from out_channels {}",
                raw.in_channels, raw.out_channels
            )));
        }
        if raw.encoder_block_out_channels.len() != raw.num_encoder_blocks.len()
            || raw.decoder_block_out_channels.len() != raw.num_decoder_blocks.len()
        {
            return Err(bad(
                "block channel and block count lists differ in length".into()
            ));
        }
        Ok(Self::new()
            .with_image_channels(raw.in_channels)
            .with_latent_channels(raw.latent_channels)
            .with_encoder_block_channels(raw.encoder_block_out_channels)
            .with_num_encoder_blocks(raw.num_encoder_blocks)
            .with_decoder_block_channels(raw.decoder_block_out_channels)
            .with_num_decoder_blocks(raw.num_decoder_blocks)
            .with_scaling_factor(raw.scaling_factor))
    }
}

impl Taesd {
    /// Loads a diffusers `AutoencoderTiny` folder: `config.json` and
    /// `diffusion_pytorch_model.safetensors`.
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self, SdError> {
        let config = TaesdConfig::from_diffusers_json(&dir.join("config.json"))?;
        Self::from_file(
            &dir.join("diffusion_pytorch_model.safetensors"),
            &config,
            device,
        )
    }

    /// Loads a weight file in the diffusers `AutoencoderTiny` layout (fp16 or fp32) with a
    /// known configuration.
    pub fn from_file(path: &Path, config: &TaesdConfig, device: &Device) -> Result<Self, SdError> {
        load_module(config.init(device), path, &diffusers_remapper(config)?)
    }

    /// Loads the original state dicts, `taesd_encoder.pth` and `taesd_decoder.pth`.
    pub fn from_pth(
        encoder: &Path,
        decoder: &Path,
        config: &TaesdConfig,
        device: &Device,
    ) -> Result<Self, SdError> {
        Ok(Self {
            encoder: TaesdEncoder::from_pth(encoder, config, device)?,
            decoder: TaesdDecoder::from_pth(decoder, config, device)?,
            scaling_factor: config.scaling_factor,
        })
    }

    /// The factor SD pipelines multiply latents by after [`Self::encode`].
    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor
    }

    /// diffusers `AutoencoderTiny.encode(image).latents`: images in `[-1, 1]` to latents.
    pub fn encode(&self, image: Tensor<4>) -> Tensor<4> {
        self.encoder.forward((image + 1.0) / 2.0)
    }

    /// diffusers `AutoencoderTiny.decode(latents).sample`: latents to images in about
    /// `[-1, 1]`, not clamped.
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        self.decoder.forward(latents) * 2.0 - 1.0
    }
}

/// Rules from the original state-dict keys (optionally under `prefix`, e.g. `encoder.`) to the
/// burn module paths.
fn pth_rules(prefix: &str) -> Vec<(String, String)> {
    let p = regex_escape(prefix);
    vec![
        // A plain convolution: `{i}.weight` is `layers.{i}.conv.weight`.
        (
            format!(r"^{p}(\d+)\.(weight|bias)$"),
            format!("{prefix}layers.${{1}}.conv.${{2}}"),
        ),
        // A residual block: `{i}.conv.*`, `{i}.skip.*`, `{i}.pool.*` live under `layers.{i}.block`.
        (
            format!(r"^{p}(\d+)\.(conv|skip|pool)\."),
            format!("{prefix}layers.${{1}}.block.${{2}}."),
        ),
        // The block's `nn.Sequential` has ReLUs at 1 and 3: its convolutions 0, 2, 4 are our 0, 1, 2.
        (r"\.block\.conv\.2\.".into(), ".block.conv.1.".into()),
        (r"\.block\.conv\.4\.".into(), ".block.conv.2.".into()),
        // The pool branch: 0 (1x1 up), 1 (GroupNorm), 2 (ReLU, no weights), 3 (1x1 down).
        (r"\.block\.pool\.0\.".into(), ".block.pool.expand.".into()),
        (r"\.block\.pool\.1\.".into(), ".block.pool.norm.".into()),
        (r"\.block\.pool\.3\.".into(), ".block.pool.project.".into()),
    ]
}

fn pth_remapper(prefix: &str) -> Result<KeyRemapper, SdError> {
    remapper(&pth_rules(prefix))
}

/// diffusers keys (`encoder.layers.{i}`, `decoder.layers.{i}`) to the original indices, then
/// the `.pth` rules.
fn diffusers_remapper(config: &TaesdConfig) -> Result<KeyRemapper, SdError> {
    let mut rules = vec![
        // The encoder's `layers` are the original `nn.Sequential`, index for index.
        (r"^encoder\.layers\.".to_string(), "encoder.".to_string()),
    ];
    // The original decoder has `Clamp()` at index 0 where diffusers applies it in `forward`, so
    // diffusers' decoder layer `i` is original index `i + 1` (one generated rule per layer).
    let decoder_layers = config.init_decoder_layer_count();
    for index in (0..decoder_layers.saturating_sub(1)).rev() {
        rules.push((
            format!(r"^decoder\.layers\.{index}\."),
            format!("decoder.{}.", index + 1),
        ));
    }
    rules.extend(pth_rules_either());
    remapper(&rules)
}

/// The `.pth` rules for keys under `encoder.` or `decoder.`.
fn pth_rules_either() -> Vec<(String, String)> {
    let mut rules = Vec::new();
    for prefix in ["encoder.", "decoder."] {
        rules.extend(pth_rules(prefix).into_iter().take(2));
    }
    rules.extend(pth_rules("").into_iter().skip(2));
    rules
}

impl TaesdConfig {
    /// Entries of the original decoder `nn.Sequential`, `Clamp` included.
    fn init_decoder_layer_count(&self) -> usize {
        let stages = self
            .decoder_block_channels
            .len()
            .min(self.num_decoder_blocks.len());
        let blocks: usize = self.num_decoder_blocks.iter().take(stages).sum();
        // Clamp, conv, ReLU; the blocks; upsample and conv between stages; the last conv.
        3 + blocks + 2 * stages.saturating_sub(1) + 1
    }
}

fn regex_escape(text: &str) -> String {
    text.replace('.', r"\.")
}
