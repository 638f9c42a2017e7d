//! The command line itself: presets listing, help, and argument errors.
//!
//! Having an integration test here also makes `cargo test` build `target/<profile>/streamdiff`,
//! which the cross-crate end-to-end tests in `tests/` run.

use std::process::Command;

fn streamdiff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_streamdiff"))
        .args(args)
        .output()
        .expect("streamdiff starts")
}

#[test]
fn styles_lists_every_preset() {
    let output = streamdiff(&["styles"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let names: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        names.len(),
        26 + streamdiff_models::style::BLEND_PRESETS.len()
    );
    assert_eq!(names[0], "style-0");
    assert!(names.contains(&"style-25") && names.contains(&"dusk"));
}

#[test]
fn run_needs_an_input() {
    let output = streamdiff(&["run"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--input"), "{stderr}");
}

#[test]
fn help_names_the_commands() {
    let output = streamdiff(&["--help"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for command in ["run", "bench", "styles"] {
        assert!(stdout.contains(command), "{stdout}");
    }
}
