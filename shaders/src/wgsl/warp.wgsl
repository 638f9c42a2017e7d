// Samples an interleaved multi-channel image at x + flow(x), bilinear, edges clamped.
@group(0) @binding(0) var<storage, read_write> image: array<f32>;
@group(0) @binding(1) var<storage, read_write> flow: array<f32>;
@group(0) @binding(2) var<storage, read_write> warped: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

fn image_at(xi: u32, yi: u32, c: u32) -> f32 {
    return image[(yi * params[0] + xi) * params[2] + c];
}

fn sample_image(x_in: f32, y_in: f32, c: u32) -> f32 {
    let x = clamp(x_in, 0.0, f32(params[0] - 1u));
    let y = clamp(y_in, 0.0, f32(params[1] - 1u));
    let x0 = floor(x);
    let y0 = floor(y);
    let fx = x - x0;
    let fy = y - y0;
    let xa = u32(x0);
    let ya = u32(y0);
    let xb = min(xa + 1u, params[0] - 1u);
    let yb = min(ya + 1u, params[1] - 1u);
    let top = image_at(xa, ya, c) + (image_at(xb, ya, c) - image_at(xa, ya, c)) * fx;
    let bottom = image_at(xa, yb, c) + (image_at(xb, yb, c) - image_at(xa, yb, c)) * fx;
    return top + (bottom - top) * fy;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    if id.x >= width || id.y >= params[1] { return; }
    let p = id.y * width + id.x;
    let sx = f32(id.x) + flow[p * 2u];
    let sy = f32(id.y) + flow[p * 2u + 1u];
    let channels = params[2];
    for (var c = 0u; c < channels; c++) {
        warped[p * channels + c] = sample_image(sx, sy, c);
    }
}
