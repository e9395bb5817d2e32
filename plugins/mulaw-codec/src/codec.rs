use callpipe_dsp::{Downsampler2x, Upsampler2x, g711};
use callpipe_sdk::types::{Audio, Codec as WireCodec, EncodedAudio, Event, StageError, Track};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    #[default]
    Decode,
    Encode,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub direction: Direction,
    /// Rate of the PCM produced when decoding: 8000 or 16000.
    pub output_rate: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            direction: Direction::Decode,
            output_rate: 16000,
        }
    }
}

/// Per-track converter state; index 0 is inbound, 1 outbound.
pub struct Codec {
    config: Config,
    up: [Upsampler2x; 2],
    down: [Downsampler2x; 2],
    seq: [u64; 2],
    pcm: Vec<i16>,
}

fn track_index(track: Track) -> usize {
    match track {
        Track::Inbound => 0,
        Track::Outbound => 1,
    }
}

impl Codec {
    pub fn new(config: Config) -> Result<Self, StageError> {
        if config.output_rate != 8000 && config.output_rate != 16000 {
            return Err(StageError::InvalidConfig(format!(
                "output_rate must be 8000 or 16000, got {}",
                config.output_rate
            )));
        }
        Ok(Self {
            config,
            up: [Upsampler2x::new(), Upsampler2x::new()],
            down: [Downsampler2x::new(), Downsampler2x::new()],
            seq: [0; 2],
            pcm: Vec::with_capacity(320),
        })
    }

    pub fn from_json(json: &str) -> Result<Self, StageError> {
        Self::with_config(callpipe_sdk::config("mulaw-codec", json)?)
    }

    /// The stage from its parsed `[stages.config]`.
    pub fn with_config(config: Config) -> Result<Self, StageError> {
        Self::new(config)
    }

    pub fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        match (self.config.direction, event) {
            (Direction::Decode, Event::EncodedAudio(frame)) => self.decode(frame).map(|a| vec![a]),
            (Direction::Encode, Event::Audio(audio)) => self.encode(audio).map(|e| vec![e]),
            // Anything else the pipeline routes here passes through unchanged.
            (_, other) => Ok(vec![other]),
        }
    }

    fn decode(&mut self, frame: EncodedAudio) -> Result<Event, StageError> {
        if frame.rate != 8000 {
            return Err(StageError::InvalidEvent(format!(
                "mulaw-codec decodes 8000 Hz audio, got {} Hz",
                frame.rate
            )));
        }
        self.pcm.clear();
        match frame.codec {
            WireCodec::Mulaw => self
                .pcm
                .extend(frame.bytes.iter().map(|&c| g711::decode(c))),
            WireCodec::Pcm16le => {
                if !frame.bytes.len().is_multiple_of(2) {
                    return Err(StageError::InvalidEvent(format!(
                        "pcm16le frame has an odd length of {} bytes",
                        frame.bytes.len()
                    )));
                }
                self.pcm.extend(
                    frame
                        .bytes
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]])),
                );
            }
        }
        let samples = if self.config.output_rate == 16000 {
            let mut out = Vec::with_capacity(self.pcm.len() * 2);
            self.up[track_index(frame.track)].process_into(&self.pcm, &mut out);
            out
        } else {
            self.pcm.clone()
        };
        Ok(Event::Audio(Audio {
            rate: self.config.output_rate,
            track: frame.track,
            timestamp_ms: frame.timestamp_ms,
            samples,
        }))
    }

    fn encode(&mut self, audio: Audio) -> Result<Event, StageError> {
        let t = track_index(audio.track);
        let narrow: &[i16] = match audio.rate {
            8000 => &audio.samples,
            16000 => {
                self.pcm.clear();
                self.down[t].process_into(&audio.samples, &mut self.pcm);
                &self.pcm
            }
            other => {
                return Err(StageError::InvalidEvent(format!(
                    "mulaw-codec encodes 8000 or 16000 Hz audio, got {other} Hz"
                )));
            }
        };
        let bytes: Vec<u8> = narrow.iter().map(|&s| g711::encode(s)).collect();
        let seq = self.seq[t];
        self.seq[t] += 1;
        Ok(Event::EncodedAudio(EncodedAudio {
            codec: WireCodec::Mulaw,
            rate: 8000,
            track: audio.track,
            seq,
            timestamp_ms: audio.timestamp_ms,
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: Vec<u8>, seq: u64) -> Event {
        Event::EncodedAudio(EncodedAudio {
            codec: WireCodec::Mulaw,
            rate: 8000,
            track: Track::Inbound,
            seq,
            timestamp_ms: seq * 20,
            bytes,
        })
    }

    #[test]
    fn decodes_a_twilio_frame_to_16k() {
        let mut codec = Codec::from_json("").unwrap();
        let out = codec.handle(frame(vec![0xFF; 160], 0)).unwrap();
        match &out[..] {
            [Event::Audio(a)] => {
                assert_eq!(a.rate, 16000);
                assert_eq!(a.samples.len(), 320);
                assert!(a.samples.iter().all(|&s| s == 0));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decodes_at_8k_without_resampling() {
        let mut codec = Codec::from_json(r#"{"output_rate": 8000}"#).unwrap();
        let bytes: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let out = codec.handle(frame(bytes.clone(), 0)).unwrap();
        let Event::Audio(a) = &out[0] else { panic!() };
        let expected: Vec<i16> = bytes.iter().map(|&c| g711::decode(c)).collect();
        assert_eq!(a.samples, expected);
    }

    #[test]
    fn encode_then_decode_is_lossless_at_8k() {
        let mut enc = Codec::from_json(r#"{"direction": "encode"}"#).unwrap();
        let mut dec = Codec::from_json(r#"{"output_rate": 8000}"#).unwrap();
        let codes: Vec<u8> = (0..=255u8).filter(|&c| c != 0x7F).collect();
        let pcm: Vec<i16> = codes.iter().map(|&c| g711::decode(c)).collect();
        let out = enc
            .handle(Event::Audio(Audio {
                rate: 8000,
                track: Track::Outbound,
                timestamp_ms: 0,
                samples: pcm,
            }))
            .unwrap();
        let Event::EncodedAudio(e) = &out[0] else {
            panic!()
        };
        assert_eq!(e.bytes, codes);
        let back = dec.handle(out.into_iter().next().unwrap()).unwrap();
        let Event::Audio(a) = &back[0] else { panic!() };
        assert_eq!(a.samples.len(), codes.len());
    }

    #[test]
    fn rejects_bad_config_and_bad_frames() {
        assert!(matches!(
            Codec::from_json(r#"{"output_rate": 44100}"#),
            Err(StageError::InvalidConfig(_))
        ));
        assert!(matches!(
            Codec::from_json(r#"{"bogus": 1}"#),
            Err(StageError::InvalidConfig(_))
        ));
        let mut codec = Codec::from_json("").unwrap();
        let bad = Event::EncodedAudio(EncodedAudio {
            codec: WireCodec::Pcm16le,
            rate: 8000,
            track: Track::Inbound,
            seq: 0,
            timestamp_ms: 0,
            bytes: vec![1, 2, 3],
        });
        assert!(matches!(
            codec.handle(bad),
            Err(StageError::InvalidEvent(_))
        ));
    }

    #[test]
    fn sequence_numbers_are_per_track() {
        let mut enc = Codec::from_json(r#"{"direction": "encode"}"#).unwrap();
        let mk = |track| {
            Event::Audio(Audio {
                rate: 16000,
                track,
                timestamp_ms: 0,
                samples: vec![0; 320],
            })
        };
        let seqs: Vec<u64> = [Track::Inbound, Track::Inbound, Track::Outbound]
            .into_iter()
            .map(|t| match enc.handle(mk(t)).unwrap().remove(0) {
                Event::EncodedAudio(e) => {
                    assert_eq!(e.bytes.len(), 160);
                    e.seq
                }
                _ => panic!(),
            })
            .collect();
        assert_eq!(seqs, [0, 1, 0]);
    }
}
