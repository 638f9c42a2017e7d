//! The two heavy operations of the SD family, each behind one function of ours so that a faster
//! kernel (a fused WGSL attention, a Winograd or implicit-GEMM convolution) can replace it in
//! one place: [`conv2d`] (every convolution of the UNet and TAESD) and [`attention`] (every
//! scaled dot-product attention of the UNet and the CLIP text encoder).
//!
//! Today both are burn's own operations: `Conv2d::forward`, and `softmax(q kᵀ · scale) v` from
//! a batched matmul, with the reference's order of operations.

use burn::nn::conv::Conv2d;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor};

/// A 2-D convolution with the module's weights, stride and padding: `[batch, in, h, w]` to
/// `[batch, out, h', w']`.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv.forward(x)
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

    use super::{MAX_SCORE_BYTES, attention, attention_whole};

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
