// Element-wise sum of two buffers of equal length.
@group(0) @binding(0) var<storage, read_write> lhs: array<f32>;
@group(0) @binding(1) var<storage, read_write> rhs: array<f32>;
@group(0) @binding(2) var<storage, read_write> sum: array<f32>;
// length, row length of the dispatch grid
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.y * params[1] + id.x;
    if id.x >= params[1] || i >= params[0] { return; }
    sum[i] = lhs[i] + rhs[i];
}
