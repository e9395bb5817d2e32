//! Live sessions: who is on which call, its status history and what the
//! pipeline has produced so far (segments per speaker). This is the live view
//! the HTTP API answers from; durable storage builds on it.

use crate::bindings::types::SpeakerRole;
use crate::pipeline::event::role_name;
pub mod writer;

pub use crate::store::items::{LineTranslation, SuggestionRecord, TranscriptLine, Translation};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;
use writer::{Write, Writer};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpeakerStats {
    pub segment_count: u64,
    pub speaker_role: String,
}

/// What changed in a session, for live listeners (the dashboard's stream).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Update {
    Transcript(TranscriptLine),
    Suggestion(SuggestionRecord),
    Status(StatusChange),
    /// The end-of-call summary a stage wrote (its JSON, as it wrote it).
    Summary(serde_json::Value),
    /// A line translated for the agent.
    Translation(LineTranslation),
    /// What the analysis stage currently understands (live only: the next
    /// analysis replaces it, so it is not stored).
    Diagnostic(Diagnostic),
}

/// The dashboard's "Diagnostic" block: equipment, issue and the details
/// still missing, as the latest `analysis` has them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Diagnostic {
    pub equipment: Vec<String>,
    pub issue: Option<String>,
    pub missing: Vec<String>,
    pub sufficient: bool,
    pub language: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StatusChange {
    pub status: String,
    /// Seconds since the Unix epoch.
    pub at: f64,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub session_id: String,
    pub call_sid: Option<String>,
    pub technician_id: String,
    pub technician_name: String,
    pub phone_number: Option<String>,
    pub status: String,
    pub history: Vec<StatusChange>,
    pub speakers: BTreeMap<String, SpeakerStats>,
    pub total_segments: u64,
    pub transcript: Vec<TranscriptLine>,
    pub suggestions: Vec<SuggestionRecord>,
    started: Instant,
    ended: Option<Instant>,
    /// A media stream is attached right now.
    pub streaming: bool,
    /// This host claimed the call in the store and runs its pipeline (a
    /// stream or a chat): it defends the call when another host takes it
    /// for gone.
    pub runs_here: bool,
    /// The agent silenced the assistant's voice on this call: questions are
    /// still shown, no longer spoken.
    pub muted: bool,
    /// The pipeline version the call runs on (it keeps it across reloads).
    pub pipeline_version: Option<String>,
    /// The end-of-call summary, once a stage wrote one.
    pub summary: Option<serde_json::Value>,
    /// The latest analysis, for the dashboard's Diagnostic block.
    pub diagnostic: Option<Diagnostic>,
    /// What the agent typed about the technician and the site.
    pub context: Option<serde_json::Value>,
}

impl Session {
    /// The call reached a terminal status.
    pub fn is_over(&self) -> bool {
        self.ended.is_some()
    }

    /// Seconds from creation to the end of the call (or now).
    pub fn duration_secs(&self) -> u64 {
        self.ended
            .unwrap_or_else(Instant::now)
            .duration_since(self.started)
            .as_secs()
    }
}

pub use crate::clock::now_epoch;

/// A status after which the call is over.
pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "completed" | "failed" | "busy" | "no-answer" | "canceled" | "interrupted"
    )
}

/// Transcript lines a live session keeps (durable storage keeps them all).
const MAX_TRANSCRIPT: usize = 500;
/// Suggestions a live session keeps.
const MAX_SUGGESTIONS: usize = 200;
/// Updates a slow listener may fall behind by before it misses some.
const UPDATE_BACKLOG: usize = 1024;

/// One change of one session, as live listeners get it.
#[derive(Debug)]
pub struct Published {
    pub session_id: String,
    /// Its id in the stored event log (none without a database).
    pub event_id: Option<i64>,
    pub update: Update,
}

pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    /// call sid -> session id
    by_call: Mutex<HashMap<String, String>>,
    updates: tokio::sync::broadcast::Sender<std::sync::Arc<Published>>,
    /// The durable record; every change goes there first.
    writer: Option<Writer>,
    /// How long after its lease expired a host's calls may be taken over.
    claim_grace: std::sync::OnceLock<std::time::Duration>,
}

/// Why this host may not run a call's pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRefused {
    #[error("the call runs on host `{0}`")]
    Elsewhere(String),
    #[error("the call has ended")]
    Ended,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            by_id: Mutex::default(),
            by_call: Mutex::default(),
            updates: tokio::sync::broadcast::channel(UPDATE_BACKLOG).0,
            writer: None,
            claim_grace: std::sync::OnceLock::new(),
        }
    }
}

impl Sessions {
    /// Sessions recorded in `store` (starts its writer task).
    pub fn with_store(store: std::sync::Arc<crate::store::Store>) -> Self {
        let updates = tokio::sync::broadcast::channel(UPDATE_BACKLOG).0;
        Sessions {
            writer: Some(Writer::start(store, updates.clone())),
            updates,
            ..Sessions::default()
        }
    }

    /// Files a stage failure in the store (the ops page reads it back).
    pub fn record_stage_error(&self, failure: &crate::metrics::StageFailure) {
        self.write(Write::StageError(failure.clone()));
    }

    pub fn store(&self) -> Option<&std::sync::Arc<crate::store::Store>> {
        self.writer.as_ref().map(|w| &w.store)
    }

    fn write(&self, w: Write) {
        if let Some(writer) = &self.writer {
            writer.send(w);
        }
    }

    /// Every session's updates from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<Published>> {
        self.updates.subscribe()
    }

    fn publish(&self, session_id: &str, event_id: Option<i64>, update: Update) {
        // No listener is fine: the session keeps the record.
        let _ = self.updates.send(std::sync::Arc::new(Published {
            session_id: session_id.to_string(),
            event_id,
            update,
        }));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.by_call.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the session, or updates who is on it if it exists.
    pub fn open(
        &self,
        session_id: &str,
        technician_id: &str,
        technician_name: &str,
        phone: Option<&str>,
    ) {
        let mut map = self.lock();
        let s = map
            .entry(session_id.to_string())
            .or_insert_with(|| Session {
                session_id: session_id.to_string(),
                call_sid: None,
                technician_id: String::new(),
                technician_name: String::new(),
                phone_number: None,
                status: "created".into(),
                history: vec![StatusChange {
                    status: "created".into(),
                    at: now_epoch(),
                }],
                speakers: BTreeMap::new(),
                total_segments: 0,
                transcript: Vec::new(),
                suggestions: Vec::new(),
                started: Instant::now(),
                ended: None,
                streaming: false,
                runs_here: false,
                muted: false,
                pipeline_version: None,
                summary: None,
                diagnostic: None,
                context: None,
            });
        if !technician_id.is_empty() {
            s.technician_id = technician_id.to_string();
        }
        if !technician_name.is_empty() {
            s.technician_name = technician_name.to_string();
        }
        if let Some(p) = phone {
            s.phone_number = Some(p.to_string());
        }
        drop(map);
        self.write(Write::Open {
            session_id: session_id.to_string(),
            technician_id: technician_id.to_string(),
            technician_name: technician_name.to_string(),
            phone: phone.map(str::to_string),
        });
    }

    pub fn attach_call(&self, session_id: &str, call_sid: &str) {
        if call_sid.is_empty() {
            return;
        }
        if let Some(s) = self.lock().get_mut(session_id) {
            s.call_sid = Some(call_sid.to_string());
        }
        self.calls()
            .insert(call_sid.to_string(), session_id.to_string());
        self.write(Write::Attach {
            session_id: session_id.to_string(),
            call_sid: call_sid.to_string(),
        });
    }

    pub fn session_for_call(&self, call_sid: &str) -> Option<String> {
        self.calls().get(call_sid).cloned()
    }

    /// Another host stored this event: this host's listeners get it, and a
    /// status change of a session live here (its status callback reached
    /// another host) updates it, without storing it again.
    pub fn relay(&self, session_id: &str, event_id: i64, update: Update) {
        if let Update::Status(change) = &update
            && let Some(s) = self.lock().get_mut(session_id)
        {
            if change.status == "interrupted" && s.runs_here && s.ended.is_none() {
                // Another host took this one for gone while it could not
                // reach the database; the call is alive here and this host
                // reclaims it (`crate::cluster`): the guess is not shown.
                return;
            }
            if s.status != change.status {
                s.status = change.status.clone();
                s.history.push(change.clone());
                if is_terminal(&change.status) {
                    s.ended.get_or_insert_with(Instant::now);
                } else {
                    // Only the store's legal changes are relayed: a call
                    // reclaimed by its live host is open again.
                    s.ended = None;
                }
            }
        }
        self.publish(session_id, Some(event_id), update);
    }

    /// A status for a call this host does not hold (another host runs it, or
    /// ran it): stored, and so relayed to the host that runs it.
    pub fn set_status_elsewhere(&self, session_id: &str, status: &str) {
        let change = StatusChange {
            status: status.to_string(),
            at: now_epoch(),
        };
        match &self.writer {
            Some(w) => w.send(Write::Status {
                session_id: session_id.to_string(),
                change,
            }),
            None => self.publish(session_id, None, Update::Status(change)),
        }
    }

    /// Sessions that ended more than `grace` ago leave memory (the store
    /// answers for them); returns how many left.
    pub fn evict_ended(&self, grace: std::time::Duration) -> usize {
        let mut gone = Vec::new();
        self.lock().retain(|id, s| {
            let keep = s.ended.is_none_or(|at| at.elapsed() < grace) || s.streaming;
            if !keep {
                gone.push((id.clone(), s.call_sid.clone()));
            }
            keep
        });
        if !gone.is_empty() {
            let mut calls = self.calls();
            for (id, sid) in &gone {
                if let Some(sid) = sid
                    && calls.get(sid) == Some(id)
                {
                    calls.remove(sid);
                }
            }
        }
        gone.len()
    }

    /// Sessions in memory now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a status; terminal statuses end the session's clock.
    pub fn set_status(&self, session_id: &str, status: &str) {
        let mut changed = None;
        if let Some(s) = self.lock().get_mut(session_id) {
            if s.ended.is_some() && !is_terminal(status) {
                // A terminal status is final.
                return;
            }
            if is_terminal(status) {
                s.runs_here = false;
            }
            if s.status != status {
                s.status = status.to_string();
                let change = StatusChange {
                    status: status.to_string(),
                    at: now_epoch(),
                };
                s.history.push(change.clone());
                changed = Some(change);
            }
            if is_terminal(status) && s.ended.is_none() {
                s.ended = Some(Instant::now());
            }
        }
        if let Some(change) = changed {
            match &self.writer {
                // The writer publishes it once stored, in order with the
                // rest; the caller need not wait.
                Some(w) => w.send(Write::Status {
                    session_id: session_id.to_string(),
                    change,
                }),
                None => self.publish(session_id, None, Update::Status(change)),
            }
        }
    }

    pub fn set_streaming(&self, session_id: &str, streaming: bool) {
        if let Some(s) = self.lock().get_mut(session_id) {
            s.streaming = streaming;
        }
    }

    /// The pipeline version the session's call started on.
    pub fn set_pipeline(&self, session_id: &str, version: &str) {
        if let Some(s) = self.lock().get_mut(session_id) {
            s.pipeline_version = Some(version.to_string());
        } else {
            return;
        }
        self.write(Write::Pipeline {
            session_id: session_id.to_string(),
            version: version.to_string(),
        });
    }

    /// Sets how long after its lease expired a host's calls may be taken
    /// over (the cluster's grace; once, at start).
    pub fn set_claim_grace(&self, grace: std::time::Duration) {
        let _ = self.claim_grace.set(grace);
    }

    /// Makes this host the call's one owner in the store, at once (not
    /// behind the writer's queue), before its pipeline starts: refused while
    /// another live host runs it or once it has ended, whatever a client
    /// sent. A store that does not answer in time does not stop the call
    /// (it would drop a live call for a bookkeeping write); the queued
    /// write records the host later.
    pub async fn claim(&self, session_id: &str) -> Result<(), ClaimRefused> {
        let over = self.get_field(session_id, |s| s.is_over()).unwrap_or(false);
        if over {
            return Err(ClaimRefused::Ended);
        }
        let Some(store) = self.store() else {
            return Ok(());
        };
        let Some(me) = store.host() else {
            return Ok(());
        };
        let grace = self
            .claim_grace
            .get()
            .copied()
            .unwrap_or(std::time::Duration::from_secs(15));
        let claim = store.claim_call(session_id, me, grace);
        match tokio::time::timeout(std::time::Duration::from_secs(2), claim).await {
            Ok(Ok(crate::store::Claim::Taken)) => Ok(()),
            Ok(Ok(crate::store::Claim::Elsewhere(host))) => Err(ClaimRefused::Elsewhere(host)),
            Ok(Ok(crate::store::Claim::Ended)) => Err(ClaimRefused::Ended),
            Ok(Err(e)) => {
                tracing::warn!(session = %session_id, "cannot record that this host runs the session: {e}");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(session = %session_id, "recording that this host runs the session timed out");
                Ok(())
            }
        }
    }

    /// The session's pipeline runs here (after `claim` and `open`).
    pub fn set_runs_here(&self, session_id: &str) {
        if let Some(s) = self.lock().get_mut(session_id) {
            s.runs_here = true;
        }
    }

    /// Sessions whose pipeline runs here and that have not ended.
    pub fn running_here(&self) -> Vec<String> {
        self.lock()
            .values()
            .filter(|s| s.runs_here && s.ended.is_none())
            .map(|s| s.session_id.clone())
            .collect()
    }

    /// A call this host runs was reclaimed in the store (another host had
    /// marked it interrupted): the reclaim's status event reaches the
    /// listeners here (the relay skips what this host stored).
    pub fn reclaimed(&self, session_id: &str, event_id: i64, change: StatusChange) {
        self.publish(session_id, Some(event_id), Update::Status(change));
    }

    /// Mutes or unmutes the assistant's voice; false if the session is unknown.
    pub fn set_muted(&self, session_id: &str, muted: bool) -> bool {
        match self.lock().get_mut(session_id) {
            Some(s) => {
                s.muted = muted;
                true
            }
            None => false,
        }
    }

    pub fn is_muted(&self, session_id: &str) -> bool {
        self.lock().get(session_id).is_some_and(|s| s.muted)
    }

    /// One more segment (utterance) by `speaker_id`.
    pub fn add_segment(&self, session_id: &str, speaker_id: &str, role: SpeakerRole) {
        if let Some(s) = self.lock().get_mut(session_id) {
            s.total_segments += 1;
            let e = s
                .speakers
                .entry(speaker_id.to_string())
                .or_insert_with(|| SpeakerStats {
                    segment_count: 0,
                    speaker_role: role_name(role).into(),
                });
            e.segment_count += 1;
        } else {
            return;
        }
        self.write(Write::Segment {
            session_id: session_id.to_string(),
            speaker_id: speaker_id.to_string(),
            role: role_name(role).into(),
        });
    }

    /// A transcript line: into the live view (which keeps the last
    /// `MAX_TRANSCRIPT`) at once, then to the store, whose writer publishes
    /// it with its event id. Never waits for the database.
    pub fn add_transcript(&self, session_id: &str, line: TranscriptLine) {
        let known = match self.lock().get_mut(session_id) {
            Some(s) => {
                if s.transcript.len() >= MAX_TRANSCRIPT {
                    s.transcript.remove(0);
                }
                s.transcript.push(line.clone());
                true
            }
            None => false,
        };
        if known {
            self.stored_then_published(
                session_id,
                Write::Transcript {
                    session_id: session_id.to_string(),
                    line,
                },
            );
        }
    }

    /// A suggestion (one with a known id replaces the old one), shown at
    /// once and stored behind, as `add_transcript`.
    pub fn add_suggestion(&self, session_id: &str, record: SuggestionRecord) {
        let known = match self.lock().get_mut(session_id) {
            Some(s) => {
                s.suggestions.retain(|x| x.id != record.id);
                if s.suggestions.len() >= MAX_SUGGESTIONS {
                    s.suggestions.remove(0);
                }
                s.suggestions.push(record.clone());
                true
            }
            None => false,
        };
        if known {
            self.stored_then_published(
                session_id,
                Write::Suggestion {
                    session_id: session_id.to_string(),
                    record,
                },
            );
        }
    }

    /// A line's translation, a stage's `line-translation` event: kept with
    /// the line (by role, start and text), shown at once and stored behind,
    /// as `add_transcript`. A line no longer held live is still stored.
    pub fn add_translation(&self, session_id: &str, t: LineTranslation) {
        let known = match self.lock().get_mut(session_id) {
            Some(s) => {
                if let Some(line) = s.transcript.iter_mut().rev().find(|l| {
                    l.speaker_role == t.speaker_role
                        && l.start_ms == t.start_ms
                        && l.text == t.original
                }) {
                    line.translation = Some(Translation {
                        language: t.language.clone(),
                        text: t.text.clone(),
                    });
                }
                true
            }
            None => false,
        };
        if known {
            self.stored_then_published(
                session_id,
                Write::Translation {
                    session_id: session_id.to_string(),
                    translation: t,
                },
            );
        }
    }

    /// The end-of-call summary a stage wrote (a JSON object), shown at once
    /// and stored behind, as `add_transcript`. Anything but an object is
    /// refused with a warning.
    pub fn set_summary(&self, session_id: &str, json: &str) {
        let value = match serde_json::from_str::<serde_json::Value>(json) {
            Ok(v) if v.is_object() => v,
            _ => {
                tracing::warn!(session = %session_id, "a call summary that is not a JSON object was ignored");
                return;
            }
        };
        let known = match self.lock().get_mut(session_id) {
            Some(s) => {
                s.summary = Some(value.clone());
                true
            }
            None => false,
        };
        if known {
            self.stored_then_published(
                session_id,
                Write::Summary {
                    session_id: session_id.to_string(),
                    summary: value,
                },
            );
        }
    }

    /// What the agent typed about the technician and the site: kept with
    /// the session and stored. False when the session is not here.
    pub fn set_context(&self, session_id: &str, context: serde_json::Value) -> bool {
        match self.lock().get_mut(session_id) {
            Some(s) => s.context = Some(context.clone()),
            None => return false,
        }
        if let Some(w) = &self.writer {
            w.send(Write::Context {
                session_id: session_id.to_string(),
                context,
            });
        }
        true
    }

    /// The latest analysis: shown at once to live listeners when it
    /// changed, never stored (the next one replaces it).
    pub fn set_diagnostic(&self, session_id: &str, diagnostic: Diagnostic) {
        let changed = match self.lock().get_mut(session_id) {
            Some(s) if s.diagnostic.as_ref() != Some(&diagnostic) => {
                s.diagnostic = Some(diagnostic.clone());
                true
            }
            _ => false,
        };
        if changed {
            self.publish(session_id, None, Update::Diagnostic(diagnostic));
        }
    }

    /// With a store, the writer publishes the change once stored (with its
    /// event id); without one, it is published now.
    fn stored_then_published(&self, session_id: &str, write: Write) {
        match (&self.writer, write) {
            (Some(w), write) => w.send(write),
            (None, Write::Transcript { line, .. }) => {
                self.publish(session_id, None, Update::Transcript(line))
            }
            (None, Write::Suggestion { record, .. }) => {
                self.publish(session_id, None, Update::Suggestion(record))
            }
            (None, Write::Summary { summary, .. }) => {
                self.publish(session_id, None, Update::Summary(summary))
            }
            (None, Write::Translation { translation, .. }) => {
                self.publish(session_id, None, Update::Translation(translation))
            }
            (None, _) => {}
        }
    }

    /// Waits (up to `limit`) until every change so far is stored: at
    /// shutdown, so nothing queued is lost.
    pub async fn flush(&self, limit: std::time::Duration) -> bool {
        match &self.writer {
            Some(w) => w.flush(limit).await,
            None => true,
        }
    }

    /// Whether the session is live (without copying it, as `get` does).
    pub fn contains(&self, session_id: &str) -> bool {
        self.lock().contains_key(session_id)
    }

    /// One thing about a session, read without copying it.
    pub fn get_field<T>(&self, session_id: &str, f: impl FnOnce(&Session) -> T) -> Option<T> {
        self.lock().get(session_id).map(f)
    }

    pub fn get(&self, session_id: &str) -> Option<Session> {
        self.lock().get(session_id).cloned()
    }

    /// `view` of every session in memory: the list views read what they
    /// show under the lock instead of copying every session (transcripts
    /// included) under the lock the audio path's outputs take.
    pub fn map_all<T>(&self, view: impl Fn(&Session) -> Option<T>) -> Vec<T> {
        self.lock().values().filter_map(view).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_segments_per_speaker_and_status() {
        let s = Sessions::default();
        s.open("s1", "tech-1", "Jeanne", Some("+33612345678"));
        s.attach_call("s1", "CA1");
        assert_eq!(s.session_for_call("CA1").as_deref(), Some("s1"));
        s.add_segment("s1", "tech-1", SpeakerRole::Technician);
        s.add_segment("s1", "tech-1", SpeakerRole::Technician);
        s.add_segment("s1", "agent", SpeakerRole::Agent);
        s.set_status("s1", "in-progress");
        s.set_status("s1", "completed");
        let got = s.get("s1").unwrap();
        assert_eq!(got.total_segments, 3);
        assert_eq!(
            got.speakers["tech-1"],
            SpeakerStats {
                segment_count: 2,
                speaker_role: "technician".into()
            }
        );
        assert_eq!(
            got.history
                .iter()
                .map(|h| h.status.as_str())
                .collect::<Vec<_>>(),
            ["created", "in-progress", "completed"]
        );
        // Unknown sessions are ignored, not created.
        s.add_segment("nope", "x", SpeakerRole::Agent);
        assert!(s.get("nope").is_none());
    }
}
