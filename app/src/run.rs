//! `streamdiff run`: source → style model → file or window.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use streamdiff_models::device::{BackendChoice, ComputeDevice, open_device};
use streamdiff_models::paths::default_multistyle_path;
use streamdiff_models::style::{DEFAULT_STYLE, StyleMix};
use streamdiff_pipeline::runner::{Progress, RunConfig};
use streamdiff_pipeline::sink::OutputSpec;
use streamdiff_pipeline::source::{CaptureConfig, SourceSpec};
use streamdiff_pipeline::stabilise::{StabiliseSettings, StabiliseStage, parse_strength};
use streamdiff_pipeline::stage::{FrameStage, StyleStage};
use streamdiff_pipeline::stats::RunSummary;
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
    /// The style model file [default: the one installed by setup].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Flow-guided temporal stabilisation against flicker, strength 0.0 (off) ..= 1.0
    /// [default when given without a value: 0.8].
    #[arg(long, num_args = 0..=1, default_missing_value = "0.8", value_name = "STRENGTH")]
    stabilise: Option<String>,
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
    let choice: BackendChoice = args.device.parse()?;
    let compute: ComputeDevice = open_device(choice)?;
    let size_px = args.size.unwrap_or(if compute.is_cpu { 256 } else { 512 });
    let model_path = args.model.unwrap_or_else(default_multistyle_path);
    let style_stage = StyleStage::load(&model_path, compute.clone(), style)?;
    let stage: Box<dyn FrameStage> = match stabilise {
        Some(strength) => Box::new(StabiliseStage::new(
            Box::new(style_stage),
            &compute,
            StabiliseSettings { strength },
        )?),
        None => Box::new(style_stage),
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
    report(&summary, &output, &compute, size_px, args.json)
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
    output: &OutputSpec,
    compute: &ComputeDevice,
    size_px: usize,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
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
    if let OutputSpec::File(path) = output {
        println!("wrote {}", path.display());
    }
    Ok(())
}
