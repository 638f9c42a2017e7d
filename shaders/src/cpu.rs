//! Plain-Rust references of every WGSL kernel, with the same arithmetic.
//!
//! These are what the GPU kernels are tested against, and the flow estimator's path on the
//! CPU (burn-flex) device.

use crate::ShaderError;
use crate::ops::{FlowOps, PatchGrid, RefineParams, SearchParams, Size};

/// The CPU implementation of [`FlowOps`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuOps;

/// Bilinear sample of channel `c` of a `channels`-interleaved plane, coordinates clamped to
/// the pixel centres of the border.
pub fn sample(data: &[f32], size: Size, channels: usize, c: usize, x: f32, y: f32) -> f32 {
    let max_x = (size.width_px - 1) as f32;
    let max_y = (size.height_px - 1) as f32;
    let x = x.clamp(0.0, max_x);
    let y = y.clamp(0.0, max_y);
    let x0 = x.floor();
    let y0 = y.floor();
    let fx = x - x0;
    let fy = y - y0;
    let x0 = x0 as usize;
    let y0 = y0 as usize;
    let x1 = (x0 + 1).min(size.width_px - 1);
    let y1 = (y0 + 1).min(size.height_px - 1);
    let at = |xi: usize, yi: usize| data[(yi * size.width_px + xi) * channels + c];
    let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
    let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
    top + (bottom - top) * fy
}

fn clamped(data: &[f32], size: Size, x: isize, y: isize) -> f32 {
    let xi = x.clamp(0, size.width_px as isize - 1) as usize;
    let yi = y.clamp(0, size.height_px as isize - 1) as usize;
    data[yi * size.width_px + xi]
}

fn check_len(what: &str, buf: &[f32], len: usize) -> Result<(), ShaderError> {
    if buf.len() == len {
        Ok(())
    } else {
        Err(ShaderError::Shape(format!(
            "{what}: expected {len} values, got {}",
            buf.len()
        )))
    }
}

/// Charbonnier derivative `1 / (2 sqrt(s2 + eps^2))`.
fn robust_weight(s2: f32) -> f32 {
    const EPS2: f32 = 1e-6;
    0.5 / (s2 + EPS2).sqrt()
}

/// Per-pixel linearised data terms of the refinement: `[Ix, Iy, Iz, Ixx, Ixy, Iyy, Ixz, Iyz]`,
/// from the first image and the second warped by the current flow.
pub fn refine_derivatives(image0: &[f32], warped1: &[f32], size: Size) -> Vec<f32> {
    let mut out = vec![0.0; size.pixels() * 8];
    let (w, h) = (size.width_px as isize, size.height_px as isize);
    for y in 0..h {
        for x in 0..w {
            let avg = |dx: isize, dy: isize| {
                0.5 * (clamped(image0, size, x + dx, y + dy)
                    + clamped(warped1, size, x + dx, y + dy))
            };
            let diff = |dx: isize, dy: isize| {
                clamped(warped1, size, x + dx, y + dy) - clamped(image0, size, x + dx, y + dy)
            };
            let ix = 0.5 * (avg(1, 0) - avg(-1, 0));
            let iy = 0.5 * (avg(0, 1) - avg(0, -1));
            let iz = diff(0, 0);
            let ixx = avg(1, 0) - 2.0 * avg(0, 0) + avg(-1, 0);
            let iyy = avg(0, 1) - 2.0 * avg(0, 0) + avg(0, -1);
            let ixy = 0.25 * (avg(1, 1) - avg(1, -1) - avg(-1, 1) + avg(-1, -1));
            let ixz = 0.5 * (diff(1, 0) - diff(-1, 0));
            let iyz = 0.5 * (diff(0, 1) - diff(0, -1));
            let i = (y * w + x) as usize * 8;
            out[i..i + 8].copy_from_slice(&[ix, iy, iz, ixx, ixy, iyy, ixz, iyz]);
        }
    }
    out
}

/// Per-pixel system of one fixed-point iteration: `[A11, A12, A22, B1, B2, s]` with `s` the
/// smoothness weight, from the derivatives, the flow and the increment so far.
pub fn refine_coefficients(
    derivatives: &[f32],
    flow: &[f32],
    increment: &[f32],
    size: Size,
    params: &RefineParams,
) -> Vec<f32> {
    const ZETA2: f32 = 0.01;
    let mut out = vec![0.0; size.pixels() * 6];
    let (w, h) = (size.width_px as isize, size.height_px as isize);
    let total = |c: usize, x: isize, y: isize| {
        let xi = x.clamp(0, w - 1);
        let yi = y.clamp(0, h - 1);
        let i = (yi * w + xi) as usize * 2 + c;
        flow[i] + increment[i]
    };
    for y in 0..h {
        for x in 0..w {
            let p = (y * w + x) as usize;
            let d = &derivatives[p * 8..p * 8 + 8];
            let (ix, iy, iz, ixx, ixy, iyy, ixz, iyz) =
                (d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]);
            let du = increment[p * 2];
            let dv = increment[p * 2 + 1];
            let norm_b = 1.0 / (ix * ix + iy * iy + ZETA2);
            let norm_gx = 1.0 / (ixx * ixx + ixy * ixy + ZETA2);
            let norm_gy = 1.0 / (ixy * ixy + iyy * iyy + ZETA2);
            let rb = iz + ix * du + iy * dv;
            let rgx = ixz + ixx * du + ixy * dv;
            let rgy = iyz + ixy * du + iyy * dv;
            let wb = params.delta * norm_b * robust_weight(norm_b * rb * rb);
            let wg = params.gamma * robust_weight(norm_gx * rgx * rgx + norm_gy * rgy * rgy);
            let wgx = wg * norm_gx;
            let wgy = wg * norm_gy;
            let a11 = wb * ix * ix + wgx * ixx * ixx + wgy * ixy * ixy;
            let a12 = wb * ix * iy + wgx * ixx * ixy + wgy * ixy * iyy;
            let a22 = wb * iy * iy + wgx * ixy * ixy + wgy * iyy * iyy;
            let b1 = -(wb * ix * iz + wgx * ixx * ixz + wgy * ixy * iyz);
            let b2 = -(wb * iy * iz + wgx * ixy * ixz + wgy * iyy * iyz);
            let ux = 0.5 * (total(0, x + 1, y) - total(0, x - 1, y));
            let uy = 0.5 * (total(0, x, y + 1) - total(0, x, y - 1));
            let vx = 0.5 * (total(1, x + 1, y) - total(1, x - 1, y));
            let vy = 0.5 * (total(1, x, y + 1) - total(1, x, y - 1));
            let s = params.alpha * robust_weight(ux * ux + uy * uy + vx * vx + vy * vy);
            out[p * 6..p * 6 + 6].copy_from_slice(&[a11, a12, a22, b1, b2, s]);
        }
    }
    out
}

/// One red (`parity` 0) or black (`parity` 1) SOR half-sweep over the increment, in place.
pub fn refine_sor(
    coefficients: &[f32],
    flow: &[f32],
    increment: &mut [f32],
    size: Size,
    omega: f32,
    parity: usize,
) {
    let (w, h) = (size.width_px, size.height_px);
    for y in 0..h {
        for x in 0..w {
            if (x + y) % 2 != parity {
                continue;
            }
            let p = y * w + x;
            let c = &coefficients[p * 6..p * 6 + 6];
            let mut sum_weight = 0.0;
            let mut sum_u = 0.0;
            let mut sum_v = 0.0;
            let neighbours = [
                (x > 0).then(|| p - 1),
                (x + 1 < w).then(|| p + 1),
                (y > 0).then(|| p - w),
                (y + 1 < h).then(|| p + w),
            ];
            for q in neighbours.into_iter().flatten() {
                let weight = 0.5 * (c[5] + coefficients[q * 6 + 5]);
                sum_weight += weight;
                sum_u += weight * (flow[q * 2] + increment[q * 2] - flow[p * 2]);
                sum_v += weight * (flow[q * 2 + 1] + increment[q * 2 + 1] - flow[p * 2 + 1]);
            }
            let den_u = c[0] + sum_weight;
            if den_u > 0.0 {
                let target = (c[3] - c[1] * increment[p * 2 + 1] + sum_u) / den_u;
                increment[p * 2] += omega * (target - increment[p * 2]);
            }
            let den_v = c[2] + sum_weight;
            if den_v > 0.0 {
                let target = (c[4] - c[1] * increment[p * 2] + sum_v) / den_v;
                increment[p * 2 + 1] += omega * (target - increment[p * 2 + 1]);
            }
        }
    }
}

impl FlowOps for CpuOps {
    type Buf = Vec<f32>;

    fn upload(&self, data: &[f32]) -> Result<Self::Buf, ShaderError> {
        Ok(data.to_vec())
    }

    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>, ShaderError> {
        Ok(buf.clone())
    }

    fn zeros(&self, len: usize) -> Result<Self::Buf, ShaderError> {
        Ok(vec![0.0; len])
    }

    fn gray(&self, rgb: &Self::Buf, size: Size) -> Result<Self::Buf, ShaderError> {
        check_len("rgb", rgb, size.pixels() * 3)?;
        Ok(rgb
            .chunks_exact(3)
            .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
            .collect())
    }

    fn downsample(&self, image: &Self::Buf, size: Size) -> Result<Self::Buf, ShaderError> {
        check_len("image", image, size.pixels())?;
        const TAPS: [f32; 4] = [0.125, 0.375, 0.375, 0.125];
        let half = size.half();
        let mut out = vec![0.0; half.pixels()];
        for y in 0..half.height_px {
            for x in 0..half.width_px {
                let mut sum = 0.0;
                for (j, ty) in TAPS.iter().enumerate() {
                    for (i, tx) in TAPS.iter().enumerate() {
                        let sx = 2 * x as isize - 1 + i as isize;
                        let sy = 2 * y as isize - 1 + j as isize;
                        sum += tx * ty * clamped(image, size, sx, sy);
                    }
                }
                out[y * half.width_px + x] = sum;
            }
        }
        Ok(out)
    }

    fn gradient(&self, image: &Self::Buf, size: Size) -> Result<Self::Buf, ShaderError> {
        check_len("image", image, size.pixels())?;
        let mut out = vec![0.0; size.pixels() * 2];
        for y in 0..size.height_px as isize {
            for x in 0..size.width_px as isize {
                let i = (y as usize * size.width_px + x as usize) * 2;
                out[i] = 0.5 * (clamped(image, size, x + 1, y) - clamped(image, size, x - 1, y));
                out[i + 1] =
                    0.5 * (clamped(image, size, x, y + 1) - clamped(image, size, x, y - 1));
            }
        }
        Ok(out)
    }

    fn upsample_flow(
        &self,
        flow: &Self::Buf,
        from: Size,
        to: Size,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("flow", flow, from.pixels() * 2)?;
        let scale_x = from.width_px as f32 / to.width_px as f32;
        let scale_y = from.height_px as f32 / to.height_px as f32;
        let mut out = vec![0.0; to.pixels() * 2];
        for y in 0..to.height_px {
            for x in 0..to.width_px {
                let sx = (x as f32 + 0.5) * scale_x - 0.5;
                let sy = (y as f32 + 0.5) * scale_y - 0.5;
                let i = (y * to.width_px + x) * 2;
                out[i] = sample(flow, from, 2, 0, sx, sy) / scale_x;
                out[i + 1] = sample(flow, from, 2, 1, sx, sy) / scale_y;
            }
        }
        Ok(out)
    }

    fn patch_search(
        &self,
        image0: &Self::Buf,
        gradient0: &Self::Buf,
        image1: &Self::Buf,
        flow: &Self::Buf,
        size: Size,
        grid: PatchGrid,
        params: SearchParams,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("image0", image0, size.pixels())?;
        check_len("image1", image1, size.pixels())?;
        check_len("gradient0", gradient0, size.pixels() * 2)?;
        check_len("flow", flow, size.pixels() * 2)?;
        let mut out = vec![0.0; grid.len() * 2];
        let ps = grid.patch_px;
        let count = (ps * ps) as f32;
        for row in 0..grid.rows {
            for column in 0..grid.columns {
                let px = (column * grid.stride_px).min(size.width_px - ps);
                let py = (row * grid.stride_px).min(size.height_px - ps);
                let centre = (ps as f32 - 1.0) * 0.5;
                let init_u = sample(flow, size, 2, 0, px as f32 + centre, py as f32 + centre);
                let init_v = sample(flow, size, 2, 1, px as f32 + centre, py as f32 + centre);
                // Template statistics: the Hessian is fixed (inverse compositional).
                let (mut hxx, mut hxy, mut hyy, mut sum_gx, mut sum_gy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for y in py..py + ps {
                    for x in px..px + ps {
                        let g = &gradient0[(y * size.width_px + x) * 2..];
                        hxx += g[0] * g[0];
                        hxy += g[0] * g[1];
                        hyy += g[1] * g[1];
                        sum_gx += g[0];
                        sum_gy += g[1];
                    }
                }
                // Mean normalisation removes the patch means from the gradient sums too.
                hxx -= sum_gx * sum_gx / count;
                hxy -= sum_gx * sum_gy / count;
                hyy -= sum_gy * sum_gy / count;
                let det = hxx * hyy - hxy * hxy;
                let (mut u, mut v) = (init_u, init_v);
                let (mut best_u, mut best_v, mut best_cost) = (u, v, f32::INFINITY);
                for iteration in 0..=params.iterations {
                    let (mut sum_e, mut sum_e2, mut sum_gxe, mut sum_gye) = (0.0, 0.0, 0.0, 0.0);
                    for y in py..py + ps {
                        for x in px..px + ps {
                            let i = y * size.width_px + x;
                            let warped = sample(image1, size, 1, 0, x as f32 + u, y as f32 + v);
                            let e = warped - image0[i];
                            sum_e += e;
                            sum_e2 += e * e;
                            sum_gxe += gradient0[i * 2] * e;
                            sum_gye += gradient0[i * 2 + 1] * e;
                        }
                    }
                    let mean_e = sum_e / count;
                    let cost = sum_e2 - mean_e * sum_e;
                    if cost < best_cost {
                        best_cost = cost;
                        best_u = u;
                        best_v = v;
                    }
                    if iteration == params.iterations || det.abs() < 1e-6 {
                        break;
                    }
                    let bx = sum_gxe - mean_e * sum_gx;
                    let by = sum_gye - mean_e * sum_gy;
                    u -= (hyy * bx - hxy * by) / det;
                    v -= (hxx * by - hxy * bx) / det;
                    let (du, dv) = (u - init_u, v - init_v);
                    if du * du + dv * dv > (ps * ps) as f32 {
                        break;
                    }
                }
                let i = (row * grid.columns + column) * 2;
                out[i] = best_u;
                out[i + 1] = best_v;
            }
        }
        Ok(out)
    }

    fn densify(
        &self,
        image0: &Self::Buf,
        image1: &Self::Buf,
        patch_flow: &Self::Buf,
        size: Size,
        grid: PatchGrid,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("image0", image0, size.pixels())?;
        check_len("image1", image1, size.pixels())?;
        check_len("patch_flow", patch_flow, grid.len() * 2)?;
        let mut out = vec![0.0; size.pixels() * 2];
        let ps = grid.patch_px;
        let span = |p: usize, count: usize, side: usize| {
            let last = (p / grid.stride_px).min(count - 1);
            let first = last.saturating_sub(ps / grid.stride_px + 1);
            (first, last, count - 1, side)
        };
        for y in 0..size.height_px {
            let (row_first, row_last, row_end, _) = span(y, grid.rows, size.height_px);
            for x in 0..size.width_px {
                let (col_first, col_last, col_end, _) = span(x, grid.columns, size.width_px);
                let (mut sum_w, mut sum_u, mut sum_v) = (0.0f32, 0.0f32, 0.0f32);
                let i0 = image0[y * size.width_px + x];
                let rows = (row_first..=row_last).chain((row_end > row_last).then_some(row_end));
                for row in rows {
                    let py = (row * grid.stride_px).min(size.height_px - ps);
                    if y < py || y >= py + ps {
                        continue;
                    }
                    let columns =
                        (col_first..=col_last).chain((col_end > col_last).then_some(col_end));
                    for column in columns {
                        let px = (column * grid.stride_px).min(size.width_px - ps);
                        if x < px || x >= px + ps {
                            continue;
                        }
                        let q = (row * grid.columns + column) * 2;
                        let (u, v) = (patch_flow[q], patch_flow[q + 1]);
                        let warped = sample(image1, size, 1, 0, x as f32 + u, y as f32 + v);
                        let weight = 1.0 / (warped - i0).abs().max(1.0);
                        sum_w += weight;
                        sum_u += weight * u;
                        sum_v += weight * v;
                    }
                }
                let i = (y * size.width_px + x) * 2;
                if sum_w > 0.0 {
                    out[i] = sum_u / sum_w;
                    out[i + 1] = sum_v / sum_w;
                }
            }
        }
        Ok(out)
    }

    fn refine(
        &self,
        image0: &Self::Buf,
        image1: &Self::Buf,
        flow: &Self::Buf,
        size: Size,
        params: RefineParams,
    ) -> Result<Self::Buf, ShaderError> {
        let warped = self.warp(image1, flow, size, 1)?;
        let derivatives = refine_derivatives(image0, &warped, size);
        let mut increment = vec![0.0; size.pixels() * 2];
        for _ in 0..params.outer_iterations {
            let coefficients = refine_coefficients(&derivatives, flow, &increment, size, &params);
            for _ in 0..params.sor_iterations {
                refine_sor(&coefficients, flow, &mut increment, size, params.omega, 0);
                refine_sor(&coefficients, flow, &mut increment, size, params.omega, 1);
            }
        }
        Ok(flow.iter().zip(&increment).map(|(f, d)| f + d).collect())
    }

    fn warp(
        &self,
        image: &Self::Buf,
        flow: &Self::Buf,
        size: Size,
        channels: usize,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("image", image, size.pixels() * channels)?;
        check_len("flow", flow, size.pixels() * 2)?;
        let mut out = vec![0.0; size.pixels() * channels];
        for y in 0..size.height_px {
            for x in 0..size.width_px {
                let p = y * size.width_px + x;
                let sx = x as f32 + flow[p * 2];
                let sy = y as f32 + flow[p * 2 + 1];
                for c in 0..channels {
                    out[p * channels + c] = sample(image, size, channels, c, sx, sy);
                }
            }
        }
        Ok(out)
    }

    fn consistency(
        &self,
        forward: &Self::Buf,
        backward: &Self::Buf,
        size: Size,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("forward", forward, size.pixels() * 2)?;
        check_len("backward", backward, size.pixels() * 2)?;
        let mut out = vec![0.0; size.pixels()];
        for y in 0..size.height_px {
            for x in 0..size.width_px {
                let p = y * size.width_px + x;
                let (fu, fv) = (forward[p * 2], forward[p * 2 + 1]);
                let tx = x as f32 + fu;
                let ty = y as f32 + fv;
                let inside = tx >= 0.0
                    && ty >= 0.0
                    && tx <= (size.width_px - 1) as f32
                    && ty <= (size.height_px - 1) as f32;
                let bu = sample(backward, size, 2, 0, tx, ty);
                let bv = sample(backward, size, 2, 1, tx, ty);
                let (su, sv) = (fu + bu, fv + bv);
                let bound = 0.01 * (fu * fu + fv * fv + bu * bu + bv * bv) + 0.5;
                out[p] = if inside && su * su + sv * sv <= bound {
                    1.0
                } else {
                    0.0
                };
            }
        }
        Ok(out)
    }

    fn blend(
        &self,
        current: &Self::Buf,
        carried: &Self::Buf,
        mask: &Self::Buf,
        luma_now: &Self::Buf,
        luma_carried: &Self::Buf,
        size: Size,
        strength: f32,
        tolerance: f32,
    ) -> Result<Self::Buf, ShaderError> {
        check_len("current", current, size.pixels() * 3)?;
        check_len("carried", carried, size.pixels() * 3)?;
        check_len("mask", mask, size.pixels())?;
        check_len("luma_now", luma_now, size.pixels())?;
        check_len("luma_carried", luma_carried, size.pixels())?;
        let mut out = vec![0.0; size.pixels() * 3];
        for p in 0..size.pixels() {
            let r = (luma_now[p] - luma_carried[p]) / tolerance;
            let weight = strength * mask[p] * (-r * r).exp();
            for c in 0..3 {
                let i = p * 3 + c;
                out[i] = current[i] + (carried[i] - current[i]) * weight;
            }
        }
        Ok(out)
    }
}
