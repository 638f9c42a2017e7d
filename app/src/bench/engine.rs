//! `streamdiff bench engine`: the full StreamDiffusion img2img frame through the engine — TAESD
//! encode, one Stream Batch UNet call, TAESD decode — at SD-Turbo size (SD 2.1 UNet, real
//! TAESD shape, random weights, no file) for each number of denoising steps and each RCFG type.
//!
//! Each configuration runs `--warmup` untimed frames (shader compilation, allocation; the
//! stream batch fills), then `--iterations` timed frames. Every stage ends by reading its
//! result back (the latents, the denoised latents, the decoded frame), so each stage's time
//! is the device's; the two small latent read-backs are the only work a live run does not do.
//! Medians are reported; fps is 1000 / median frame time. `--precision` picks f32 and/or f16
//! compute for the UNet and TAESD (the scheduler maths is f32).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use streamdiff_models::device::ComputeDevice;
use streamdiff_models::sd::precision::{Precision, cast_module};
use streamdiff_models::sd::taesd::TaesdConfig;
use streamdiff_models::sd::unet::UNetConfig;
use streamdiff_pipeline::metrics::DurationStats;
use streamdiff_pipeline::stage::engine::scheduler::SchedulerConfig;
use streamdiff_pipeline::stage::engine::stream_batch::{CfgType, Guidance, PromptEmbeds};
use streamdiff_pipeline::stage::engine::{EngineConfig, StreamEngine};
use streamdiff_types::FrameSize;

use super::report::{build_kind, devices, finish, precisions, write_report};

/// Text tokens of the cross-attention context.
const CONTEXT_TOKENS: usize = 77;

/// Arguments of `streamdiff bench engine`.
#[derive(clap::Args, Debug)]
pub struct EngineBenchArgs {
    /// Denoising steps per frame (`len(t_index_list)`), comma-separated, each 1 to 4.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    steps: Vec<usize>,
    /// RCFG types, comma-separated: none, full, self, initialize.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,full,self,initialize"
    )]
    cfg: Vec<String>,
    /// Guidance scale (above 1 so full and initialize add their rows).
    #[arg(long, default_value_t = 1.2)]
    guidance: f32,
    /// Square frame size in pixels (SD-Turbo: 512).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Devices to measure, comma-separated: wgpu, flex, auto.
    #[arg(long, value_delimiter = ',', default_value = "wgpu")]
    device: Vec<String>,
    /// Timed frames per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Untimed frames first (shader compilation, allocation, filling the stream batch).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// A tiny UNet (2 levels, 32/64 channels) at 128x128 instead of SD-Turbo size: a smoke
    /// test of the bench itself, for CPU devices. Its numbers say nothing about SD-Turbo.
    #[arg(long)]
    tiny: bool,
    /// Compute precisions of the UNet and TAESD, comma-separated: f32, f16 (f16 needs a
    /// device with f16 arithmetic; the scheduler maths stays f32).
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    precision: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "out/bench-engine.json")]
    json: PathBuf,
}

#[derive(serde::Serialize)]
struct Record {
    backend: String,
    adapter: String,
    steps: usize,
    t_index_list: Vec<usize>,
    cfg: CfgType,
    guidance_scale: f32,
    unet_rows: usize,
    width_px: usize,
    height_px: usize,
    precision: &'static str,
    iterations: usize,
    encode_ms_p50: f64,
    unet_ms_p50: f64,
    decode_ms_p50: f64,
    frame_ms_p50: f64,
    frame_ms_min: f64,
    fps: f64,
}

/// StreamDiffusion-style indices for `steps` steps (the values do not change the cost).
fn t_index_list(steps: usize) -> Vec<usize> {
    match steps {
        1 => vec![32],
        2 => vec![32, 45],
        3 => vec![20, 32, 45],
        _ => vec![16, 24, 32, 45],
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The per-stage times of one configuration.
#[derive(Default)]
struct StageTimes {
    encode: DurationStats,
    unet: DurationStats,
    decode: DurationStats,
    frame: DurationStats,
    fastest_frame: Option<Duration>,
}

/// Runs `warmup + iterations` frames through `engine` and times each stage.
fn time_frames(
    engine: &mut StreamEngine,
    frame: &[f32],
    side_px: usize,
    warmup: usize,
    iterations: usize,
) -> anyhow::Result<StageTimes> {
    let device = engine.device().clone();
    engine.prepare(FrameSize::new(side_px, side_px))?;
    let mut times = StageTimes::default();
    for index in 0..warmup + iterations {
        let begun = Instant::now();
        // The host frame goes up each time, as a captured frame does.
        let image = Tensor::<4>::from_data(
            TensorData::new(frame.to_vec(), [1, 3, side_px, side_px]),
            &device,
        );
        let latents = engine.noised(engine.encode(image))?;
        finish(latents.clone())?;
        let encoded = Instant::now();
        let x0 = engine.denoise(latents)?;
        finish(x0.clone())?;
        let denoised = Instant::now();
        finish(engine.decode(x0))?;
        let decoded = Instant::now();
        if index >= warmup {
            times.encode.record(encoded - begun);
            times.unet.record(denoised - encoded);
            times.decode.record(decoded - denoised);
            let frame_time = decoded - begun;
            times.frame.record(frame_time);
            times.fastest_frame = Some(
                times
                    .fastest_frame
                    .map_or(frame_time, |f| f.min(frame_time)),
            );
        }
    }
    Ok(times)
}

fn random_embeds(width: usize, device: &Device) -> PromptEmbeds {
    let random = || {
        Tensor::<3>::random(
            [1, CONTEXT_TOKENS, width],
            Distribution::Normal(0.0, 1.0),
            device,
        )
    };
    PromptEmbeds {
        cond: random(),
        uncond: random(),
    }
}

fn measure_device(
    args: &EngineBenchArgs,
    compute: &ComputeDevice,
    precision: Precision,
    cfg_types: &[CfgType],
    records: &mut Vec<Record>,
) -> anyhow::Result<()> {
    let device = &compute.device;
    let (unet_config, side_px) = if args.tiny {
        let tiny = UNetConfig::new(
            4,
            4,
            vec![32, 64],
            vec![true, false],
            vec![false, true],
            vec![2, 4],
            1,
            8,
            64,
            true,
        );
        (tiny, 128)
    } else {
        (UNetConfig::sd21(), args.size)
    };
    let unet = cast_module(unet_config.init(device), precision);
    let taesd = cast_module(TaesdConfig::new().init(device), precision);
    let prompt = random_embeds(unet_config.cross_attention_dim, device);
    // A deterministic textured frame in [-1, 1].
    let frame: Vec<f32> = (0..3 * side_px * side_px)
        .map(|i| ((i * 7919 % 255) as f32 / 127.5) - 1.0)
        .collect();
    for &steps in &args.steps {
        for &cfg_type in cfg_types {
            let config = EngineConfig {
                t_index_list: t_index_list(steps),
                guidance: Guidance {
                    cfg_type,
                    scale: args.guidance,
                    delta: 1.0,
                },
                ..EngineConfig::default()
            };
            let mut engine = StreamEngine::new(
                unet.clone(),
                taesd.clone(),
                SchedulerConfig::default(),
                config.clone(),
                prompt.clone(),
                device.clone(),
            )?;
            let rows = engine.unet_rows();
            let times = time_frames(&mut engine, &frame, side_px, args.warmup, args.iterations)
                .with_context(|| format!("{steps} steps, cfg {cfg_type} on {}", compute.backend))?;
            let frame_ms = times.frame.percentile_ms(50.0);
            let record = Record {
                backend: compute.backend.to_string(),
                adapter: compute.adapter.clone(),
                steps,
                t_index_list: config.t_index_list,
                cfg: cfg_type,
                guidance_scale: args.guidance,
                unet_rows: rows,
                width_px: side_px,
                height_px: side_px,
                precision: precision.name(),
                iterations: args.iterations,
                encode_ms_p50: times.encode.percentile_ms(50.0),
                unet_ms_p50: times.unet.percentile_ms(50.0),
                decode_ms_p50: times.decode.percentile_ms(50.0),
                frame_ms_p50: frame_ms,
                frame_ms_min: times.fastest_frame.map_or(0.0, ms),
                fps: if frame_ms > 0.0 {
                    1000.0 / frame_ms
                } else {
                    0.0
                },
            };
            println!(
                "{:<6} {:<4} {:>5} {:<10} {:>4} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.2}",
                record.backend,
                record.precision,
                record.steps,
                record.cfg.to_string(),
                record.unet_rows,
                record.encode_ms_p50,
                record.unet_ms_p50,
                record.decode_ms_p50,
                record.frame_ms_p50,
                record.fps,
            );
            records.push(record);
        }
    }
    Ok(())
}

pub fn bench_engine(args: EngineBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    anyhow::ensure!(!args.steps.is_empty(), "--steps needs at least one count");
    for &steps in &args.steps {
        anyhow::ensure!(
            (1..=4).contains(&steps),
            "--steps {steps} is out of range (1..=4)"
        );
    }
    anyhow::ensure!(
        args.tiny || (64..=2048).contains(&args.size) && args.size.is_multiple_of(64),
        "--size {} must be a multiple of 64 in 64..=2048",
        args.size
    );
    let cfg_types = args
        .cfg
        .iter()
        .map(|name| name.parse::<CfgType>().map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!cfg_types.is_empty(), "--cfg needs at least one type");
    let precisions = precisions(&args.precision)?;
    let computes = devices(&args.device)?;
    println!(
        "{:<6} {:<4} {:>5} {:<10} {:>4} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "device",
        "prec",
        "steps",
        "cfg",
        "rows",
        "encode ms",
        "unet ms",
        "decode ms",
        "frame ms",
        "fps"
    );
    let mut records = Vec::new();
    for compute in computes {
        for &precision in &precisions {
            eprintln!(
                "{}: {} ({}, random weights, {precision})",
                compute.backend,
                compute.adapter,
                if args.tiny {
                    "tiny UNet, 128x128"
                } else {
                    "SD 2.1 / SD-Turbo UNet and TAESD"
                }
            );
            measure_device(&args, &compute, precision, &cfg_types, &mut records)?;
        }
    }
    let report = serde_json::json!({
        "bench": "engine",
        "build": build_kind(),
        "model": if args.tiny { "tiny UNet (2 levels, 32/64 channels), TAESD, random weights" } else { "SD 2.1 / SD-Turbo UNet, TAESD, random weights" },
        "frame": "TAESD encode + add noise, one Stream Batch UNet call (RCFG), TAESD decode; each stage read back",
        "frames_per_call": 1,
        "warmup": args.warmup,
        "results": records,
    });
    write_report(&args.json, report)
}
