//! Bad input to `streamdiff run`: each case ends with one clear `error:` line and a non-zero
//! exit, never a panic or a hang. A source that ends early still leaves a playable file.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use streamdiff_e2e::{
    decode_video, expect_clear_failure, run_streamdiff, streamdiff_command, temp_dir,
};
use streamdiff_testkit as testkit;

fn run_args<'a>(input: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "run", "--input", input, "--output", output, "--device", "flex", "--size", "64",
    ]
}

#[test]
fn missing_input_file() {
    let dir = temp_dir("missing-input");
    let out = dir.join("out.mp4");
    expect_clear_failure(
        &run_args("/nonexistent/clip.mp4", out.to_str().expect("utf-8")),
        "not found",
    );
}

#[test]
fn corrupt_input_file() {
    let dir = temp_dir("corrupt-input");
    let input = dir.join("corrupt.mp4");
    std::fs::write(&input, vec![0x5au8; 64 * 1024]).expect("write");
    let out = dir.join("out.mp4");
    expect_clear_failure(
        &run_args(input.to_str().expect("utf-8"), out.to_str().expect("utf-8")),
        "input",
    );
}

#[test]
fn unsupported_file_type() {
    let dir = temp_dir("text-input");
    let input = dir.join("notes.txt");
    std::fs::write(&input, "not a video\n".repeat(100)).expect("write");
    let out = dir.join("out.mp4");
    expect_clear_failure(
        &run_args(input.to_str().expect("utf-8"), out.to_str().expect("utf-8")),
        "input",
    );
}

#[test]
fn uris_that_do_not_resolve() {
    let dir = temp_dir("bad-uri");
    let out = dir.join("out.mp4");
    let out = out.to_str().expect("utf-8");
    expect_clear_failure(&run_args("file:///nonexistent/clip.mp4", out), "input");
    // Loopback only: nothing listens on the discard port.
    expect_clear_failure(&run_args("http://127.0.0.1:9/clip.mp4", out), "input");
}

#[test]
fn no_webcam() {
    let dir = temp_dir("no-webcam");
    let out = dir.join("out.mp4");
    expect_clear_failure(
        &run_args("webcam:97", out.to_str().expect("utf-8")),
        "webcam",
    );
}

#[test]
fn missing_and_corrupt_model() {
    let dir = temp_dir("bad-model");
    let out = dir.join("out.mp4");
    let out = out.to_str().expect("utf-8");
    let mut args = run_args("test", out);
    args.extend(["--model", "/nonexistent/multistyle26.onnx"]);
    expect_clear_failure(&args, "make run");

    let corrupt = dir.join("corrupt.onnx");
    std::fs::write(&corrupt, b"\x08\x01garbage\xff\xff").expect("write");
    let mut args = run_args("test", out);
    args.extend(["--model", corrupt.to_str().expect("utf-8")]);
    expect_clear_failure(&args, "setup");
}

#[test]
fn output_that_cannot_be_written() {
    let dir = temp_dir("bad-output");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, b"x").expect("write");
    // A folder path under a regular file can never be created.
    let inside_file = blocker.join("out.mp4");
    expect_clear_failure(
        &run_args("test", inside_file.to_str().expect("utf-8")),
        "cannot write",
    );
    let unknown = dir.join("out.gif");
    expect_clear_failure(&run_args("test", unknown.to_str().expect("utf-8")), ".mp4");
}

#[test]
fn bad_style_and_size() {
    let dir = temp_dir("bad-args");
    let out = dir.join("out.mp4");
    let mut args = run_args("test", out.to_str().expect("utf-8"));
    args.extend(["--style", "style-40"]);
    expect_clear_failure(&args, "style");
    let mut args = run_args("test", out.to_str().expect("utf-8"));
    args[8] = "5";
    expect_clear_failure(&args, "size");
}

/// Makes a short MPEG-TS clip (a format that stays decodable when cut short) with GStreamer.
fn make_transport_stream(path: &Path, frames: u32) {
    let status = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            &format!("num-buffers={frames}"),
            "pattern=ball",
            "!",
            "video/x-raw,width=160,height=120,framerate=25/1",
            "!",
            "x264enc",
            "key-int-max=5",
            "!",
            "mpegtsmux",
            "!",
            "filesink",
            &format!("location={}", path.display()),
        ])
        .status()
        .expect("gst-launch-1.0 runs (scripts/setup.sh installs gstreamer1.0-tools)");
    assert!(status.success());
}

#[test]
fn source_that_ends_early_still_gives_a_playable_file() {
    let dir = temp_dir("truncated");
    let full = dir.join("full.ts");
    make_transport_stream(&full, 50);
    let bytes = std::fs::read(&full).expect("read");
    let truncated = dir.join("truncated.ts");
    // Cut mid-packet, about halfway.
    std::fs::write(&truncated, &bytes[..bytes.len() / 2 + 77]).expect("write");
    let out = dir.join("out.mp4");
    let result = run_streamdiff(&run_args(
        truncated.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
    ));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        result.status.success(),
        "a cut-short input is still usable: {stderr}"
    );
    let video = decode_video(&out).expect("the output is playable");
    assert!(
        (10..50).contains(&video.frames.len()),
        "about half the frames: {}",
        video.frames.len()
    );
}

#[test]
fn interrupted_live_run_finalises_the_file() {
    let Some(_) = testkit::require(streamdiff_e2e::multistyle_model()) else {
        return;
    };
    let dir = temp_dir("interrupt");
    let out = dir.join("live.mp4");
    let mut child = streamdiff_command(&run_args("test:live", out.to_str().expect("utf-8")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    // Let it produce some frames, then Ctrl-C.
    std::thread::sleep(Duration::from_secs(4));
    let pid = child.id().to_string();
    // bash's builtin kill: no procps needed.
    let status = std::process::Command::new("bash")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .expect("bash runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "streamdiff did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(exit.success(), "a stopped live run exits cleanly: {stderr}");
    let video = decode_video(&out).expect("the output is playable");
    assert!(
        !video.frames.is_empty(),
        "frames were written before the stop"
    );
}

#[test]
fn bad_engine_arguments() {
    let dir = temp_dir("bad-engine");
    let out = dir.join("out.mp4");
    let out = out.to_str().expect("utf-8");
    let tiny = testkit::sd_fixture("stream_tiny");
    let tiny = tiny.to_str().expect("utf-8");
    let with = |extra: &[&'static str]| {
        let mut args = run_args("test", out);
        args.extend(["--model", tiny]);
        args.extend(extra.iter().copied());
        args
    };
    expect_clear_failure(&with(&[]), "--prompt is needed");
    expect_clear_failure(
        &with(&["--prompt", "x", "--cfg", "bogus"]),
        "unknown cfg type",
    );
    expect_clear_failure(
        &with(&["--prompt", "x", "--t-index", "32,50"]),
        "--t-index 50",
    );
    expect_clear_failure(&with(&["--prompt", "x", "--ssf", "1.5"]), "--ssf");
    let mut style_with_prompt = run_args("test", out);
    style_with_prompt.extend(["--prompt", "x"]);
    expect_clear_failure(&style_with_prompt, "needs a stable diffusion --model");
    let mut missing = run_args("test", out);
    missing.extend(["--model", "/nonexistent/sd-model", "--prompt", "x"]);
    expect_clear_failure(&missing, "cannot load the stable diffusion model");
    let _ = std::fs::remove_dir_all(&dir);
}
