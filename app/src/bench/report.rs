//! What the benches share: the JSON report, reading a result back, list arguments.

use std::path::Path;

use anyhow::Context;
use burn::tensor::Tensor;
use streamdiff_models::device::{BackendChoice, ComputeDevice, open_device};
use streamdiff_models::sd::precision::Precision;

/// Writes a bench report as JSON to `path` (creating its folder), stamped with the time.
pub fn write_report(path: &Path, report: serde_json::Value) -> anyhow::Result<()> {
    store_report(path, report)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// [`write_report`] without the message: for benches that rewrite the file after every row,
/// so a long run that is stopped keeps what it measured.
pub fn store_report(path: &Path, mut report: serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    report["unix_time_s"] = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .into();
    std::fs::write(path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `text`, cut to `max_chars` with an ellipsis.
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_string()
    } else {
        text.chars().take(max_chars - 1).chain(['…']).collect()
    }
}

/// `"debug"` or `"release"`: debug builds are far slower, and every report says which it was.
pub fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Reads a tensor back and checks it is finite (this is what waits for the device).
pub fn finish<const D: usize>(out: Tensor<D>) -> anyhow::Result<()> {
    let data = out
        .try_into_data()
        .map_err(|err| anyhow::anyhow!("the device failed: {err}"))?
        .convert::<f32>();
    let values = data
        .as_slice::<f32>()
        .map_err(|err| anyhow::anyhow!("cannot read the output back: {err:?}"))?;
    anyhow::ensure!(
        values.iter().all(|v| v.is_finite()),
        "the output holds non-finite values"
    );
    Ok(())
}

/// The `--precision` list: at least one of f32, f16.
pub fn precisions(names: &[String]) -> anyhow::Result<Vec<Precision>> {
    let precisions = names
        .iter()
        .map(|name| name.parse::<Precision>())
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        !precisions.is_empty(),
        "--precision needs at least one of f32, f16"
    );
    Ok(precisions)
}

/// The `--device` list, opened: wgpu, flex, auto.
pub fn devices(names: &[String]) -> anyhow::Result<Vec<ComputeDevice>> {
    anyhow::ensure!(!names.is_empty(), "--device needs at least one device");
    names
        .iter()
        .map(|name| Ok(open_device(name.parse::<BackendChoice>()?)?))
        .collect()
}
