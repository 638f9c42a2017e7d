//! Where frames come from and go to: GStreamer capture, outputs, whole-clip decoding.

pub mod decode;
pub mod sink;
pub mod source;
