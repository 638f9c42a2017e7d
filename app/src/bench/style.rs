//! `streamdiff bench style`: the default style network, one full frame (upload, network, read
//! back) per iteration, per size and device.

use std::path::PathBuf;
use std::time::Instant;

use streamdiff_models::paths::default_multistyle_path;
use streamdiff_models::style::{DEFAULT_STYLE, StyleMix};
use streamdiff_pipeline::metrics::DurationStats;
use streamdiff_pipeline::stage::style::{StyleSettings, StyleStage};
use streamdiff_types::FrameSize;

use super::report::{build_kind, devices, truncate, write_report};

/// Arguments of `streamdiff bench style`.
#[derive(clap::Args, Debug)]
pub struct StyleBenchArgs {
    /// Square frame sizes in pixels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,512")]
    size: Vec<usize>,
    /// Devices to measure, comma-separated: wgpu, flex, auto.
    #[arg(long, value_delimiter = ',', default_value = "wgpu,flex")]
    device: Vec<String>,
    /// Timed frames per size.
    #[arg(long, default_value_t = 20)]
    frames: usize,
    /// Untimed frames first (shader compilation, allocation).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "out/bench-style.json")]
    json: PathBuf,
    /// The style model file [default: the one installed by setup].
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct StyleRecord {
    backend: String,
    adapter: String,
    width_px: usize,
    height_px: usize,
    frames: usize,
    ms_per_frame_p50: f64,
    ms_per_frame_mean: f64,
    fps: f64,
}

pub fn bench_style(args: StyleBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.frames > 0, "--frames must be at least 1");
    let model_path = args.model.unwrap_or_else(default_multistyle_path);
    let style = StyleMix::parse(DEFAULT_STYLE)?;
    let mut records = Vec::new();
    println!(
        "{:<6} {:<44} {:>9} {:>12} {:>8}",
        "device", "adapter", "size", "ms/frame", "fps"
    );
    for compute in devices(&args.device)? {
        let stage = StyleStage::load(
            &model_path,
            compute.clone(),
            StyleSettings {
                style: style.clone(),
            },
        )?;
        for &size in &args.size {
            anyhow::ensure!((16..=4096).contains(&size), "--size {size} is out of range");
            // A deterministic, textured frame: content does not change the work, but zeros
            // could take shortcuts.
            let rgb: Vec<u8> = (0..size * size * 3)
                .map(|i| ((i * 2_654_435_761usize) >> 13) as u8)
                .collect();
            for _ in 0..args.warmup {
                stage.stylize_rgb(&rgb, FrameSize::new(size, size), &style)?;
            }
            let mut timings = DurationStats::default();
            let mut total_s = 0.0;
            for _ in 0..args.frames {
                let begun = Instant::now();
                let out = stage.stylize_rgb(&rgb, FrameSize::new(size, size), &style)?;
                let elapsed = begun.elapsed();
                anyhow::ensure!(out.len() == rgb.len(), "output has the wrong size");
                timings.record(elapsed);
                total_s += elapsed.as_secs_f64();
            }
            let record = StyleRecord {
                backend: compute.backend.to_string(),
                adapter: compute.adapter.clone(),
                width_px: size,
                height_px: size,
                frames: args.frames,
                ms_per_frame_p50: timings.percentile_ms(50.0),
                ms_per_frame_mean: total_s * 1000.0 / args.frames as f64,
                fps: args.frames as f64 / total_s,
            };
            println!(
                "{:<6} {:<44} {:>9} {:>12.2} {:>8.1}",
                record.backend,
                truncate(&record.adapter, 44),
                format!("{size}x{size}"),
                record.ms_per_frame_p50,
                record.fps
            );
            records.push(record);
        }
    }
    write_report(
        &args.json,
        serde_json::json!({ "bench": "style", "build": build_kind(), "results": records }),
    )
}
