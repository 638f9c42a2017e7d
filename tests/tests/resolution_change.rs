//! A source that changes resolution mid-stream keeps flowing through `streamdiff run`: an
//! MPEG-TS of 320x240 frames followed by 640x360 frames (made here with GStreamer's `concat`)
//! gives a file with every frame, all at the first frame's processing size, the later 16:9
//! frames letterboxed into it (black bars above and below, the picture between). Two outputs
//! at once (a file and a second file): both get every frame.

use std::path::Path;

use streamdiff_e2e::{DecodedFrame, decode_video, run_streamdiff, temp_dir};
use streamdiff_testkit as testkit;
use streamdiff_types::FrameSize;

const FIRST: FrameSize = FrameSize::new(320, 240);
const SECOND: FrameSize = FrameSize::new(640, 360);
const FRAMES_EACH: usize = 15;
const SIZE_PX: usize = 128;

/// `FRAMES_EACH` frames at `FIRST`, then as many at `SECOND`, as H.264 in MPEG-TS.
fn make_two_size_stream(path: &Path) {
    let segment = |size: FrameSize| {
        format!(
            "videotestsrc num-buffers={FRAMES_EACH} pattern=smpte ! video/x-raw,width={},height={},framerate=25/1 ! c.",
            size.width_px, size.height_px
        )
    };
    let line = format!(
        "concat name=c ! videoconvert ! x264enc key-int-max=5 ! mpegtsmux ! filesink location={} {} {}",
        path.display(),
        segment(FIRST),
        segment(SECOND)
    );
    let status = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(line.split_whitespace())
        .status()
        .expect("gst-launch-1.0 runs (scripts/setup.sh installs gstreamer1.0-tools)");
    assert!(status.success(), "gst-launch-1.0 {line}");
}

/// Mean value of the rows `rows` of a packed RGB frame.
fn mean_of_rows(frame: &DecodedFrame, rows: std::ops::Range<usize>) -> f64 {
    let row_bytes = frame.width_px * 3;
    let bytes = &frame.rgb[rows.start * row_bytes..rows.end * row_bytes];
    bytes.iter().map(|&v| f64::from(v)).sum::<f64>() / bytes.len() as f64
}

#[test]
fn a_source_that_changes_size_keeps_flowing_into_one_file_size() {
    let Some(_) = testkit::require(streamdiff_e2e::multistyle_model()) else {
        return;
    };
    let dir = temp_dir("resolution-change");
    let input = dir.join("two-sizes.ts");
    make_two_size_stream(&input);
    let decoded_input = decode_video(&input).expect("the input decodes");
    assert_eq!(decoded_input.frames.len(), 2 * FRAMES_EACH);
    let last_in = decoded_input.frames.last().expect("frames");
    assert_eq!(FrameSize::new(last_in.width_px, last_in.height_px), SECOND);

    let (mp4, mkv) = (dir.join("out.mp4"), dir.join("out.mkv"));
    let result = run_streamdiff(&[
        "run",
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        mp4.to_str().expect("utf-8"),
        "--output",
        mkv.to_str().expect("utf-8"),
        "--size",
        &SIZE_PX.to_string(),
        "--device",
        "flex",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "streamdiff run failed: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&result.stdout).expect("the summary is JSON");
    assert_eq!(summary["frames_out"], 2 * FRAMES_EACH);
    // The last frame out is at the second size: the stage followed the input.
    let second_processed = SECOND.fit_long_side(SIZE_PX);
    assert_eq!(
        summary["output_size"]["width_px"],
        second_processed.width_px
    );
    assert_eq!(
        summary["output_size"]["height_px"],
        second_processed.height_px
    );

    let file_size = FIRST.fit_long_side(SIZE_PX);
    let picture = second_processed.fit_within(file_size);
    let bar_rows = (file_size.height_px - picture.height_px) / 2;
    assert!(bar_rows >= 8, "a 16:9 picture in a 4:3 frame has bars");
    for path in [&mp4, &mkv] {
        let output = decode_video(path).expect("the output is playable");
        assert_eq!(
            output.frames.len(),
            2 * FRAMES_EACH,
            "{}: every frame is written",
            path.display()
        );
        for frame in &output.frames {
            assert_eq!(
                FrameSize::new(frame.width_px, frame.height_px),
                file_size,
                "{}: one size",
                path.display()
            );
        }
        // The later frames are letterboxed: black bars, the stylised picture between.
        let later = &output.frames[2 * FRAMES_EACH - 1];
        let top = mean_of_rows(later, 0..bar_rows - 2);
        let bottom = mean_of_rows(
            later,
            file_size.height_px - bar_rows + 2..file_size.height_px,
        );
        let middle = mean_of_rows(later, bar_rows + 4..file_size.height_px - bar_rows - 4);
        assert!(
            top < 12.0 && bottom < 12.0,
            "bars are black: top {top:.1}, bottom {bottom:.1}"
        );
        assert!(
            middle > top + 30.0,
            "the picture is between the bars: {middle:.1}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
