//! What comes out of a call's pipeline, phone or chat: recorded in the live
//! session (transcripts, segments, suggestions), spoken to the technician on
//! a bidirectional call (`say`, through the pipeline's speech capability),
//! and played back (`encoded-audio` on the outbound track), with barge-in.

use crate::bindings::types::{Codec, Event, Say, Suggestion, SuggestionKind, Track, Transcript};
use crate::capabilities::speech::SpeechService as Speech;
use crate::pipeline::call::CallOutput;
use crate::pipeline::event::{FLUSH, role_name};
use crate::sessions::{Sessions, SuggestionRecord, TranscriptLine};
use crate::twilio::playback::Player;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Questions waiting to be spoken; more are dropped (they are on screen).
const SAY_QUEUE: usize = 4;

/// A `custom` event whose JSON is the call's end-of-call summary (the
/// `call-summary` stage writes it): the host stores it with the call. A
/// name the host gives meaning to, not part of the runtime's contract.
const SUMMARY: &str = "call-summary";

/// A `custom` event whose JSON translates one transcript line for the
/// agent (the `translator` stage writes it): kept with the line.
const TRANSLATION: &str = "line-translation";

/// The most of a translation kept: a line is a few sentences.
const MAX_TRANSLATION_CHARS: usize = 2000;

/// A stage's `line-translation` event, checked before it reaches a
/// session: a speaker role, a language tag, the line it names and a
/// translation of a sensible size; else why not.
pub fn line_translation(json: &str) -> Result<crate::sessions::LineTranslation, &'static str> {
    let t: crate::sessions::LineTranslation =
        serde_json::from_str(json).map_err(|_| "not the expected JSON")?;
    let sized = |s: &str| !s.trim().is_empty() && s.chars().count() <= MAX_TRANSLATION_CHARS;
    if !matches!(t.speaker_role.as_str(), "technician" | "agent") {
        return Err("no speaker role");
    }
    if !crate::capabilities::valid_tag(&t.language) {
        return Err("no language tag");
    }
    if !sized(&t.text) || !sized(&t.original) {
        return Err("empty or too long");
    }
    Ok(t)
}

/// Where a bidirectional call's audio goes.
pub struct Voice {
    pub player: Player,
    /// The pipeline's speech capability; without it `say` is shown only.
    pub speech: Option<Arc<Speech>>,
}

/// Waiters for `callpipe.flush` markers, by marker id.
#[derive(Default)]
pub struct Markers(Mutex<HashMap<u64, oneshot::Sender<()>>>);

impl Markers {
    pub fn wait(&self, id: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        rx
    }

    fn reached(&self, id: u64) {
        if let Some(tx) = self.lock().remove(&id) {
            let _ = tx.send(());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn marker_id(json: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()?
        .get("id")?
        .as_u64()
}

pub fn transcript_line(t: Transcript) -> TranscriptLine {
    TranscriptLine {
        speaker_role: role_name(t.role).into(),
        speaker_id: t.speaker_id,
        start_ms: t.start_ms,
        end_ms: t.end_ms,
        text: t.text,
        language: t.language,
        confidence: t.confidence,
        translation: None,
    }
}

pub fn suggestion_record(s: Suggestion, model_written: bool) -> SuggestionRecord {
    SuggestionRecord {
        id: s.id,
        kind: match s.kind {
            SuggestionKind::KnowledgeBase => "knowledge_base",
            SuggestionKind::ClarificationQuestion => "clarification_question",
        }
        .into(),
        title: s.title,
        content: s.content,
        sources: s.sources,
        confidence: s.confidence,
        language: s.language,
        at: crate::sessions::now_epoch(),
        model_written,
    }
}

/// Drains a call's output until the call ends. `stream_started` is when a
/// live stream's time 0 arrived (its `start`), so a transcript's stream time
/// tells how long after the speech ended it came out.
pub fn spawn(
    mut output: CallOutput,
    sessions: Arc<Sessions>,
    session_id: String,
    voice: Option<Voice>,
    markers: Option<Arc<Markers>>,
    stream_started: Option<Instant>,
) -> JoinHandle<()> {
    let player = voice.as_ref().map(|v| v.player.clone());
    let speaker = voice.and_then(|v| {
        let speech = v.speech?;
        let (tx, rx) = mpsc::channel(SAY_QUEUE);
        Some((tx, tokio::spawn(speak(rx, v.player, speech))))
    });
    tokio::spawn(async move {
        while let Some(out) = output.recv_marked().await {
            match out.event {
                Event::Utterance(u) => sessions.add_segment(&session_id, &u.speaker_id, u.role),
                Event::Analysis(a) => sessions.set_diagnostic(
                    &session_id,
                    crate::sessions::Diagnostic {
                        equipment: a.entities,
                        issue: a.issue,
                        missing: a.missing,
                        sufficient: a.sufficient,
                        language: a.language,
                    },
                ),
                Event::Transcript(t) => {
                    if let Some(zero) = stream_started {
                        let spoken = zero + Duration::from_millis(t.end_ms);
                        let lag = Instant::now().saturating_duration_since(spoken);
                        crate::metrics::AUDIO.speech_to_transcript.record(lag);
                        crate::metrics::AUDIO
                            .speech_to_transcript_recent
                            .record(lag);
                    }
                    sessions.add_transcript(&session_id, transcript_line(t))
                }
                Event::Suggestion(s) => {
                    sessions.add_suggestion(&session_id, suggestion_record(s, out.model_written))
                }
                Event::Say(_) if sessions.is_muted(&session_id) => {
                    tracing::debug!(session = %session_id, "muted: a question is only shown");
                }
                Event::Say(say) => {
                    if let Some((tx, _)) = &speaker
                        && tx.try_send(say).is_err()
                    {
                        tracing::warn!(session = %session_id, "too many questions waiting to be spoken; one is only shown");
                    }
                }
                Event::SpeechStarted(s) if s.track == Track::Inbound => {
                    // Barge-in: the technician talks over our playback.
                    if let Some(p) = &player
                        && p.is_playing()
                    {
                        p.clear().await;
                    }
                }
                Event::EncodedAudio(a) if a.track == Track::Outbound && a.codec == Codec::Mulaw => {
                    if let Some(p) = &player {
                        p.play(a.bytes).await;
                    }
                }
                Event::Custom(c) if c.name == SUMMARY => sessions.set_summary(&session_id, &c.json),
                Event::Custom(c) if c.name == TRANSLATION => match line_translation(&c.json) {
                    Ok(t) => sessions.add_translation(&session_id, t),
                    Err(why) => {
                        tracing::warn!(session = %session_id, "a line translation was ignored: {why}")
                    }
                },
                Event::Custom(c) if c.name == FLUSH => {
                    if let (Some(m), Some(id)) = (&markers, marker_id(&c.json)) {
                        m.reached(id);
                    }
                }
                _ => {}
            }
        }
        if let Some((tx, task)) = speaker {
            drop(tx);
            let _ = task.await;
        }
    })
}

/// Speaks `say`s in order, one at a time.
async fn speak(mut rx: mpsc::Receiver<Say>, player: Player, speech: Arc<Speech>) {
    while let Some(say) = rx.recv().await {
        if say.interrupt && player.is_playing() {
            player.clear().await;
        }
        let started = std::time::Instant::now();
        let audio = tokio::time::timeout(
            Duration::from_millis(speech.timeout_ms),
            speech.backend.synthesize(&say.text, &say.language),
        )
        .await;
        // Counted with the stages' own speech calls (/metrics).
        let outcome = match &audio {
            Ok(Ok(_)) => crate::metrics::Outcome::Ok,
            Ok(Err(_)) => crate::metrics::Outcome::Error,
            Err(_) => crate::metrics::Outcome::Timeout,
        };
        crate::capabilities::speech::METRICS.record(started.elapsed(), outcome);
        match audio {
            Ok(Ok(mulaw)) => player.play(mulaw).await,
            Ok(Err(e)) => tracing::warn!("cannot speak the question: {e}"),
            Err(_) => tracing::warn!(
                "cannot speak the question: no audio after {} ms",
                speech.timeout_ms
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_translation_names_a_role_a_language_and_a_line() {
        let json = |role: &str, language: &str, text: &str| {
            serde_json::json!({
                "speaker_role": role, "start_ms": 4200, "original": "Hola",
                "language": language, "text": text,
            })
            .to_string()
        };
        let t = line_translation(&json("technician", "fr", "Bonjour")).expect("valid");
        assert_eq!((t.start_ms, t.text.as_str()), (4200, "Bonjour"));
        assert_eq!(
            line_translation(&json("system", "fr", "Bonjour")).err(),
            Some("no speaker role")
        );
        assert_eq!(
            line_translation(&json("technician", "../x", "Bonjour")).err(),
            Some("no language tag")
        );
        assert_eq!(
            line_translation(&json("technician", "fr", " ")).err(),
            Some("empty or too long")
        );
        let long = "mot ".repeat(MAX_TRANSLATION_CHARS);
        assert!(line_translation(&json("technician", "fr", &long)).is_err());
        assert!(line_translation("[]").is_err());
    }
}
