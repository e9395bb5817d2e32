//! Event kinds, routing sets and readable renderings of events.

use crate::bindings::types::{Event, EventKind, SpeakerRole, SuggestionKind, Track};
use serde_json::{Value, json};

pub const ALL_KINDS: [EventKind; 12] = [
    EventKind::EncodedAudio,
    EventKind::Audio,
    EventKind::SpeechStarted,
    EventKind::Utterance,
    EventKind::Transcript,
    EventKind::Analysis,
    EventKind::Suggestion,
    EventKind::Say,
    EventKind::CallStarted,
    EventKind::CallEnded,
    EventKind::Dtmf,
    EventKind::Custom,
];

/// Kinds the host itself puts into every pipeline (`custom`: the
/// `callpipe.tick` clock, for pipelines with a stage that handles it).
pub const HOST_INJECTED: [EventKind; 5] = [
    EventKind::EncodedAudio,
    EventKind::CallStarted,
    EventKind::CallEnded,
    EventKind::Dtmf,
    EventKind::Custom,
];

/// Name of the host's clock event: `custom { name: TICK, json: {"stream_ms": N} }`.
pub const TICK: &str = "callpipe.tick";
/// A marker the chat path sends after a message: when it comes out of the
/// pipeline, everything the message caused has come out before it.
pub const FLUSH: &str = "callpipe.flush";

/// True for the host's clock events (outputs usually skip them).
pub fn is_tick(event: &crate::bindings::types::Event) -> bool {
    matches!(event, crate::bindings::types::Event::Custom(c) if c.name == TICK)
}

pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::EncodedAudio => "encoded-audio",
        EventKind::Audio => "audio",
        EventKind::SpeechStarted => "speech-started",
        EventKind::Utterance => "utterance",
        EventKind::Transcript => "transcript",
        EventKind::Analysis => "analysis",
        EventKind::Suggestion => "suggestion",
        EventKind::Say => "say",
        EventKind::CallStarted => "call-started",
        EventKind::CallEnded => "call-ended",
        EventKind::Dtmf => "dtmf",
        EventKind::Custom => "custom",
    }
}

pub fn parse_kind(name: &str) -> Option<EventKind> {
    ALL_KINDS.into_iter().find(|&k| kind_name(k) == name)
}

pub fn kind_of(event: &Event) -> EventKind {
    match event {
        Event::EncodedAudio(_) => EventKind::EncodedAudio,
        Event::Audio(_) => EventKind::Audio,
        Event::SpeechStarted(_) => EventKind::SpeechStarted,
        Event::Utterance(_) => EventKind::Utterance,
        Event::Transcript(_) => EventKind::Transcript,
        Event::Analysis(_) => EventKind::Analysis,
        Event::Suggestion(_) => EventKind::Suggestion,
        Event::Say(_) => EventKind::Say,
        Event::CallStarted(_) => EventKind::CallStarted,
        Event::CallEnded(_) => EventKind::CallEnded,
        Event::Dtmf(_) => EventKind::Dtmf,
        Event::Custom(_) => EventKind::Custom,
    }
}

/// A set of event kinds, checked once per event on the routing path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindSet(u16);

impl KindSet {
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & (1 << kind as u16) != 0
    }

    pub fn insert(&mut self, kind: EventKind) {
        self.0 |= 1 << kind as u16;
    }

    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        ALL_KINDS.into_iter().filter(move |&k| self.contains(k))
    }
}

impl FromIterator<EventKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = EventKind>>(iter: I) -> Self {
        let mut set = KindSet::default();
        for k in iter {
            set.insert(k);
        }
        set
    }
}

pub fn track_name(track: Track) -> &'static str {
    match track {
        Track::Inbound => "inbound",
        Track::Outbound => "outbound",
    }
}

pub fn role_name(role: SpeakerRole) -> &'static str {
    match role {
        SpeakerRole::Technician => "technician",
        SpeakerRole::Agent => "agent",
        SpeakerRole::Unknown => "unknown",
    }
}

fn ms(t: u64) -> String {
    format!("{}.{:03}s", t / 1000, t % 1000)
}

/// One readable line per event; audio payloads are summarised, not dumped.
pub fn describe(event: &Event) -> String {
    match event {
        Event::EncodedAudio(e) => format!(
            "encoded-audio {} seq={} t={} {} bytes",
            track_name(e.track),
            e.seq,
            ms(e.timestamp_ms),
            e.bytes.len()
        ),
        Event::Audio(a) => format!(
            "audio {} t={} {} samples @{} Hz",
            track_name(a.track),
            ms(a.timestamp_ms),
            a.samples.len(),
            a.rate
        ),
        Event::SpeechStarted(s) => {
            format!("speech-started {} at {}", track_name(s.track), ms(s.at_ms))
        }
        Event::Utterance(u) => format!(
            "utterance #{} {} {} ({}) {} -> {} ({} ms){}",
            u.id,
            track_name(u.track),
            role_name(u.role),
            if u.speaker_id.is_empty() {
                "-"
            } else {
                &u.speaker_id
            },
            ms(u.start_ms),
            ms(u.end_ms),
            u.end_ms.saturating_sub(u.start_ms),
            if u.partial { " partial" } else { "" }
        ),
        Event::Transcript(t) => format!(
            "transcript #{} {} [{}] {:?} ({:.2})",
            t.utterance_id,
            role_name(t.role),
            t.language,
            t.text,
            t.confidence
        ),
        Event::Analysis(a) => format!(
            "analysis sufficient={} query={:?} entities={:?} missing={:?}",
            a.sufficient, a.query, a.entities, a.missing
        ),
        Event::Suggestion(s) => format!(
            "suggestion {} {:?} ({:.2}) sources={:?}",
            match s.kind {
                SuggestionKind::KnowledgeBase => "knowledge-base",
                SuggestionKind::ClarificationQuestion => "clarification-question",
            },
            s.title,
            s.confidence,
            s.sources
        ),
        Event::Say(s) => format!("say [{}] {:?}", s.language, s.text),
        Event::CallStarted(c) => {
            format!("call-started session={} call={}", c.session_id, c.call_sid)
        }
        Event::CallEnded(c) => format!("call-ended session={} call={}", c.session_id, c.call_sid),
        Event::Dtmf(d) => format!("dtmf {} {}", track_name(d.track), d.digit),
        Event::Custom(c) => format!("custom {} {}", c.name, c.json),
    }
}

/// The event as JSON, with audio payloads reduced to their length.
pub fn to_json(event: &Event) -> Value {
    let kind = kind_name(kind_of(event));
    let body = match event {
        Event::EncodedAudio(e) => json!({
            "track": track_name(e.track), "seq": e.seq, "timestamp_ms": e.timestamp_ms,
            "rate": e.rate, "bytes": e.bytes.len(),
        }),
        Event::Audio(a) => json!({
            "track": track_name(a.track), "timestamp_ms": a.timestamp_ms, "rate": a.rate,
            "samples": a.samples.len(),
        }),
        Event::SpeechStarted(s) => json!({ "track": track_name(s.track), "at_ms": s.at_ms }),
        Event::Utterance(u) => json!({
            "id": u.id, "track": track_name(u.track), "speaker_id": u.speaker_id,
            "role": role_name(u.role), "start_ms": u.start_ms, "end_ms": u.end_ms,
            "pre_roll_ms": u.pre_roll_ms, "rate": u.rate, "samples": u.samples.len(),
            "partial": u.partial,
        }),
        Event::Transcript(t) => json!({
            "utterance_id": t.utterance_id, "track": track_name(t.track), "speaker_id": t.speaker_id,
            "role": role_name(t.role), "start_ms": t.start_ms, "end_ms": t.end_ms, "text": t.text,
            "language": t.language, "confidence": t.confidence,
        }),
        Event::Analysis(a) => json!({
            "sufficient": a.sufficient, "query": a.query, "entities": a.entities, "issue": a.issue,
            "language": a.language, "missing": a.missing,
        }),
        Event::Suggestion(s) => json!({
            "id": s.id,
            "type": match s.kind {
                SuggestionKind::KnowledgeBase => "knowledge_base",
                SuggestionKind::ClarificationQuestion => "clarification_question",
            },
            "title": s.title, "content": s.content, "sources": s.sources,
            "confidence": s.confidence, "language": s.language,
        }),
        Event::Say(s) => {
            json!({ "text": s.text, "language": s.language, "interrupt": s.interrupt })
        }
        Event::CallStarted(c) | Event::CallEnded(c) => json!({
            "session_id": c.session_id, "call_sid": c.call_sid, "technician_id": c.technician_id,
            "technician_name": c.technician_name, "language": c.language,
        }),
        Event::Dtmf(d) => json!({ "track": track_name(d.track), "digit": d.digit }),
        Event::Custom(c) => json!({ "name": c.name, "json": c.json }),
    };
    json!({ "kind": kind, "event": body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for k in ALL_KINDS {
            assert_eq!(parse_kind(kind_name(k)), Some(k));
        }
        assert_eq!(parse_kind("audoi"), None);
    }

    #[test]
    fn kind_sets_hold_exactly_what_was_inserted() {
        let set: KindSet = [EventKind::Audio, EventKind::CallEnded]
            .into_iter()
            .collect();
        assert!(set.contains(EventKind::Audio));
        assert!(set.contains(EventKind::CallEnded));
        assert!(!set.contains(EventKind::EncodedAudio));
        assert_eq!(set.iter().count(), 2);
    }
}
