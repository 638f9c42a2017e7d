//! `streamdiff models`: what a Stable Diffusion model folder or cached repo id holds, read
//! from its configurations and weight-file headers without loading any weights.

use std::path::Path;

use anyhow::Context;
use streamdiff_models::sd::clip::ClipActivation;
use streamdiff_models::sd::pipeline::{
    AutoencoderLayout, LoadOptions, SdLayout, TaesdWeights, WeightFile, WeightSummary,
    WeightVariant, summarize_weights,
};
use streamdiff_models::sd::tokenizer::ClipTokenizer;

/// What to do with models.
#[derive(clap::Subcommand, Debug)]
pub enum ModelsCommand {
    /// Show what a diffusers folder or a repo id in the Hugging Face cache holds: files, data
    /// types, parameter counts, key configuration values.
    Inspect(InspectArgs),
}

/// Arguments of `streamdiff models inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// A diffusers folder, or a repo id (`org/name`) in the Hugging Face cache
    /// ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub).
    model: String,
    /// Which weight files to prefer where both exist: fp32 or fp16.
    #[arg(long, default_value = "fp32")]
    variant: String,
    /// A TAESD (folder or repo id) to use instead of the model's vae/.
    #[arg(long)]
    taesd: Option<String>,
}

pub fn models(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Inspect(args) => inspect(args),
    }
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let variant: WeightVariant = args
        .variant
        .parse()
        .map_err(|err: String| anyhow::anyhow!(err))?;
    let options = LoadOptions {
        variant,
        taesd: args.taesd,
        hf_hub_cache: None,
    };
    let layout = SdLayout::resolve(&args.model, &options)?;
    let root = &layout.root;
    println!("model         {}", root.display());
    if let Some(class) = &layout.pipeline_class {
        println!("pipeline      {class}");
    }

    let unet = &layout.unet_config;
    println!(
        "unet          {}",
        weights_line(root, &layout.unet_weights)?
    );
    let names = |cross: &[bool], with: &str, without: &str| -> String {
        cross
            .iter()
            .map(|&c| if c { with } else { without })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "              down [{}]",
        names(
            &unet.down_cross_attention,
            "CrossAttnDownBlock2D",
            "DownBlock2D"
        )
    );
    println!(
        "              up [{}]",
        names(&unet.up_cross_attention, "CrossAttnUpBlock2D", "UpBlock2D")
    );
    println!(
        "              block_out_channels {:?}, layers_per_block {}, attention heads {:?}, cross_attention_dim {}, linear projection {}, norm groups {}, in/out channels {}/{}",
        unet.block_out_channels,
        unet.layers_per_block,
        unet.attention_heads,
        unet.cross_attention_dim,
        unet.use_linear_projection,
        unet.norm_num_groups,
        unet.in_channels,
        unet.out_channels,
    );

    let text = &layout.text_encoder_config;
    println!(
        "text_encoder  {}",
        weights_line(root, &layout.text_encoder_weights)?
    );
    println!(
        "              hidden_size {}, layers {}, heads {}, hidden_act {}, vocab {}, max positions {}",
        text.hidden_size,
        text.num_hidden_layers,
        text.num_attention_heads,
        match text.hidden_act {
            ClipActivation::QuickGelu => "quick_gelu",
            ClipActivation::Gelu => "gelu",
        },
        text.vocab_size,
        text.max_position_embeddings,
    );

    let tokenizer = ClipTokenizer::from_pretrained(&layout.tokenizer_dir)
        .with_context(|| format!("tokenizer in {}", layout.tokenizer_dir.display()))?;
    println!(
        "tokenizer     {}: vocab {} tokens, pad id {}",
        relative(root, &layout.tokenizer_dir),
        tokenizer.vocab_size(),
        tokenizer.pad_id()
    );

    match &layout.autoencoder {
        AutoencoderLayout::Taesd {
            files,
            from_options,
        } => {
            let source = if *from_options { " (from --taesd)" } else { "" };
            let line = match &files.weights {
                TaesdWeights::Diffusers(file) => weights_line(root, file)?,
                TaesdWeights::Pth { encoder, decoder } => format!(
                    "{} + {}, {}",
                    relative(root, encoder),
                    relative(root, decoder),
                    summary_text(&summarize_weights(&[encoder, decoder])?)
                ),
            };
            println!("vae           TAESD{source}: {line}");
            println!(
                "              latent channels {}, scaling factor {}",
                files.config.latent_channels, files.config.scaling_factor
            );
        }
        AutoencoderLayout::Unsupported { dir, class_name } => println!(
            "vae           {}: {class_name}, not supported (optional; name a TAESD with --taesd)",
            relative(root, dir)
        ),
        AutoencoderLayout::Absent => {
            println!("vae           none (optional; name a TAESD with --taesd)");
        }
    }
    println!("compute       f32 (fp16 files are cast to f32 on load)");
    Ok(())
}

/// `unet/diffusion_pytorch_model.safetensors (fp32 file), F32, 1.23M parameters in 686 tensors`.
fn weights_line(root: &Path, file: &WeightFile) -> anyhow::Result<String> {
    Ok(format!(
        "{} ({} file), {}",
        relative(root, &file.path),
        file.variant,
        summary_text(&summarize_weights(&[&file.path])?)
    ))
}

fn summary_text(summary: &WeightSummary) -> String {
    format!(
        "{}, {} parameters in {} tensors",
        summary.dtypes.join("+"),
        human_count(summary.parameters),
        summary.tensors
    )
}

/// `path` relative to `root` when it is inside it.
fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `865.91M`, `12.3k`, `950`.
fn human_count(count: usize) -> String {
    let value = count as f64;
    if value >= 1e9 {
        format!("{:.2}G", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        count.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::human_count;

    #[test]
    fn counts_are_human_readable() {
        assert_eq!(human_count(950), "950");
        assert_eq!(human_count(12_345), "12.3k");
        assert_eq!(human_count(865_910_724), "865.91M");
        assert_eq!(human_count(2_000_000_000), "2.00G");
    }
}
