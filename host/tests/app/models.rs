//! The speech model set up by `callpipe models`: Whisper base from PyPI,
//! converted for whisper.cpp.

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
