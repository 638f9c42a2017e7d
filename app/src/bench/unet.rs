//! `streamdiff bench unet`: the SD-Turbo-size UNet (SD 2.1 shape, random weights, no file) at
//! a 64x64 latent for each batch size, TAESD encode and decode at 512x512, and one
//! representative convolution and attention call through `sd::ops` (the functions a faster
//! kernel would replace), as a table and as JSON.
//!
//! Each measurement runs `--warmup` untimed calls (shader compilation, allocation), then
//! `--iterations` timed calls, each ending with the output read back to the host, so the time
//! is the device's. The median is reported. Each `--precision` (f32, f16) is measured in turn;
//! the JSON file is rewritten after every row, so a long run that is stopped keeps its rows.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use burn::tensor::{Device, Distribution, Tensor};
use streamdiff_models::device::ComputeDevice;
use streamdiff_models::sd::ops;
use streamdiff_models::sd::precision::{Precision, cast_module};
use streamdiff_models::sd::taesd::TaesdConfig;
use streamdiff_models::sd::unet::UNetConfig;
use streamdiff_pipeline::metrics::DurationStats;

use super::report::{build_kind, devices, finish, precisions, store_report, write_report};

/// Latent side of the UNet input, in latent pixels (512x512 images).
const LATENT_SIDE: usize = 64;
/// Image side of the TAESD calls, in pixels.
const IMAGE_SIDE_PX: usize = 512;
/// Text tokens of the cross-attention context.
const CONTEXT_TOKENS: usize = 77;
/// The timestep the UNet is called at (any value costs the same).
const TIMESTEP: f32 = 999.0;

/// Arguments of `streamdiff bench unet`.
#[derive(clap::Args, Debug)]
pub struct UnetBenchArgs {
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    batch: Vec<usize>,
    /// Devices to measure, comma-separated: wgpu, flex, auto.
    #[arg(long, value_delimiter = ',', default_value = "wgpu")]
    device: Vec<String>,
    /// Compute precisions, comma-separated: f32, f16 (f16 needs a device with f16 arithmetic).
    #[arg(long, value_delimiter = ',', default_value = "f32,f16")]
    precision: Vec<String>,
    /// Timed calls per measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Untimed calls first (shader compilation, allocation).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Skip the TAESD encode/decode measurements.
    #[arg(long)]
    no_taesd: bool,
    /// Skip the single convolution / attention measurements.
    #[arg(long)]
    no_ops: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "out/bench-unet.json")]
    json: PathBuf,
}

#[derive(serde::Serialize)]
struct Record {
    backend: String,
    adapter: String,
    /// `unet`, `taesd_encode`, `taesd_decode`, `conv2d`, `attention_self`, `attention_cross`.
    what: String,
    /// The input, e.g. `[1, 4, 64, 64]`.
    input_shape: Vec<usize>,
    batch: usize,
    /// The compute precision, `f32` or `f16` (inputs and outputs are f32).
    dtype: &'static str,
    iterations: usize,
    ms_per_call_p50: f64,
    ms_per_call_min: f64,
    ms_per_call_mean: f64,
}

/// Times `call` (which must read its result back) `warmup + iterations` times.
fn measure(
    warmup: usize,
    iterations: usize,
    mut call: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(DurationStats, Duration, Duration)> {
    for _ in 0..warmup {
        call()?;
    }
    let mut stats = DurationStats::default();
    let mut total = Duration::ZERO;
    let mut fastest = Duration::MAX;
    for _ in 0..iterations {
        let begun = Instant::now();
        call()?;
        let elapsed = begun.elapsed();
        stats.record(elapsed);
        total += elapsed;
        fastest = fastest.min(elapsed);
    }
    Ok((stats, total, fastest))
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

struct Bench<'a> {
    args: &'a UnetBenchArgs,
    compute: ComputeDevice,
    precision: Precision,
    records: Vec<Record>,
}

impl Bench<'_> {
    fn run(
        &mut self,
        what: &str,
        input_shape: Vec<usize>,
        call: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let (stats, total, fastest) = measure(self.args.warmup, self.args.iterations, call)
            .with_context(|| format!("{what} in {} on {}", self.precision, self.compute.backend))?;
        let record = Record {
            backend: self.compute.backend.to_string(),
            adapter: self.compute.adapter.clone(),
            what: what.to_string(),
            batch: input_shape.first().copied().unwrap_or(1),
            input_shape,
            dtype: self.precision.name(),
            iterations: self.args.iterations,
            ms_per_call_p50: stats.percentile_ms(50.0),
            ms_per_call_min: fastest.as_secs_f64() * 1000.0,
            ms_per_call_mean: total.as_secs_f64() * 1000.0 / self.args.iterations as f64,
        };
        println!(
            "{:<6} {:<5} {:<16} {:<22} {:>5} {:>12.2} {:>12.2}",
            record.backend,
            record.dtype,
            record.what,
            format!("{:?}", record.input_shape),
            record.batch,
            record.ms_per_call_p50,
            record.ms_per_call_min,
        );
        self.records.push(record);
        store_report(&self.args.json, report(self.args, &self.records))
    }
}

/// The JSON report of the rows measured so far.
fn report(args: &UnetBenchArgs, records: &[Record]) -> serde_json::Value {
    serde_json::json!({
        "bench": "unet",
        "build": build_kind(),
        "unet": "SD 2.1 / SD-Turbo shape, random weights",
        "latent_side": LATENT_SIDE,
        "image_side_px": IMAGE_SIDE_PX,
        "warmup": args.warmup,
        "conv2d": "320->320 3x3, padding 1 (UNet level 0 resnet)",
        "attention_self": "5 heads x 4096 tokens x 64 (UNet level 0 attn1)",
        "attention_cross": "5 heads x 4096 queries x 77 keys x 64 (UNet level 0 attn2)",
        "results": records,
    })
}

pub fn bench_unet(args: UnetBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    anyhow::ensure!(!args.batch.is_empty(), "--batch needs at least one size");
    for &batch in &args.batch {
        anyhow::ensure!((1..=64).contains(&batch), "--batch {batch} is out of range");
    }
    let precisions = precisions(&args.precision)?;
    let computes = devices(&args.device)?;
    println!(
        "{:<6} {:<5} {:<16} {:<22} {:>5} {:>12} {:>12}",
        "device", "dtype", "what", "input", "batch", "ms/call p50", "ms/call min"
    );
    let mut records = Vec::new();
    for compute in computes {
        for &precision in &precisions {
            eprintln!(
                "{}: {} (SD 2.1 UNet, random weights, {precision})",
                compute.backend, compute.adapter
            );
            let mut bench = Bench {
                args: &args,
                compute: compute.clone(),
                precision,
                records,
            };
            bench_one(&mut bench)?;
            records = bench.records;
        }
    }
    write_report(&args.json, report(&args, &records))
}

/// Every measurement of one device and precision.
fn bench_one(bench: &mut Bench<'_>) -> anyhow::Result<()> {
    let args = bench.args;
    let precision = bench.precision;
    let device = &bench.compute.device.clone();
    let config = UNetConfig::sd21();
    let taesd_config = TaesdConfig::new();
    let unet = cast_module(config.init(device), precision);
    for &batch in &args.batch {
        let sample = random(
            [batch, config.in_channels, LATENT_SIDE, LATENT_SIDE],
            device,
        );
        let timesteps = Tensor::<1>::full([batch], TIMESTEP, device);
        let context = random([batch, CONTEXT_TOKENS, config.cross_attention_dim], device);
        bench.run("unet", sample.dims().to_vec(), || {
            finish(unet.forward(sample.clone(), timesteps.clone(), context.clone()))
        })?;
    }
    drop(unet);

    if !args.no_taesd {
        let taesd = cast_module(taesd_config.init(device), precision);
        for &batch in &args.batch {
            let image = random([batch, 3, IMAGE_SIDE_PX, IMAGE_SIDE_PX], device);
            bench.run("taesd_encode", image.dims().to_vec(), || {
                finish(taesd.encode(image.clone()))
            })?;
            let side = IMAGE_SIDE_PX / 8;
            let latents = random([batch, taesd_config.latent_channels, side, side], device);
            bench.run("taesd_decode", latents.dims().to_vec(), || {
                finish(taesd.decode(latents.clone()))
            })?;
        }
    }

    if !args.no_ops {
        // The UNet's first level: its resnet convolution and its transformer attention, called
        // directly, so the inputs are made in the compute precision.
        let dtype = precision.dtype();
        let channels = config.block_out_channels.first().copied().unwrap_or(320);
        let heads = config.attention_heads.first().copied().unwrap_or(5);
        let head_width = channels / heads;
        let conv = burn::nn::conv::Conv2dConfig::new([channels, channels], [3, 3])
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        let conv = cast_module(conv, precision);
        let tokens = LATENT_SIDE * LATENT_SIDE;
        for &batch in &args.batch {
            let x = random([batch, channels, LATENT_SIDE, LATENT_SIDE], device).cast(dtype);
            bench.run("conv2d", x.dims().to_vec(), || {
                finish(ops::conv2d(&conv, x.clone()))
            })?;
            let q = random([batch, heads, tokens, head_width], device).cast(dtype);
            bench.run("attention_self", q.dims().to_vec(), || {
                finish(ops::attention(q.clone(), q.clone(), q.clone(), None))
            })?;
            let kv = random([batch, heads, CONTEXT_TOKENS, head_width], device).cast(dtype);
            bench.run("attention_cross", q.dims().to_vec(), || {
                finish(ops::attention(q.clone(), kv.clone(), kv.clone(), None))
            })?;
        }
    }
    Ok(())
}
