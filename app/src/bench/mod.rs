//! `streamdiff bench`: model speed on the present hardware, as a table and as JSON. One file
//! per bench; what they share (writing the JSON report, reading results back, parsing lists)
//! is in [`report`].

mod engine;
mod flow;
mod report;
mod style;
mod unet;

/// What to benchmark.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// The default style network: one full frame (upload, network, read back) per iteration.
    Style(style::StyleBenchArgs),
    /// The SD-Turbo-size UNet (random weights) per batch size, TAESD encode/decode at
    /// 512x512, and one convolution and attention call.
    Unet(unet::UnetBenchArgs),
    /// The StreamDiffusion engine's full img2img frame (TAESD encode, Stream Batch UNet with
    /// RCFG, TAESD decode) at SD-Turbo size with random weights, per step count and cfg type.
    Engine(engine::EngineBenchArgs),
    /// Dense optical flow per frame pair at 640x480 and 1024x436, with its EPE.
    Flow(flow::FlowBenchArgs),
}

pub fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Style(args) => style::bench_style(args),
        BenchCommand::Unet(args) => unet::bench_unet(args),
        BenchCommand::Engine(args) => engine::bench_engine(args),
        BenchCommand::Flow(args) => flow::bench_flow(args),
    }
}
