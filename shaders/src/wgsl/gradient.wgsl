// Central-difference gradient, interleaved (d/dx, d/dy), edges clamped.
@group(0) @binding(0) var<storage, read_write> image: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradient: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

fn at(x: i32, y: i32) -> f32 {
    let w = i32(params[0]);
    let h = i32(params[1]);
    return image[u32(clamp(y, 0, h - 1) * w + clamp(x, 0, w - 1))];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    if id.x >= width || id.y >= params[1] { return; }
    let x = i32(id.x);
    let y = i32(id.y);
    let p = id.y * width + id.x;
    gradient[p * 2u] = 0.5 * (at(x + 1, y) - at(x - 1, y));
    gradient[p * 2u + 1u] = 0.5 * (at(x, y + 1) - at(x, y - 1));
}
