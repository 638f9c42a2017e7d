//! Live control: settings that front-ends change while frames flow.
//!
//! Every stage keeps its changeable settings in a [`Live`] handle and reads them once per frame,
//! so a change applies at the next frame boundary and no frame waits. [`FrameStage::controls`]
//! hands the handles out as [`StageControls`]; a wrapping stage merges its own with its inner
//! stage's, so a controller reaches every setting of a boxed, wrapped stage.
//!
//! Settings types implement [`Validate`]; [`Live::try_update`] applies a change only when the
//! result is valid, which is what a GUI field, an element property or an HTTP `PATCH` needs.
//!
//! [`FrameStage::controls`]: crate::stage::FrameStage::controls

use std::sync::{Arc, Mutex, MutexGuard};

use super::engine::settings::EngineSettings;
use super::engine::stage::EngineStats;
use super::stabilise::StabiliseSettings;
use super::style::StyleSettings;

/// A value shared between a running stage and its controllers.
///
/// Cloning gives another handle to the same value. A panic in a thread holding the lock does
/// not poison it for the others: settings are plain data, always whole.
pub struct Live<T>(Arc<Mutex<T>>);

impl<T> Live<T> {
    /// A new shared value.
    pub fn new(value: T) -> Self {
        Self(Arc::new(Mutex::new(value)))
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        // The one place of the workspace that recovers a poisoned lock: see the type's docs.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        *self.lock() = value;
    }

    /// Changes the value in place and returns what `change` returns.
    pub fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        change(&mut self.lock())
    }

    /// Reads part of the value without copying all of it.
    pub fn read<R>(&self, look: impl FnOnce(&T) -> R) -> R {
        look(&self.lock())
    }

    /// Whether two handles share one value.
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T: Clone> Live<T> {
    /// A copy of the value.
    pub fn get(&self) -> T {
        self.lock().clone()
    }
}

impl<T: Clone + Validate> Live<T> {
    /// Applies `change` to a copy, and stores the copy only when it is valid: on an error
    /// nothing changes.
    pub fn try_update(&self, change: impl FnOnce(&mut T)) -> Result<(), SettingsError> {
        let mut guard = self.lock();
        let mut candidate = guard.clone();
        change(&mut candidate);
        candidate.validate()?;
        *guard = candidate;
        Ok(())
    }

    /// Replaces the value when it is valid.
    pub fn try_set(&self, value: T) -> Result<(), SettingsError> {
        value.validate()?;
        self.set(value);
        Ok(())
    }
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Default> Default for Live<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Live").field(&*self.lock()).finish()
    }
}

/// Settings that can check themselves, so every front-end validates the same way.
pub trait Validate {
    /// Whether the settings can be applied; the error names the first bad value.
    fn validate(&self) -> Result<(), SettingsError>;
}

/// A setting with a value streamdiff cannot apply.
///
/// Each message starts with the setting's name as the command line spells it, so a front-end
/// can prefix its own syntax (`--` for flags) or use the text as it is.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// Guidance scale negative or not finite.
    #[error("guidance {0} must be a number >= 0")]
    Guidance(f32),
    /// RCFG delta not finite.
    #[error("delta {0} must be a number")]
    Delta(f32),
    /// No denoising step.
    #[error("t-index needs at least one index")]
    EmptyTIndexList,
    /// A step index past the end of the schedule.
    #[error("t-index {index} is out of range: the schedule has {steps} steps (0..={last})", last = steps - 1)]
    TIndexOutOfRange {
        /// The index given.
        index: usize,
        /// Steps of the schedule.
        steps: usize,
    },
    /// An unknown residual-CFG variant.
    #[error("cfg `{0}`: unknown cfg type; use none, full, self or initialize")]
    CfgType(String),
    /// Similarity-filter threshold outside 0..=1.
    #[error("ssf {0} must be in 0..=1")]
    SsfThreshold(f64),
    /// Stabilisation strength outside 0..=1.
    #[error("stabilise strength {0} is outside 0.0..=1.0")]
    StabiliseStrength(f32),
    /// A number that does not parse.
    #[error("{setting} `{text}` is not a number")]
    NotANumber {
        /// The setting.
        setting: &'static str,
        /// What was given.
        text: String,
    },
    /// A processing size outside what the pipeline accepts.
    #[error("size {size_px} is out of range ({min_px}..={max_px} px)")]
    Size {
        /// The size given (longer side).
        size_px: usize,
        /// Smallest accepted.
        min_px: usize,
        /// Largest accepted.
        max_px: usize,
    },
}

/// The live settings of a stage, whichever it has. A wrapper's own handles come first, then
/// those of the stage it wraps ([`StageControls::merged_with`]).
#[derive(Clone, Debug, Default)]
pub struct StageControls {
    /// The style network's settings.
    pub style: Option<Live<StyleSettings>>,
    /// The StreamDiffusion engine's settings.
    pub engine: Option<Live<EngineSettings>>,
    /// The stabiliser's settings.
    pub stabilise: Option<Live<StabiliseSettings>>,
}

impl StageControls {
    /// These handles, with `inner`'s filling the ones these lack.
    pub fn merged_with(self, inner: StageControls) -> Self {
        Self {
            style: self.style.or(inner.style),
            engine: self.engine.or(inner.engine),
            stabilise: self.stabilise.or(inner.stabilise),
        }
    }
}

/// What a stage reports about its own work, read by the runner after each frame.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct StageStats {
    /// The StreamDiffusion engine's counters, when the stage is or wraps the engine.
    pub engine: Option<EngineStats>,
}

impl StageStats {
    /// These stats, with `inner`'s filling the ones these lack.
    pub fn merged_with(self, inner: StageStats) -> Self {
        Self {
            engine: self.engine.or(inner.engine),
        }
    }

    /// Frames answered without running the model (the similarity filter's skips).
    pub fn frames_skipped(&self) -> u64 {
        self.engine.as_ref().map_or(0, |engine| engine.ssf.skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Strength(f32);

    impl Validate for Strength {
        fn validate(&self) -> Result<(), SettingsError> {
            if (0.0..=1.0).contains(&self.0) {
                Ok(())
            } else {
                Err(SettingsError::StabiliseStrength(self.0))
            }
        }
    }

    #[test]
    fn handles_share_one_value() {
        let live = Live::new(Strength(0.5));
        let other = live.clone();
        other.set(Strength(0.25));
        assert_eq!(live.get(), Strength(0.25));
        assert_eq!(live.update(|s| std::mem::replace(&mut s.0, 0.75)), 0.25);
        assert_eq!(other.read(|s| s.0), 0.75);
        assert!(live.same_as(&other));
        assert!(!live.same_as(&Live::new(Strength(0.75))));
    }

    #[test]
    fn invalid_changes_leave_the_value_alone() {
        let live = Live::new(Strength(0.5));
        assert_eq!(
            live.try_update(|s| s.0 = 2.0),
            Err(SettingsError::StabiliseStrength(2.0))
        );
        assert_eq!(live.get(), Strength(0.5));
        assert!(live.try_set(Strength(-1.0)).is_err());
        live.try_update(|s| s.0 = 1.0).expect("valid");
        assert_eq!(live.get(), Strength(1.0));
    }

    #[test]
    fn a_panic_while_holding_the_lock_does_not_poison_it() {
        let live = Live::new(Strength(0.5));
        let other = live.clone();
        let _ = std::thread::spawn(move || {
            other.update(|s| {
                s.0 = 0.125;
                panic!("a controller failed");
            })
        })
        .join();
        assert_eq!(live.get(), Strength(0.125));
        live.set(Strength(0.5));
        assert_eq!(live.get(), Strength(0.5));
    }

    #[test]
    fn a_wrapper_keeps_its_own_handles_and_adds_the_inner_ones() {
        let outer = StageControls {
            stabilise: Some(Live::new(StabiliseSettings::default())),
            ..StageControls::default()
        };
        let inner = StageControls {
            style: Some(Live::new(StyleSettings::default())),
            stabilise: Some(Live::new(StabiliseSettings { strength: 0.1 })),
            ..StageControls::default()
        };
        let merged = outer.clone().merged_with(inner);
        assert!(merged.style.is_some());
        assert!(merged.engine.is_none());
        let (mine, merged) = (
            outer.stabilise.expect("own"),
            merged.stabilise.expect("own"),
        );
        assert!(mine.same_as(&merged), "the wrapper's own handle wins");
    }
}
