//! One writer task per process, beside the live sessions that feed it: they
//! hand it every change in order, so a status never lands before its call.
//! Nothing live waits for it: the live view is updated first, and the
//! dashboard's event stream gets each stored change (with its event id)
//! from here once it is stored.
//!
//! The database may be slow or away: writes wait in a bounded queue, a try
//! that fails for a reason that may pass is retried with backoff, a write
//! whose call row is missing (its opening write was lost) creates the row
//! and goes again, and shutdown flushes what is queued. A full queue
//! refuses new writes with a metric and a loud log; audio never waits.

use super::{LineTranslation, Published, StatusChange, SuggestionRecord, TranscriptLine, Update};
use crate::metrics::{STORE_WRITER, StageFailure};
use crate::store::{NewCall, Store, StoreError};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Writes waiting for the database. At a few writes per call-second this
/// holds minutes of a large deployment's traffic.
pub const QUEUE: usize = 65_536;
/// A write that keeps failing transiently is given up after this long.
const RETRY_FOR: Duration = Duration::from_secs(120);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
    /// Published to live listeners once stored.
    Transcript {
        session_id: String,
        line: TranscriptLine,
    },
    /// Published to live listeners once stored.
    Suggestion {
        session_id: String,
        record: SuggestionRecord,
    },
    /// Published to live listeners once stored.
    Summary {
        session_id: String,
        summary: serde_json::Value,
    },
    Context {
        session_id: String,
        context: serde_json::Value,
    },
    /// Published to live listeners once stored.
    Translation {
        session_id: String,
        translation: LineTranslation,
    },
    /// Answered once everything queued before it is stored (or given up).
    Flush(oneshot::Sender<()>),
}

impl Write {
    fn what(&self) -> &'static str {
        match self {
            Write::Open { .. } => "call",
            Write::Attach { .. } => "call sid",
            Write::Pipeline { .. } => "pipeline version",
            Write::Status { .. } => "status",
            Write::StageError(_) => "stage error",
            Write::Segment { .. } => "segment",
            Write::Transcript { .. } => "transcript",
            Write::Suggestion { .. } => "suggestion",
            Write::Summary { .. } => "summary",
            Write::Context { .. } => "site context",
            Write::Translation { .. } => "translation",
            Write::Flush(_) => "flush",
        }
    }

    /// The call a write belongs to (whose row it needs).
    fn session_id(&self) -> Option<&str> {
        match self {
            Write::Open { .. } | Write::Flush(_) => None,
            Write::Attach { session_id, .. }
            | Write::Pipeline { session_id, .. }
            | Write::Status { session_id, .. }
            | Write::Segment { session_id, .. }
            | Write::Transcript { session_id, .. }
            | Write::Suggestion { session_id, .. }
            | Write::Summary { session_id, .. }
            | Write::Context { session_id, .. }
            | Write::Translation { session_id, .. } => Some(session_id),
            Write::StageError(f) => Some(&f.session_id),
        }
    }
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Write>,
    pub store: Arc<Store>,
}

type Updates = tokio::sync::broadcast::Sender<Arc<Published>>;

impl Writer {
    /// Starts the task (needs a tokio runtime).
    pub fn start(store: Arc<Store>, updates: Updates) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store.clone(), rx, updates));
        Writer { tx, store }
    }

    /// Queues a write; never waits.
    pub fn send(&self, write: Write) {
        match self.tx.try_send(write) {
            Ok(()) => {
                STORE_WRITER.queued.fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(w)) => {
                let n = STORE_WRITER.refused.fetch_add(1, Relaxed);
                // Loud, without one line per refused write.
                if n.is_power_of_two() || n == 0 {
                    tracing::error!(
                        database = %self.store.display,
                        refused = n + 1,
                        "the store's write queue is full ({QUEUE} writes): a {} is not stored \
                         (the live view has it); the database is too slow or unreachable",
                        w.what()
                    );
                }
            }
            // Closed only at shutdown, when nothing is left to record.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Waits (up to `limit`) until everything queued so far is stored.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, flushed) = oneshot::channel();
        let wait =
            async { self.tx.send(Write::Flush(done)).await.is_ok() && flushed.await.is_ok() };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }
}

async fn run(store: Arc<Store>, mut rx: mpsc::Receiver<Write>, updates: Updates) {
    while let Some(write) = rx.recv().await {
        if let Write::Flush(done) = write {
            let _ = done.send(());
            continue;
        }
        STORE_WRITER.queued.fetch_sub(1, Relaxed);
        let result = store_with_retries(&store, &write).await;
        if let Err(e) = &result {
            STORE_WRITER.failed.fetch_add(1, Relaxed);
            tracing::error!(database = %store.display, "cannot store a {}: {e}", write.what());
        }
        let event_id = result.ok().flatten();
        // Live listeners get what is stored, with its event id; a change the
        // store refused is still shown (without an id).
        let published = match write {
            Write::Status { session_id, change } => Some((session_id, Update::Status(change))),
            Write::Transcript { session_id, line } => Some((session_id, Update::Transcript(line))),
            Write::Suggestion { session_id, record } => {
                Some((session_id, Update::Suggestion(record)))
            }
            Write::Summary {
                session_id,
                summary,
            } => Some((session_id, Update::Summary(summary))),
            Write::Translation {
                session_id,
                translation,
            } => Some((session_id, Update::Translation(translation))),
            _ => None,
        };
        if let Some((session_id, update)) = published {
            // No listener is fine.
            let _ = updates.send(Arc::new(Published {
                session_id,
                event_id,
                update,
            }));
        }
    }
}

/// Stores one write: retried with backoff while the failure may pass, and
/// once more after creating the call's row when that is what is missing.
async fn store_with_retries(store: &Store, write: &Write) -> Result<Option<i64>, StoreError> {
    let started = tokio::time::Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut repaired = false;
    loop {
        let error = match apply(store, write).await {
            Ok(id) => return Ok(id),
            Err(e) => e,
        };
        if error.is_missing_call()
            && !repaired
            && let Some(session_id) = write.session_id()
        {
            repaired = true;
            STORE_WRITER.repaired.fetch_add(1, Relaxed);
            tracing::warn!(session = %session_id, "the call's row was missing (its opening write was lost): creating it");
            if let Err(e) = store
                .open_call(&NewCall {
                    session_id,
                    ..NewCall::default()
                })
                .await
                && !e.is_transient()
            {
                return Err(e);
            }
            continue;
        }
        if !error.is_transient() || started.elapsed() >= RETRY_FOR {
            return Err(error);
        }
        STORE_WRITER.retries.fetch_add(1, Relaxed);
        if backoff == FIRST_BACKOFF {
            tracing::warn!(database = %store.display, "storing a {} failed, retrying: {error}", write.what());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn apply(store: &Store, write: &Write) -> Result<Option<i64>, StoreError> {
    match write {
        Write::Open {
            session_id,
            technician_id,
            technician_name,
            phone,
        } => store
            .open_call(&NewCall {
                session_id,
                technician_id,
                technician_name,
                phone_number: phone.as_deref(),
                ..NewCall::default()
            })
            .await
            .map(|_| None),
        Write::Attach {
            session_id,
            call_sid,
        } => store
            .open_call(&NewCall {
                session_id,
                call_sid: Some(call_sid),
                ..NewCall::default()
            })
            .await
            .map(|_| None),
        // A pipeline starts on this host: the call is this host's now.
        Write::Pipeline {
            session_id,
            version,
        } => store
            .open_call(&NewCall {
                session_id,
                pipeline_version: Some(version),
                host_id: store.host(),
                ..NewCall::default()
            })
            .await
            .map(|_| None),
        Write::Status { session_id, change } => {
            store
                .set_status_at(session_id, &change.status, change.at)
                .await
        }
        Write::StageError(f) => store
            .add_stage_error(&f.session_id, &f.stage, &f.summary(), f.at)
            .await
            .map(|_| None),
        Write::Segment {
            session_id,
            speaker_id,
            role,
        } => store
            .add_segment(session_id, speaker_id, role)
            .await
            .map(|_| None),
        Write::Transcript { session_id, line } => {
            store.add_transcript(session_id, line).await.map(Some)
        }
        Write::Suggestion { session_id, record } => {
            store.add_suggestion(session_id, record).await.map(Some)
        }
        Write::Summary {
            session_id,
            summary,
        } => store
            .set_summary(session_id, &summary.to_string())
            .await
            .map(Some),
        Write::Context {
            session_id,
            context,
        } => store
            .set_context(session_id, &context.to_string())
            .await
            .map(|_| None),
        Write::Translation {
            session_id,
            translation,
        } => store
            .add_translation(session_id, translation)
            .await
            .map(Some),
        Write::Flush(_) => Ok(None),
    }
}
