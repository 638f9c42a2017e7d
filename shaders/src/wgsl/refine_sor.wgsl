// One red (parity 0) or black (parity 1) SOR half-sweep of the refinement, in place: pixels of
// one colour only read neighbours of the other, so the sweep is race-free.
@group(0) @binding(0) var<storage, read_write> coefficients: array<f32>;
@group(0) @binding(1) var<storage, read_write> flow: array<f32>;
@group(0) @binding(2) var<storage, read_write> increment: array<f32>;
// width, height, omega (f32 bits), parity
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    let height = params[1];
    if id.x >= width || id.y >= height { return; }
    if (id.x + id.y) % 2u != params[3] { return; }
    let omega = bitcast<f32>(params[2]);
    let p = id.y * width + id.x;
    let s = coefficients[p * 6u + 5u];
    var sum_weight = 0.0;
    var sum_u = 0.0;
    var sum_v = 0.0;
    var neighbours = array<u32, 4>(0u, 0u, 0u, 0u);
    var present = array<bool, 4>(id.x > 0u, id.x + 1u < width, id.y > 0u, id.y + 1u < height);
    if present[0] { neighbours[0] = p - 1u; }
    if present[1] { neighbours[1] = p + 1u; }
    if present[2] { neighbours[2] = p - width; }
    if present[3] { neighbours[3] = p + width; }
    for (var k = 0; k < 4; k++) {
        if !present[k] { continue; }
        let q = neighbours[k];
        let weight = 0.5 * (s + coefficients[q * 6u + 5u]);
        sum_weight += weight;
        sum_u += weight * (flow[q * 2u] + increment[q * 2u] - flow[p * 2u]);
        sum_v += weight * (flow[q * 2u + 1u] + increment[q * 2u + 1u] - flow[p * 2u + 1u]);
    }
    let a11 = coefficients[p * 6u];
    let a12 = coefficients[p * 6u + 1u];
    let a22 = coefficients[p * 6u + 2u];
    let b1 = coefficients[p * 6u + 3u];
    let b2 = coefficients[p * 6u + 4u];
    var du = increment[p * 2u];
    let dv = increment[p * 2u + 1u];
    let den_u = a11 + sum_weight;
    if den_u > 0.0 {
        du += omega * ((b1 - a12 * dv + sum_u) / den_u - du);
        increment[p * 2u] = du;
    }
    let den_v = a22 + sum_weight;
    if den_v > 0.0 {
        increment[p * 2u + 1u] = dv + omega * ((b2 - a12 * du + sum_v) / den_v - dv);
    }
}
