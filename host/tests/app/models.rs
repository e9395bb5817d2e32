//! The speech model set up by `callpipe models`: Whisper base from PyPI,
//! converted for whisper.cpp, and its default quantized copy.

use crate::support::{data_dir, fixture_present};
use callpipe_host::models::whisper::{self, EXPECTED_SHA256, EXPECTED_SIZE};
use std::process::Command;

#[test]
fn the_converted_whisper_base_model_is_what_whisper_cpp_expects() {
    let model = callpipe_host::models::dir(&data_dir()).join(whisper::MODEL_FILE);
    if !fixture_present(
        model.exists(),
        &format!(
            "the speech model at {} (`callpipe models`)",
            model.display()
        ),
    ) {
        return;
    }
    assert_eq!(
        std::fs::metadata(&model).expect("model").len(),
        EXPECTED_SIZE
    );
    assert_eq!(whisper::sha256(&model).expect("sha256"), EXPECTED_SHA256);
    let out = Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .args(["models", "--check"])
        .arg(&model)
        .output()
        .expect("callpipe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("type base, n_vocab 51865, 80 mels, 6 audio layers"),
        "{text}"
    );
}

#[test]
fn checking_a_file_that_is_not_a_model_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("model.bin");
    std::fs::write(
        &bogus,
        b"definitely not ggml, but long enough to have a header of 48 bytes",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .args(["models", "--check"])
        .arg(&bogus)
        .output()
        .expect("callpipe runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is not a whisper.cpp model") && err.contains("model.bin"),
        "{err}"
    );
}

/// What the transcriber loads by default: Whisper base quantized to q8_0,
/// which `callpipe models` always writes, byte for byte the pinned file.
#[test]
fn the_default_speech_model_is_the_pinned_q8_0_copy() {
    let dir = callpipe_host::models::dir(&data_dir());
    let model = whisper::default_model(&dir);
    if !fixture_present(
        model.exists(),
        &format!(
            "the default speech model at {} (`callpipe models`)",
            model.display()
        ),
    ) {
        return;
    }
    assert_eq!(whisper::DEFAULT_KIND.name(), "q8_0");
    let (size, sha) = whisper::DEFAULT_KIND.expected();
    assert_eq!(std::fs::metadata(&model).expect("model").len(), size);
    assert_eq!(whisper::sha256(&model).expect("sha256"), sha);
    assert_eq!(
        whisper::read_header(&model).expect("header").model_type(),
        "base"
    );
}
