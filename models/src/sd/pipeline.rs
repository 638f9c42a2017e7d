//! A whole Stable Diffusion model from a diffusers folder or from the local Hugging Face cache:
//! [`StableDiffusion::from_pretrained`].
//!
//! What is accepted, offline (nothing is downloaded):
//!
//! - a diffusers folder: `model_index.json`, `unet/`, `text_encoder/`, `tokenizer/`, and
//!   optionally `vae/` (loaded when it is a TAESD, `AutoencoderTiny`; SD's `AutoencoderKL` is
//!   not implemented, so it is reported and left out);
//! - a repo id such as `stabilityai/sd-turbo`, looked up in the Hugging Face cache
//!   (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`) as
//!   `models--ORG--NAME/snapshots/<REV>/`, `REV` being `refs/main` when present, else the newest
//!   snapshot.
//!
//! Weight files are `diffusion_pytorch_model.safetensors` (UNet, VAE) and `model.safetensors`
//! (text encoder), or their `.fp16.safetensors` variants: [`LoadOptions::variant`] says which
//! is preferred, and the other is taken, with a log line, when only it is there. Both load into
//! f32 parameters (burn-store casts on load); **compute is f32 only**.
//!
//! A TAESD named in [`LoadOptions::taesd`] (a diffusers `AutoencoderTiny` folder, a folder with
//! `taesd_encoder.pth` and `taesd_decoder.pth`, or a repo id) is used instead of `vae/`.
//!
//! [`SdLayout::resolve`] finds every file and reads the configurations without loading any
//! weights (what `streamdiff models inspect` shows); [`StableDiffusion::load`] then loads them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::SdError;
use super::clip::{ClipTextConfig, ClipTextModel};
use super::precision::{Precision, cast_module};
use super::taesd::{Taesd, TaesdConfig};
use super::tokenizer::ClipTokenizer;
use super::unet::{UNet2DConditionModel, UNetConfig};
use super::weights::read_tensors;

/// Which weight files to prefer where a component folder has both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightVariant {
    /// `*.safetensors` (full precision).
    #[default]
    Fp32,
    /// `*.fp16.safetensors` (half the size on disk; loaded into f32 all the same).
    Fp16,
}

impl WeightVariant {
    /// The other variant, the fallback.
    fn other(self) -> Self {
        match self {
            Self::Fp32 => Self::Fp16,
            Self::Fp16 => Self::Fp32,
        }
    }

    /// The weight file name of this variant for a file stem (`model`, `diffusion_pytorch_model`).
    fn file_name(self, stem: &str) -> String {
        match self {
            Self::Fp32 => format!("{stem}.safetensors"),
            Self::Fp16 => format!("{stem}.fp16.safetensors"),
        }
    }
}

impl std::fmt::Display for WeightVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
        })
    }
}

impl std::str::FromStr for WeightVariant {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "fp32" | "f32" => Ok(Self::Fp32),
            "fp16" | "f16" => Ok(Self::Fp16),
            other => Err(format!(
                "unknown weight variant `{other}`; use fp32 or fp16"
            )),
        }
    }
}

/// How [`StableDiffusion::from_pretrained`] finds and loads a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Which weight files to prefer (the other variant is the fallback).
    pub variant: WeightVariant,
    /// A TAESD to use instead of the model's `vae/`: a diffusers `AutoencoderTiny` folder, a
    /// folder with `taesd_encoder.pth` and `taesd_decoder.pth`, or a repo id in the cache.
    pub taesd: Option<String>,
    /// The Hugging Face hub cache to look repo ids up in; `None` reads the environment
    /// ([`default_hub_cache`]).
    pub hf_hub_cache: Option<PathBuf>,
}

/// The Hugging Face hub cache named by an environment: `HF_HUB_CACHE`, else `HF_HOME/hub`,
/// else `HOME/.cache/huggingface/hub`. `None` when none of them is set.
pub fn hub_cache_from(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |key: &str| {
        env(key)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    set("HF_HUB_CACHE")
        .or_else(|| set("HF_HOME").map(|home| home.join("hub")))
        .or_else(|| set("HOME").map(|home| home.join(".cache/huggingface/hub")))
}

/// The Hugging Face hub cache of this process's environment (see [`hub_cache_from`]).
pub fn default_hub_cache() -> Option<PathBuf> {
    hub_cache_from(|key| std::env::var_os(key))
}

/// Whether `text` has the shape of a hub repo id, `org/name` (letters, digits, `-`, `_`, `.`).
pub fn is_repo_id(text: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match text.split_once('/') {
        Some((org, name)) => part(org) && part(name),
        None => false,
    }
}

/// Finds the folder `spec` names: an existing folder, else a repo id's snapshot in the hub
/// cache (`hub_cache`, or the environment's when `None`).
pub fn resolve_location(spec: &str, hub_cache: Option<&Path>) -> Result<PathBuf, SdError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(SdError::NotAModel {
            path: path.to_path_buf(),
            reason: "it is a file; give the model's folder".into(),
        });
    }
    if !is_repo_id(spec) {
        return Err(SdError::MissingFolder {
            path: path.to_path_buf(),
        });
    }
    let cache = match hub_cache {
        Some(cache) => cache.to_path_buf(),
        None => default_hub_cache().ok_or_else(|| SdError::NotInCache {
            repo_id: spec.to_owned(),
            looked_in: PathBuf::from("$HF_HUB_CACHE (HF_HUB_CACHE, HF_HOME and HOME are unset)"),
        })?,
    };
    snapshot_dir(&cache, spec)
}

/// `cache/models--ORG--NAME/snapshots/<REV>`, `REV` from `refs/main`, else the newest snapshot.
fn snapshot_dir(cache: &Path, repo_id: &str) -> Result<PathBuf, SdError> {
    let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let not_found = |looked_in: PathBuf| SdError::NotInCache {
        repo_id: repo_id.to_owned(),
        looked_in,
    };
    if !repo_dir.is_dir() {
        return Err(not_found(repo_dir));
    }
    let snapshots = repo_dir.join("snapshots");
    if let Ok(revision) = std::fs::read_to_string(repo_dir.join("refs/main")) {
        let snapshot = snapshots.join(revision.trim());
        return if snapshot.is_dir() {
            Ok(snapshot)
        } else {
            Err(not_found(snapshot))
        };
    }
    let newest = std::fs::read_dir(&snapshots)
        .map_err(|_| not_found(snapshots.clone()))?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .max_by_key(|entry| entry.metadata().and_then(|m| m.modified()).ok());
    match newest {
        Some(entry) => Ok(entry.path()),
        None => Err(not_found(snapshots)),
    }
}

/// A weight file that was found, and which variant it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightFile {
    /// The file.
    pub path: PathBuf,
    /// fp32 (`*.safetensors`) or fp16 (`*.fp16.safetensors`), by its name.
    pub variant: WeightVariant,
}

/// The weight file of a component folder: `stem.safetensors` or `stem.fp16.safetensors`,
/// `preferred` first; taking the other is logged.
pub fn find_weight_file(
    dir: &Path,
    stem: &str,
    preferred: WeightVariant,
) -> Result<WeightFile, SdError> {
    for variant in [preferred, preferred.other()] {
        let path = dir.join(variant.file_name(stem));
        if path.is_file() {
            if variant != preferred {
                tracing::info!(
                    "no {preferred} weights in {}: loading {} instead",
                    dir.display(),
                    path.display()
                );
            }
            return Ok(WeightFile { path, variant });
        }
    }
    Err(SdError::MissingWeights {
        dir: dir.to_path_buf(),
        expected: format!(
            "{} or {}",
            preferred.file_name(stem),
            preferred.other().file_name(stem)
        ),
    })
}

/// Where a TAESD's weights are.
#[derive(Clone, Debug)]
pub enum TaesdWeights {
    /// A diffusers `AutoencoderTiny` weight file.
    Diffusers(WeightFile),
    /// The original state dicts.
    Pth {
        /// `taesd_encoder.pth`.
        encoder: PathBuf,
        /// `taesd_decoder.pth`.
        decoder: PathBuf,
    },
}

/// A TAESD found on disk: its folder, configuration and weights.
#[derive(Clone, Debug)]
pub struct TaesdFiles {
    /// The folder.
    pub dir: PathBuf,
    /// The configuration (`config.json`, or the standard TAESD one for a bare `.pth` pair).
    pub config: TaesdConfig,
    /// The weight files.
    pub weights: TaesdWeights,
}

impl TaesdFiles {
    /// Reads a TAESD folder: diffusers (`config.json` and `diffusion_pytorch_model*.safetensors`)
    /// or the original `taesd_encoder.pth` and `taesd_decoder.pth`, shaped by `config.json` when
    /// there is one and as the standard TAESD otherwise.
    pub fn resolve(dir: &Path, variant: WeightVariant) -> Result<Self, SdError> {
        if !dir.is_dir() {
            return Err(SdError::MissingFolder {
                path: dir.to_path_buf(),
            });
        }
        let config_path = dir.join("config.json");
        let config = if config_path.is_file() {
            TaesdConfig::from_diffusers_json(&config_path)?
        } else {
            TaesdConfig::new()
        };
        let encoder = dir.join("taesd_encoder.pth");
        let decoder = dir.join("taesd_decoder.pth");
        let has_diffusers_weights = [WeightVariant::Fp32, WeightVariant::Fp16]
            .iter()
            .any(|v| dir.join(v.file_name("diffusion_pytorch_model")).is_file());
        if config_path.is_file() && (has_diffusers_weights || !encoder.is_file()) {
            return Ok(Self {
                dir: dir.to_path_buf(),
                config,
                weights: TaesdWeights::Diffusers(find_weight_file(
                    dir,
                    "diffusion_pytorch_model",
                    variant,
                )?),
            });
        }
        if encoder.is_file() && decoder.is_file() {
            return Ok(Self {
                dir: dir.to_path_buf(),
                config,
                weights: TaesdWeights::Pth { encoder, decoder },
            });
        }
        Err(SdError::NotAModel {
            path: dir.to_path_buf(),
            reason: "no TAESD in it: expected config.json with diffusion_pytorch_model.safetensors, or taesd_encoder.pth and taesd_decoder.pth".into(),
        })
    }

    /// Loads the autoencoder.
    pub fn load(&self, device: &Device) -> Result<Taesd, SdError> {
        match &self.weights {
            TaesdWeights::Diffusers(file) => Taesd::from_file(&file.path, &self.config, device),
            TaesdWeights::Pth { encoder, decoder } => {
                Taesd::from_pth(encoder, decoder, &self.config, device)
            }
        }
    }
}

/// The autoencoder a model folder offers.
#[derive(Clone, Debug)]
pub enum AutoencoderLayout {
    /// A TAESD, from `vae/` or from [`LoadOptions::taesd`].
    Taesd {
        /// Its files.
        files: TaesdFiles,
        /// Whether it was named in the options rather than found in `vae/`.
        from_options: bool,
    },
    /// `vae/` holds an autoencoder this crate does not implement (SD's `AutoencoderKL`).
    Unsupported {
        /// The `vae/` folder.
        dir: PathBuf,
        /// Its `_class_name`.
        class_name: String,
    },
    /// No `vae/` folder and no TAESD option.
    Absent,
}

/// Every file of a Stable Diffusion model and its configurations, found without loading any
/// weights.
#[derive(Clone, Debug)]
pub struct SdLayout {
    /// The resolved model folder (a snapshot for repo ids).
    pub root: PathBuf,
    /// `_class_name` of `model_index.json` (`StableDiffusionPipeline`, ...), when given.
    pub pipeline_class: Option<String>,
    /// `unet/config.json`.
    pub unet_config: UNetConfig,
    /// The UNet's weights.
    pub unet_weights: WeightFile,
    /// `text_encoder/config.json`.
    pub text_encoder_config: ClipTextConfig,
    /// The text encoder's weights.
    pub text_encoder_weights: WeightFile,
    /// `tokenizer/`.
    pub tokenizer_dir: PathBuf,
    /// The autoencoder.
    pub autoencoder: AutoencoderLayout,
}

impl SdLayout {
    /// Finds the model `spec` names (a folder or a repo id) and reads its configurations.
    pub fn resolve(spec: &str, options: &LoadOptions) -> Result<Self, SdError> {
        let root = resolve_location(spec, options.hf_hub_cache.as_deref())?;
        let index_path = root.join("model_index.json");
        if !index_path.is_file() {
            return Err(SdError::NotAModel {
                path: root,
                reason: "no model_index.json (a diffusers pipeline folder has one)".into(),
            });
        }
        let index_text = std::fs::read_to_string(&index_path).map_err(|source| SdError::Io {
            path: index_path.clone(),
            source,
        })?;
        let index: serde_json::Value =
            serde_json::from_str(&index_text).map_err(|err| SdError::BadConfig {
                path: index_path.clone(),
                reason: err.to_string(),
            })?;
        let pipeline_class = index["_class_name"].as_str().map(str::to_owned);

        let component = |name: &str| {
            let dir = root.join(name);
            if dir.is_dir() {
                Ok(dir)
            } else {
                Err(SdError::MissingComponent {
                    root: root.clone(),
                    component: name.to_owned(),
                })
            }
        };
        let unet_dir = component("unet")?;
        let text_encoder_dir = component("text_encoder")?;
        let tokenizer_dir = component("tokenizer")?;

        let unet_config = UNetConfig::from_diffusers_json(&unet_dir.join("config.json"))?;
        let unet_weights = find_weight_file(&unet_dir, "diffusion_pytorch_model", options.variant)?;
        let text_encoder_config =
            ClipTextConfig::from_transformers_json(&text_encoder_dir.join("config.json"))?;
        let text_encoder_weights = find_weight_file(&text_encoder_dir, "model", options.variant)?;

        let autoencoder = match &options.taesd {
            Some(taesd) => {
                let dir = resolve_location(taesd, options.hf_hub_cache.as_deref())?;
                AutoencoderLayout::Taesd {
                    files: TaesdFiles::resolve(&dir, options.variant)?,
                    from_options: true,
                }
            }
            None => vae_layout(&root.join("vae"), options.variant)?,
        };
        Ok(Self {
            root,
            pipeline_class,
            unet_config,
            unet_weights,
            text_encoder_config,
            text_encoder_weights,
            tokenizer_dir,
            autoencoder,
        })
    }
}

/// What `vae/` holds: a TAESD, another autoencoder, or nothing.
fn vae_layout(dir: &Path, variant: WeightVariant) -> Result<AutoencoderLayout, SdError> {
    if !dir.is_dir() {
        return Ok(AutoencoderLayout::Absent);
    }
    let config_path = dir.join("config.json");
    let text = super::read_text(&config_path)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| SdError::BadConfig {
            path: config_path.clone(),
            reason: err.to_string(),
        })?;
    match json["_class_name"].as_str() {
        Some("AutoencoderTiny") => Ok(AutoencoderLayout::Taesd {
            files: TaesdFiles::resolve(dir, variant)?,
            from_options: false,
        }),
        other => Ok(AutoencoderLayout::Unsupported {
            dir: dir.to_path_buf(),
            class_name: other.unwrap_or("(no _class_name)").to_owned(),
        }),
    }
}

/// A loaded Stable Diffusion model: tokenizer, text encoder, UNet and (when there is one we
/// can run) the TAESD autoencoder. Parameters load as f32 whatever the files hold;
/// [`StableDiffusion::with_precision`] casts the UNet and the autoencoder to f16.
#[derive(Debug)]
pub struct StableDiffusion {
    /// Where every component came from.
    pub layout: SdLayout,
    /// The CLIP tokenizer.
    pub tokenizer: ClipTokenizer,
    /// The CLIP text encoder.
    pub text_encoder: ClipTextModel,
    /// The denoiser.
    pub unet: UNet2DConditionModel,
    /// The autoencoder, `None` when the model has none we can run (see [`SdLayout`]).
    pub autoencoder: Option<Taesd>,
}

impl StableDiffusion {
    /// Finds the model (a diffusers folder or a repo id in the Hugging Face cache) and loads it
    /// onto `device`.
    pub fn from_pretrained(
        path_or_repo_id: &str,
        options: &LoadOptions,
        device: &Device,
    ) -> Result<Self, SdError> {
        Self::load(SdLayout::resolve(path_or_repo_id, options)?, device)
    }

    /// Loads the components of a resolved layout onto `device`.
    pub fn load(layout: SdLayout, device: &Device) -> Result<Self, SdError> {
        let tokenizer = ClipTokenizer::from_pretrained(&layout.tokenizer_dir)?;
        let text_encoder = ClipTextModel::from_file(
            &layout.text_encoder_weights.path,
            &layout.text_encoder_config,
            device,
        )?;
        let unet = UNet2DConditionModel::from_file(
            &layout.unet_weights.path,
            &layout.unet_config,
            device,
        )?;
        let autoencoder = match &layout.autoencoder {
            AutoencoderLayout::Taesd { files, .. } => Some(files.load(device)?),
            AutoencoderLayout::Unsupported { dir, class_name } => {
                tracing::warn!(
                    "{} holds a {class_name}, which streamdiff does not implement; name a TAESD to encode and decode images",
                    dir.display()
                );
                None
            }
            AutoencoderLayout::Absent => None,
        };
        Ok(Self {
            layout,
            tokenizer,
            text_encoder,
            unet,
            autoencoder,
        })
    }

    /// The model with the UNet and the autoencoder computing in `precision` (inputs and
    /// outputs keep the caller's dtype). The text encoder stays f32: it runs once per prompt,
    /// off the per-frame path, and its output conditions every frame.
    pub fn with_precision(self, precision: Precision) -> Self {
        Self {
            unet: cast_module(self.unet, precision),
            autoencoder: self
                .autoencoder
                .map(|autoencoder| cast_module(autoencoder, precision)),
            ..self
        }
    }
}

/// What a weight file holds, read from its header: tensors, parameters, data types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightSummary {
    /// Tensors in the file.
    pub tensors: usize,
    /// Values over all tensors.
    pub parameters: usize,
    /// The data types present (`F32`, `F16`, ...), sorted, each once.
    pub dtypes: Vec<String>,
}

/// Reads what the weight files hold without loading their data (summed over `paths`).
pub fn summarize_weights(paths: &[impl AsRef<Path>]) -> Result<WeightSummary, SdError> {
    let mut summary = WeightSummary {
        tensors: 0,
        parameters: 0,
        dtypes: Vec::new(),
    };
    for path in paths {
        for tensor in read_tensors(path.as_ref())? {
            summary.tensors += 1;
            summary.parameters += tensor.shape.num_elements();
            let dtype = format!("{:?}", tensor.dtype);
            if !summary.dtypes.contains(&dtype) {
                summary.dtypes.push(dtype);
            }
        }
    }
    summary.dtypes.sort();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_cache_follows_hugging_face_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let all = env(&[("HF_HUB_CACHE", "/a"), ("HF_HOME", "/b"), ("HOME", "/c")]);
        assert_eq!(hub_cache_from(all), Some(PathBuf::from("/a")));
        let home = env(&[("HF_HUB_CACHE", ""), ("HF_HOME", "/b"), ("HOME", "/c")]);
        assert_eq!(hub_cache_from(home), Some(PathBuf::from("/b/hub")));
        let user = env(&[("HOME", "/c")]);
        assert_eq!(
            hub_cache_from(user),
            Some(PathBuf::from("/c/.cache/huggingface/hub"))
        );
        assert_eq!(hub_cache_from(env(&[])), None);
    }

    #[test]
    fn repo_ids_are_told_from_paths() {
        assert!(is_repo_id("stabilityai/sd-turbo"));
        assert!(is_repo_id("madebyollin/taesd.v2"));
        for path in ["/abs/dir", "./dir/x", "a/b/c", "name", "../x", "a/"] {
            assert!(!is_repo_id(path), "{path}");
        }
    }

    #[test]
    fn weight_variants_parse_and_name_files() {
        assert_eq!("fp16".parse(), Ok(WeightVariant::Fp16));
        assert_eq!("fp32".parse(), Ok(WeightVariant::Fp32));
        assert!("bf16".parse::<WeightVariant>().is_err());
        assert_eq!(
            WeightVariant::Fp16.file_name("model"),
            "model.fp16.safetensors"
        );
    }
}
