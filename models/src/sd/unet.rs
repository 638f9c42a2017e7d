//! The Stable Diffusion denoiser, diffusers' `UNet2DConditionModel`, for the SD 1.x / SD 2.x
//! family (SD-Turbo included): cross-attention down and up blocks, plain down and up blocks,
//! the cross-attention mid block, sinusoidal timestep embedding.
//!
//! The burn modules keep diffusers' names (`down_blocks.{i}.resnets.{j}.conv1`, ...), so the
//! checkpoint needs only a few key remapping rules. The configuration comes from diffusers'
//! `config.json`; settings outside that family (class or added embeddings, other mid blocks,
//! scale-shift time conditioning, ...) are rejected with a [`SdError::BadConfig`].

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::activation::{gelu, silu};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{DType, Device, Tensor};

use super::SdError;
use super::ops::{attention, conv2d};
use super::precision::to_dtype;
use super::weights::{load_module, remapper};

/// GroupNorm epsilon of the transformer blocks' input norm (fixed in diffusers).
const TRANSFORMER_NORM_EPS: f64 = 1e-6;
/// LayerNorm epsilon inside the transformer blocks (diffusers' default).
const BLOCK_LAYER_NORM_EPS: f64 = 1e-5;
/// The period scale of the sinusoidal timestep embedding.
const MAX_PERIOD: f64 = 10000.0;
/// Feed-forward width, as a multiple of the block's channels.
const FF_MULTIPLE: usize = 4;

/// Shape of a UNet; build it from a diffusers `config.json` with
/// [`UNetConfig::from_diffusers_json`].
#[derive(Config, Debug)]
pub struct UNetConfig {
    /// Latent channels in.
    pub in_channels: usize,
    /// Channels out (the predicted noise).
    pub out_channels: usize,
    /// Channels of each level (full resolution first).
    pub block_out_channels: Vec<usize>,
    /// Whether each down block has cross-attention (`CrossAttnDownBlock2D`) or not (`DownBlock2D`).
    pub down_cross_attention: Vec<bool>,
    /// Whether each up block (lowest resolution first) has cross-attention.
    pub up_cross_attention: Vec<bool>,
    /// Attention heads of each down block's transformers; up blocks take the list reversed and
    /// the mid block the last entry.
    pub attention_heads: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Transformer blocks in each `Transformer2DModel`.
    #[config(default = 1)]
    pub transformer_layers_per_block: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of the resnets and the output norm.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Width of the text embeddings attended to.
    pub cross_attention_dim: usize,
    /// Whether the transformers' `proj_in`/`proj_out` are Linear (SD 2.x) or 1x1 convs (SD 1.x).
    pub use_linear_projection: bool,
    /// Whether the timestep embedding puts cosines first.
    #[config(default = true)]
    pub flip_sin_to_cos: bool,
    /// The frequency shift of the timestep embedding.
    #[config(default = 0.0)]
    pub freq_shift: f64,
}

fn conv(input: usize, output: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

fn linear(input: usize, output: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(input, output)
        .with_bias(bias)
        .init(device)
}

impl UNetConfig {
    /// The SD 2.1 UNet, which SD-Turbo shares: channels [320, 640, 1280, 1280], 2 resnets per
    /// down block, heads [5, 10, 20, 20] (64 channels each), cross-attention on the 1024-wide
    /// OpenCLIP embeddings, Linear projections, 32 norm groups. For benchmarks and tests with
    /// random weights; checkpoints bring their own `config.json`.
    pub fn sd21() -> Self {
        Self::new(
            4,
            4,
            vec![320, 640, 1280, 1280],
            vec![true, true, true, false],
            vec![false, true, true, true],
            vec![5, 10, 20, 20],
            2,
            32,
            1024,
            true,
        )
    }

    fn group_norm(&self, channels: usize, eps: f64, device: &Device) -> GroupNorm {
        GroupNormConfig::new(self.norm_num_groups, channels)
            .with_epsilon(eps)
            .init(device)
    }

    fn time_embed_dim(&self) -> usize {
        self.block_out_channels.first().copied().unwrap_or(0) * 4
    }

    fn resnet(&self, input: usize, output: usize, device: &Device) -> ResnetBlock {
        ResnetBlock {
            norm1: self.group_norm(input, self.norm_eps, device),
            conv1: conv(input, output, 3, 1, device),
            time_emb_proj: linear(self.time_embed_dim(), output, true, device),
            norm2: self.group_norm(output, self.norm_eps, device),
            conv2: conv(output, output, 3, 1, device),
            conv_shortcut: (input != output).then(|| conv(input, output, 1, 1, device)),
        }
    }

    fn transformer(&self, channels: usize, heads: usize, device: &Device) -> Transformer2D {
        let (proj_in_conv, proj_in_linear, proj_out_conv, proj_out_linear) =
            if self.use_linear_projection {
                (
                    None,
                    Some(linear(channels, channels, true, device)),
                    None,
                    Some(linear(channels, channels, true, device)),
                )
            } else {
                (
                    Some(conv(channels, channels, 1, 1, device)),
                    None,
                    Some(conv(channels, channels, 1, 1, device)),
                    None,
                )
            };
        let layer_norm = || {
            LayerNormConfig::new(channels)
                .with_epsilon(BLOCK_LAYER_NORM_EPS)
                .init(device)
        };
        let attention = |context: usize| Attention {
            to_q: linear(channels, channels, false, device),
            to_k: linear(context, channels, false, device),
            to_v: linear(context, channels, false, device),
            to_out: linear(channels, channels, true, device),
            heads,
        };
        let inner = channels * FF_MULTIPLE;
        let transformer_blocks = (0..self.transformer_layers_per_block)
            .map(|_| BasicTransformerBlock {
                norm1: layer_norm(),
                attn1: attention(channels),
                norm2: layer_norm(),
                attn2: attention(self.cross_attention_dim),
                norm3: layer_norm(),
                ff: FeedForward {
                    geglu: linear(channels, inner * 2, true, device),
                    out: linear(inner, channels, true, device),
                },
            })
            .collect();
        Transformer2D {
            norm: self.group_norm(channels, TRANSFORMER_NORM_EPS, device),
            proj_in_conv,
            proj_in_linear,
            transformer_blocks,
            proj_out_conv,
            proj_out_linear,
        }
    }

    /// A model with freshly initialised weights.
    pub fn init(&self, device: &Device) -> UNet2DConditionModel {
        let channels = &self.block_out_channels;
        let levels = channels.len();
        let first = channels.first().copied().unwrap_or(0);
        let last = channels.last().copied().unwrap_or(0);
        let heads = |level: usize| self.attention_heads.get(level).copied().unwrap_or(1);

        let mut down_blocks = Vec::with_capacity(levels);
        let mut output = first;
        for (level, &width) in channels.iter().enumerate() {
            let input = output;
            output = width;
            let cross = self
                .down_cross_attention
                .get(level)
                .copied()
                .unwrap_or(false);
            let resnets = (0..self.layers_per_block)
                .map(|j| self.resnet(if j == 0 { input } else { output }, output, device))
                .collect();
            let attentions = if cross {
                (0..self.layers_per_block)
                    .map(|_| self.transformer(output, heads(level), device))
                    .collect()
            } else {
                Vec::new()
            };
            let downsamplers = if level + 1 < levels {
                vec![Sampler {
                    conv: conv(output, output, 3, 2, device),
                }]
            } else {
                Vec::new()
            };
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsamplers,
            });
        }

        let mid_block = MidBlock {
            resnets: vec![
                self.resnet(last, last, device),
                self.resnet(last, last, device),
            ],
            attentions: vec![self.transformer(last, heads(levels.saturating_sub(1)), device)],
        };

        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(levels);
        let mut output = reversed.first().copied().unwrap_or(0);
        for (i, &width) in reversed.iter().enumerate() {
            let previous = output;
            output = width;
            let input = reversed[(i + 1).min(levels - 1)];
            let cross = self.up_cross_attention.get(i).copied().unwrap_or(false);
            let layers = self.layers_per_block + 1;
            let resnets = (0..layers)
                .map(|j| {
                    let skip = if j == layers - 1 { input } else { output };
                    let resnet_in = if j == 0 { previous } else { output };
                    self.resnet(resnet_in + skip, output, device)
                })
                .collect();
            let attentions = if cross {
                (0..layers)
                    .map(|_| self.transformer(output, heads(levels - 1 - i), device))
                    .collect()
            } else {
                Vec::new()
            };
            let upsamplers = if i + 1 < levels {
                vec![Sampler {
                    conv: conv(output, output, 3, 1, device),
                }]
            } else {
                Vec::new()
            };
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsamplers,
            });
        }

        UNet2DConditionModel {
            conv_in: conv(self.in_channels, first, 3, 1, device),
            time_embedding: TimestepEmbedding {
                linear_1: linear(first, self.time_embed_dim(), true, device),
                linear_2: linear(self.time_embed_dim(), self.time_embed_dim(), true, device),
            },
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: self.group_norm(first, self.norm_eps, device),
            conv_out: conv(first, self.out_channels, 3, 1, device),
            timestep_channels: first,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
        }
    }
}

/// `Linear -> SiLU -> Linear` on the sinusoidal timestep embedding.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

/// diffusers' `ResnetBlock2D` (time embedding added after the first convolution).
#[derive(Module, Debug)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn forward(&self, x: Tensor<4>, time: Tensor<2>) -> Tensor<4> {
        let h = conv2d(&self.conv1, silu(self.norm1.forward(x.clone())));
        let t = self.time_emb_proj.forward(silu(time));
        let [batch, channels] = t.dims();
        let h = h + t.reshape([batch, channels, 1, 1]);
        let h = conv2d(&self.conv2, silu(self.norm2.forward(h)));
        let skip = match &self.conv_shortcut {
            Some(conv) => conv2d(conv, x),
            None => x,
        };
        skip + h
    }
}

/// Multi-head attention (self-attention when `context` is the input itself).
#[derive(Module, Debug)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    #[module(skip)]
    heads: usize,
}

impl Attention {
    fn forward(&self, x: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let [batch, queries, width] = x.dims();
        let keys = context.dims()[1];
        let head_width = width / self.heads;
        let split = |t: Tensor<3>, tokens: usize| {
            t.reshape([batch, tokens, self.heads, head_width])
                .swap_dims(1, 2)
        };
        let q = split(self.to_q.forward(x), queries);
        let k = split(self.to_k.forward(context.clone()), keys);
        let v = split(self.to_v.forward(context), keys);
        let out = attention(q, k, v, None)
            .swap_dims(1, 2)
            .reshape([batch, queries, width]);
        self.to_out.forward(out)
    }
}

/// GEGLU feed-forward: `out(h * gelu(g))` where `[h, g] = geglu(x)`.
#[derive(Module, Debug)]
pub struct FeedForward {
    geglu: Linear,
    out: Linear,
}

impl FeedForward {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let projected = self.geglu.forward(x);
        let [batch, tokens, double] = projected.dims();
        let inner = double / 2;
        let hidden = projected.clone().slice([0..batch, 0..tokens, 0..inner]);
        let gate = projected.slice([0..batch, 0..tokens, inner..double]);
        self.out.forward(hidden * gelu(gate))
    }
}

/// Self-attention, cross-attention, feed-forward, each pre-LayerNorm with a residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn forward(&self, x: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let normed = self.norm1.forward(x.clone());
        let x = x + self.attn1.forward(normed.clone(), normed);
        let x = x.clone() + self.attn2.forward(self.norm2.forward(x), context);
        x.clone() + self.ff.forward(self.norm3.forward(x))
    }
}

/// diffusers' `Transformer2DModel` over a feature map.
#[derive(Module, Debug)]
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in_conv: Option<Conv2d>,
    proj_in_linear: Option<Linear>,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out_conv: Option<Conv2d>,
    proj_out_linear: Option<Linear>,
}

impl Transformer2D {
    fn forward(&self, x: Tensor<4>, context: Tensor<3>) -> Tensor<4> {
        let [batch, channels, height, width] = x.dims();
        let to_tokens = |t: Tensor<4>| t.reshape([batch, channels, height * width]).swap_dims(1, 2);
        let to_map = |t: Tensor<3>| t.swap_dims(1, 2).reshape([batch, channels, height, width]);
        let normed = self.norm.forward(x.clone());
        let mut tokens = match (&self.proj_in_conv, &self.proj_in_linear) {
            (Some(conv), _) => to_tokens(conv2d(conv, normed)),
            (None, Some(linear)) => linear.forward(to_tokens(normed)),
            (None, None) => to_tokens(normed),
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context.clone());
        }
        let out = match (&self.proj_out_conv, &self.proj_out_linear) {
            (Some(conv), _) => conv2d(conv, to_map(tokens)),
            (None, Some(linear)) => to_map(linear.forward(tokens)),
            (None, None) => to_map(tokens),
        };
        out + x
    }
}

/// A stride-2 convolution (down) or a nearest x2 upsampling then convolution (up).
#[derive(Module, Debug)]
pub struct Sampler {
    conv: Conv2d,
}

/// `CrossAttnDownBlock2D` (with attentions) or `DownBlock2D` (without).
#[derive(Module, Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
    downsamplers: Vec<Sampler>,
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (attention, resnet) pairs.
#[derive(Module, Debug)]
pub struct MidBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
}

/// `CrossAttnUpBlock2D` (with attentions) or `UpBlock2D` (without).
#[derive(Module, Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
    upsamplers: Vec<Sampler>,
}

/// The denoiser.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    #[module(skip)]
    timestep_channels: usize,
    #[module(skip)]
    flip_sin_to_cos: bool,
    #[module(skip)]
    freq_shift: f64,
}

impl UNet2DConditionModel {
    /// Loads a diffusers `unet/` folder: `config.json` and `diffusion_pytorch_model.safetensors`.
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self, SdError> {
        let config = UNetConfig::from_diffusers_json(&dir.join("config.json"))?;
        Self::from_file(
            &dir.join("diffusion_pytorch_model.safetensors"),
            &config,
            device,
        )
    }

    /// Loads a weight file in the diffusers layout with a known configuration.
    pub fn from_file(path: &Path, config: &UNetConfig, device: &Device) -> Result<Self, SdError> {
        let projection = if config.use_linear_projection {
            "linear"
        } else {
            "conv"
        };
        let rules = vec![
            // `to_out` is `Sequential(Linear, Dropout)`: its Linear is our `to_out`.
            (r"\.to_out\.0\.".to_owned(), ".to_out.".to_owned()),
            // GEGLU's projection `ff.net.0.proj` is our `ff.geglu`.
            (r"\.ff\.net\.0\.proj\.".to_owned(), ".ff.geglu.".to_owned()),
            // The feed-forward output `ff.net.2` (after a Dropout at 1) is our `ff.out`.
            (r"\.ff\.net\.2\.".to_owned(), ".ff.out.".to_owned()),
            // `proj_in`/`proj_out` are 1x1 convs or Linears per the config; our fields say which.
            (
                r"\.proj_(in|out)\.".to_owned(),
                format!(".proj_${{1}}_{projection}."),
            ),
        ];
        load_module(config.init(device), path, &remapper(&rules)?)
    }

    /// The sinusoidal embedding of `timesteps` (`[batch]`), `[batch, timestep_channels]`.
    fn timestep_features(&self, timesteps: Tensor<1>) -> Tensor<2> {
        let device = timesteps.device();
        let half = self.timestep_channels / 2;
        let [batch] = timesteps.dims();
        let exponents: Vec<f32> = (0..half)
            .map(|i| {
                let exponent = -(MAX_PERIOD.ln() as f32) * i as f32;
                (exponent / (half as f32 - self.freq_shift as f32)).exp()
            })
            .collect();
        let frequencies = Tensor::<1>::from_floats(exponents.as_slice(), &device);
        let angles = timesteps.reshape([batch, 1]) * frequencies.reshape([1, half]);
        let (sin, cos) = (angles.clone().sin(), angles.cos());
        if self.flip_sin_to_cos {
            Tensor::cat(vec![cos, sin], 1)
        } else {
            Tensor::cat(vec![sin, cos], 1)
        }
    }

    /// Predicts the noise: `sample` `[batch, in_channels, h, w]` (sides multiples of
    /// 2^(levels-1)), `timesteps` `[batch]` (as floats), `context` `[batch, 77, cross_dim]`.
    ///
    /// Computes in the precision of the module's parameters (see
    /// [`cast_module`](super::precision::cast_module)); the result has `sample`'s dtype.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: Tensor<1>,
        context: Tensor<3>,
    ) -> Tensor<4> {
        let caller_dtype = sample.dtype();
        let dtype = self.conv_in.weight.val().dtype();
        let sample = to_dtype(sample, dtype);
        let context = to_dtype(context, dtype);
        // The sinusoids are computed in f32 (timesteps up to 999 times frequencies lose
        // their phase in f16), then narrowed.
        let features = to_dtype(
            self.timestep_features(to_dtype(timesteps, DType::F32)),
            dtype,
        );
        let time = self
            .time_embedding
            .linear_2
            .forward(silu(self.time_embedding.linear_1.forward(features)));

        let mut x = conv2d(&self.conv_in, sample);
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            for (index, resnet) in block.resnets.iter().enumerate() {
                x = resnet.forward(x, time.clone());
                if let Some(attention) = block.attentions.get(index) {
                    x = attention.forward(x, context.clone());
                }
                skips.push(x.clone());
            }
            for sampler in &block.downsamplers {
                x = conv2d(&sampler.conv, x);
                skips.push(x.clone());
            }
        }

        let mut resnets = self.mid_block.resnets.iter();
        if let Some(first) = resnets.next() {
            x = first.forward(x, time.clone());
        }
        for (attention, resnet) in self.mid_block.attentions.iter().zip(resnets) {
            x = attention.forward(x, context.clone());
            x = resnet.forward(x, time.clone());
        }

        for block in &self.up_blocks {
            for (index, resnet) in block.resnets.iter().enumerate() {
                if let Some(skip) = skips.pop() {
                    x = Tensor::cat(vec![x, skip], 1);
                }
                x = resnet.forward(x, time.clone());
                if let Some(attention) = block.attentions.get(index) {
                    x = attention.forward(x, context.clone());
                }
            }
            for sampler in &block.upsamplers {
                x = interpolate(
                    x,
                    InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([2.0, 2.0]),
                );
                x = conv2d(&sampler.conv, x);
            }
        }

        let out = conv2d(&self.conv_out, silu(self.conv_norm_out.forward(x)));
        to_dtype(out, caller_dtype)
    }
}

impl UNetConfig {
    /// Reads a diffusers `UNet2DConditionModel` `config.json`, rejecting settings this
    /// implementation does not have.
    pub fn from_diffusers_json(path: &Path) -> Result<Self, SdError> {
        let text = super::read_text(path)?;
        let bad = |reason: String| SdError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|err| bad(err.to_string()))?;
        let usize_of = |key: &str| {
            json[key]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("`{key}` is missing or not an integer")))
        };
        let list_of = |key: &str| -> Result<Vec<usize>, SdError> {
            json[key]
                .as_array()
                .ok_or_else(|| bad(format!("`{key}` is missing or not a list")))?
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|v| v as usize)
                        .ok_or_else(|| bad(format!("`{key}` holds a non-integer")))
                })
                .collect()
        };
        let types_of = |key: &str, cross: &str, plain: &str| -> Result<Vec<bool>, SdError> {
            json[key]
                .as_array()
                .ok_or_else(|| bad(format!("`{key}` is missing or not a list")))?
                .iter()
                .map(|v| match v.as_str() {
                    Some(t) if t == cross => Ok(true),
                    Some(t) if t == plain => Ok(false),
                    other => Err(bad(format!(
                        "`{key}` entry {other:?} (only {cross} and {plain})"
                    ))),
                })
                .collect()
        };
        // Settings that must keep their SD 1.x/2.x values.
        let expect = |key: &str, allowed: &[serde_json::Value]| -> Result<(), SdError> {
            let value = json.get(key).cloned().unwrap_or(serde_json::Value::Null);
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(bad(format!("`{key}` = {value} is not supported")))
            }
        };
        use serde_json::Value::Null;
        use serde_json::json as j;
        expect("mid_block_type", &[j!("UNetMidBlock2DCrossAttn"), Null])?;
        expect("act_fn", &[j!("silu"), Null])?;
        expect("time_embedding_type", &[j!("positional"), Null])?;
        expect("resnet_time_scale_shift", &[j!("default"), Null])?;
        expect("class_embed_type", &[Null])?;
        expect("addition_embed_type", &[Null])?;
        expect("encoder_hid_dim", &[Null])?;
        expect("time_cond_proj_dim", &[Null])?;
        expect("time_embedding_dim", &[Null])?;
        expect("timestep_post_act", &[Null])?;
        expect("conv_in_kernel", &[j!(3), Null])?;
        expect("conv_out_kernel", &[j!(3), Null])?;
        expect("only_cross_attention", &[j!(false), Null])?;
        expect("dual_cross_attention", &[j!(false), Null])?;
        expect("center_input_sample", &[j!(false), Null])?;
        expect("downsample_padding", &[j!(1), Null])?;
        expect("mid_block_scale_factor", &[j!(1), j!(1.0), Null])?;
        expect("resnet_out_scale_factor", &[j!(1), j!(1.0), Null])?;
        expect("reverse_transformer_layers_per_block", &[Null])?;

        let block_out_channels = list_of("block_out_channels")?;
        let levels = block_out_channels.len();
        let down_cross_attention =
            types_of("down_block_types", "CrossAttnDownBlock2D", "DownBlock2D")?;
        let up_cross_attention = types_of("up_block_types", "CrossAttnUpBlock2D", "UpBlock2D")?;
        if down_cross_attention.len() != levels || up_cross_attention.len() != levels {
            return Err(bad(
                "block type lists and block_out_channels differ in length".into(),
            ));
        }
        // diffusers names the head count `attention_head_dim` for SD 1.x/2.x checkpoints
        // (`num_attention_heads = num_attention_heads or attention_head_dim`): an integer for
        // every block, or one entry per down block.
        let heads_value = match &json["num_attention_heads"] {
            Null => &json["attention_head_dim"],
            value => value,
        };
        let attention_heads = match heads_value {
            serde_json::Value::Number(n) => {
                vec![n.as_u64().map_or(0, |v| v as usize); levels]
            }
            serde_json::Value::Array(_) => {
                let key = if json["num_attention_heads"].is_null() {
                    "attention_head_dim"
                } else {
                    "num_attention_heads"
                };
                list_of(key)?
            }
            _ => return Err(bad("`attention_head_dim` is missing".into())),
        };
        if attention_heads.len() != levels || attention_heads.contains(&0) {
            return Err(bad(format!(
                "attention heads {attention_heads:?} per block"
            )));
        }
        for (level, (&width, &heads)) in block_out_channels.iter().zip(&attention_heads).enumerate()
        {
            if !width.is_multiple_of(heads) {
                return Err(bad(format!(
                    "block {level}: {width} channels do not split into {heads} heads"
                )));
            }
        }
        let transformer_layers_per_block = match &json["transformer_layers_per_block"] {
            Null => 1,
            serde_json::Value::Number(n) => n.as_u64().map_or(1, |v| v as usize),
            other => return Err(bad(format!("transformer_layers_per_block = {other}"))),
        };
        let norm_num_groups = usize_of("norm_num_groups")?;
        if block_out_channels
            .iter()
            .any(|c| !c.is_multiple_of(norm_num_groups))
        {
            return Err(bad(format!(
                "block_out_channels {block_out_channels:?} do not split into {norm_num_groups} groups"
            )));
        }
        Ok(Self {
            in_channels: usize_of("in_channels")?,
            out_channels: usize_of("out_channels")?,
            block_out_channels,
            down_cross_attention,
            up_cross_attention,
            attention_heads,
            layers_per_block: usize_of("layers_per_block")?,
            transformer_layers_per_block,
            norm_num_groups,
            norm_eps: json["norm_eps"].as_f64().unwrap_or(1e-5),
            cross_attention_dim: usize_of("cross_attention_dim")?,
            use_linear_projection: json["use_linear_projection"].as_bool().unwrap_or(false),
            flip_sin_to_cos: json["flip_sin_to_cos"].as_bool().unwrap_or(true),
            freq_shift: json["freq_shift"].as_f64().unwrap_or(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::UNetConfig;

    /// The shape-relevant part of stabilityai/sd-turbo's `unet/config.json`.
    const SD_TURBO_UNET_CONFIG: &str = r#"{
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "addition_embed_type": null,
        "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": false, "class_embed_type": null, "conv_in_kernel": 3,
        "conv_out_kernel": 3, "cross_attention_dim": 1024,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "dual_cross_attention": false, "encoder_hid_dim": null,
        "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
        "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn",
        "norm_eps": 1e-05, "norm_num_groups": 32, "num_attention_heads": null,
        "only_cross_attention": false, "out_channels": 4, "resnet_out_scale_factor": 1.0,
        "resnet_time_scale_shift": "default", "sample_size": 64, "time_cond_proj_dim": null,
        "time_embedding_type": "positional", "transformer_layers_per_block": 1,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D"],
        "upcast_attention": null, "use_linear_projection": true
    }"#;

    #[test]
    fn sd21_config_is_sd_turbo_config_json() {
        let path = std::env::temp_dir().join(format!(
            "streamdiff-sd-turbo-unet-config-{}.json",
            std::process::id()
        ));
        std::fs::write(&path, SD_TURBO_UNET_CONFIG).expect("write");
        let parsed = UNetConfig::from_diffusers_json(&path).expect("parses");
        std::fs::remove_file(&path).ok();
        assert_eq!(format!("{:?}", UNetConfig::sd21()), format!("{parsed:?}"));
    }
}
