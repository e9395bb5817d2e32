use callpipe_sdk::host::Host;
use callpipe_sdk::transcriber::TranscribeRequest;
use callpipe_sdk::types::{
    Event, SpeakerRole, SpeechStarted, StageError, Track, Transcript, Utterance,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Long speech is sent every this many seconds (the VAD slices it too).
    pub max_buffer_s: f32,
    /// A final fragment shorter than this waits for the speaker's next one.
    pub min_buffer_s: f32,
    /// ... if that one starts within this much silence; otherwise it goes alone.
    pub join_gap_ms: u64,
    /// Roles to transcribe: "technician", "agent", "unknown".
    pub roles: Vec<String>,
    /// BCP 47 tag to transcribe in, or "auto" to detect it; default: the
    /// transcriber capability's own `language` (which may be "auto").
    pub language: Option<String>,
    /// Send the speaker's previous words as the model's prompt (context).
    pub prompt_chars: usize,
    /// Pass utterances on downstream with their audio (false: without it).
    pub pass_audio: bool,
    /// Transcripts equal to one of these (case and punctuation aside) are
    /// dropped: what Whisper is known to invent on noise.
    pub drop_phrases: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_buffer_s: 10.0,
            min_buffer_s: 1.0,
            join_gap_ms: 1500,
            roles: vec!["technician".into()],
            language: None,
            prompt_chars: 200,
            pass_audio: false,
            drop_phrases: vec![
                "Sous-titres réalisés par la communauté d'Amara.org".into(),
                "Sous-titrage Société Radio-Canada".into(),
                "Merci d'avoir regardé cette vidéo".into(),
                "Thanks for watching!".into(),
                "Thank you for watching.".into(),
            ],
        }
    }
}

/// Speech of one speaker waiting to be transcribed.
struct Buffer {
    speaker_id: String,
    role: SpeakerRole,
    track: Track,
    utterance_id: u64,
    start_ms: u64,
    end_ms: u64,
    rate: u32,
    samples: Vec<i16>,
    /// The last slice was partial: the speaker is still talking.
    open: bool,
    /// The same track started speaking again within the gap: wait for it.
    expecting_since: Option<u64>,
}

impl Buffer {
    fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / self.rate.max(1) as u64
    }
}

pub struct Stage {
    config: Config,
    language: Option<String>,
    roles: Vec<SpeakerRole>,
    buffers: Vec<Buffer>,
    /// Last words per speaker, for the prompt.
    history: Vec<(String, String)>,
}

/// Lowercase letters and digits only: how drop_phrases compare.
fn bare(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Stage {
    pub fn from_json(json: &str) -> Result<Self, StageError> {
        Self::with_config(callpipe_sdk::config("transcriber", json)?)
    }

    /// The stage from its parsed `[stages.config]`.
    pub fn with_config(config: Config) -> Result<Self, StageError> {
        // NaN fails these checks too (JSON cannot carry it, but be sure).
        if !config.max_buffer_s.is_finite() || config.max_buffer_s <= 0.0 {
            return Err(StageError::InvalidConfig(
                "max_buffer_s must be above 0".into(),
            ));
        }
        if !config.min_buffer_s.is_finite()
            || config.min_buffer_s < 0.0
            || config.min_buffer_s > config.max_buffer_s
        {
            return Err(StageError::InvalidConfig(
                "min_buffer_s must be between 0 and max_buffer_s".into(),
            ));
        }
        let mut roles = Vec::new();
        for r in &config.roles {
            roles.push(callpipe_sdk::role_of(r).ok_or_else(|| {
                StageError::InvalidConfig(format!(
                    "unknown role `{r}` in roles (technician, agent, unknown)"
                ))
            })?);
        }
        // Not the call's language: the capability's `language` says what
        // speech is in, and when it detects, the host keeps the call's.
        let language = match config.language.as_deref() {
            Some("auto") | Some("") | None => None,
            Some(l) => Some(l.to_string()),
        };
        Ok(Stage {
            config,
            language,
            roles,
            buffers: Vec::new(),
            history: Vec::new(),
        })
    }

    fn max_ms(&self) -> u64 {
        (self.config.max_buffer_s * 1000.0) as u64
    }

    fn min_ms(&self) -> u64 {
        (self.config.min_buffer_s * 1000.0) as u64
    }

    pub fn handle<H: Host + ?Sized>(&mut self, event: Event, host: &mut H) -> Vec<Event> {
        let mut out = Vec::new();
        match event {
            Event::Utterance(u) => {
                if self.roles.contains(&u.role) {
                    self.utterance(&u, &mut out, host);
                }
                let mut u = u;
                if !self.config.pass_audio {
                    u.samples = Vec::new();
                }
                out.push(Event::Utterance(u));
            }
            Event::SpeechStarted(s) => {
                self.speech_started(&s);
                self.flush_stale(s.at_ms, &mut out, host);
                out.push(Event::SpeechStarted(s));
            }
            Event::Custom(c) if c.name == "callpipe.tick" => {
                if let Some(now) = callpipe_sdk::tick_of(&c) {
                    self.flush_stale(now, &mut out, host);
                }
                out.push(Event::Custom(c));
            }
            Event::CallEnded(info) => {
                let all: Vec<usize> = (0..self.buffers.len()).collect();
                self.flush(all, &mut out, host);
                out.push(Event::CallEnded(info));
            }
            other => out.push(other),
        }
        out
    }

    fn utterance<H: Host + ?Sized>(&mut self, u: &Utterance, out: &mut Vec<Event>, host: &mut H) {
        let gap = self.config.join_gap_ms;
        // A held fragment that this one does not continue goes out first.
        if let Some(i) = self
            .buffers
            .iter()
            .position(|b| b.speaker_id == u.speaker_id)
            && {
                let b = &self.buffers[i];
                !b.open && (u.start_ms > b.end_ms + gap || b.rate != u.rate)
            }
        {
            self.flush(vec![i], out, host);
        }
        let i = match self
            .buffers
            .iter()
            .position(|b| b.speaker_id == u.speaker_id)
        {
            Some(i) => i,
            None => {
                self.buffers.push(Buffer {
                    speaker_id: u.speaker_id.clone(),
                    role: u.role,
                    track: u.track,
                    utterance_id: u.id,
                    start_ms: u.start_ms,
                    end_ms: u.end_ms,
                    rate: u.rate,
                    samples: Vec::with_capacity(u.samples.len()),
                    open: false,
                    expecting_since: None,
                });
                self.buffers.len() - 1
            }
        };
        let (max_ms, min_ms) = (self.max_ms(), self.min_ms());
        let b = &mut self.buffers[i];
        b.samples.extend_from_slice(&u.samples);
        b.end_ms = b.end_ms.max(u.end_ms);
        b.open = u.partial;
        b.expecting_since = None;
        let due = if u.partial {
            b.duration_ms() >= max_ms
        } else {
            b.duration_ms() >= min_ms
        };
        if due {
            self.flush(vec![i], out, host);
        }
    }

    fn speech_started(&mut self, s: &SpeechStarted) {
        let gap = self.config.join_gap_ms;
        for b in &mut self.buffers {
            if b.track == s.track && !b.open && s.at_ms <= b.end_ms + gap {
                b.expecting_since = Some(s.at_ms);
            }
        }
    }

    /// Held fragments whose gap has passed by stream time `now`. One that
    /// expects a continuation waits for it, up to a whole slice's length.
    fn flush_stale<H: Host + ?Sized>(&mut self, now: u64, out: &mut Vec<Event>, host: &mut H) {
        let gap = self.config.join_gap_ms;
        let max_ms = self.max_ms();
        let stale: Vec<usize> = self
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                !b.open
                    && match b.expecting_since {
                        None => now > b.end_ms + gap,
                        Some(since) => now > since + max_ms + gap,
                    }
            })
            .map(|(i, _)| i)
            .collect();
        self.flush(stale, out, host);
    }

    /// Transcribes and removes the buffers at `indices`.
    fn flush<H: Host + ?Sized>(
        &mut self,
        mut indices: Vec<usize>,
        out: &mut Vec<Event>,
        host: &mut H,
    ) {
        indices.sort_unstable();
        // Remove from the back so earlier indices stay valid; send in order.
        let mut taken: Vec<Buffer> = indices
            .into_iter()
            .rev()
            .map(|i| self.buffers.remove(i))
            .collect();
        taken.reverse();
        for b in taken {
            if b.samples.is_empty() {
                continue;
            }
            let prompt = self.prompt_for(&b.speaker_id);
            let request = TranscribeRequest {
                samples: b.samples,
                rate: b.rate,
                language: self.language.clone(),
                prompt,
            };
            match host.transcribe(&request) {
                Ok(t) => {
                    let text = t.text.trim().to_string();
                    let dropped = self
                        .config
                        .drop_phrases
                        .iter()
                        .any(|p| bare(p) == bare(&text));
                    if text.is_empty() || dropped {
                        continue;
                    }
                    self.remember(&b.speaker_id, &text);
                    out.push(Event::Transcript(Transcript {
                        utterance_id: b.utterance_id,
                        track: b.track,
                        speaker_id: b.speaker_id,
                        role: b.role,
                        start_ms: b.start_ms,
                        end_ms: b.end_ms,
                        text,
                        language: t.language,
                        confidence: t.confidence,
                    }));
                }
                Err(e) => host.warn(&format!(
                    "utterance {} ({} ms) not transcribed: {e}",
                    b.utterance_id,
                    b.end_ms.saturating_sub(b.start_ms)
                )),
            }
        }
    }

    fn prompt_for(&self, speaker: &str) -> Option<String> {
        if self.config.prompt_chars == 0 {
            return None;
        }
        self.history
            .iter()
            .find(|(s, _)| s == speaker)
            .map(|(_, text)| text.clone())
    }

    fn remember(&mut self, speaker: &str, text: &str) {
        let limit = self.config.prompt_chars;
        if limit == 0 {
            return;
        }
        let entry = match self.history.iter_mut().find(|(s, _)| s == speaker) {
            Some(e) => e,
            None => {
                self.history.push((speaker.to_string(), String::new()));
                let last = self.history.len() - 1;
                &mut self.history[last]
            }
        };
        if !entry.1.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(text);
        // Keep the tail, cut on a char boundary.
        let len = entry.1.chars().count();
        if len > limit {
            entry.1 = entry.1.chars().skip(len - limit).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpipe_sdk::testing::FakeHost;
    use callpipe_sdk::transcriber::Transcription;
    use callpipe_sdk::types::{CallInfo, Custom};

    const RATE: u32 = 16_000;

    fn utt(id: u64, track: Track, start: u64, end: u64, partial: bool) -> Event {
        let (speaker, role) = match track {
            Track::Inbound => ("technician", SpeakerRole::Technician),
            Track::Outbound => ("agent", SpeakerRole::Agent),
        };
        Event::Utterance(Utterance {
            id,
            track,
            speaker_id: speaker.into(),
            role,
            start_ms: start,
            end_ms: end,
            pre_roll_ms: 0,
            rate: RATE,
            samples: vec![id as i16; ((end - start) * RATE as u64 / 1000) as usize],
            partial,
        })
    }

    fn tick(ms: u64) -> Event {
        Event::Custom(Custom {
            name: "callpipe.tick".into(),
            json: format!("{{\"stream_ms\":{ms}}}"),
        })
    }

    fn call() -> CallInfo {
        callpipe_sdk::testing::call_info("fr")
    }

    /// Runs events through a stage whose "transcriber" reports which
    /// utterances (by sample value) each request held and how long it was.
    fn run(stage: &mut Stage, events: Vec<Event>) -> (Vec<String>, Vec<TranscribeRequest>) {
        let mut host = FakeHost::default().transcribing(|r| {
            let mut ids: Vec<i16> = r.samples.clone();
            ids.dedup();
            let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            Ok(Transcription {
                text: format!("u{}", ids.join("+")),
                language: "fr".into(),
                confidence: 0.9,
            })
        });
        let mut texts = Vec::new();
        for e in events {
            for o in stage.handle(e, &mut host) {
                if let Event::Transcript(tr) = o {
                    texts.push(tr.text);
                }
            }
        }
        (texts, host.transcribed)
    }

    fn stage(json: &str) -> Stage {
        Stage::from_json(json).unwrap()
    }

    #[test]
    fn a_final_utterance_goes_out_at_once() {
        let mut s = stage("{}");
        let (texts, reqs) = run(&mut s, vec![utt(1, Track::Inbound, 0, 2_000, false)]);
        assert_eq!(texts, ["u1"]);
        assert_eq!(reqs[0].language, None, "the capability's setting");
        assert_eq!(reqs[0].prompt, None);
        let mut s = stage(r#"{"language": "en"}"#);
        let (_, reqs) = run(&mut s, vec![utt(1, Track::Inbound, 0, 2_000, false)]);
        assert_eq!(reqs[0].language.as_deref(), Some("en"), "the stage's own");
    }

    #[test]
    fn long_speech_is_flushed_every_max_buffer() {
        let mut s = stage(r#"{"max_buffer_s": 4.0}"#);
        let (texts, _) = run(
            &mut s,
            vec![
                utt(1, Track::Inbound, 0, 2_000, true),
                utt(2, Track::Inbound, 2_000, 4_000, true),
                utt(3, Track::Inbound, 4_000, 6_000, true),
                utt(4, Track::Inbound, 6_000, 7_000, false),
            ],
        );
        assert_eq!(texts, ["u1+2", "u3+4"]);
    }

    #[test]
    fn a_short_fragment_joins_the_next_within_the_gap() {
        let mut s = stage(r#"{"min_buffer_s": 1.0, "join_gap_ms": 1500}"#);
        let (texts, reqs) = run(
            &mut s,
            vec![
                utt(1, Track::Inbound, 0, 600, false),
                tick(1_000),
                utt(2, Track::Inbound, 1_500, 3_000, false),
            ],
        );
        assert_eq!(texts, ["u1+2"]);
        assert_eq!(reqs.len(), 1);
    }

    #[test]
    fn a_short_fragment_goes_alone_after_the_gap() {
        let mut s = stage(r#"{"min_buffer_s": 1.0, "join_gap_ms": 1500}"#);
        let (texts, _) = run(
            &mut s,
            vec![utt(1, Track::Inbound, 0, 600, false), tick(2_000)],
        );
        assert!(texts.is_empty(), "still within the gap: {texts:?}");
        let (texts, _) = run(&mut s, vec![tick(2_250)]);
        assert_eq!(texts, ["u1"]);
        // A next fragment beyond the gap also releases a held one first.
        let (texts, _) = run(
            &mut s,
            vec![
                utt(2, Track::Inbound, 5_000, 5_500, false),
                utt(3, Track::Inbound, 9_000, 11_000, false),
            ],
        );
        assert_eq!(texts, ["u2", "u3"]);
    }

    #[test]
    fn speech_within_the_gap_holds_the_fragment_until_it_ends() {
        let mut s = stage(r#"{"min_buffer_s": 1.0, "join_gap_ms": 1500}"#);
        let started = Event::SpeechStarted(SpeechStarted {
            track: Track::Inbound,
            at_ms: 1_200,
        });
        let (texts, _) = run(
            &mut s,
            vec![
                utt(1, Track::Inbound, 0, 600, false),
                started,
                tick(3_000),
                tick(5_000),
                utt(2, Track::Inbound, 1_200, 5_200, false),
            ],
        );
        assert_eq!(texts, ["u1+2"]);
    }

    #[test]
    fn call_end_flushes_and_roles_filter() {
        let mut s = stage("{}");
        let (texts, _) = run(
            &mut s,
            vec![
                utt(1, Track::Outbound, 0, 3_000, false),
                utt(2, Track::Inbound, 0, 500, false),
                Event::CallEnded(call()),
            ],
        );
        assert_eq!(texts, ["u2"]);
        let mut both = stage(r#"{"roles": ["technician", "agent"]}"#);
        let (texts, _) = run(&mut both, vec![utt(1, Track::Outbound, 0, 3_000, false)]);
        assert_eq!(texts, ["u1"]);
    }

    #[test]
    fn the_prompt_carries_the_speakers_previous_words() {
        let mut s = stage(r#"{"prompt_chars": 4}"#);
        let (_, reqs) = run(
            &mut s,
            vec![
                utt(1, Track::Inbound, 0, 2_000, false),
                utt(2, Track::Inbound, 3_000, 5_000, false),
                utt(3, Track::Inbound, 6_000, 8_000, false),
            ],
        );
        assert_eq!(reqs[1].prompt.as_deref(), Some("u1"));
        // "u1 u2", cut to its last 4 characters.
        assert_eq!(reqs[2].prompt.as_deref(), Some("1 u2"));
    }

    #[test]
    fn hallucinations_and_errors_yield_no_transcript() {
        let mut s = stage("{}");
        let mut host = FakeHost::default().with_transcription(Transcription {
            text: " Sous-titres réalisés par la communauté d'Amara.org ".into(),
            language: "fr".into(),
            confidence: 0.5,
        });
        let out = s.handle(utt(1, Track::Inbound, 0, 2_000, false), &mut host);
        assert!(!out.iter().any(|e| matches!(e, Event::Transcript(_))));
        host.transcriptions.push_back(Err("timeout".into()));
        let out = s.handle(utt(2, Track::Inbound, 3_000, 5_000, false), &mut host);
        assert!(!out.iter().any(|e| matches!(e, Event::Transcript(_))));
        assert_eq!(host.warnings(), 1);
        assert!(host.logs[0].1.contains("utterance 2"), "{:?}", host.logs);
        // The utterance still flows on, without its audio.
        assert!(
            out.iter()
                .any(|e| matches!(e, Event::Utterance(u) if u.samples.is_empty()))
        );
    }

    #[test]
    fn bad_config_is_refused() {
        for bad in [
            r#"{"roles": ["boss"]}"#,
            r#"{"max_buffer_s": 0}"#,
            r#"{"min_buffer_s": 20}"#,
            r#"{"max_buffer": 3}"#,
        ] {
            assert!(Stage::from_json(bad).is_err(), "{bad}");
        }
    }
}
