// DIS inverse search: one invocation per patch, Gauss-Newton on the mean-normalised SSD with the
// template's fixed Hessian (inverse compositional), started from the dense flow at the patch
// centre; keeps the best vector seen and stops when it strays more than a patch from the start.
@group(0) @binding(0) var<storage, read_write> image0: array<f32>;
@group(0) @binding(1) var<storage, read_write> gradient0: array<f32>;
@group(0) @binding(2) var<storage, read_write> image1: array<f32>;
@group(0) @binding(3) var<storage, read_write> flow: array<f32>;
@group(0) @binding(4) var<storage, read_write> patch_flow: array<f32>;
// width, height, patch, stride, columns, rows, iterations
@group(0) @binding(5) var<storage, read_write> params: array<u32>;

fn image1_at(xi: u32, yi: u32) -> f32 {
    return image1[yi * params[0] + xi];
}

fn sample_image1(x_in: f32, y_in: f32) -> f32 {
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
    let top = image1_at(xa, ya) + (image1_at(xb, ya) - image1_at(xa, ya)) * fx;
    let bottom = image1_at(xa, yb) + (image1_at(xb, yb) - image1_at(xa, yb)) * fx;
    return top + (bottom - top) * fy;
}

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

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    let height = params[1];
    let ps = params[2];
    let stride = params[3];
    let columns = params[4];
    if id.x >= columns || id.y >= params[5] { return; }
    let iterations = params[6];
    let px = min(id.x * stride, width - ps);
    let py = min(id.y * stride, height - ps);
    let count = f32(ps * ps);
    let centre = (f32(ps) - 1.0) * 0.5;
    let init_u = sample_flow(f32(px) + centre, f32(py) + centre, 0u);
    let init_v = sample_flow(f32(px) + centre, f32(py) + centre, 1u);

    var hxx = 0.0;
    var hxy = 0.0;
    var hyy = 0.0;
    var sum_gx = 0.0;
    var sum_gy = 0.0;
    for (var y = py; y < py + ps; y++) {
        for (var x = px; x < px + ps; x++) {
            let i = (y * width + x) * 2u;
            let gx = gradient0[i];
            let gy = gradient0[i + 1u];
            hxx += gx * gx;
            hxy += gx * gy;
            hyy += gy * gy;
            sum_gx += gx;
            sum_gy += gy;
        }
    }
    hxx -= sum_gx * sum_gx / count;
    hxy -= sum_gx * sum_gy / count;
    hyy -= sum_gy * sum_gy / count;
    let det = hxx * hyy - hxy * hxy;

    var u = init_u;
    var v = init_v;
    var best_u = u;
    var best_v = v;
    var best_cost = 3.4e38;
    for (var iteration = 0u; iteration <= iterations; iteration++) {
        var sum_e = 0.0;
        var sum_e2 = 0.0;
        var sum_gxe = 0.0;
        var sum_gye = 0.0;
        for (var y = py; y < py + ps; y++) {
            for (var x = px; x < px + ps; x++) {
                let i = y * width + x;
                let e = sample_image1(f32(x) + u, f32(y) + v) - image0[i];
                sum_e += e;
                sum_e2 += e * e;
                sum_gxe += gradient0[i * 2u] * e;
                sum_gye += gradient0[i * 2u + 1u] * e;
            }
        }
        let mean_e = sum_e / count;
        let cost = sum_e2 - mean_e * sum_e;
        if cost < best_cost {
            best_cost = cost;
            best_u = u;
            best_v = v;
        }
        if iteration == iterations || abs(det) < 1e-6 { break; }
        let bx = sum_gxe - mean_e * sum_gx;
        let by = sum_gye - mean_e * sum_gy;
        u -= (hyy * bx - hxy * by) / det;
        v -= (hxx * by - hxy * bx) / det;
        let du = u - init_u;
        let dv = v - init_v;
        if du * du + dv * dv > count { break; }
    }
    let out = (id.y * columns + id.x) * 2u;
    patch_flow[out] = best_u;
    patch_flow[out + 1u] = best_v;
}
