//! `streamdiff bench flow`: dense optical flow per frame pair, with its accuracy.
//!
//! The timed part is the estimator on frames already on the device (pyramid, search,
//! densification, refinement), waited for; uploads and read-back are outside it, as in the
//! stabiliser where frames stay on the device. A pair of the frame size from the Sintel test
//! data is used with its ground truth when there is one; other sizes use a picture moved by a
//! known affine motion (zoom, rotation, shift), so the EPE is exact either way.

use std::path::{Path, PathBuf};
use std::time::Instant;

use streamdiff_pipeline::metrics::DurationStats;
use streamdiff_shaders::cpu::sample;
use streamdiff_shaders::flo::read_flo;
use streamdiff_shaders::flow::{FlowParams, FlowQuality, end_point_error, estimate_flow};
use streamdiff_shaders::gpu::{AnyOps, GpuOps};
use streamdiff_shaders::ops::{FlowOps, Size};
use streamdiff_shaders::visual::read_rgb;

use super::report::{build_kind, devices, write_report};

/// Arguments of `streamdiff bench flow`.
#[derive(clap::Args, Debug)]
pub struct FlowBenchArgs {
    /// Frame sizes WIDTHxHEIGHT, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "640x480,1024x436")]
    size: Vec<String>,
    /// Devices to measure, comma-separated: wgpu, flex.
    #[arg(long, value_delimiter = ',', default_value = "wgpu")]
    device: Vec<String>,
    /// Timed pairs per size.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Untimed pairs first (shader compilation, allocation).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// fast, balanced or high.
    #[arg(long, value_delimiter = ',', default_value = "fast,balanced")]
    quality: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "out/bench-flow.json")]
    json: PathBuf,
    /// The shared data folder with the Sintel pairs (`flow/sintel/...`); without it the pairs
    /// are synthetic [default: $STREAMDIFF_TEST_DATA, else ../shared/data when present].
    #[arg(long)]
    data: Option<PathBuf>,
}

/// The data folder: `--data`, `$STREAMDIFF_TEST_DATA`, or `../shared/data` from here.
fn data_dir(args: &FlowBenchArgs) -> Option<PathBuf> {
    args.data
        .clone()
        .or_else(|| std::env::var_os("STREAMDIFF_TEST_DATA").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("../shared/data")))
        .filter(|dir| dir.is_dir())
}

#[derive(serde::Serialize)]
struct FlowRecord {
    backend: String,
    adapter: String,
    quality: String,
    width_px: usize,
    height_px: usize,
    data: String,
    pairs: usize,
    ms_per_pair_p50: f64,
    ms_per_pair_mean: f64,
    epe_px: f64,
}

/// Two luma frames, the true flow between them and where they came from.
struct Pair {
    image0: Vec<f32>,
    image1: Vec<f32>,
    truth: Vec<f32>,
    data: String,
}

fn luma(rgb: &[u8]) -> Vec<f32> {
    rgb.chunks_exact(3)
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect()
}

fn parse_size(text: &str) -> anyhow::Result<Size> {
    let size: Size = text.parse()?;
    if !(16..=8192).contains(&size.width_px) || !(16..=8192).contains(&size.height_px) {
        anyhow::bail!("size `{text}` is out of range (16..=8192 px a side)");
    }
    Ok(size)
}

fn sintel_pair(data: &Path, size: Size) -> Option<Pair> {
    let dir = data.join("flow/sintel/clean/medium");
    let (rgb0, s0) = read_rgb(&dir.join("frame_0002.png")).ok()?;
    let (rgb1, _) = read_rgb(&dir.join("frame_0003.png")).ok()?;
    let truth = read_flo(&dir.join("gt/frame_0002.flo")).ok()?;
    (s0 == size && truth.size == size).then(|| Pair {
        image0: luma(&rgb0),
        image1: luma(&rgb1),
        truth: truth.data,
        data: "sintel clean/medium".to_string(),
    })
}

/// A picture (Sintel frame, the astronaut, or a procedural texture) scaled to `size`, and the
/// same moved by a zoom of 2 %, a rotation of 1 degree about the centre and a (3, -2) px shift.
fn synthetic_pair(data: Option<&Path>, size: Size) -> Pair {
    let source = [
        "flow/sintel/clean/medium/frame_0002.png",
        "images/astronaut.png",
    ]
    .iter()
    .find_map(|name| read_rgb(&data?.join(name)).ok());
    let image0: Vec<f32> = match source {
        Some((rgb, source_size)) => {
            let plane = luma(&rgb);
            let (sx, sy) = (
                source_size.width_px as f32 / size.width_px as f32,
                source_size.height_px as f32 / size.height_px as f32,
            );
            (0..size.pixels())
                .map(|p| {
                    let (x, y) = ((p % size.width_px) as f32, (p / size.width_px) as f32);
                    sample(
                        &plane,
                        source_size,
                        1,
                        0,
                        (x + 0.5) * sx - 0.5,
                        (y + 0.5) * sy - 0.5,
                    )
                })
                .collect()
        }
        None => (0..size.pixels())
            .map(|p| {
                let (x, y) = ((p % size.width_px) as f32, (p / size.width_px) as f32);
                127.0
                    + 60.0 * (x * 0.11).sin() * (y * 0.07).cos()
                    + 40.0 * (x * 0.031 + y * 0.043).sin()
            })
            .collect(),
    };
    let (cx, cy) = (size.width_px as f32 / 2.0, size.height_px as f32 / 2.0);
    let (zoom, angle, shift) = (1.02f32, 1.0f32.to_radians(), (3.0f32, -2.0f32));
    let (cos, sin) = (angle.cos() * zoom, angle.sin() * zoom);
    // Forward motion: x' = M (x - c) + c + shift. Frame 1 samples frame 0 at the inverse.
    let det = cos * cos + sin * sin;
    let mut image1 = vec![0.0; size.pixels()];
    let mut truth = vec![0.0; size.pixels() * 2];
    for p in 0..size.pixels() {
        let (x, y) = (
            (p % size.width_px) as f32 - cx,
            (p / size.width_px) as f32 - cy,
        );
        truth[p * 2] = cos * x - sin * y + shift.0 - x;
        truth[p * 2 + 1] = sin * x + cos * y + shift.1 - y;
        let (bx, by) = (x - shift.0, y - shift.1);
        let (ux, uy) = ((cos * bx + sin * by) / det, (-sin * bx + cos * by) / det);
        image1[p] = sample(&image0, size, 1, 0, ux + cx, uy + cy);
    }
    Pair {
        image0,
        image1,
        truth,
        data: "affine motion".to_string(),
    }
}

/// Times `iterations` flows after `warmup`, returning the stats and the last flow.
fn time_flow<O: FlowOps>(
    ops: &O,
    pair: &Pair,
    size: Size,
    params: &FlowParams,
    args: &FlowBenchArgs,
    wait: impl Fn() -> anyhow::Result<()>,
) -> anyhow::Result<(DurationStats, f64, Vec<f32>)> {
    let a = ops.upload(&pair.image0)?;
    let b = ops.upload(&pair.image1)?;
    let mut stats = DurationStats::default();
    let mut total_ms = 0.0;
    let mut last = None;
    for i in 0..args.warmup + args.iterations {
        wait()?;
        let started = Instant::now();
        let flow = estimate_flow(ops, &a, &b, size, params)?;
        wait()?;
        if i >= args.warmup {
            stats.record(started.elapsed());
            total_ms += started.elapsed().as_secs_f64() * 1e3;
        }
        last = Some(flow);
    }
    let flow = match last {
        Some(flow) => ops.download(&flow)?,
        None => ops.download(&estimate_flow(ops, &a, &b, size, params)?)?,
    };
    let mean_ms = total_ms / args.iterations.max(1) as f64;
    Ok((stats, mean_ms, flow))
}

pub fn bench_flow(args: FlowBenchArgs) -> anyhow::Result<()> {
    let sizes: Vec<Size> = args
        .size
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<_, _>>()?;
    let qualities: Vec<FlowQuality> = args
        .quality
        .iter()
        .map(|q| q.parse())
        .collect::<Result<_, _>>()?;
    let mut records = Vec::new();
    println!(
        "{:<8} {:<9} {:>10} {:<20} {:>10} {:>10} {:>8}  adapter",
        "device", "quality", "size", "data", "p50 ms", "mean ms", "EPE px"
    );
    let data = data_dir(&args);
    for compute in devices(&args.device)? {
        let ops = AnyOps::for_device(&compute.device)?;
        for size in &sizes {
            let pair = data
                .as_deref()
                .and_then(|data| sintel_pair(data, *size))
                .unwrap_or_else(|| synthetic_pair(data.as_deref(), *size));
            for (quality_name, quality) in args.quality.iter().zip(&qualities) {
                let params = FlowParams::preset(*quality);
                let (stats, mean_ms, flow) = match &ops {
                    AnyOps::Gpu(gpu) => time_flow(gpu, &pair, *size, &params, &args, || {
                        GpuOps::sync(gpu).map_err(Into::into)
                    })?,
                    AnyOps::Cpu(cpu) => time_flow(cpu, &pair, *size, &params, &args, || Ok(()))?,
                };
                let epe = end_point_error(&flow, &pair.truth, None);
                // On flex the kernels' single-threaded Rust references run, not burn-flex.
                let (backend, adapter) = match &ops {
                    AnyOps::Gpu(_) => (compute.backend.to_string(), compute.adapter.clone()),
                    AnyOps::Cpu(_) => (
                        "cpu-ref".to_string(),
                        "Rust reference, 1 thread".to_string(),
                    ),
                };
                let record = FlowRecord {
                    backend,
                    adapter,
                    quality: quality_name.clone(),
                    width_px: size.width_px,
                    height_px: size.height_px,
                    data: pair.data.clone(),
                    pairs: stats.len(),
                    ms_per_pair_p50: stats.percentile_ms(50.0),
                    ms_per_pair_mean: mean_ms,
                    epe_px: epe,
                };
                println!(
                    "{:<8} {:<9} {:>10} {:<20} {:>10.2} {:>10.2} {:>8.3}  {}",
                    record.backend,
                    record.quality,
                    format!("{}x{}", size.width_px, size.height_px),
                    record.data,
                    record.ms_per_pair_p50,
                    record.ms_per_pair_mean,
                    record.epe_px,
                    record.adapter
                );
                records.push(record);
            }
        }
    }
    write_report(
        &args.json,
        serde_json::json!({ "bench": "flow", "build": build_kind(), "results": records }),
    )
}
