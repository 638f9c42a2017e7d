// Luma (BT.601) of interleaved RGB.
@group(0) @binding(0) var<storage, read_write> rgb: array<f32>;
@group(0) @binding(1) var<storage, read_write> luma: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    let height = params[1];
    if id.x >= width || id.y >= height { return; }
    let p = id.y * width + id.x;
    luma[p] = 0.299 * rgb[p * 3u] + 0.587 * rgb[p * 3u + 1u] + 0.114 * rgb[p * 3u + 2u];
}
