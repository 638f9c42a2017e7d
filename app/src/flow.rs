//! `streamdiff flow` (flow between two frames, `.flo` and a picture), `streamdiff eval flow`
//! (end-point error against ground truth) and `streamdiff eval flicker` (temporal warping
//! error of a video, stylised here or given).

use std::path::{Path, PathBuf};

use anyhow::Context;
use streamdiff_models::device::{BackendChoice, ComputeDevice, open_device};
use streamdiff_models::paths::default_multistyle_path;
use streamdiff_models::style::{DEFAULT_STYLE, StyleMix};
use streamdiff_pipeline::io::decode::decode_frames;
use streamdiff_pipeline::io::source::SourceSpec;
use streamdiff_pipeline::stage::stabilise::{DEFAULT_STRENGTH, parse_strength};
use streamdiff_pipeline::stage::style::{StyleSettings, StyleStage};
use streamdiff_shaders::flo::{FlowField, read_flo, write_flo};
use streamdiff_shaders::flow::{FlowEstimator, FlowParams, FlowQuality, end_point_error};
use streamdiff_shaders::ops::Size;
use streamdiff_shaders::stabilise::FrameStabiliser;
use streamdiff_shaders::visual::{read_rgb, write_flow_png};

/// Arguments of `streamdiff flow`.
#[derive(clap::Args, Debug)]
pub struct FlowArgs {
    /// The first frame (PNG).
    frame1: PathBuf,
    /// The second frame (PNG), same size.
    frame2: PathBuf,
    /// Where to write the flow, Middlebury `.flo`.
    #[arg(long, short)]
    output: PathBuf,
    /// Also write the colour-wheel picture of the flow here (PNG).
    #[arg(long)]
    visualise: Option<PathBuf>,
    /// fast, balanced or high.
    #[arg(long, default_value = "balanced")]
    quality: String,
    /// Compute device: auto, wgpu or flex.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// What to evaluate.
#[derive(clap::Subcommand, Debug)]
pub enum EvalCommand {
    /// End-point error of our flow between two frames against a ground-truth `.flo`.
    Flow(EvalFlowArgs),
    /// Temporal warping error (flicker) of a video and of its source.
    Flicker(FlickerArgs),
}

/// Arguments of `streamdiff eval flow`.
#[derive(clap::Args, Debug)]
pub struct EvalFlowArgs {
    /// The first frame (PNG).
    frame1: PathBuf,
    /// The second frame (PNG).
    frame2: PathBuf,
    /// Ground-truth flow from frame 1 to frame 2 (`.flo`).
    truth: PathBuf,
    /// Occlusion mask (white = occluded) [default: `occlusions/<name>.png` beside the truth].
    #[arg(long)]
    occlusions: Option<PathBuf>,
    /// Invalid-pixel mask (white = invalid) [default: `invalid/<name>.png` beside the truth].
    #[arg(long)]
    invalid: Option<PathBuf>,
    /// fast, balanced or high.
    #[arg(long, default_value = "balanced")]
    quality: String,
    /// Compute device: auto, wgpu or flex.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// Arguments of `streamdiff eval flicker`.
#[derive(clap::Args, Debug)]
pub struct FlickerArgs {
    /// The source video (its frames give the flow).
    input: String,
    /// A stylised video of the same source to measure; without it, the input is stylised
    /// here with `--style`, once plain and once stabilised at `--stabilise`.
    #[arg(long)]
    output: Option<String>,
    /// The style when stylising here.
    #[arg(long, default_value = DEFAULT_STYLE)]
    style: String,
    /// Stabilisation strength of the stabilised run (0.0..1.0).
    #[arg(long, default_value_t = DEFAULT_STRENGTH.to_string())]
    stabilise: String,
    /// Longer side of the frames measured, in pixels.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Frames measured (from the start).
    #[arg(long, default_value_t = 30)]
    frames: u64,
    /// Compute device: auto, wgpu or flex.
    #[arg(long, default_value = "auto")]
    device: String,
    /// The style model file [default: the one installed by setup].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn device(name: &str) -> anyhow::Result<ComputeDevice> {
    let choice: BackendChoice = name.parse()?;
    // Flow runs its WGSL kernels on any wgpu adapter, lavapipe included, so `auto` means wgpu
    // whenever there is one.
    let choice = if choice == BackendChoice::Auto {
        match open_device(BackendChoice::Wgpu) {
            Ok(compute) => return Ok(compute),
            Err(_) => BackendChoice::Flex,
        }
    } else {
        choice
    };
    Ok(open_device(choice)?)
}

fn read_pair(frame1: &Path, frame2: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>, Size)> {
    let (rgb1, size1) = read_rgb(frame1)?;
    let (rgb2, size2) = read_rgb(frame2)?;
    if size1 != size2 {
        anyhow::bail!(
            "the frames differ in size: {} is {}x{}, {} is {}x{}",
            frame1.display(),
            size1.width_px,
            size1.height_px,
            frame2.display(),
            size2.width_px,
            size2.height_px
        );
    }
    Ok((rgb1, rgb2, size1))
}

pub fn flow(args: FlowArgs) -> anyhow::Result<()> {
    let quality: FlowQuality = args.quality.parse()?;
    let (rgb1, rgb2, size) = read_pair(&args.frame1, &args.frame2)?;
    let compute = device(&args.device)?;
    let estimator = FlowEstimator::new(&compute.device, FlowParams::preset(quality))?;
    let data = estimator.flow_rgb8(&rgb1, &rgb2, size)?;
    let field = FlowField { size, data };
    write_flo(&args.output, &field)?;
    println!("wrote {}", args.output.display());
    if let Some(picture) = &args.visualise {
        write_flow_png(picture, &field)?;
        println!("wrote {}", picture.display());
    }
    Ok(())
}

pub fn eval(command: EvalCommand) -> anyhow::Result<()> {
    match command {
        EvalCommand::Flow(args) => eval_flow(args),
        EvalCommand::Flicker(args) => eval_flicker(args),
    }
}

/// A mask PNG as booleans (white = set), checked against `size`.
fn read_mask(path: &Path, size: Size) -> anyhow::Result<Vec<bool>> {
    let (rgb, mask_size) = read_rgb(path)?;
    if mask_size != size {
        anyhow::bail!(
            "{} is {}x{}, the flow {}x{}",
            path.display(),
            mask_size.width_px,
            mask_size.height_px,
            size.width_px,
            size.height_px
        );
    }
    Ok(rgb.chunks_exact(3).map(|p| p[0] > 127).collect())
}

/// The mask given, else the Sintel layout's `<kind>/<stem>.png` beside the truth when present.
fn mask_path(given: Option<PathBuf>, truth: &Path, kind: &str) -> Option<PathBuf> {
    given.or_else(|| {
        let stem = truth.file_stem()?;
        let path = truth
            .parent()?
            .join(kind)
            .join(Path::new(stem).with_extension("png"));
        path.is_file().then_some(path)
    })
}

fn eval_flow(args: EvalFlowArgs) -> anyhow::Result<()> {
    let quality: FlowQuality = args.quality.parse()?;
    let (rgb1, rgb2, size) = read_pair(&args.frame1, &args.frame2)?;
    let truth = read_flo(&args.truth)?;
    if truth.size != size {
        anyhow::bail!(
            "{} is {}x{} but the frames are {}x{}",
            args.truth.display(),
            truth.size.width_px,
            truth.size.height_px,
            size.width_px,
            size.height_px
        );
    }
    let occlusions = mask_path(args.occlusions, &args.truth, "occlusions");
    let invalid = mask_path(args.invalid, &args.truth, "invalid");
    let mut matched: Option<Vec<bool>> = None;
    for path in [occlusions, invalid].into_iter().flatten() {
        let mask = read_mask(&path, size)?;
        let kept = matched.get_or_insert_with(|| vec![true; size.pixels()]);
        for (k, m) in kept.iter_mut().zip(mask) {
            *k &= !m;
        }
    }
    let compute = device(&args.device)?;
    let estimator = FlowEstimator::new(&compute.device, FlowParams::preset(quality))?;
    let started = std::time::Instant::now();
    let flow = estimator.flow_rgb8(&rgb1, &rgb2, size)?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "EPE all pixels: {:.3} px",
        end_point_error(&flow, &truth.data, None)
    );
    if let Some(matched) = &matched {
        println!(
            "EPE non-occluded, valid: {:.3} px ({} of {} pixels)",
            end_point_error(&flow, &truth.data, Some(matched)),
            matched.iter().filter(|m| **m).count(),
            size.pixels()
        );
    }
    println!(
        "{}x{} on {} ({}), {elapsed_ms:.0} ms including shader compilation",
        size.width_px, size.height_px, compute.backend, compute.adapter
    );
    Ok(())
}

/// Mean temporal warping error of `outputs` with the flow of `inputs`, over all steps.
fn flicker_of(
    stabiliser: &FrameStabiliser,
    inputs: &[Vec<u8>],
    outputs: &[Vec<u8>],
    size: Size,
) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    let mut count = 0usize;
    for t in 1..inputs.len().min(outputs.len()) {
        let (s, n) = stabiliser.warping_error(
            &inputs[t - 1],
            &inputs[t],
            &outputs[t - 1],
            &outputs[t],
            size,
        )?;
        sum += s;
        count += n;
    }
    if count == 0 {
        anyhow::bail!("no two consecutive frames with consistent flow to measure");
    }
    Ok(sum / count as f64)
}

/// Mean absolute difference of two frame sequences (0..255 per channel).
fn mean_abs_difference(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            sum += f64::from(p.abs_diff(*q));
            count += 1;
        }
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

fn eval_flicker(args: FlickerArgs) -> anyhow::Result<()> {
    let strength = parse_strength(&args.stabilise)?;
    let style = StyleMix::parse(&args.style)?;
    if args.frames < 2 {
        anyhow::bail!("--frames must be at least 2");
    }
    let input_frames = decode_frames(
        SourceSpec::parse(&args.input)?,
        args.size,
        Some(args.frames),
    )
    .with_context(|| format!("cannot read {}", args.input))?;
    let first = input_frames
        .first()
        .with_context(|| format!("{} has no frames", args.input))?;
    let size = first.size();
    let inputs: Vec<Vec<u8>> = input_frames
        .into_iter()
        .map(|f| f.into_rgb())
        .collect::<Result<_, _>>()?;
    let compute = device(&args.device)?;
    let measurer = FrameStabiliser::new(&compute.device, FlowQuality::High)?;
    let input_flicker = flicker_of(&measurer, &inputs, &inputs, size)?;
    let mut report = serde_json::json!({
        "input": args.input,
        "frames": inputs.len(),
        "width_px": size.width_px,
        "height_px": size.height_px,
        "device": format!("{} ({})", compute.backend, compute.adapter),
        "flicker_input": input_flicker,
    });
    let mut rows = vec![("input".to_string(), input_flicker)];
    if let Some(output) = &args.output {
        let output_frames = decode_frames(SourceSpec::parse(output)?, args.size, Some(args.frames))
            .with_context(|| format!("cannot read {output}"))?;
        if output_frames.first().is_some_and(|f| f.size() != size) {
            anyhow::bail!("{output} does not have the input's aspect ratio");
        }
        let outputs: Vec<Vec<u8>> = output_frames
            .into_iter()
            .map(|f| f.into_rgb())
            .collect::<Result<_, _>>()?;
        let value = flicker_of(&measurer, &inputs, &outputs, size)?;
        report["flicker_output"] = value.into();
        rows.push((output.clone(), value));
    } else {
        let model = args.model.clone().unwrap_or_else(default_multistyle_path);
        let stage = StyleStage::load(
            &model,
            compute.clone(),
            StyleSettings {
                style: style.clone(),
            },
        )?;
        let stylised: Vec<Vec<u8>> = inputs
            .iter()
            .map(|rgb| stage.stylize_rgb(rgb, size, &style))
            .collect::<Result<_, _>>()?;
        let live = FrameStabiliser::new(&compute.device, FlowQuality::Fast)?;
        let mut stabilised: Vec<Vec<u8>> = Vec::with_capacity(stylised.len());
        for t in 0..stylised.len() {
            let frame = if t == 0 {
                stylised[0].clone()
            } else {
                live.stabilise(
                    &inputs[t - 1],
                    &stabilised[t - 1],
                    &inputs[t],
                    &stylised[t],
                    size,
                    strength,
                )?
            };
            stabilised.push(frame);
        }
        let plain = flicker_of(&measurer, &inputs, &stylised, size)?;
        let steady = flicker_of(&measurer, &inputs, &stabilised, size)?;
        let difference = mean_abs_difference(&stylised, &stabilised);
        report["style"] = args.style.clone().into();
        report["stabilise"] = f64::from(strength).into();
        report["flicker_stylised"] = plain.into();
        report["flicker_stabilised"] = steady.into();
        report["flicker_reduction"] = (1.0 - steady / plain).into();
        report["mean_abs_difference_stabilised_vs_stylised"] = difference.into();
        rows.push(("stylised".to_string(), plain));
        rows.push((format!("stylised, stabilised {strength}"), steady));
        if !args.json {
            println!(
                "flicker reduction {:.1} %, mean |stabilised - stylised| {difference:.2} (0..255)",
                100.0 * (1.0 - steady / plain)
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} frames of {}x{}; warping error, mean |out_t - warp(out_t-1)| over consistent pixels (0..255):",
            inputs.len(),
            size.width_px,
            size.height_px
        );
        for (name, value) in rows {
            println!("  {name:<32} {value:.3}");
        }
    }
    Ok(())
}
