//! Recordings as Twilio sends them: 8 kHz mu-law, 160-byte (20 ms) frames.

use super::wav::Recording;
use callpipe_dsp::{g711, resample::resample};

pub const FRAME_BYTES: usize = 160;
pub const FRAME_MS: u64 = 20;
pub const TWILIO_RATE: u32 = 8000;

/// Which Twilio track each channel of a recording plays on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackLayout {
    /// Mono (or the first channel) on one track.
    Mono(crate::bindings::types::Track),
    /// Left = inbound (technician), right = outbound (agent).
    Stereo,
}

/// Mu-law frames per track; the last frame is padded with silence.
pub struct TrackFrames {
    pub track: crate::bindings::types::Track,
    pub frames: Vec<Vec<u8>>,
}

pub fn to_mulaw_8k(samples: &[f32], rate: u32) -> Vec<u8> {
    let narrow = resample(samples, rate, TWILIO_RATE);
    narrow
        .iter()
        .map(|&x| g711::encode((x * 32767.0).round().clamp(-32768.0, 32767.0) as i16))
        .collect()
}

pub fn frames(recording: &Recording, layout: TrackLayout) -> Vec<TrackFrames> {
    use crate::bindings::types::Track;
    let tracks: Vec<(Track, &Vec<f32>)> = match layout {
        TrackLayout::Mono(track) => recording
            .channels
            .first()
            .map(|c| vec![(track, c)])
            .unwrap_or_default(),
        TrackLayout::Stereo => recording
            .channels
            .iter()
            .take(2)
            .zip([Track::Inbound, Track::Outbound])
            .map(|(c, t)| (t, c))
            .collect(),
    };
    tracks
        .into_iter()
        .map(|(track, samples)| {
            let mulaw = to_mulaw_8k(samples, recording.rate);
            let frames = mulaw
                .chunks(FRAME_BYTES)
                .map(|c| {
                    let mut f = c.to_vec();
                    f.resize(FRAME_BYTES, 0xFF); // mu-law silence
                    f
                })
                .collect();
            TrackFrames { track, frames }
        })
        .collect()
}
