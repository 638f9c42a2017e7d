//! The CLIP tokenizer against transformers 4.57.1's slow `CLIPTokenizer` with ftfy
//! (`tests/fixtures/sd/tokenizer/expected_ids.json`): every prompt's BPE tokens and its 77 ids
//! for SD 1.5 (pad 49407) and SD 2.1 (pad `!` = 0), exactly.
//!
//! The vocabulary files are rebuilt at test time from the shared
//! `tokenizers/clip/bpe_simple_vocab_16e6.txt.gz`, as tools/reference/README.md describes.

mod common;

use streamdiff_models::sd::tokenizer::ClipTokenizer;
use streamdiff_testkit as testkit;

#[test]
fn clip_tokenizer_matches_transformers_on_every_prompt() {
    let Some(gz) = testkit::require(testkit::data_file(
        "tokenizers/clip/bpe_simple_vocab_16e6.txt.gz",
    )) else {
        return;
    };
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(streamdiff_testkit::sd_fixture(
            "tokenizer/expected_ids.json",
        ))
        .expect("expected_ids.json"),
    )
    .expect("parses");
    let (sd15_dir, sizes) = common::tokenizer_dir(&gz, "sd15", "<|endoftext|>");
    let files = &expected["meta"]["generated_files"];
    assert_eq!(
        (sizes.0 as u64, sizes.1 as u64),
        (
            files["vocab.json"]["bytes"].as_u64().expect("bytes"),
            files["merges.txt"]["bytes"].as_u64().expect("bytes")
        ),
        "rebuilt vocab.json / merges.txt sizes"
    );
    let (sd21_dir, _) = common::tokenizer_dir(&gz, "sd21", "!");
    let sd15 = ClipTokenizer::from_pretrained(&sd15_dir).expect("sd15 tokenizer");
    let sd21 = ClipTokenizer::from_pretrained(&sd21_dir).expect("sd21 tokenizer");
    assert_eq!((sd15.pad_id(), sd21.pad_id()), (49407, 0));

    let ids = |value: &serde_json::Value| -> Vec<u32> {
        value
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect()
    };
    let mut failures = Vec::new();
    let prompts = expected["prompts"].as_array().expect("prompts");
    assert_eq!(prompts.len(), 51);
    for case in prompts {
        let prompt = case["prompt"].as_str().expect("prompt");
        let tokens: Vec<String> = case["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t.as_str().expect("token").to_owned())
            .collect();
        let got_tokens = sd15.tokenize(prompt);
        if got_tokens != tokens {
            failures.push(format!(
                "{prompt:?}: tokens {got_tokens:?}, expected {tokens:?}"
            ));
        }
        for (tokenizer, key) in [(&sd15, "input_ids_sd15"), (&sd21, "input_ids_sd21")] {
            let got = tokenizer.encode_padded(prompt);
            let want = ids(&case[key]);
            if got != want {
                failures.push(format!("{prompt:?} {key}: {got:?}, expected {want:?}"));
            }
        }
    }
    std::fs::remove_dir_all(&sd15_dir).ok();
    std::fs::remove_dir_all(&sd21_dir).ok();
    eprintln!("{} prompts, {} mismatches", prompts.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_tokenizer_files_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("streamdiff-tok-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let err = ClipTokenizer::from_pretrained(&dir).expect_err("empty folder");
    assert!(err.to_string().contains("vocab.json"), "{err}");

    std::fs::write(dir.join("vocab.json"), r#"{"a": 0, "<|startoftext|>": 1}"#).expect("write");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\na b\n").expect("write");
    let err = ClipTokenizer::from_pretrained(&dir).expect_err("no <|endoftext|>");
    assert!(err.to_string().contains("<|endoftext|>"), "{err}");

    std::fs::write(dir.join("vocab.json"), "{\"a\": 0, ").expect("write");
    let err = ClipTokenizer::from_pretrained(&dir).expect_err("truncated vocab");
    assert!(err.to_string().contains("vocab.json"), "{err}");

    std::fs::write(
        dir.join("vocab.json"),
        r#"{"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}"#,
    )
    .expect("write");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\na b c\n").expect("write");
    let err = ClipTokenizer::from_pretrained(&dir).expect_err("bad merges");
    assert!(err.to_string().contains("merges.txt"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
