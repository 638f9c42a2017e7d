// Forward-backward consistency (Sundaram et al.): 1 where the backward flow at x + forward(x)
// cancels forward(x) within 0.01 (|f|^2 + |b|^2) + 0.5 and the target lies in the frame, else 0.
@group(0) @binding(0) var<storage, read_write> forward: array<f32>;
@group(0) @binding(1) var<storage, read_write> backward: array<f32>;
@group(0) @binding(2) var<storage, read_write> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

fn backward_at(xi: u32, yi: u32, c: u32) -> f32 {
    return backward[(yi * params[0] + xi) * 2u + c];
}

fn sample_backward(x_in: f32, y_in: f32, c: u32) -> f32 {
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
    let top = backward_at(xa, ya, c) + (backward_at(xb, ya, c) - backward_at(xa, ya, c)) * fx;
    let bottom = backward_at(xa, yb, c) + (backward_at(xb, yb, c) - backward_at(xa, yb, c)) * fx;
    return top + (bottom - top) * fy;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    let height = params[1];
    if id.x >= width || id.y >= height { return; }
    let p = id.y * width + id.x;
    let fu = forward[p * 2u];
    let fv = forward[p * 2u + 1u];
    let tx = f32(id.x) + fu;
    let ty = f32(id.y) + fv;
    let inside = tx >= 0.0 && ty >= 0.0 && tx <= f32(width - 1u) && ty <= f32(height - 1u);
    let bu = sample_backward(tx, ty, 0u);
    let bv = sample_backward(tx, ty, 1u);
    let su = fu + bu;
    let sv = fv + bv;
    let bound = 0.01 * (fu * fu + fv * fv + bu * bu + bv * bv) + 0.5;
    if inside && su * su + sv * sv <= bound {
        mask[p] = 1.0;
    } else {
        mask[p] = 0.0;
    }
}
