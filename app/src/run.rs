//! `streamdiff run`: source → model stage → files or a window. The stage is the 26-style
//! network by default, or the StreamDiffusion engine when `--model` names a Stable Diffusion
//! model. Defaults and checks of every setting come from the pipeline's settings types.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use streamdiff_models::device::{BackendChoice, ComputeDevice, open_device};
use streamdiff_models::paths::default_multistyle_path;
use streamdiff_models::sd::pipeline::{LoadOptions, StableDiffusion};
use streamdiff_models::sd::precision::Precision;
use streamdiff_models::style::{DEFAULT_STYLE, StyleMix};
use streamdiff_pipeline::io::sink::{FrameSink, parse_sink};
use streamdiff_pipeline::io::source::{CaptureConfig, SourceSpec, check_size_px, default_size_px};
use streamdiff_pipeline::metrics::Metrics;
use streamdiff_pipeline::stage::engine::settings::{
    DEFAULT_CFG_TYPE, DEFAULT_DELTA, DEFAULT_GUIDANCE_SCALE, DEFAULT_SEED,
    DEFAULT_SSF_MAX_SKIP_FRAMES, DEFAULT_T_INDEX_LIST, EngineSettings,
};
use streamdiff_pipeline::stage::engine::stage::EngineStage;
use streamdiff_pipeline::stage::engine::stream_batch::CfgType;
use streamdiff_pipeline::stage::stabilise::{
    DEFAULT_STRENGTH, StabiliseSettings, StabiliseStage, parse_strength,
};
use streamdiff_pipeline::stage::style::{StyleSettings, StyleStage};
use streamdiff_pipeline::{FrameStage, Live, RunConfig, Runner, SettingsError, Validate};
use tokio_util::sync::CancellationToken;

/// Arguments of `streamdiff run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// `test`, `test:live`, a file path, a URI, or `webcam[:N]`.
    #[arg(long, short)]
    input: String,
    /// An `.mp4`/`.mkv` file to write, or `window`; repeat it to write to several.
    #[arg(long, short, default_value = "out/stylised.mp4")]
    output: Vec<String>,
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
    #[arg(long, num_args = 0..=1, value_name = "STRENGTH")]
    stabilise: Option<Option<String>>,
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
    #[arg(long = "t-index", value_delimiter = ',', default_values_t = DEFAULT_T_INDEX_LIST)]
    t_index: Vec<usize>,
    /// Residual CFG: none, full, self or initialize.
    #[arg(long = "cfg", default_value_t = DEFAULT_CFG_TYPE.to_string())]
    cfg: String,
    /// Guidance scale (guidance is on above 1).
    #[arg(long, default_value_t = DEFAULT_GUIDANCE_SCALE)]
    guidance: f32,
    /// RCFG delta: weight of the stock noise as the negative prediction.
    #[arg(long, default_value_t = DEFAULT_DELTA)]
    delta: f32,
    /// Stochastic similarity filter threshold (e.g. 0.98): near-identical frames are skipped
    /// and the previous output is shown. Off when not given.
    #[arg(long)]
    ssf: Option<f64>,
    /// Most similar frames skipped before one is forced through (with --ssf).
    #[arg(long, default_value_t = DEFAULT_SSF_MAX_SKIP_FRAMES)]
    ssf_max_skip: u32,
    /// Seed of the fixed per-step noise.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// A TAESD to encode and decode with (folder or repo id) instead of the model's `vae/`.
    #[arg(long)]
    taesd: Option<String>,
    /// Compute precision of the UNet and TAESD: f32 or f16 (f16 needs a GPU with f16
    /// arithmetic).
    #[arg(long, default_value = "f32")]
    precision: String,
}

/// A settings error in the words of the command line: its messages start with the setting's
/// name, which is the flag's.
fn flag(err: SettingsError) -> anyhow::Error {
    anyhow::anyhow!("--{err}")
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // Bad arguments first: they cost nothing to check.
    let source = SourceSpec::parse(&args.input)?;
    let style = StyleMix::parse(&args.style)?;
    if let Some(size) = args.size {
        check_size_px(size).map_err(flag)?;
    }
    let stabilise = match &args.stabilise {
        None => None,
        Some(None) => Some(DEFAULT_STRENGTH),
        Some(Some(text)) => Some(parse_strength(text).map_err(flag)?),
    };
    let sinks: Vec<Box<dyn FrameSink>> = args
        .output
        .iter()
        .map(|output| parse_sink(output))
        .collect::<Result<_, _>>()?;
    let diffusion_model = args
        .model
        .as_deref()
        .filter(|model| !is_style_network(model));
    let engine = match diffusion_model {
        Some(_) => Some(engine_settings(&args.engine)?),
        None if args.engine.prompt.is_some() => anyhow::bail!(
            "--prompt needs a Stable Diffusion --model (a diffusers folder or a repo id); the style network takes --style"
        ),
        None => None,
    };
    let choice: BackendChoice = args.device.parse()?;
    let compute: ComputeDevice = open_device(choice)?;
    let size_px = args.size.unwrap_or_else(|| default_size_px(&compute));
    let inner: Box<dyn FrameStage> = match (diffusion_model, engine) {
        (Some(model), Some((settings, precision))) => Box::new(load_engine(
            model,
            settings,
            precision,
            args.engine.taesd.clone(),
            compute.clone(),
        )?),
        _ => {
            let model_path = args
                .model
                .as_deref()
                .map_or_else(default_multistyle_path, PathBuf::from);
            Box::new(StyleStage::load(
                &model_path,
                compute.clone(),
                StyleSettings { style },
            )?)
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
    let live = capture.source.is_live() || args.realtime;
    let mut runner = Runner::new(stage);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let metrics = runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn(handle_ctrl_c(stop.clone()));
        let done = CancellationToken::new();
        let display = tokio::spawn(show_progress(runner.metrics(), live, done.clone()));
        let result = runner.run(RunConfig::new(capture), sinks, stop).await;
        done.cancel();
        let _ = display.await;
        result
    })?;
    let files: Vec<&String> = args.output.iter().filter(|o| *o != "window").collect();
    report(&metrics, &files, &compute, size_px, args.json)
}

/// A `--model` that names the style network: an `.onnx` file.
fn is_style_network(model: &str) -> bool {
    std::path::Path::new(model)
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("onnx"))
}

/// The engine's settings and precision from the command line, checked before anything loads.
fn engine_settings(args: &EngineArgs) -> anyhow::Result<(EngineSettings, Precision)> {
    let prompt = args
        .prompt
        .clone()
        .context("--prompt is needed with a Stable Diffusion --model")?;
    let cfg_type: CfgType = args.cfg.parse().map_err(flag)?;
    let settings = EngineSettings {
        prompt,
        negative_prompt: args.negative_prompt.clone(),
        guidance_scale: args.guidance,
        delta: args.delta,
        cfg_type,
        t_index_list: args.t_index.clone(),
        seed: args.seed,
        ssf_threshold: args.ssf,
        ssf_max_skip_frames: args.ssf_max_skip,
    };
    settings.validate().map_err(flag)?;
    let precision: Precision = args.precision.parse()?;
    Ok((settings, precision))
}

/// Loads a Stable Diffusion model and builds the engine stage.
fn load_engine(
    model: &str,
    settings: EngineSettings,
    precision: Precision,
    taesd: Option<String>,
    compute: ComputeDevice,
) -> anyhow::Result<EngineStage> {
    let options = LoadOptions {
        taesd,
        ..LoadOptions::default()
    };
    let sd = StableDiffusion::from_pretrained(model, &options, &compute.device)
        .with_context(|| format!("cannot load the Stable Diffusion model `{model}`"))?
        .with_precision(precision);
    let stage = EngineStage::from_model(sd, compute, settings)?;
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

async fn show_progress(metrics: Live<Metrics>, live: bool, done: CancellationToken) {
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
    loop {
        let now = metrics.get();
        if let Some(duration_s) = now.duration_s {
            bar.set_length((duration_s * 1000.0) as u64);
        }
        bar.set_position((now.position_s * 1000.0) as u64);
        bar.set_message(format!(
            "{} frames, {} dropped, {:.1} fps",
            now.frames_out, now.frames_dropped, now.fps_recent
        ));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = done.cancelled() => break,
        }
    }
    bar.finish_and_clear();
}

fn report(
    metrics: &Metrics,
    files: &[&String],
    compute: &ComputeDevice,
    size_px: usize,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(metrics)?);
        return Ok(());
    }
    if let Some(warning) = &metrics.input_warning {
        eprintln!("warning: the input ended early: {warning}");
    }
    println!(
        "frames in {} | out {} | dropped {} | {:.1} fps | latency p50 {:.1} ms, p95 {:.1} ms | model p50 {:.1} ms",
        metrics.frames_in,
        metrics.frames_out,
        metrics.frames_dropped,
        metrics.fps,
        metrics.latency_p50_ms,
        metrics.latency_p95_ms,
        metrics.stage_p50_ms
    );
    println!(
        "device: {} ({}), size {} px",
        compute.backend, compute.adapter, size_px
    );
    if let Some(engine) = &metrics.engine {
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
    for file in files {
        println!("wrote {file}");
    }
    Ok(())
}
