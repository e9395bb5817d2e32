//! One writer task per process, beside the live sessions that feed it: they
//! hand it every change in
//! order, so a status never lands before its call, and what the dashboard
//! is about to be shown (transcripts, suggestions) is awaited until it is
//! stored. A failing database is logged; calls go on.

use super::{Published, StatusChange, SuggestionRecord, TranscriptLine, Update};
use crate::metrics::StageFailure;
use crate::store::{NewCall, Store};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

pub enum Write {
    Open {
        session_id: String,
        technician_id: String,
        technician_name: String,
        phone: Option<String>,
    },
    Attach {
        session_id: String,
        call_sid: String,
    },
    Pipeline {
        session_id: String,
        version: String,
    },
    /// Published to live listeners once stored.
    Status {
        session_id: String,
        change: StatusChange,
    },
    StageError(StageFailure),
    Segment {
        session_id: String,
        speaker_id: String,
        role: String,
    },
    Transcript {
        session_id: String,
        line: TranscriptLine,
        stored: oneshot::Sender<Option<i64>>,
    },
    Suggestion {
        session_id: String,
        record: SuggestionRecord,
        stored: oneshot::Sender<Option<i64>>,
    },
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Write>,
    pub store: Arc<Store>,
}

type Updates = tokio::sync::broadcast::Sender<Arc<Published>>;

impl Writer {
    /// Starts the task (needs a tokio runtime).
    pub fn start(store: Arc<Store>, updates: Updates) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store.clone(), rx, updates));
        Writer { tx, store }
    }

    pub fn send(&self, write: Write) {
        // Closed only at shutdown, when nothing is left to record.
        let _ = self.tx.send(write);
    }

    /// Stores a transcript line; its event id once it is stored.
    pub async fn transcript(&self, session_id: &str, line: TranscriptLine) -> Option<i64> {
        let (stored, done) = oneshot::channel();
        self.send(Write::Transcript {
            session_id: session_id.to_string(),
            line,
            stored,
        });
        done.await.ok().flatten()
    }

    pub async fn suggestion(&self, session_id: &str, record: SuggestionRecord) -> Option<i64> {
        let (stored, done) = oneshot::channel();
        self.send(Write::Suggestion {
            session_id: session_id.to_string(),
            record,
            stored,
        });
        done.await.ok().flatten()
    }
}

async fn run(store: Arc<Store>, mut rx: mpsc::UnboundedReceiver<Write>, updates: Updates) {
    while let Some(write) = rx.recv().await {
        let (what, result) = match write {
            Write::Open {
                session_id,
                technician_id,
                technician_name,
                phone,
            } => (
                "call",
                store
                    .open_call(&NewCall {
                        session_id: &session_id,
                        technician_id: &technician_id,
                        technician_name: &technician_name,
                        phone_number: phone.as_deref(),
                        ..NewCall::default()
                    })
                    .await
                    .map(|_| None),
            ),
            Write::Attach {
                session_id,
                call_sid,
            } => (
                "call sid",
                store
                    .open_call(&NewCall {
                        session_id: &session_id,
                        call_sid: Some(&call_sid),
                        ..NewCall::default()
                    })
                    .await
                    .map(|_| None),
            ),
            Write::Pipeline {
                session_id,
                version,
            } => (
                "pipeline version",
                store
                    .open_call(&NewCall {
                        session_id: &session_id,
                        pipeline_version: Some(&version),
                        ..NewCall::default()
                    })
                    .await
                    .map(|_| None),
            ),
            Write::Status { session_id, change } => {
                let r = store.set_status(&session_id, &change.status).await;
                // No listener is fine; a failed write is still shown.
                let _ = updates.send(Arc::new(Published {
                    session_id,
                    event_id: r.as_ref().ok().copied(),
                    update: Update::Status(change),
                }));
                ("status", r.map(Some))
            }
            Write::StageError(f) => {
                let message = f.summary();
                (
                    "stage error",
                    store
                        .add_stage_error(&f.session_id, &f.stage, &message, f.at)
                        .await
                        .map(|_| None),
                )
            }
            Write::Segment {
                session_id,
                speaker_id,
                role,
            } => (
                "segment",
                store
                    .add_segment(&session_id, &speaker_id, &role)
                    .await
                    .map(|_| None),
            ),
            Write::Transcript {
                session_id,
                line,
                stored,
            } => {
                let r = store.add_transcript(&session_id, &line).await;
                let _ = stored.send(r.as_ref().ok().copied());
                ("transcript", r.map(Some))
            }
            Write::Suggestion {
                session_id,
                record,
                stored,
            } => {
                let r = store.add_suggestion(&session_id, &record).await;
                let _ = stored.send(r.as_ref().ok().copied());
                ("suggestion", r.map(Some))
            }
        };
        if let Err(e) = result {
            tracing::error!(database = %store.display, "cannot store a {what}: {e}");
        }
    }
}
