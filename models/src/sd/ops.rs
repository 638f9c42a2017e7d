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
/// Returns `[batch, heads, queries, head_width]`.
pub fn attention(
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
