//! Where frames come from and go to: GStreamer capture ([`source`]), outputs behind the
//! [`sink::FrameSink`] trait ([`sink`]), whole-clip decoding for the evaluation tools
//! ([`decode`]) and the GStreamer helpers they share ([`gst`]).

pub mod decode;
pub mod gst;
pub mod sink;
pub mod source;
