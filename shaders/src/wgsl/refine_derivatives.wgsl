// Linearised data terms of the variational refinement per pixel:
// [Ix, Iy, Iz, Ixx, Ixy, Iyy, Ixz, Iyz] from image 0 and image 1 warped by the current flow.
@group(0) @binding(0) var<storage, read_write> image0: array<f32>;
@group(0) @binding(1) var<storage, read_write> warped1: array<f32>;
@group(0) @binding(2) var<storage, read_write> derivatives: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

fn index(x: i32, y: i32) -> u32 {
    let w = i32(params[0]);
    let h = i32(params[1]);
    return u32(clamp(y, 0, h - 1) * w + clamp(x, 0, w - 1));
}

fn avg(x: i32, y: i32) -> f32 {
    let i = index(x, y);
    return 0.5 * (image0[i] + warped1[i]);
}

fn diff(x: i32, y: i32) -> f32 {
    let i = index(x, y);
    return warped1[i] - image0[i];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    if id.x >= width || id.y >= params[1] { return; }
    let x = i32(id.x);
    let y = i32(id.y);
    let o = (id.y * width + id.x) * 8u;
    derivatives[o] = 0.5 * (avg(x + 1, y) - avg(x - 1, y));
    derivatives[o + 1u] = 0.5 * (avg(x, y + 1) - avg(x, y - 1));
    derivatives[o + 2u] = diff(x, y);
    derivatives[o + 3u] = avg(x + 1, y) - 2.0 * avg(x, y) + avg(x - 1, y);
    derivatives[o + 4u] = 0.25 * (avg(x + 1, y + 1) - avg(x + 1, y - 1) - avg(x - 1, y + 1) + avg(x - 1, y - 1));
    derivatives[o + 5u] = avg(x, y + 1) - 2.0 * avg(x, y) + avg(x, y - 1);
    derivatives[o + 6u] = 0.5 * (diff(x + 1, y) - diff(x - 1, y));
    derivatives[o + 7u] = 0.5 * (diff(x, y + 1) - diff(x, y - 1));
}
