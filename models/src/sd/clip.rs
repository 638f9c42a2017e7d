//! The CLIP text encoder of Stable Diffusion (transformers `CLIPTextModel`): SD 1.x's OpenAI
//! ViT-L/14 text tower (`quick_gelu`) and SD 2.x's OpenCLIP ViT-H/14 tower (`gelu`), chosen by
//! the checkpoint's `config.json`.
//!
//! What SD feeds the UNet is [`ClipTextModel::forward`]: the last layer of the checkpoint with
//! `final_layer_norm` applied (`last_hidden_state`), with CLIP's causal mask and no padding
//! mask. SD 2.x checkpoints already stop one layer early (23 of OpenCLIP's 24), so no layer is
//! skipped here.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::Deserialize;

use super::SdError;
use super::ops::attention;
use super::weights::{load_module_ignoring, remapper};

/// The MLP activation.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// The exact (erf) GELU (OpenCLIP, SD 2.x).
    Gelu,
}

/// Shape of a CLIP text tower; the defaults are SD 1.5's (OpenAI ViT-L/14).
#[derive(Config, Debug)]
pub struct ClipTextConfig {
    /// Vocabulary entries.
    #[config(default = 49408)]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[config(default = 768)]
    pub hidden_size: usize,
    /// Width of the MLP.
    #[config(default = 3072)]
    pub intermediate_size: usize,
    /// Transformer layers.
    #[config(default = 12)]
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    #[config(default = 12)]
    pub num_attention_heads: usize,
    /// Positions, in tokens.
    #[config(default = 77)]
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// MLP activation.
    #[config(default = "ClipActivation::QuickGelu")]
    pub hidden_act: ClipActivation,
}

/// The keys of a transformers `CLIPTextConfig` `config.json` that shape the network.
#[derive(Deserialize)]
struct TransformersConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    layer_norm_eps: f64,
    hidden_act: String,
}

impl ClipTextConfig {
    /// Reads a transformers `CLIPTextModel` `config.json`.
    pub fn from_transformers_json(path: &Path) -> Result<Self, SdError> {
        let text = super::read_text(path)?;
        let bad = |reason: String| SdError::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let raw: TransformersConfig =
            serde_json::from_str(&text).map_err(|err| bad(err.to_string()))?;
        let hidden_act = match raw.hidden_act.as_str() {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            other => return Err(bad(format!("hidden_act `{other}` (quick_gelu or gelu)"))),
        };
        if raw.num_attention_heads == 0 || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            )));
        }
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            max_position_embeddings: raw.max_position_embeddings,
            layer_norm_eps: raw.layer_norm_eps,
            hidden_act,
        })
    }

    /// A model with freshly initialised weights.
    pub fn init(&self, device: &Device) -> ClipTextModel {
        let width = self.hidden_size;
        let norm = || {
            LayerNormConfig::new(width)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let linear = |input, output| LinearConfig::new(input, output).init(device);
        let layers = (0..self.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                layer_norm1: norm(),
                self_attn: ClipAttention {
                    q_proj: linear(width, width),
                    k_proj: linear(width, width),
                    v_proj: linear(width, width),
                    out_proj: linear(width, width),
                    num_heads: self.num_attention_heads,
                },
                layer_norm2: norm(),
                mlp: ClipMlp {
                    fc1: linear(width, self.intermediate_size),
                    fc2: linear(self.intermediate_size, width),
                    activation: self.hidden_act,
                },
            })
            .collect();
        ClipTextModel {
            token_embedding: EmbeddingConfig::new(self.vocab_size, width).init(device),
            position_embedding: EmbeddingConfig::new(self.max_position_embeddings, width)
                .init(device),
            layers,
            final_layer_norm: norm(),
        }
    }
}

/// Multi-head self-attention with CLIP's causal mask.
#[derive(Module, Debug)]
pub struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    #[module(skip)]
    num_heads: usize,
}

impl ClipAttention {
    /// `x`: `[batch, tokens, width]`; `mask`: `[tokens, tokens]`, true where a query may not
    /// look (later tokens).
    fn forward(&self, x: Tensor<3>, mask: Tensor<2, Bool>) -> Tensor<3> {
        let [batch, tokens, width] = x.dims();
        let head_width = width / self.num_heads;
        let heads = |t: Tensor<3>| {
            t.reshape([batch, tokens, self.num_heads, head_width])
                .swap_dims(1, 2)
        };
        let q = heads(self.q_proj.forward(x.clone()));
        let k = heads(self.k_proj.forward(x.clone()));
        let v = heads(self.v_proj.forward(x));
        let mask = mask.reshape([1, 1, tokens, tokens]);
        let out = attention(q, k, v, Some(mask))
            .swap_dims(1, 2)
            .reshape([batch, tokens, width]);
        self.out_proj.forward(out)
    }
}

/// The two-layer MLP.
#[derive(Module, Debug)]
pub struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    #[module(skip)]
    activation: ClipActivation,
}

/// The slope of quick GELU's sigmoid.
const QUICK_GELU_SLOPE: f64 = 1.702;

impl ClipMlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.fc1.forward(x);
        let x = match self.activation {
            ClipActivation::QuickGelu => x.clone() * sigmoid(x * QUICK_GELU_SLOPE),
            ClipActivation::Gelu => gelu(x),
        };
        self.fc2.forward(x)
    }
}

/// A pre-norm transformer layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    mlp: ClipMlp,
}

impl ClipEncoderLayer {
    fn forward(&self, x: Tensor<3>, mask: Tensor<2, Bool>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), mask);
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// The CLIP text tower.
#[derive(Module, Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
}

/// Parameters that are not weights: older transformers checkpoints store the constant
/// `position_ids` buffer (`0..77`); it carries nothing the model needs.
const IGNORED_TENSORS: &[&str] = &[r"^text_model\.embeddings\.position_ids$"];

/// Rules from transformers' `CLIPTextModel` keys to the burn module paths.
fn key_rules() -> Vec<(String, String)> {
    [
        // The embeddings sit at the top of the burn module: `token_embedding`, `position_embedding`.
        (r"^text_model\.embeddings\.", ""),
        // The transformer layers: `text_model.encoder.layers.{i}` is `layers.{i}`.
        (r"^text_model\.encoder\.layers\.", "layers."),
        // The final LayerNorm.
        (r"^text_model\.final_layer_norm\.", "final_layer_norm."),
    ]
    .map(|(from, to)| (from.to_owned(), to.to_owned()))
    .to_vec()
}

impl ClipTextModel {
    /// Loads a transformers `CLIPTextModel` folder (`text_encoder/`): `config.json` and
    /// `model.safetensors`.
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self, SdError> {
        let config = ClipTextConfig::from_transformers_json(&dir.join("config.json"))?;
        Self::from_file(&dir.join("model.safetensors"), &config, device)
    }

    /// Loads a weight file in the transformers layout (safetensors or `.bin`) with a known
    /// configuration.
    pub fn from_file(
        path: &Path,
        config: &ClipTextConfig,
        device: &Device,
    ) -> Result<Self, SdError> {
        load_module_ignoring(
            config.init(device),
            path,
            &remapper(&key_rules())?,
            IGNORED_TENSORS,
        )
    }

    /// `last_hidden_state`: `[batch, tokens]` ids to `[batch, tokens, hidden_size]`, the last
    /// layer's output after `final_layer_norm`. What SD pipelines feed the UNet.
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let (last, _) = self.forward_with_hidden_states(input_ids);
        last
    }

    /// `last_hidden_state` and every hidden state: the embeddings, then each layer's output
    /// (before `final_layer_norm`), as transformers' `output_hidden_states=True` returns them.
    pub fn forward_with_hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
    ) -> (Tensor<3>, Vec<Tensor<3>>) {
        let [batch, tokens] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..tokens as i64, &device)
            .reshape([1, tokens])
            .expand([batch, tokens]);
        let mut x =
            self.token_embedding.forward(input_ids) + self.position_embedding.forward(positions);
        // True above the diagonal: a token attends to itself and earlier tokens only.
        let mask = Tensor::<2, Bool>::tril_mask([tokens, tokens], 0, &device);
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        hidden_states.push(x.clone());
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
            hidden_states.push(x.clone());
        }
        (self.final_layer_norm.forward(x), hidden_states)
    }

    /// `final_layer_norm` applied to any hidden state (for `clip_skip`: diffusers takes
    /// `hidden_states[-(k + 1)]` and normalises it).
    pub fn final_norm(&self, hidden_state: Tensor<3>) -> Tensor<3> {
        self.final_layer_norm.forward(hidden_state)
    }
}
