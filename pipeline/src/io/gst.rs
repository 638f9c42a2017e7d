//! GStreamer helpers shared by capture and outputs: start-up, element creation, error text.

use std::sync::OnceLock;

use gstreamer as gst;

use crate::PipelineError;

/// Initialises GStreamer once, with a clear error if it is missing.
pub fn init_gstreamer() -> Result<(), PipelineError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|err| err.to_string()))
        .clone()
        .map_err(|err| PipelineError::Gstreamer(format!("GStreamer failed to start: {err}")))
}

/// An element of `factory`, or an error saying which plugin is missing.
pub(crate) fn make(factory: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        PipelineError::Gstreamer(format!(
            "GStreamer element `{factory}` is missing; run scripts/setup.sh to install the plugins"
        ))
    })
}

/// A GStreamer failure as a pipeline error.
pub(crate) fn gst_err(err: impl std::fmt::Display) -> PipelineError {
    PipelineError::Gstreamer(err.to_string())
}

/// The first error message waiting on the bus (up to half a second), as one line.
pub(crate) fn first_error(bus: &gst::Bus) -> Option<String> {
    while let Some(message) = bus.timed_pop_filtered(
        gst::ClockTime::from_mseconds(500),
        &[gst::MessageType::Error],
    ) {
        if let gst::MessageView::Error(err) = message.view() {
            return Some(describe_error(err));
        }
    }
    None
}

/// GStreamer's message plus the short debug detail when it says more.
pub fn describe_error(err: &gst::message::Error) -> String {
    let main = err.error().to_string();
    match err.debug() {
        Some(debug) => {
            // The debug string starts with a source-code location; keep only its last line.
            let detail = debug.lines().last().unwrap_or_default().trim().to_string();
            if detail.is_empty() || main.contains(&detail) {
                main
            } else {
                format!("{main} ({detail})")
            }
        }
        None => main,
    }
}
