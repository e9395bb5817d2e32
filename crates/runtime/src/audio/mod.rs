//! Audio files in and out of the host: WAV parsing and Twilio-style framing.

pub mod frames;
pub mod wav;
