//! Every WGSL kernel against its CPU reference on random inputs (lavapipe in CI).

mod common;

use streamdiff_shaders::cpu::{CpuOps, refine_coefficients, refine_derivatives};
use streamdiff_shaders::flow::{FlowParams, FlowQuality, estimate_flow};
use streamdiff_shaders::ops::{FlowOps, PatchGrid, RefineParams, SearchParams, Size};

const SIZE: Size = Size {
    width_px: 45,
    height_px: 31,
};

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tolerance: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let worst = gpu
        .iter()
        .zip(cpu)
        .map(|(g, c)| (g - c).abs() / c.abs().max(1.0))
        .fold(0.0f32, f32::max);
    assert!(
        worst <= tolerance,
        "{what}: GPU and CPU differ by {worst} (> {tolerance})"
    );
}

/// A smooth random image 0..255: random values blurred by a few pyramid round trips keep the
/// Gauss–Newton search well-posed, so GPU and CPU follow the same path.
fn smooth_image(size: Size, seed: u64) -> Vec<f32> {
    let noise = common::random(size.pixels(), seed, 0.0..255.0);
    let mut out = vec![0.0; size.pixels()];
    for y in 0..size.height_px {
        for x in 0..size.width_px {
            let mut sum = 0.0;
            let mut count = 0.0;
            for dy in -2i32..=2 {
                for dx in -2i32..=2 {
                    let sx = (x as i32 + dx).clamp(0, size.width_px as i32 - 1) as usize;
                    let sy = (y as i32 + dy).clamp(0, size.height_px as i32 - 1) as usize;
                    sum += noise[sy * size.width_px + sx];
                    count += 1.0;
                }
            }
            out[y * size.width_px + x] = sum / count;
        }
    }
    out
}

#[test]
fn gray_downsample_gradient_match_the_reference() {
    let gpu = common::gpu();
    let rgb = common::random(SIZE.pixels() * 3, 1, 0.0..255.0);
    let image = common::random(SIZE.pixels(), 2, 0.0..255.0);
    let g_rgb = gpu.upload(&rgb).expect("GPU or CPU kernel");
    let g_image = gpu.upload(&image).expect("GPU or CPU kernel");
    assert_close(
        "gray",
        &gpu.download(&gpu.gray(&g_rgb, SIZE).expect("GPU or CPU kernel"))
            .expect("GPU or CPU kernel"),
        &CpuOps.gray(&rgb, SIZE).expect("GPU or CPU kernel"),
        1e-5,
    );
    assert_close(
        "downsample",
        &gpu.download(&gpu.downsample(&g_image, SIZE).expect("GPU or CPU kernel"))
            .expect("GPU or CPU kernel"),
        &CpuOps.downsample(&image, SIZE).expect("GPU or CPU kernel"),
        1e-5,
    );
    assert_close(
        "gradient",
        &gpu.download(&gpu.gradient(&g_image, SIZE).expect("GPU or CPU kernel"))
            .expect("GPU or CPU kernel"),
        &CpuOps.gradient(&image, SIZE).expect("GPU or CPU kernel"),
        1e-5,
    );
}

#[test]
fn upsample_warp_consistency_blend_match_the_reference() {
    let gpu = common::gpu();
    let coarse = SIZE.half();
    let coarse_flow = common::random(coarse.pixels() * 2, 3, -4.0..4.0);
    let flow = common::random(SIZE.pixels() * 2, 4, -6.0..6.0);
    let back = common::random(SIZE.pixels() * 2, 5, -6.0..6.0);
    let rgb = common::random(SIZE.pixels() * 3, 6, 0.0..255.0);
    let mask = common::random(SIZE.pixels(), 7, 0.0..1.0);
    let luma_a = common::random(SIZE.pixels(), 8, 0.0..255.0);
    let luma_b = common::random(SIZE.pixels(), 9, 0.0..255.0);
    let carried = common::random(SIZE.pixels() * 3, 10, 0.0..255.0);
    let up = |b: &[f32]| gpu.upload(b).expect("GPU or CPU kernel");
    assert_close(
        "upsample_flow",
        &gpu.download(
            &gpu.upsample_flow(&up(&coarse_flow), coarse, SIZE)
                .expect("GPU or CPU kernel"),
        )
        .expect("GPU or CPU kernel"),
        &CpuOps
            .upsample_flow(&coarse_flow, coarse, SIZE)
            .expect("GPU or CPU kernel"),
        1e-5,
    );
    assert_close(
        "warp",
        &gpu.download(
            &gpu.warp(&up(&rgb), &up(&flow), SIZE, 3)
                .expect("GPU or CPU kernel"),
        )
        .expect("GPU or CPU kernel"),
        &CpuOps
            .warp(&rgb, &flow, SIZE, 3)
            .expect("GPU or CPU kernel"),
        1e-4,
    );
    // Half the backward vectors cancel the forward ones, so both mask values occur.
    let back: Vec<f32> = back
        .iter()
        .zip(&flow)
        .enumerate()
        .map(|(i, (b, f))| if (i / 2) % 2 == 0 { -f } else { *b })
        .collect();
    let gpu_mask = gpu
        .download(
            &gpu.consistency(&up(&flow), &up(&back), SIZE)
                .expect("GPU or CPU kernel"),
        )
        .expect("GPU or CPU kernel");
    let cpu_mask = CpuOps
        .consistency(&flow, &back, SIZE)
        .expect("GPU or CPU kernel");
    let differing = gpu_mask
        .iter()
        .zip(&cpu_mask)
        .filter(|(g, c)| g != c)
        .count();
    // A pixel exactly on the threshold may round either way; nothing more.
    assert!(differing <= 2, "consistency: {differing} pixels differ");
    assert!(cpu_mask.contains(&0.0) && cpu_mask.contains(&1.0));
    assert_close(
        "blend",
        &gpu.download(
            &gpu.blend(
                &up(&rgb),
                &up(&carried),
                &up(&mask),
                &up(&luma_a),
                &up(&luma_b),
                SIZE,
                0.7,
                40.0,
            )
            .expect("GPU or CPU kernel"),
        )
        .expect("GPU or CPU kernel"),
        &CpuOps
            .blend(&rgb, &carried, &mask, &luma_a, &luma_b, SIZE, 0.7, 40.0)
            .expect("GPU or CPU kernel"),
        1e-4,
    );
}

#[test]
fn patch_search_and_densify_match_the_reference() {
    let gpu = common::gpu();
    let image0 = smooth_image(SIZE, 11);
    let image1 = smooth_image(SIZE, 12);
    let flow = common::random(SIZE.pixels() * 2, 13, -1.0..1.0);
    let gradient0 = CpuOps.gradient(&image0, SIZE).expect("GPU or CPU kernel");
    let grid = PatchGrid::new(SIZE, 8, 3);
    let params = SearchParams { iterations: 4 };
    let up = |b: &[f32]| gpu.upload(b).expect("GPU or CPU kernel");
    let cpu_patches = CpuOps
        .patch_search(&image0, &gradient0, &image1, &flow, SIZE, grid, params)
        .expect("GPU or CPU kernel");
    let gpu_patches = gpu
        .download(
            &gpu.patch_search(
                &up(&image0),
                &up(&gradient0),
                &up(&image1),
                &up(&flow),
                SIZE,
                grid,
                params,
            )
            .expect("GPU or CPU kernel"),
        )
        .expect("GPU or CPU kernel");
    assert_close("patch_search", &gpu_patches, &cpu_patches, 1e-2);
    assert_close(
        "densify",
        &gpu.download(
            &gpu.densify(&up(&image0), &up(&image1), &up(&cpu_patches), SIZE, grid)
                .expect("GPU or CPU kernel"),
        )
        .expect("GPU or CPU kernel"),
        &CpuOps
            .densify(&image0, &image1, &cpu_patches, SIZE, grid)
            .expect("GPU or CPU kernel"),
        1e-4,
    );
}

#[test]
fn refinement_matches_the_reference() {
    let gpu = common::gpu();
    let image0 = smooth_image(SIZE, 21);
    let image1 = smooth_image(SIZE, 22);
    let flow = common::random(SIZE.pixels() * 2, 23, -2.0..2.0);
    let params = RefineParams {
        alpha: 20.0,
        delta: 5.0,
        gamma: 10.0,
        outer_iterations: 2,
        sor_iterations: 3,
        omega: 1.6,
    };
    // The sub-steps on their own, then the whole refinement (which launches all of them).
    let warped = CpuOps
        .warp(&image1, &flow, SIZE, 1)
        .expect("GPU or CPU kernel");
    let derivatives = refine_derivatives(&image0, &warped, SIZE);
    let increment = common::random(SIZE.pixels() * 2, 24, -0.5..0.5);
    let coefficients = refine_coefficients(&derivatives, &flow, &increment, SIZE, &params);
    assert!(coefficients.iter().all(|c| c.is_finite()));
    let up = |b: &[f32]| gpu.upload(b).expect("GPU or CPU kernel");
    let cpu = CpuOps
        .refine(&image0, &image1, &flow, SIZE, params)
        .expect("GPU or CPU kernel");
    let gpu_refined = gpu
        .download(
            &gpu.refine(&up(&image0), &up(&image1), &up(&flow), SIZE, params)
                .expect("GPU or CPU kernel"),
        )
        .expect("GPU or CPU kernel");
    assert_close("refine", &gpu_refined, &cpu, 1e-3);
    let moved = cpu.iter().zip(&flow).any(|(r, f)| (r - f).abs() > 1e-3);
    assert!(
        moved,
        "the refinement changed nothing, so the comparison proves nothing"
    );
}

#[test]
fn whole_estimator_matches_the_reference() {
    let gpu = common::gpu();
    let size = Size::new(96, 64);
    let image0 = smooth_image(size, 31);
    // The second frame is the first moved by (1.5, -0.75) px.
    let image1 = CpuOps
        .warp(&image0, &[-1.5, 0.75].repeat(size.pixels()), size, 1)
        .expect("GPU or CPU kernel");
    let params = FlowParams::preset(FlowQuality::Balanced);
    let cpu = estimate_flow(&CpuOps, &image0, &image1, size, &params).expect("GPU or CPU kernel");
    let a = gpu.upload(&image0).expect("GPU or CPU kernel");
    let b = gpu.upload(&image1).expect("GPU or CPU kernel");
    let gpu_flow = gpu
        .download(&estimate_flow(&gpu, &a, &b, size, &params).expect("GPU or CPU kernel"))
        .expect("GPU or CPU kernel");
    let worst = gpu_flow
        .iter()
        .zip(&cpu)
        .map(|(g, c)| (g - c).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 0.05, "GPU and CPU flows differ by up to {worst} px");
    // Away from the border the shift is found.
    let centre = (32 * size.width_px + 48) * 2;
    assert!((cpu[centre] - 1.5).abs() < 0.1 && (cpu[centre + 1] + 0.75).abs() < 0.1);
}
