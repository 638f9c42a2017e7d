// Binomial [1 3 3 1]/8 blur and decimation by two, edges clamped.
@group(0) @binding(0) var<storage, read_write> image: array<f32>;
@group(0) @binding(1) var<storage, read_write> half_image: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

fn at(x: i32, y: i32) -> f32 {
    let w = i32(params[0]);
    let h = i32(params[1]);
    return image[u32(clamp(y, 0, h - 1) * w + clamp(x, 0, w - 1))];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let out_w = params[2];
    let out_h = params[3];
    if id.x >= out_w || id.y >= out_h { return; }
    var taps = array<f32, 4>(0.125, 0.375, 0.375, 0.125);
    var sum = 0.0;
    for (var j = 0; j < 4; j++) {
        for (var i = 0; i < 4; i++) {
            let sx = 2 * i32(id.x) - 1 + i;
            let sy = 2 * i32(id.y) - 1 + j;
            sum += taps[i] * taps[j] * at(sx, sy);
        }
    }
    half_image[id.y * out_w + id.x] = sum;
}
