//! Middlebury `.flo` files: `PIEH`, width and height as little-endian `i32`, then interleaved
//! little-endian `f32` (u, v) row by row.

use std::path::Path;

use crate::ShaderError;
use crate::ops::Size;

const MAGIC: &[u8; 4] = b"PIEH";
/// Sides beyond this are taken as a corrupt header rather than allocated.
const MAX_SIDE_PX: i32 = 1 << 15;

/// A flow field read from or written to a `.flo` file.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowField {
    /// Its size.
    pub size: Size,
    /// Interleaved (u, v) per pixel, row-major.
    pub data: Vec<f32>,
}

/// Parses the bytes of a `.flo` file; `path` only names it in errors.
pub fn parse_flo(bytes: &[u8], path: &str) -> Result<FlowField, ShaderError> {
    let fail = |reason: String| ShaderError::Flo {
        path: path.to_string(),
        reason,
    };
    if bytes.len() < 12 {
        return Err(fail(format!(
            "not a .flo file: {} bytes, shorter than the 12-byte header",
            bytes.len()
        )));
    }
    if &bytes[0..4] != MAGIC {
        return Err(fail("not a .flo file: the magic is not PIEH".to_string()));
    }
    let read_i32 =
        |at: usize| i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (width, height) = (read_i32(4), read_i32(8));
    if !(1..=MAX_SIDE_PX).contains(&width) || !(1..=MAX_SIDE_PX).contains(&height) {
        return Err(fail(format!(
            "implausible size {width}x{height} in the header"
        )));
    }
    let size = Size::new(width as usize, height as usize);
    let expected = 12 + size.pixels() * 8;
    if bytes.len() != expected {
        return Err(fail(format!(
            "the header says {width}x{height} ({expected} bytes) but the file has {} bytes",
            bytes.len()
        )));
    }
    let data = bytes[12..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(FlowField { size, data })
}

/// Reads a `.flo` file, checking its header against its length.
pub fn read_flo(path: &Path) -> Result<FlowField, ShaderError> {
    let bytes = std::fs::read(path).map_err(|source| ShaderError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_flo(&bytes, &path.display().to_string())
}

/// The bytes of a `.flo` file.
pub fn encode_flo(field: &FlowField) -> Result<Vec<u8>, ShaderError> {
    if field.data.len() != field.size.pixels() * 2 {
        return Err(ShaderError::Shape(format!(
            "flow of {}x{} needs {} values, got {}",
            field.size.width_px,
            field.size.height_px,
            field.size.pixels() * 2,
            field.data.len()
        )));
    }
    let side = |px: usize| {
        i32::try_from(px)
            .ok()
            .filter(|side| *side <= MAX_SIDE_PX)
            .ok_or_else(|| ShaderError::Shape(format!("side of {px} px is too large for .flo")))
    };
    let mut bytes = Vec::with_capacity(12 + field.data.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&side(field.size.width_px)?.to_le_bytes());
    bytes.extend_from_slice(&side(field.size.height_px)?.to_le_bytes());
    for value in &field.data {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    Ok(bytes)
}

/// Writes a `.flo` file.
pub fn write_flo(path: &Path, field: &FlowField) -> Result<(), ShaderError> {
    let bytes = encode_flo(field)?;
    std::fs::write(path, bytes).map_err(|source| ShaderError::Io {
        path: path.display().to_string(),
        source,
    })
}
