//! `streamdiff run`: source → model stage → file or window. The stage is the 26-style network
//! by default, or the StreamDiffusion engine when `--model` names a Stable Diffusion model.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use streamdiff_models::device::{BackendChoice, ComputeDevice, open_device};
use streamdiff_models::paths::default_multistyle_path;
use streamdiff_models::sd::pipeline::{LoadOptions, StableDiffusion};
use streamdiff_models::sd::precision::Precision;
use streamdiff_models::style::{DEFAULT_STYLE, StyleMix};
use streamdiff_pipeline::io::sink::OutputSpec;
use streamdiff_pipeline::io::source::{CaptureConfig, SourceSpec};
use streamdiff_pipeline::metrics::RunSummary;
use streamdiff_pipeline::runner::{Progress, RunConfig};
use streamdiff_pipeline::stage::engine::stage::{EngineSettings, EngineStage, EngineStats};
use streamdiff_pipeline::stage::engine::stream_batch::{CfgType, Guidance};
use streamdiff_pipeline::stage::engine::{EngineConfig, StreamEngine};
use streamdiff_pipeline::stage::stabilise::{StabiliseSettings, StabiliseStage, parse_strength};
use streamdiff_pipeline::stage::{FrameStage, StyleStage};
use tokio_util::sync::CancellationToken;

/// Arguments of `streamdiff run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// `test`, `test:live`, a file path, a URI, or `webcam[:N]`.
    #[arg(long, short)]
    input: String,
    /// An `.mp4`/`.mkv` file to write, or `window`.
    #[arg(long, short, default_value = "out/stylised.mp4")]
    output: String,
    /// A preset (`style-19`, `dusk`; see `streamdiff styles`), an index, or a blend `3:0.5,12:0.5`.
    #[arg(long, default_value = DEFAULT_STYLE)]
    style: String,
    /// Longer side of the processed frames in pixels [default: 512 on a GPU, 256 on CPU].
    #[arg(long)]
    size: Option<usize>,
    /// Compute device: auto, wgpu or flex.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Pace a file in real time and drop frames when behind, like a live source.
    #[arg(long)]
    realtime: bool,
    /// Stop after this many input frames.
    #[arg(long)]
    frames: Option<u64>,
    /// A style network `.onnx` file, or a Stable Diffusion model (a diffusers folder or a repo
    /// id in the Hugging Face cache) to run the StreamDiffusion engine [default: the style
    /// network installed by setup].
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Flow-guided temporal stabilisation against flicker, strength 0.0 (off) ..= 1.0
    /// [default when given without a value: 0.8].
    #[arg(long, num_args = 0..=1, default_missing_value = "0.8", value_name = "STRENGTH")]
    stabilise: Option<String>,
}

/// Settings of the StreamDiffusion engine (used with a Stable Diffusion `--model`).
#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// What to turn the video into (needed with a Stable Diffusion model).
    #[arg(long)]
    prompt: Option<String>,
    /// What to steer away from (used by `--cfg full` and `initialize`).
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Indices into the 50-step LCM schedule, noisiest first; one index per denoising step.
    /// Larger first index = closer to the input.
    #[arg(long = "t-index", value_delimiter = ',', default_value = "32,45")]
    t_index: Vec<usize>,
    /// Residual CFG: none, full, self or initialize.
    #[arg(long = "cfg", default_value = "self")]
    cfg: String,
    /// Guidance scale (guidance is on above 1).
    #[arg(long, default_value_t = 1.2)]
    guidance: f32,
    /// RCFG delta: weight of the stock noise as the negative prediction.
    #[arg(long, default_value_t = 1.0)]
    delta: f32,
    /// Stochastic similarity filter threshold (e.g. 0.98): near-identical frames are skipped
    /// and the previous output is shown. Off when not given.
    #[arg(long)]
    ssf: Option<f64>,
    /// Most similar frames skipped before one is forced through (with --ssf).
    #[arg(long, default_value_t = 10)]
    ssf_max_skip: u32,
    /// Seed of the fixed per-step noise.
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// A TAESD to encode and decode with (folder or repo id) instead of the model's `vae/`.
    #[arg(long)]
    taesd: Option<String>,
    /// Compute precision of the UNet and TAESD: f32 or f16 (f16 needs a GPU with f16
    /// arithmetic).
    #[arg(long, default_value = "f32")]
    precision: String,
}

/// Smallest and largest processing sizes we accept.
const SIZE_RANGE_PX: std::ops::RangeInclusive<usize> = 32..=4096;

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let source = SourceSpec::parse(&args.input)?;
    let output = OutputSpec::parse(&args.output);
    // Bad arguments first: they cost nothing to check.
    let style = StyleMix::parse(&args.style)?;
    if let Some(size) = args.size
        && !SIZE_RANGE_PX.contains(&size)
    {
        anyhow::bail!(
            "--size {size} is out of range ({}..={} px)",
            SIZE_RANGE_PX.start(),
            SIZE_RANGE_PX.end()
        );
    }
    let stabilise = args.stabilise.as_deref().map(parse_strength).transpose()?;
    output.check()?;
    let diffusion_model = args
        .model
        .as_deref()
        .filter(|model| !is_style_network(model));
    if diffusion_model.is_some() {
        check_engine_args(&args.engine)?;
    } else if args.engine.prompt.is_some() {
        anyhow::bail!(
            "--prompt needs a Stable Diffusion --model (a diffusers folder or a repo id); the style network takes --style"
        );
    }
    let choice: BackendChoice = args.device.parse()?;
    let compute: ComputeDevice = open_device(choice)?;
    let size_px = args.size.unwrap_or(if compute.is_cpu { 256 } else { 512 });
    let mut engine_stats = None;
    let inner: Box<dyn FrameStage> = match args.model.as_deref() {
        Some(model) if diffusion_model.is_some() => {
            let stage = load_engine(model, &args.engine, compute.clone())?;
            engine_stats = Some(stage.stats());
            Box::new(stage)
        }
        model => {
            let model_path = model.map_or_else(default_multistyle_path, PathBuf::from);
            Box::new(StyleStage::load(&model_path, compute.clone(), style)?)
        }
    };
    let stage: Box<dyn FrameStage> = match stabilise {
        Some(strength) => Box::new(StabiliseStage::new(
            inner,
            &compute,
            StabiliseSettings { strength },
        )?),
        None => inner,
    };

    let mut capture = CaptureConfig::new(source, size_px);
    capture.realtime = args.realtime;
    capture.max_frames = args.frames;
    let config = RunConfig::new(capture, output.clone());
    let live = config.capture.source.is_live() || args.realtime;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(async move {
        let stop = CancellationToken::new();
        let (progress_tx, progress_rx) = tokio::sync::watch::channel(Progress::default());
        tokio::spawn(handle_ctrl_c(stop.clone()));
        let display = tokio::spawn(show_progress(progress_rx, live));
        let result = streamdiff_pipeline::runner::run(config, stage, Some(progress_tx), stop).await;
        let _ = display.await;
        result
    })?;
    let engine_stats = engine_stats.map(|stats| {
        stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    });
    report(
        &summary,
        engine_stats.as_ref(),
        &output,
        &compute,
        size_px,
        args.json,
    )
}

/// A `--model` that names the style network: an `.onnx` file.
fn is_style_network(model: &str) -> bool {
    std::path::Path::new(model)
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("onnx"))
}

/// Checks the engine's arguments before anything is loaded; returns the prompt, cfg type and
/// precision.
fn check_engine_args(args: &EngineArgs) -> anyhow::Result<(String, CfgType, Precision)> {
    let prompt = args
        .prompt
        .clone()
        .context("--prompt is needed with a Stable Diffusion --model")?;
    let cfg_type: CfgType = args.cfg.parse().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        args.guidance.is_finite() && args.guidance >= 0.0,
        "--guidance {} must be a number >= 0",
        args.guidance
    );
    anyhow::ensure!(
        args.delta.is_finite(),
        "--delta {} must be a number",
        args.delta
    );
    anyhow::ensure!(
        !args.t_index.is_empty(),
        "--t-index needs at least one index"
    );
    if let Some(&bad) = args.t_index.iter().find(|&&index| index >= 50) {
        anyhow::bail!("--t-index {bad} is out of range: the schedule has 50 steps (0..=49)");
    }
    if let Some(threshold) = args.ssf {
        anyhow::ensure!(
            (0.0..=1.0).contains(&threshold),
            "--ssf {threshold} must be in 0..=1"
        );
    }
    let precision: Precision = args.precision.parse()?;
    Ok((prompt, cfg_type, precision))
}

/// Loads a Stable Diffusion model and builds the engine stage from the command line.
fn load_engine(
    model: &str,
    args: &EngineArgs,
    compute: ComputeDevice,
) -> anyhow::Result<EngineStage> {
    let (prompt, cfg_type, precision) = check_engine_args(args)?;
    let settings = EngineSettings {
        prompt: prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        guidance_scale: args.guidance,
        delta: args.delta,
        cfg_type,
        t_index_list: args.t_index.clone(),
        seed: args.seed,
        ssf_threshold: args.ssf,
        ssf_max_skip_frames: args.ssf_max_skip,
    };
    let config = EngineConfig {
        t_index_list: args.t_index.clone(),
        guidance: Guidance {
            cfg_type,
            scale: args.guidance,
            delta: args.delta,
        },
        seed: args.seed,
        ..EngineConfig::default()
    };
    let options = LoadOptions {
        taesd: args.taesd.clone(),
        ..LoadOptions::default()
    };
    let sd = StableDiffusion::from_pretrained(model, &options, &compute.device)
        .with_context(|| format!("cannot load the Stable Diffusion model `{model}`"))?
        .with_precision(precision);
    let parts = StreamEngine::from_model(
        sd,
        config,
        &prompt,
        &args.negative_prompt,
        compute.device.clone(),
    )?;
    let stage = EngineStage::new(parts.engine, parts.prompts, compute, settings)?;
    eprintln!("engine: {}", stage.name());
    Ok(stage)
}

/// First Ctrl-C: finish gracefully (the output file stays valid). Second: quit at once.
async fn handle_ctrl_c(stop: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("stopping: finishing the output (Ctrl-C again to quit at once)");
        stop.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    }
}

async fn show_progress(mut progress: tokio::sync::watch::Receiver<Progress>, live: bool) {
    let bar = if live {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {percent:>3}% {msg} [{elapsed_precise}, eta {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    while progress.changed().await.is_ok() {
        let now = *progress.borrow();
        if let Some(duration) = now.duration {
            bar.set_length(duration.as_millis() as u64);
        }
        bar.set_position(now.position.as_millis() as u64);
        bar.set_message(format!(
            "{} frames, {} dropped",
            now.frames_out, now.frames_dropped
        ));
    }
    bar.finish_and_clear();
}

fn report(
    summary: &RunSummary,
    engine: Option<&EngineStats>,
    output: &OutputSpec,
    compute: &ComputeDevice,
    size_px: usize,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let mut value = serde_json::to_value(summary)?;
        if let Some(engine) = engine {
            value["engine"] = serde_json::to_value(engine)?;
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if let Some(warning) = &summary.input_warning {
        eprintln!("warning: the input ended early: {warning}");
    }
    println!(
        "frames in {} | out {} | dropped {} | {:.1} fps | latency p50 {:.1} ms, p95 {:.1} ms | model p50 {:.1} ms",
        summary.frames_in,
        summary.frames_out,
        summary.frames_dropped,
        summary.fps,
        summary.latency_p50_ms,
        summary.latency_p95_ms,
        summary.stage_p50_ms
    );
    println!(
        "device: {} ({}), size {} px",
        compute.backend, compute.adapter, size_px
    );
    if let Some(engine) = engine {
        println!(
            "engine: {} UNet calls of {} rows ({} to flush), delay {} frames, {} prompt swaps | similarity filter skipped {} of {} (forced {})",
            engine.unet_calls,
            engine.unet_rows,
            engine.flush_calls,
            engine.delay_frames,
            engine.prompt_swaps,
            engine.ssf.skipped,
            engine.ssf.checked,
            engine.ssf.forced
        );
    }
    if let OutputSpec::File(path) = output {
        println!("wrote {}", path.display());
    }
    Ok(())
}
