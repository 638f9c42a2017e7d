// The stabiliser's blend: current * (1 - w) + carried * w per RGB pixel, with
// w = strength * mask * exp(-((luma_now - luma_carried) / tolerance)^2).
@group(0) @binding(0) var<storage, read_write> current: array<f32>;
@group(0) @binding(1) var<storage, read_write> carried: array<f32>;
@group(0) @binding(2) var<storage, read_write> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> luma_now: array<f32>;
@group(0) @binding(4) var<storage, read_write> luma_carried: array<f32>;
@group(0) @binding(5) var<storage, read_write> blended: array<f32>;
// width, height, strength, tolerance (f32 bits)
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    if id.x >= width || id.y >= params[1] { return; }
    let strength = bitcast<f32>(params[2]);
    let tolerance = bitcast<f32>(params[3]);
    let p = id.y * width + id.x;
    let r = (luma_now[p] - luma_carried[p]) / tolerance;
    let weight = strength * mask[p] * exp(-r * r);
    for (var c = 0u; c < 3u; c++) {
        let i = p * 3u + c;
        blended[i] = current[i] + (carried[i] - current[i]) * weight;
    }
}
