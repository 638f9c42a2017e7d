//! Reading weight files (safetensors, PyTorch `.pth`) through burn-store and loading them into
//! burn modules with key remapping.
//!
//! Every loader in [`crate::sd`] goes through [`load_module`]: the file's tensors are read
//! (lazily, memory-mapped for safetensors), renamed by the model's [`KeyRemapper`] rules, adapted
//! from the PyTorch conventions (`Linear` weights transposed, norm `weight`/`bias` taken as
//! `gamma`/`beta`), cast to f32 (fp16 checkpoints), and applied. A tensor the model needs but
//! the file lacks, one the file holds but the model has no place for, a shape or dtype mismatch
//! and a corrupt file are each a [`SdError`] naming the file and the tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Module;
use burn::tensor::{DType, TensorData};
use burn_store::burn_pack::Tensor as PackTensor;
use burn_store::{
    ApplyError, ChainAdapter, FloatCastAdapter, KeyRemapper, ModuleSnapshot, ModuleStore,
    PyTorchToBurnAdapter, PytorchStore, PytorchStoreError, SafetensorsStore, SafetensorsStoreError,
    bridge,
};

use super::SdError;

/// The container formats a checkpoint can come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// A `.safetensors` file (diffusers and transformers folders).
    Safetensors,
    /// A PyTorch `torch.save` zip of a state dict (`.pth`, `.pt`, `.bin`, `.ckpt`).
    Pytorch,
}

impl WeightFormat {
    /// The format a file's extension names.
    pub fn of(path: &Path) -> Result<Self, SdError> {
        match path.extension().and_then(|ext| ext.to_str()) {
            Some("safetensors") => Ok(Self::Safetensors),
            Some("pth" | "pt" | "bin" | "ckpt") => Ok(Self::Pytorch),
            _ => Err(SdError::Corrupt {
                path: path.to_path_buf(),
                reason: "unknown weight format: expected a .safetensors or .pth file".into(),
            }),
        }
    }
}

/// Reads the tensors of a weight file, in the file's own naming, without loading their data.
pub fn read_tensors(path: &Path) -> Result<Vec<PackTensor>, SdError> {
    if !path.is_file() {
        return Err(SdError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    let tensors = match WeightFormat::of(path)? {
        WeightFormat::Safetensors => {
            let mut store = SafetensorsStore::from_file(path);
            store
                .get_all_tensors()
                .map_err(|err| safetensors_error(path, err))?
                .values()
                .cloned()
                .collect()
        }
        WeightFormat::Pytorch => {
            // Keep the state dict's own indices: the TAESD loaders rely on the gaps that
            // `nn.Sequential` leaves for layers without parameters.
            let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
            store
                .get_all_tensors()
                .map_err(|err| pytorch_error(path, err))?
                .values()
                .cloned()
                .collect()
        }
    };
    Ok(tensors)
}

/// Reads every tensor of a file with its data (for inputs and reference outputs in tests and
/// tools; models go through [`load_module`]).
pub fn read_tensor_data(path: &Path) -> Result<BTreeMap<String, TensorData>, SdError> {
    read_tensors(path)?
        .into_iter()
        .map(|tensor| {
            let name = tensor.name.clone();
            let data = bridge::into_data(tensor).map_err(|err| SdError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}` cannot be read: {err}"),
            })?;
            Ok((name, data))
        })
        .collect()
}

/// Loads the weights in `path` into `module`, renaming the file's keys with `remapper`.
///
/// Every parameter of the module must be filled and every tensor of the file used.
pub fn load_module<M: Module>(
    module: M,
    path: &Path,
    remapper: &KeyRemapper,
) -> Result<M, SdError> {
    load_module_ignoring(module, path, remapper, &[])
}

/// [`load_module`], skipping the file's tensors whose names (before remapping) match one of the
/// `ignored` regular expressions: buffers some checkpoints store that are not parameters.
pub fn load_module_ignoring<M: Module>(
    mut module: M,
    path: &Path,
    remapper: &KeyRemapper,
    ignored: &[&str],
) -> Result<M, SdError> {
    let ignored = ignored
        .iter()
        .map(|pattern| regex::Regex::new(pattern))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| SdError::BadConfig {
            path: "<built-in ignored tensors>".into(),
            reason: err.to_string(),
        })?;
    let tensors = read_tensors(path)?
        .into_iter()
        .filter(|tensor| !ignored.iter().any(|re| re.is_match(&tensor.name)))
        .collect();
    let (tensors, names) = remapper.remap(tensors);
    // Errors name tensors as the file does, not after remapping.
    let original: HashMap<String, String> = names.into_iter().collect();
    let file_name = |name: &str| {
        original
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    };

    let adapter = ChainAdapter::new(PyTorchToBurnAdapter, FloatCastAdapter::to(DType::F32));
    let result = module.apply(tensors, None, Some(Box::new(adapter)), false);

    if let Some(error) = result.errors.first() {
        return Err(match error {
            ApplyError::ShapeMismatch {
                path: tensor,
                expected,
                found,
            } => SdError::ShapeMismatch {
                path: path.to_path_buf(),
                tensor: file_name(tensor),
                expected: expected.to_vec(),
                found: found.to_vec(),
            },
            ApplyError::DTypeMismatch {
                path: tensor,
                expected,
                found,
            } => SdError::WrongDtype {
                path: path.to_path_buf(),
                tensor: file_name(tensor),
                expected: format!("{expected:?}"),
                found: format!("{found:?}"),
            },
            ApplyError::AdapterError {
                path: tensor,
                message,
            }
            | ApplyError::LoadError {
                path: tensor,
                message,
            } => SdError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("tensor `{}` cannot be read: {message}", file_name(tensor)),
            },
        });
    }
    if let Some((parameter, _)) = result.missing.first() {
        return Err(SdError::MissingTensor {
            path: path.to_path_buf(),
            parameter: parameter.clone(),
        });
    }
    if let Some(unused) = result.unused.first() {
        return Err(SdError::UnexpectedTensor {
            path: path.to_path_buf(),
            tensor: file_name(unused),
        });
    }
    Ok(module)
}

/// Builds a [`KeyRemapper`] from `(pattern, replacement)` rules, applied in order.
pub fn remapper(rules: &[(String, String)]) -> Result<KeyRemapper, SdError> {
    KeyRemapper::from_patterns(rules.to_vec()).map_err(|err| SdError::BadConfig {
        path: "<built-in key remapping>".into(),
        reason: err.to_string(),
    })
}

fn safetensors_error(path: &Path, err: SafetensorsStoreError) -> SdError {
    match err {
        SafetensorsStoreError::Io(source) => SdError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => SdError::Corrupt {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

fn pytorch_error(path: &Path, err: PytorchStoreError) -> SdError {
    match err {
        PytorchStoreError::Io(source) => SdError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => SdError::Corrupt {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}
