//! Test support for streamdiff's crates, used only as a dev-dependency (nothing here ships in
//! a binary, and the source folder baked in below is the test build's own):
//!
//! - the shared test data (`STREAMDIFF_TEST_DATA`, default `../shared/data` from the
//!   workspace root) and installed models: in CI (`CI` set) a missing input fails the test,
//!   elsewhere the test is skipped with a reason ([`require`]);
//! - the committed fixtures ([`sd_fixture`]);
//! - one tolerance check, `|got - expected| <= atol + rtol * |expected|` ([`assert_close`],
//!   [`assert_tensor_close`]), and the whole-tensor check for half precision
//!   ([`assert_close_f16`]).

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};

/// Why something a test needs is not available.
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// Whether we run under CI, where missing test inputs must fail rather than skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The shared test-data folder. Relative defaults are resolved against the workspace root.
pub fn data_dir() -> Result<PathBuf, Unavailable> {
    let dir = match std::env::var_os("STREAMDIFF_TEST_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("../shared/data"),
    };
    if dir.join("README.md").is_file() {
        Ok(dir)
    } else {
        Err(Unavailable(format!(
            "test data folder {} not found (set STREAMDIFF_TEST_DATA)",
            dir.display()
        )))
    }
}

/// A file inside the shared test data.
pub fn data_file(relative: &str) -> Result<PathBuf, Unavailable> {
    let path = data_dir()?.join(relative);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Unavailable(format!(
            "test data file {} not found",
            path.display()
        )))
    }
}

/// An installed file (a model `scripts/setup.sh` fetches), named `what` in the reason.
pub fn installed(path: PathBuf, what: &str) -> Result<PathBuf, Unavailable> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Unavailable(format!(
            "{what} {} not installed (run scripts/setup.sh)",
            path.display()
        )))
    }
}

/// Unwraps a test input, or explains the skip: panics under CI, prints and returns `None` elsewhere.
pub fn require<T>(input: Result<T, Unavailable>) -> Option<T> {
    match input {
        Ok(value) => Some(value),
        Err(Unavailable(reason)) if in_ci() => {
            panic!("required test input missing in CI: {reason}")
        }
        Err(Unavailable(reason)) => {
            eprintln!("SKIPPED: {reason}");
            None
        }
    }
}

/// `models/tests/fixtures/sd/<name>`: the committed Stable Diffusion fixtures.
pub fn sd_fixture(name: &str) -> PathBuf {
    workspace_root().join("models/tests/fixtures/sd").join(name)
}

/// How close a comparison came.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Closeness {
    /// Largest absolute error.
    pub max_abs: f32,
    /// Largest error as a fraction of what was allowed (at most 1 for a pass).
    pub worst_ratio: f32,
}

/// Checks `|got - expected| <= atol + rtol * |expected|` element by element; panics with
/// `what`, the worst element and the bound otherwise (also on a length mismatch or a
/// non-finite value). Prints the figures (shown with `--nocapture`).
pub fn assert_close(what: &str, got: &[f32], expected: &[f32], atol: f32, rtol: f32) -> Closeness {
    assert_eq!(got.len(), expected.len(), "{what}: lengths");
    let mut max_abs = 0.0f32;
    let mut worst = 0.0f32;
    let mut worst_at = 0;
    for (index, (a, b)) in got.iter().zip(expected).enumerate() {
        assert!(a.is_finite(), "{what}: non-finite value at {index}");
        let error = (a - b).abs();
        max_abs = max_abs.max(error);
        let allowed = atol + rtol * b.abs();
        let ratio = if allowed > 0.0 {
            error / allowed
        } else if error > 0.0 {
            f32::INFINITY
        } else {
            0.0
        };
        if ratio > worst {
            worst = ratio;
            worst_at = index;
        }
    }
    eprintln!("{what}: max abs error {max_abs:.3e}, worst error/allowed {worst:.3}");
    assert!(
        worst <= 1.0,
        "{what}: element {worst_at} is {} but expected {} (|err| {max_abs:.3e} > {atol} + {rtol}*|expected|)",
        got[worst_at],
        expected[worst_at]
    );
    Closeness {
        max_abs,
        worst_ratio: worst,
    }
}

/// The values of `got` and `expected` as `f32`s, after checking the shapes match.
fn values<const D: usize>(
    what: &str,
    got: Tensor<D>,
    expected: &TensorData,
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(
        got.dims().to_vec(),
        expected.shape().to_vec(),
        "{what}: shape"
    );
    let got = got
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32");
    let expected = expected
        .clone()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32");
    (got, expected)
}

/// [`assert_close`] for a tensor against fixture data of the same shape.
pub fn assert_tensor_close<const D: usize>(
    what: &str,
    got: Tensor<D>,
    expected: &TensorData,
    atol: f32,
    rtol: f32,
) -> Closeness {
    let (got, expected) = values(what, got, expected);
    assert_close(what, &got, &expected, atol, rtol)
}

/// The half-precision check: f16 keeps ~3 significant digits per operation and burn's f16
/// kernels may accumulate in f16, so single elements near zero can be off by more than an
/// element-wise relative bound allows. Bounds the error of the whole tensor instead: relative
/// L2 error `|got - expected| / |expected|` at most `max_relative_l2`, and every element within
/// `max_range_fraction` of the largest magnitude of `expected`. Returns the relative L2 error.
pub fn assert_close_f16<const D: usize>(
    what: &str,
    got: Tensor<D>,
    expected: &TensorData,
    max_relative_l2: f64,
    max_range_fraction: f32,
) -> f64 {
    let (got, expected) = values(what, got, expected);
    let range = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (mut error_sq, mut norm_sq, mut max_abs) = (0.0f64, 0.0f64, 0.0f32);
    for (a, b) in got.iter().zip(&expected) {
        assert!(a.is_finite(), "{what}: non-finite value");
        error_sq += f64::from(a - b).powi(2);
        norm_sq += f64::from(*b).powi(2);
        max_abs = max_abs.max((a - b).abs());
    }
    let relative_l2 = (error_sq / norm_sq.max(f64::MIN_POSITIVE)).sqrt();
    eprintln!(
        "{what}: relative L2 error {relative_l2:.3e}, max abs error {max_abs:.3e} of range {range:.3}"
    );
    assert!(
        relative_l2 <= max_relative_l2,
        "{what}: relative L2 error {relative_l2:.3e} > {max_relative_l2:e}"
    );
    assert!(
        max_abs <= max_range_fraction * range,
        "{what}: max abs error {max_abs:.3e} > {max_range_fraction} x {range:.3}"
    );
    relative_l2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tolerance_is_absolute_plus_relative() {
        let close = assert_close("within", &[1.0, 100.5], &[1.0005, 100.0], 1e-3, 1e-2);
        assert!(close.worst_ratio <= 1.0 && close.max_abs > 0.4);
        let exact = assert_close("exact", &[0.0], &[0.0], 0.0, 0.0);
        assert_eq!(exact.worst_ratio, 0.0);
    }

    #[test]
    #[should_panic(expected = "element 1")]
    fn a_value_outside_the_bound_fails() {
        assert_close("outside", &[1.0, 2.5], &[1.0, 2.0], 1e-3, 1e-2);
    }

    #[test]
    #[should_panic(expected = "lengths")]
    fn lengths_must_match() {
        assert_close("lengths", &[1.0], &[1.0, 2.0], 1.0, 0.0);
    }
}
