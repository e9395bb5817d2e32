//! Twilio media-stream messages as they arrive on the socket: any text must
//! parse or be refused with an error, never panic.
#![no_main]

#[path = "../../host/src/twilio/messages.rs"]
#[allow(dead_code)]
mod messages;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = messages::parse(text);
    }
});
