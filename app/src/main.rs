//! `streamdiff`: real-time AI video stylisation from the command line.
//!
//! `run` takes any source (test pattern, file, URI, webcam) through the style model to a file
//! or a window; `bench` measures the models on the present hardware; `models` inspects Stable
//! Diffusion model folders; `styles` lists presets.

mod bench;
mod flow;
mod models;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Real-time AI video stylisation.
#[derive(Parser, Debug)]
#[command(name = "streamdiff", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stylise a source into a file or a window.
    Run(run::RunArgs),
    /// Measure model speed on this machine; prints a table and writes JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Inspect Stable Diffusion models (diffusers folders, the Hugging Face cache).
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// List the style presets.
    Styles,
    /// Dense optical flow between two frames, as `.flo` and a picture.
    Flow(flow::FlowArgs),
    /// Measure quality: flow accuracy, flicker.
    #[command(subcommand)]
    Eval(flow::EvalCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STREAMDIFF_LOG").unwrap_or_else(
                |_| // wgpu-hal logs adapter probing failures (EGL on headless machines) as errors: noise.
                tracing_subscriber::EnvFilter::new("warn,wgpu_hal=off"),
            ),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Bench(command) => bench::bench(command),
        Command::Models(command) => models::models(command),
        Command::Flow(args) => flow::flow(args),
        Command::Eval(command) => flow::eval(command),
        Command::Styles => {
            for name in streamdiff_models::style::preset_names() {
                println!("{name}");
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            let causes: Vec<String> = err.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", causes.join(": "));
            ExitCode::FAILURE
        }
    }
}
