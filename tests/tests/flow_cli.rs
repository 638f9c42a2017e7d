//! `streamdiff flow`, `eval flow` and `eval flicker` end to end: real Sintel frames and the
//! real clip, and bad input (one `error:` line, non-zero exit, no panic).

use streamdiff_e2e::multistyle_model;
use streamdiff_e2e::{expect_clear_failure, run_streamdiff, temp_dir};
use streamdiff_testkit::{data_file, require};

fn sintel(name: &str) -> Option<String> {
    require(data_file(&format!("flow/sintel/clean/easy/{name}")))
        .map(|p| p.to_str().expect("utf-8 path").to_string())
}

#[test]
fn flow_writes_flo_and_picture_and_eval_reports_epe() {
    let (Some(frame1), Some(frame2), Some(truth)) = (
        sintel("frame_0002.png"),
        sintel("frame_0003.png"),
        sintel("gt/frame_0002.flo"),
    ) else {
        return;
    };
    let dir = temp_dir("flow-cli");
    let flo = dir.join("flow.flo");
    let png = dir.join("flow.png");
    let output = run_streamdiff(&[
        "flow",
        &frame1,
        &frame2,
        "--output",
        flo.to_str().expect("utf-8"),
        "--visualise",
        png.to_str().expect("utf-8"),
        "--device",
        "wgpu",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&flo).expect("flow.flo written");
    assert_eq!(&bytes[..4], b"PIEH");
    assert_eq!(bytes.len(), 12 + 1024 * 436 * 8);
    assert!(std::fs::metadata(&png).expect("flow.png written").len() > 1000);

    let output = run_streamdiff(&["eval", "flow", &frame1, &frame2, &truth, "--device", "wgpu"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let epe = |label: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` in {stdout}"));
        line[label.len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number in {line}"))
    };
    // The masks beside the truth are found; the numbers match the library test.
    assert!(epe("EPE all pixels:") < 0.26, "{stdout}");
    assert!(epe("EPE non-occluded, valid:") < 0.21, "{stdout}");
}

#[test]
fn bad_flow_input_is_one_clear_error() {
    let (Some(frame1), Some(truth)) = (sintel("frame_0002.png"), sintel("gt/frame_0002.flo"))
    else {
        return;
    };
    let dir = temp_dir("flow-cli-bad");
    let out = dir.join("out.flo");
    let out = out.to_str().expect("utf-8");
    expect_clear_failure(
        &["flow", &frame1, "/nonexistent/frame.png", "--output", out],
        "/nonexistent/frame.png",
    );
    let malformed = dir.join("malformed.flo");
    std::fs::write(&malformed, b"PIEH\x04\x00\x00\x00\x04\x00\x00\x00short").expect("write");
    expect_clear_failure(
        &[
            "eval",
            "flow",
            &frame1,
            &frame1,
            malformed.to_str().expect("utf-8"),
        ],
        "header says 4x4",
    );
    // A ground truth of another size than the frames.
    let small = dir.join("small.png");
    let tiny = vec![0u8; 16 * 16 * 3];
    std::fs::write(&small, png_bytes(&tiny, 16, 16)).expect("write png");
    expect_clear_failure(
        &[
            "eval",
            "flow",
            small.to_str().expect("utf-8"),
            small.to_str().expect("utf-8"),
            &truth,
        ],
        "1024x436",
    );
    expect_clear_failure(
        &[
            "flow",
            &frame1,
            small.to_str().expect("utf-8"),
            "--output",
            out,
        ],
        "differ in size",
    );
    expect_clear_failure(
        &[
            "run",
            "--input",
            "test",
            "--output",
            out,
            "--stabilise",
            "1.5",
        ],
        "outside 0.0..=1.0",
    );
}

/// A minimal valid PNG (stored, uncompressed) of packed RGB.
fn png_bytes(rgb: &[u8], width: u32, height: u32) -> Vec<u8> {
    fn crc(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for byte in data {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    0xedb8_8320 ^ (crc >> 1)
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn adler(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for byte in data {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }
    let mut raw = Vec::new();
    for row in rgb.chunks_exact(width as usize * 3) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    let mut zlib = vec![0x78, 0x01, 1];
    let len = raw.len() as u16;
    zlib.extend_from_slice(&len.to_le_bytes());
    zlib.extend_from_slice(&(!len).to_le_bytes());
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&adler(&raw).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc(&body).to_be_bytes());
    };
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &header);
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    png
}

/// Stabilisation at the default strength on the real clip with the default style model:
/// the flicker metric (temporal warping error of the output, flow from the input at the
/// highest quality) falls by at least half, and the stabilised frames stay within a mean
/// absolute difference of 8 (of 255) of the unstabilised ones, so the style is kept.
#[test]
fn stabilisation_halves_flicker_on_the_clip() {
    let Some(clip) = require(data_file("video/bigbuckbunny.mp4")) else {
        return;
    };
    if require(multistyle_model()).is_none() {
        return;
    }
    let output = run_streamdiff(&[
        "eval",
        "flicker",
        clip.to_str().expect("utf-8"),
        "--frames",
        "12",
        "--size",
        "192",
        "--device",
        "wgpu",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    println!("{report}");
    let value = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key}: {report}"))
    };
    assert!(value("flicker_stylised") > value("flicker_input"));
    assert!(
        value("flicker_reduction") >= 0.5,
        "stabilisation lowered flicker by only {:.1} %",
        100.0 * value("flicker_reduction")
    );
    assert!(
        value("mean_abs_difference_stabilised_vs_stylised") < 8.0,
        "{report}"
    );
}
