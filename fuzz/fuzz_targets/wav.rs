//! WAV files as `replay` and `simulate` read them: any bytes must decode or
//! be refused with an error, never panic.
#![no_main]

#[path = "../../crates/runtime/src/audio/wav.rs"]
#[allow(dead_code)]
mod wav;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = wav::parse(data);
});
