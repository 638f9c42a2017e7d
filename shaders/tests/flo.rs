//! The `.flo` codec: round trip, and malformed files give errors.

use streamdiff_shaders::ShaderError;
use streamdiff_shaders::flo::{FlowField, encode_flo, parse_flo, read_flo, write_flo};
use streamdiff_shaders::ops::Size;

fn field() -> FlowField {
    FlowField {
        size: Size::new(3, 2),
        data: vec![
            0.5, -1.0, 2.0, 3.5, -0.25, 0.0, 1.0, 1.0, 7.0, -7.0, 0.125, 9.0,
        ],
    }
}

#[test]
fn round_trip_through_a_file() {
    let path = std::env::temp_dir().join(format!("streamdiff-flo-{}.flo", std::process::id()));
    write_flo(&path, &field()).expect(".flo codec");
    assert_eq!(read_flo(&path).expect(".flo codec"), field());
    std::fs::remove_file(&path).expect(".flo codec");
}

fn reason(bytes: &[u8]) -> String {
    match parse_flo(bytes, "x.flo") {
        Err(ShaderError::Flo { reason, .. }) => reason,
        other => panic!("expected a .flo error, got {other:?}"),
    }
}

#[test]
fn malformed_files_are_errors() {
    let good = encode_flo(&field()).expect(".flo codec");
    assert!(reason(&good[..8]).contains("shorter than the 12-byte header"));
    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'X';
    assert!(reason(&wrong_magic).contains("magic"));
    assert!(reason(&good[..good.len() - 4]).contains("header says 3x2"));
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 8]);
    assert!(reason(&longer).contains("header says 3x2"));
    let mut negative = good.clone();
    negative[4..8].copy_from_slice(&(-3i32).to_le_bytes());
    assert!(reason(&negative).contains("implausible size"));
    let mut huge = good;
    huge[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
    assert!(reason(&huge).contains("implausible size"));
}

#[test]
fn a_missing_file_is_an_io_error() {
    let missing = std::path::Path::new("/nonexistent/flow.flo");
    assert!(matches!(read_flo(missing), Err(ShaderError::Io { .. })));
}

#[test]
fn a_field_of_the_wrong_length_is_not_written() {
    let mut bad = field();
    bad.data.pop();
    assert!(matches!(encode_flo(&bad), Err(ShaderError::Shape(_))));
}
