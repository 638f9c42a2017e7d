// Dense flow from patch flows: every patch covering the pixel votes with weight
// 1 / max(1, |I1(x + u_patch) - I0(x)|).
@group(0) @binding(0) var<storage, read_write> image0: array<f32>;
@group(0) @binding(1) var<storage, read_write> image1: array<f32>;
@group(0) @binding(2) var<storage, read_write> patch_flow: array<f32>;
@group(0) @binding(3) var<storage, read_write> flow: array<f32>;
// width, height, patch, stride, columns, rows
@group(0) @binding(4) var<storage, read_write> params: array<u32>;

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

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    let height = params[1];
    if id.x >= width || id.y >= height { return; }
    let ps = params[2];
    let stride = params[3];
    let columns = params[4];
    let rows = params[5];
    let row_last = min(id.y / stride, rows - 1u);
    let row_first = u32(max(i32(row_last) - i32(ps / stride + 1u), 0));
    let col_last = min(id.x / stride, columns - 1u);
    let col_first = u32(max(i32(col_last) - i32(ps / stride + 1u), 0));
    let i0 = image0[id.y * width + id.x];
    var sum_w = 0.0;
    var sum_u = 0.0;
    var sum_v = 0.0;
    // The clamped last row/column may lie beyond row_last/col_last: visit it once more.
    for (var r = row_first; r <= row_last + 1u; r++) {
        var row = r;
        if r == row_last + 1u {
            if rows - 1u <= row_last { break; }
            row = rows - 1u;
        }
        let py = min(row * stride, height - ps);
        if id.y < py || id.y >= py + ps { continue; }
        for (var c = col_first; c <= col_last + 1u; c++) {
            var column = c;
            if c == col_last + 1u {
                if columns - 1u <= col_last { break; }
                column = columns - 1u;
            }
            let px = min(column * stride, width - ps);
            if id.x < px || id.x >= px + ps { continue; }
            let q = (row * columns + column) * 2u;
            let u = patch_flow[q];
            let v = patch_flow[q + 1u];
            let warped = sample_image1(f32(id.x) + u, f32(id.y) + v);
            let weight = 1.0 / max(abs(warped - i0), 1.0);
            sum_w += weight;
            sum_u += weight * u;
            sum_v += weight * v;
        }
    }
    let p = (id.y * width + id.x) * 2u;
    if sum_w > 0.0 {
        flow[p] = sum_u / sum_w;
        flow[p + 1u] = sum_v / sum_w;
    } else {
        flow[p] = 0.0;
        flow[p + 1u] = 0.0;
    }
}
