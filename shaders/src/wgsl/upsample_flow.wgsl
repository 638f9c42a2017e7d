// Bilinear resampling of a flow field to another size, vectors scaled by the size ratio.
@group(0) @binding(0) var<storage, read_write> flow: array<f32>;
@group(0) @binding(1) var<storage, read_write> resampled: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

fn flow_at(xi: u32, yi: u32, c: u32) -> f32 {
    return flow[(yi * params[0] + xi) * 2u + c];
}

fn sample_flow(x_in: f32, y_in: f32, c: u32) -> f32 {
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
    let top = flow_at(xa, ya, c) + (flow_at(xb, ya, c) - flow_at(xa, ya, c)) * fx;
    let bottom = flow_at(xa, yb, c) + (flow_at(xb, yb, c) - flow_at(xa, yb, c)) * fx;
    return top + (bottom - top) * fy;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let to_w = params[2];
    let to_h = params[3];
    if id.x >= to_w || id.y >= to_h { return; }
    let scale_x = f32(params[0]) / f32(to_w);
    let scale_y = f32(params[1]) / f32(to_h);
    let sx = (f32(id.x) + 0.5) * scale_x - 0.5;
    let sy = (f32(id.y) + 0.5) * scale_y - 0.5;
    let p = id.y * to_w + id.x;
    resampled[p * 2u] = sample_flow(sx, sy, 0u) / scale_x;
    resampled[p * 2u + 1u] = sample_flow(sx, sy, 1u) / scale_y;
}
