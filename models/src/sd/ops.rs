//! The two heavy operations of the SD family, each behind one function of ours so that a faster
//! kernel (a fused WGSL attention, a Winograd or implicit-GEMM convolution) can replace it in
//! one place: [`conv2d`] (every convolution of the UNet and TAESD) and [`attention`] (every
//! scaled dot-product attention of the UNet and the CLIP text encoder).
//!
//! [`conv2d`] runs as an explicit im2col + matrix multiply: burn 0.22's direct convolution
//! reaches only ~1.5 TFLOP/s on an H100/H200 over Vulkan, while its matmul is an order of
//! magnitude faster (docs/PERFORMANCE.md). Attention is `softmax(q kᵀ · scale) v` from a batched
//! matmul, with the reference's order of operations.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Slice, Tensor};

/// A 2-D convolution with the module's weights, stride and padding: `[batch, in, h, w]` to
/// `[batch, out, h', w']`.
///
/// Ungrouped, undilated convolutions with explicit padding (every convolution of the UNet and
/// TAESD) become one matrix multiply per band of output rows: the `kh * kw` shifted (and, for
/// stride 2, subsampled) views of the padded input are stacked into `[batch, in * kh * kw,
/// pixels]` columns, and `[out, in * kh * kw]` weights multiply them. Bands keep each column
/// matrix under [`MAX_COLUMN_BYTES`]. Anything else goes to burn's own convolution.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match explicit_padding(conv) {
        Some(padding) if conv.groups == 1 && conv.dilation == [1, 1] => {
            conv2d_as_matmul(conv, x, padding, MAX_COLUMN_BYTES)
        }
        _ => conv.forward(x),
    }
}

/// `(top, left, bottom, right)` when the padding does not depend on the input size.
fn explicit_padding(conv: &Conv2d) -> Option<[usize; 4]> {
    match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some([top, left, bottom, right]),
        PaddingConfig2d::Valid => Some([0; 4]),
        PaddingConfig2d::Same => None,
    }
}

/// Column matrices at most this big are built in one piece (the same storage-binding limit as
/// attention scores; the full-size TAESD's first layers would need 600 MiB at 512x512).
const MAX_COLUMN_BYTES: usize = 64 << 20;

fn conv2d_as_matmul(
    conv: &Conv2d,
    x: Tensor<4>,
    padding: [usize; 4],
    max_column_bytes: usize,
) -> Tensor<4> {
    let [top, left, bottom, right] = padding;
    let weight = conv.weight.val();
    let [out_channels, in_channels, kernel_h, kernel_w] = weight.dims();
    let [stride_h, stride_w] = conv.stride;
    let [batch, _, height, width] = x.dims();
    let padded_h = height + top + bottom;
    let padded_w = width + left + right;
    let out_h = (padded_h - kernel_h) / stride_h + 1;
    let out_w = (padded_w - kernel_w) / stride_w + 1;
    let x = if padding == [0; 4] {
        x
    } else {
        x.pad([(top, bottom), (left, right)], 0.0)
    };
    // [out, in, kh, kw] -> [out, in * kh * kw]: the column order below is (in, kh, kw).
    let taps = kernel_h * kernel_w;
    let weight = weight
        .reshape([1, out_channels, in_channels * taps])
        .expand([batch, out_channels, in_channels * taps]);
    let bias = conv
        .bias
        .as_ref()
        .map(|bias| bias.val().reshape([1, out_channels, 1, 1]));

    let element_bytes = x.dtype().size();
    let row_bytes = batch * in_channels * taps * out_w * element_bytes;
    let band_rows = (max_column_bytes / row_bytes.max(1)).clamp(1, out_h);
    let mut bands: Vec<Tensor<4>> = (0..out_h)
        .step_by(band_rows)
        .map(|first_row| {
            let rows = band_rows.min(out_h - first_row);
            let columns = if taps == 1 && stride_h == 1 && stride_w == 1 {
                // A 1x1 convolution multiplies the pixels as they are.
                x.clone()
                    .slice([
                        Slice::from(..),
                        Slice::from(..),
                        Slice::from(first_row..first_row + rows),
                        Slice::from(..),
                    ])
                    .reshape([batch, in_channels, rows * out_w])
            } else {
                let shifted: Vec<Tensor<4>> = (0..kernel_h)
                    .flat_map(|dy| (0..kernel_w).map(move |dx| (dy, dx)))
                    .map(|(dy, dx)| {
                        let row = dy + first_row * stride_h;
                        x.clone().slice([
                            Slice::from(..),
                            Slice::from(..),
                            strided(row, rows, stride_h),
                            strided(dx, out_w, stride_w),
                        ])
                    })
                    .collect();
                // [batch, in, taps, rows, out_w] -> [batch, in * taps, pixels].
                Tensor::stack::<5>(shifted, 2).reshape([batch, in_channels * taps, rows * out_w])
            };
            weight
                .clone()
                .matmul(columns)
                .reshape([batch, out_channels, rows, out_w])
        })
        .collect();
    let out = if bands.len() == 1 {
        bands.swap_remove(0)
    } else {
        Tensor::cat(bands, 2)
    };
    match bias {
        Some(bias) => out + bias,
        None => out,
    }
}

/// `count` indices from `start`, `step` apart.
fn strided(start: usize, count: usize, step: usize) -> Slice {
    Slice::new(
        start as isize,
        Some((start + (count - 1) * step + 1) as isize),
        step as isize,
    )
}

/// Scaled dot-product attention: `softmax(q kᵀ / sqrt(head_width)) v`.
///
/// `q`: `[batch, heads, queries, head_width]`; `k`, `v`: `[batch, heads, keys, head_width]`;
/// `mask` (broadcast to `[batch, heads, queries, keys]`): true where a query may not look.
/// Returns `[batch, heads, queries, head_width]`. When the score matrix would exceed 64 MiB
/// the queries go through in slices (same result, bounded memory).
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    let [batch, heads, queries, head_width] = q.dims();
    let keys = k.dims()[2];
    let score_bytes = batch * heads * queries * keys * std::mem::size_of::<f32>();
    if score_bytes <= MAX_SCORE_BYTES || queries < 2 {
        return attention_whole(q, k, v, mask);
    }
    // Sliced attention: the query rows in chunks, so no score matrix exceeds the limit (each
    // row's softmax is independent, the result is the same).
    let rows = (MAX_SCORE_BYTES / (batch * heads * keys * std::mem::size_of::<f32>())).max(1);
    let chunks = (0..queries)
        .step_by(rows)
        .map(|start| {
            let end = (start + rows).min(queries);
            let q = q
                .clone()
                .slice([0..batch, 0..heads, start..end, 0..head_width]);
            let mask = mask.clone().map(|mask| {
                mask.expand([batch, heads, queries, keys]).slice([
                    0..batch,
                    0..heads,
                    start..end,
                    0..keys,
                ])
            });
            attention_whole(q, k.clone(), v.clone(), mask)
        })
        .collect();
    Tensor::cat(chunks, 2)
}

/// Scores at most this big are computed in one piece: a wgpu storage binding is limited to
/// 128 MiB by default (lavapipe refuses a 320 MiB buffer), and big buffers cost memory.
const MAX_SCORE_BYTES: usize = 64 << 20;

fn attention_whole(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    let head_width = q.dims()[3];
    let scale = (head_width as f64).powf(-0.5);
    let scores = q.matmul(k.swap_dims(2, 3)) * scale;
    let scores = match mask {
        Some(mask) => {
            let shape = scores.dims();
            scores.mask_fill(mask.expand(shape), f32::NEG_INFINITY)
        }
        None => scores,
    };
    softmax(scores, 3).matmul(v)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;

    use super::{MAX_SCORE_BYTES, attention, attention_whole, conv2d_as_matmul, explicit_padding};

    /// The im2col path against burn's direct convolution: 3x3 with bias, 3x3 stride 2 without
    /// bias (TAESD and UNet downsampling), 1x1, odd sizes, and band splitting.
    #[test]
    fn matmul_convolution_equals_burn_convolution() {
        let device = Device::flex();
        let cases = [
            // (in, out, kernel, stride, padding, bias, height, width, column byte limit)
            (3, 8, 3, 1, 1, true, 9, 7, usize::MAX),
            (5, 4, 3, 2, 1, false, 9, 8, usize::MAX),
            (6, 3, 1, 1, 0, true, 5, 6, usize::MAX),
            (4, 6, 3, 1, 1, true, 11, 5, 2 * 4 * 9 * 5 * 4 * 3),
            (4, 6, 3, 2, 1, false, 12, 10, 1),
            (4, 6, 1, 1, 0, true, 7, 3, 1),
        ];
        for (index, (c_in, c_out, kernel, stride, pad, bias, h, w, limit)) in
            cases.into_iter().enumerate()
        {
            let conv = Conv2dConfig::new([c_in, c_out], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(bias)
                .init(&device);
            let x = Tensor::<4>::random([2, c_in, h, w], Distribution::Normal(0.0, 1.0), &device);
            let padding = explicit_padding(&conv).expect("explicit");
            let got = conv2d_as_matmul(&conv, x.clone(), padding, limit);
            let expected = conv.forward(x);
            assert_eq!(got.dims(), expected.dims(), "case {index}: shape");
            let difference: f32 = (got - expected).abs().max().into_scalar();
            assert!(difference < 1e-5, "case {index}: differs by {difference}");
        }
    }

    #[test]
    fn sliced_attention_equals_whole_attention() {
        let device = Device::flex();
        // 1 x 2 heads x 96 queries x keys such that the scores exceed the slicing limit.
        let keys = MAX_SCORE_BYTES / (2 * 96 * 4) + 8;
        let q = Tensor::<4>::random([1, 2, 96, 8], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<4>::random([1, 2, keys, 8], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<4>::random([1, 2, keys, 8], Distribution::Normal(0.0, 1.0), &device);
        let sliced = attention(q.clone(), k.clone(), v.clone(), None);
        let whole = attention_whole(q, k, v, None);
        let difference: f32 = (sliced - whole).abs().max().into_scalar();
        assert!(difference < 1e-6, "sliced differs by {difference}");
    }
}
