//! `GET /api/sessions/{id}/events`: a session's live events as Server-Sent
//! Events. Stored events (everything shown: transcripts, suggestions and
//! questions, status changes) are replayed first, after the client's
//! `Last-Event-ID` (or `?after=`) when it reconnects; then live ones follow.
//! A listener that falls behind catches up from the store.

use super::{ApiError, AppState};
use crate::sessions::Published;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use std::convert::Infallible;

use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

#[derive(Deserialize, Default)]
pub struct After {
    after: Option<i64>,
}

/// Replayed per query; a session's whole history comes in pages of this.
const PAGE: i64 = 500;
/// How soon an event the store did not give yet is asked for again.
const RETRY_READ: Duration = Duration::from_secs(1);

/// Live event streams open at once, across sessions.
pub const MAX_SUBSCRIBERS: usize = 2_048;
static SUBSCRIBERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Open streams now (for /metrics).
pub fn subscribers() -> usize {
    SUBSCRIBERS.load(std::sync::atomic::Ordering::Relaxed)
}

/// One open stream's place under the cap, given back when its task ends.
struct SubscriberSlot;

impl SubscriberSlot {
    fn take() -> Option<SubscriberSlot> {
        use std::sync::atomic::Ordering::AcqRel;
        SUBSCRIBERS
            .fetch_update(AcqRel, std::sync::atomic::Ordering::Acquire, |n| {
                (n < MAX_SUBSCRIBERS).then_some(n + 1)
            })
            .ok()
            .map(|_| SubscriberSlot)
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        SUBSCRIBERS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Takes in what a catch-up read gave: false once the client is gone.
/// Sets when to read again if it did not reach `heard` (the newest id
/// announced) or the store failed; keeps a time already set.
fn caught_up(
    got: Option<(i64, bool)>,
    sent: &mut i64,
    heard: i64,
    retry_at: &mut Option<tokio::time::Instant>,
) -> bool {
    let Some((s, complete)) = got else {
        return false;
    };
    *sent = s;
    *retry_at = if complete && *sent >= heard {
        None
    } else {
        retry_at.or_else(|| Some(tokio::time::Instant::now() + RETRY_READ))
    };
    true
}

fn sse(id: Option<i64>, kind: &str, data: String) -> Event {
    let e = Event::default().event(kind).data(data);
    match id {
        Some(id) => e.id(id.to_string()),
        None => e,
    }
}

fn kind_of(p: &Published) -> &'static str {
    match p.update {
        crate::sessions::Update::Transcript(_) => "transcript",
        crate::sessions::Update::Suggestion(_) => "suggestion",
        crate::sessions::Update::Status(_) => "status",
        crate::sessions::Update::Summary(_) => "summary",
        crate::sessions::Update::Translation(_) => "translation",
        crate::sessions::Update::Diagnostic(_) => "diagnostic",
    }
}

fn data_of(p: &Published) -> String {
    let value = match &p.update {
        crate::sessions::Update::Transcript(t) => serde_json::to_string(t),
        crate::sessions::Update::Suggestion(s) => serde_json::to_string(s),
        crate::sessions::Update::Status(s) => serde_json::to_string(s),
        crate::sessions::Update::Summary(s) => serde_json::to_string(s),
        crate::sessions::Update::Translation(t) => serde_json::to_string(t),
        crate::sessions::Update::Diagnostic(d) => serde_json::to_string(d),
    };
    value.unwrap_or_default()
}

pub async fn stream(
    State(state): State<AppState>,
    super::session_id::SessionId(id): super::session_id::SessionId,
    Query(q): Query<After>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let store = state.sessions.store().cloned();
    let known = state.sessions.contains(&id)
        || match &store {
            Some(s) => s.call(&id).await.ok().flatten().is_some(),
            None => false,
        };
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no session `{id}`"),
        ));
    }
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(q.after)
        .unwrap_or(0);
    // Subscribe before replaying, so nothing falls between the two.
    let Some(slot) = SubscriberSlot::take() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many live event streams ({MAX_SUBSCRIBERS}); try again later"),
        ));
    };
    let mut live = state.sessions.subscribe();
    let mut draining = state.draining.subscribe();
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let _slot = slot;
        // Every stored event of the session up to `sent` went out, in id
        // order. The store commits a session's events in id order (on
        // Postgres too, whichever host wrote them), so reading after `sent`
        // never skips one that commits later, and the client may resume
        // from the last id it got. Live events only wake the stream: what
        // it sends is read from the store, so an event another host wrote,
        // whose notice is still on its way, cannot be overtaken by a newer
        // one of this host's (which would let a reconnect skip it).
        let mut sent = last;
        // Sends stored events after `sent`: `None` once the client is gone,
        // else the new `sent` and whether the store answered every read.
        let catch_up = |sent: i64| {
            let (store, id, tx) = (store.clone(), id.clone(), tx.clone());
            async move {
                let Some(store) = store else {
                    return Some((sent, true));
                };
                let mut sent = sent;
                loop {
                    let page = match store.events_after(&id, sent, PAGE).await {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(session = %id, "cannot replay events: {e}");
                            return Some((sent, false));
                        }
                    };
                    let n = page.len() as i64;
                    for e in page {
                        sent = e.id;
                        if tx.send(sse(Some(e.id), &e.kind, e.data)).await.is_err() {
                            return None;
                        }
                    }
                    if n < PAGE {
                        return Some((sent, true));
                    }
                }
            }
        };
        // The newest id heard of for this session: what `sent` must reach.
        let mut heard = last;
        // When to read again because the store did not give everything
        // (it failed, or an announced event was not there yet): on a clock
        // of its own, not reset by other sessions' events, which would put
        // it off for ever on a busy host.
        let mut retry_at: Option<tokio::time::Instant> = None;
        if !caught_up(catch_up(sent).await, &mut sent, heard, &mut retry_at) {
            return;
        }
        loop {
            // A client that went away is noticed even when its session is
            // quiet (an ended call): the task ends instead of waking on
            // every other session's events forever.
            // A host that stops ends its streams; the client reconnects
            // (with Last-Event-ID) to another host and misses nothing.
            let retry = retry_at;
            let received = tokio::select! {
                r = live.recv() => Some(r),
                _ = tx.closed() => return,
                _ = draining.wait_for(|d| *d) => return,
                _ = async { tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)).await }, if retry.is_some() => None,
            };
            let Some(received) = received else {
                retry_at = None;
                if !caught_up(catch_up(sent).await, &mut sent, heard, &mut retry_at) {
                    return;
                }
                continue;
            };
            match received {
                Ok(p) if p.session_id == id => match p.event_id {
                    // Sent already (read with an earlier one).
                    Some(e) if e <= sent => {}
                    Some(e) => {
                        heard = heard.max(e);
                        if !caught_up(catch_up(sent).await, &mut sent, heard, &mut retry_at) {
                            return;
                        }
                    }
                    // The store refused it: shown live, without an id.
                    None => {
                        if tx.send(sse(None, kind_of(&p), data_of(&p))).await.is_err() {
                            return;
                        }
                    }
                },
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !caught_up(catch_up(sent).await, &mut sent, heard, &mut retry_at) {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let events =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
