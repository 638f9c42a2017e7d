// One fixed-point iteration's per-pixel system [A11, A12, A22, B1, B2, s]: robust (Charbonnier)
// weights of the normalised brightness and gradient terms at the current increment, and the
// smoothness weight s of the total flow.
@group(0) @binding(0) var<storage, read_write> derivatives: array<f32>;
@group(0) @binding(1) var<storage, read_write> flow: array<f32>;
@group(0) @binding(2) var<storage, read_write> increment: array<f32>;
@group(0) @binding(3) var<storage, read_write> coefficients: array<f32>;
// width, height, alpha, delta, gamma (f32 bits)
@group(0) @binding(4) var<storage, read_write> params: array<u32>;

const ZETA2: f32 = 0.01;

fn robust_weight(s2: f32) -> f32 {
    return 0.5 / sqrt(s2 + 1e-6);
}

fn total(c: u32, x: i32, y: i32) -> f32 {
    let w = i32(params[0]);
    let h = i32(params[1]);
    let i = u32(clamp(y, 0, h - 1) * w + clamp(x, 0, w - 1)) * 2u + c;
    return flow[i] + increment[i];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    if id.x >= width || id.y >= params[1] { return; }
    let alpha = bitcast<f32>(params[2]);
    let delta = bitcast<f32>(params[3]);
    let gamma = bitcast<f32>(params[4]);
    let p = id.y * width + id.x;
    let d = p * 8u;
    let ix = derivatives[d];
    let iy = derivatives[d + 1u];
    let iz = derivatives[d + 2u];
    let ixx = derivatives[d + 3u];
    let ixy = derivatives[d + 4u];
    let iyy = derivatives[d + 5u];
    let ixz = derivatives[d + 6u];
    let iyz = derivatives[d + 7u];
    let du = increment[p * 2u];
    let dv = increment[p * 2u + 1u];
    let norm_b = 1.0 / (ix * ix + iy * iy + ZETA2);
    let norm_gx = 1.0 / (ixx * ixx + ixy * ixy + ZETA2);
    let norm_gy = 1.0 / (ixy * ixy + iyy * iyy + ZETA2);
    let rb = iz + ix * du + iy * dv;
    let rgx = ixz + ixx * du + ixy * dv;
    let rgy = iyz + ixy * du + iyy * dv;
    let wb = delta * norm_b * robust_weight(norm_b * rb * rb);
    let wg = gamma * robust_weight(norm_gx * rgx * rgx + norm_gy * rgy * rgy);
    let wgx = wg * norm_gx;
    let wgy = wg * norm_gy;
    let x = i32(id.x);
    let y = i32(id.y);
    let ux = 0.5 * (total(0u, x + 1, y) - total(0u, x - 1, y));
    let uy = 0.5 * (total(0u, x, y + 1) - total(0u, x, y - 1));
    let vx = 0.5 * (total(1u, x + 1, y) - total(1u, x - 1, y));
    let vy = 0.5 * (total(1u, x, y + 1) - total(1u, x, y - 1));
    let o = p * 6u;
    coefficients[o] = wb * ix * ix + wgx * ixx * ixx + wgy * ixy * ixy;
    coefficients[o + 1u] = wb * ix * iy + wgx * ixx * ixy + wgy * ixy * iyy;
    coefficients[o + 2u] = wb * iy * iy + wgx * ixy * ixy + wgy * iyy * iyy;
    coefficients[o + 3u] = -(wb * ix * iz + wgx * ixx * ixz + wgy * ixy * iyz);
    coefficients[o + 4u] = -(wb * iy * iz + wgx * ixy * ixz + wgy * iyy * iyz);
    coefficients[o + 5u] = alpha * robust_weight(ux * ux + uy * uy + vx * vx + vy * vy);
}
