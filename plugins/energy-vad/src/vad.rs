use callpipe_dsp::rms::rms_normalised;
use callpipe_sdk::types::{Audio, Event, SpeakerRole, SpeechStarted, StageError, Track, Utterance};
use serde::Deserialize;
use std::collections::VecDeque;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// RMS of normalised samples (-1..1) above which a window counts as speech.
    pub threshold: f32,
    /// Analysis window.
    pub window_ms: u32,
    /// Speech must last this long before `speech-started` (filters clicks).
    pub min_speech_ms: u32,
    /// Silence that ends an utterance.
    pub hangover_ms: u32,
    /// Audio kept from before the speech started.
    pub pre_roll_ms: u32,
    /// Trailing audio kept after the last voiced window.
    pub tail_ms: u32,
    /// Longer speech is sliced (`partial = true`) so downstream keeps flowing.
    pub max_utterance_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            threshold: 0.01,
            window_ms: 20,
            min_speech_ms: 100,
            hangover_ms: 500,
            pre_roll_ms: 200,
            tail_ms: 100,
            max_utterance_ms: 10_000,
        }
    }
}

#[derive(Default)]
struct TrackState {
    rate: u32,
    /// Samples waiting to fill an analysis window, and their start time.
    window: Vec<i16>,
    window_start_ms: u64,
    /// Recent audio before any speech, for pre-roll.
    pre_roll: VecDeque<i16>,
    /// Audio of the speech in progress (candidate or confirmed).
    speech: Vec<i16>,
    /// Pre-roll taken when the candidate began.
    speech_pre_roll_ms: u32,
    speech_start_ms: Option<u64>,
    voiced_ms: u32,
    confirmed: bool,
    silence_ms: u32,
    last_voiced_end_ms: u64,
    /// Samples of `speech` up to the end of the last voiced window.
    voiced_len: usize,
}

pub struct Vad {
    config: Config,
    tracks: [TrackState; 2],
    next_id: u64,
}

fn index(track: Track) -> usize {
    match track {
        Track::Inbound => 0,
        Track::Outbound => 1,
    }
}

fn track_of(index: usize) -> Track {
    if index == 0 {
        Track::Inbound
    } else {
        Track::Outbound
    }
}

fn ms_to_samples(ms: u32, rate: u32) -> usize {
    (ms as u64 * rate as u64 / 1000) as usize
}

impl Vad {
    pub fn new(config: Config) -> Result<Self, StageError> {
        let bad = |m: &str| Err(StageError::InvalidConfig(format!("energy-vad: {m}")));
        if !(config.threshold > 0.0 && config.threshold < 1.0) {
            return bad("threshold must be between 0 and 1");
        }
        if config.window_ms == 0 || config.window_ms > 200 {
            return bad("window_ms must be between 1 and 200");
        }
        if config.max_utterance_ms < config.window_ms * 2 {
            return bad("max_utterance_ms must cover at least two windows");
        }
        Ok(Self {
            config,
            tracks: Default::default(),
            next_id: 0,
        })
    }

    pub fn from_json(json: &str) -> Result<Self, StageError> {
        Self::with_config(callpipe_sdk::config("energy-vad", json)?)
    }

    /// The stage from its parsed `[stages.config]`.
    pub fn with_config(config: Config) -> Result<Self, StageError> {
        Self::new(config)
    }

    pub fn handle(&mut self, event: Event) -> Vec<Event> {
        match event {
            Event::Audio(audio) => {
                let mut out = Vec::new();
                self.push_audio(audio, &mut out);
                out
            }
            Event::CallEnded(info) => {
                // Speech cut off by the hang-up still counts.
                let mut out = Vec::new();
                for t in 0..2 {
                    self.finish(t, false, &mut out);
                }
                out.push(Event::CallEnded(info));
                out
            }
            other => vec![other],
        }
    }

    fn push_audio(&mut self, audio: Audio, out: &mut Vec<Event>) {
        let t = index(audio.track);
        if audio.rate == 0 {
            return;
        }
        let st = &mut self.tracks[t];
        if st.rate != audio.rate {
            // A rate change (or the first frame) restarts the track's analysis.
            *st = TrackState {
                rate: audio.rate,
                ..Default::default()
            };
        }
        let window_len = ms_to_samples(self.config.window_ms, audio.rate).max(1);
        if st.window.is_empty() {
            st.window_start_ms = audio.timestamp_ms;
        }
        let mut rest = &audio.samples[..];
        while !rest.is_empty() {
            let st = &mut self.tracks[t];
            let take = (window_len - st.window.len()).min(rest.len());
            st.window.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if st.window.len() == window_len {
                self.analyse_window(t, out);
                let st = &mut self.tracks[t];
                st.window.clear();
                st.window_start_ms += self.config.window_ms as u64;
            }
        }
    }

    fn analyse_window(&mut self, t: usize, out: &mut Vec<Event>) {
        let cfg = self.config.clone();
        let st = &mut self.tracks[t];
        let voiced = rms_normalised(&st.window) >= cfg.threshold;
        let start = st.window_start_ms;
        let end = start + cfg.window_ms as u64;
        match (st.speech_start_ms, voiced) {
            (None, false) => {
                let cap = ms_to_samples(cfg.pre_roll_ms, st.rate);
                st.pre_roll.extend(st.window.iter().copied());
                let excess = st.pre_roll.len().saturating_sub(cap);
                st.pre_roll.drain(..excess);
            }
            (None, true) => {
                st.speech_start_ms = Some(start);
                st.speech_pre_roll_ms = (st.pre_roll.len() as u64 * 1000 / st.rate as u64) as u32;
                st.speech.clear();
                st.speech.extend(st.pre_roll.drain(..));
                st.speech.extend_from_slice(&st.window);
                st.voiced_ms = cfg.window_ms;
                st.silence_ms = 0;
                st.last_voiced_end_ms = end;
                st.voiced_len = st.speech.len();
                self.maybe_confirm(t, out);
            }
            (Some(_), true) => {
                st.speech.extend_from_slice(&st.window);
                st.voiced_ms += cfg.window_ms;
                st.silence_ms = 0;
                st.last_voiced_end_ms = end;
                st.voiced_len = st.speech.len();
                self.maybe_confirm(t, out);
                self.maybe_slice(t, out);
            }
            (Some(_), false) => {
                st.speech.extend_from_slice(&st.window);
                st.silence_ms += cfg.window_ms;
                if !st.confirmed && st.silence_ms >= cfg.window_ms {
                    // A blip shorter than min_speech_ms: back to listening,
                    // keeping its audio as pre-roll.
                    self.abandon_candidate(t);
                } else if st.silence_ms >= cfg.hangover_ms {
                    self.finish(t, false, out);
                }
            }
        }
    }

    fn maybe_confirm(&mut self, t: usize, out: &mut Vec<Event>) {
        let st = &mut self.tracks[t];
        if !st.confirmed && st.voiced_ms >= self.config.min_speech_ms {
            st.confirmed = true;
            out.push(Event::SpeechStarted(SpeechStarted {
                track: track_of(t),
                at_ms: st.speech_start_ms.unwrap_or(0),
            }));
        }
    }

    fn maybe_slice(&mut self, t: usize, out: &mut Vec<Event>) {
        let st = &self.tracks[t];
        let Some(start) = st.speech_start_ms else {
            return;
        };
        if st.confirmed && st.last_voiced_end_ms - start >= self.config.max_utterance_ms as u64 {
            self.finish(t, true, out);
        }
    }

    fn abandon_candidate(&mut self, t: usize) {
        let cap = ms_to_samples(self.config.pre_roll_ms, self.tracks[t].rate);
        let st = &mut self.tracks[t];
        st.pre_roll.clear();
        let keep_from = st.speech.len().saturating_sub(cap);
        st.pre_roll.extend(st.speech.drain(..).skip(keep_from));
        st.speech_start_ms = None;
        st.voiced_ms = 0;
        st.silence_ms = 0;
    }

    /// Emits the utterance in progress, if confirmed. `partial` keeps the
    /// track in speech for the next slice.
    fn finish(&mut self, t: usize, partial: bool, out: &mut Vec<Event>) {
        let cfg = &self.config;
        let st = &mut self.tracks[t];
        let Some(start) = st.speech_start_ms else {
            return;
        };
        if !st.confirmed {
            self.abandon_candidate(t);
            return;
        }
        let tail = ms_to_samples(cfg.tail_ms, st.rate);
        let keep = (st.voiced_len + tail).min(st.speech.len());
        let mut samples = std::mem::take(&mut st.speech);
        let leftover = samples.split_off(keep);
        let end = st.last_voiced_end_ms;
        out.push(Event::Utterance(Utterance {
            id: self.next_id,
            track: track_of(t),
            speaker_id: String::new(),
            role: SpeakerRole::Unknown,
            start_ms: start,
            end_ms: end,
            pre_roll_ms: st.speech_pre_roll_ms,
            rate: st.rate,
            samples,
            partial,
        }));
        self.next_id += 1;
        if partial {
            // The speaker goes on: the next slice starts where this one ended.
            st.speech = leftover;
            st.speech_start_ms = Some(end);
            st.speech_pre_roll_ms = 0;
            st.voiced_len = st.speech.len();
        } else {
            let cap = ms_to_samples(cfg.pre_roll_ms, st.rate);
            st.pre_roll.clear();
            let skip = leftover.len().saturating_sub(cap);
            st.pre_roll.extend(leftover.into_iter().skip(skip));
            st.speech_start_ms = None;
            st.confirmed = false;
            st.voiced_ms = 0;
            st.silence_ms = 0;
            st.voiced_len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16000;

    /// Feeds `segments` of (tone?, ms) as 20 ms frames; returns all events.
    fn run(vad: &mut Vad, segments: &[(bool, u32)]) -> Vec<Event> {
        let mut signal = Vec::new();
        for &(tone, ms) in segments {
            let n = ms_to_samples(ms, RATE);
            for i in 0..n {
                let s = if tone {
                    (6000.0 * (i as f32 * 2.0 * std::f32::consts::PI * 300.0 / RATE as f32).sin())
                        as i16
                } else {
                    ((i * 7919 % 61) as i16) - 30 // faint noise, well under threshold
                };
                signal.push(s);
            }
        }
        let mut out = Vec::new();
        for (k, frame) in signal.chunks(320).enumerate() {
            out.extend(vad.handle(Event::Audio(Audio {
                rate: RATE,
                track: Track::Inbound,
                timestamp_ms: k as u64 * 20,
                samples: frame.to_vec(),
            })));
        }
        out
    }

    fn utterances(events: &[Event]) -> Vec<&Utterance> {
        events
            .iter()
            .filter_map(|e| {
                if let Event::Utterance(u) = e {
                    Some(u)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn finds_each_tone_burst_within_a_window() {
        let mut vad = Vad::from_json("").unwrap();
        let events = run(
            &mut vad,
            &[
                (false, 500),
                (true, 1000),
                (false, 1000),
                (true, 600),
                (false, 1000),
            ],
        );
        let utts = utterances(&events);
        assert_eq!(utts.len(), 2);
        assert!(
            (utts[0].start_ms as i64 - 500).abs() <= 20,
            "{}",
            utts[0].start_ms
        );
        assert!(
            (utts[0].end_ms as i64 - 1500).abs() <= 20,
            "{}",
            utts[0].end_ms
        );
        assert!((utts[1].start_ms as i64 - 2500).abs() <= 20);
        assert!((utts[1].end_ms as i64 - 3100).abs() <= 20);
        assert_eq!(utts[0].pre_roll_ms, 200);
        // pre-roll + speech + tail
        assert_eq!(utts[0].samples.len(), ms_to_samples(200 + 1000 + 100, RATE));
        let started = events
            .iter()
            .filter(|e| matches!(e, Event::SpeechStarted(_)))
            .count();
        assert_eq!(started, 2);
    }

    #[test]
    fn short_pauses_inside_speech_do_not_split_it() {
        let mut vad = Vad::from_json("").unwrap();
        let events = run(
            &mut vad,
            &[(true, 400), (false, 300), (true, 400), (false, 800)],
        );
        assert_eq!(utterances(&events).len(), 1);
    }

    #[test]
    fn clicks_shorter_than_min_speech_are_ignored() {
        let mut vad = Vad::from_json(r#"{"min_speech_ms": 100}"#).unwrap();
        let events = run(&mut vad, &[(false, 200), (true, 40), (false, 1000)]);
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn long_speech_is_sliced() {
        let mut vad = Vad::from_json(r#"{"max_utterance_ms": 2000}"#).unwrap();
        let events = run(&mut vad, &[(true, 5000), (false, 1000)]);
        let utts = utterances(&events);
        assert_eq!(utts.len(), 3);
        assert!(utts[0].partial && utts[1].partial && !utts[2].partial);
        assert_eq!(utts[1].start_ms, utts[0].end_ms);
        let started = events
            .iter()
            .filter(|e| matches!(e, Event::SpeechStarted(_)))
            .count();
        assert_eq!(started, 1);
    }

    #[test]
    fn hang_up_flushes_speech_in_progress() {
        let mut vad = Vad::from_json("").unwrap();
        run(&mut vad, &[(true, 800)]);
        let info = callpipe_sdk::testing::call_info("fr");
        let out = vad.handle(Event::CallEnded(info));
        assert!(matches!(out[0], Event::Utterance(_)));
        assert!(matches!(out[1], Event::CallEnded(_)));
    }

    #[test]
    fn threshold_is_configurable_and_validated() {
        assert!(Vad::from_json(r#"{"threshold": 0}"#).is_err());
        assert!(Vad::from_json(r#"{"threshold": 0.5, "unknown": 1}"#).is_err());
        let mut deaf = Vad::from_json(r#"{"threshold": 0.9}"#).unwrap();
        assert!(run(&mut deaf, &[(true, 1000), (false, 1000)]).is_empty());
    }
}
