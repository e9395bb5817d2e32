//! The WebSocket end of `/twilio/media-stream`.

use super::AppState;
use crate::calls::media_stream::{self, Incoming, StreamEnv};
use crate::twilio::messages::MAX_MESSAGE_BYTES;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::time::Duration;
use tokio::sync::mpsc;

/// Enough for a few media messages per read.
pub const READ_BUFFER: usize = 4 * 1024;

/// How often the server pings an open stream (its pongs need no answer;
/// a dead peer shows as a failed send).
const PING_EVERY: Duration = Duration::from_secs(10);

/// One of `max_calls` stream slots, taken before the upgrade and given back
/// when dropped: when the stream ends, or when the upgrade never completes.
struct Slot(AppState);

impl Slot {
    /// Takes a slot unless all are in use (check and take are one step).
    fn reserve(state: &AppState) -> Option<Slot> {
        state
            .active_streams
            .fetch_update(AcqRel, Acquire, |n| {
                (n < state.max_calls()).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(state.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, AcqRel);
    }
}

/// Why a new call must be refused now, if it must: the host is behind on
/// the live ones, and a new call would make every live one later still
/// (capacity itself is checked when a slot is taken).
pub(super) fn overloaded() -> Option<String> {
    crate::metrics::host_behind().map(|lag| {
        format!(
            "overloaded: live calls' audio is {} ms behind",
            lag.as_millis()
        )
    })
}

/// Why this host takes no new call now, if it does not: it is stopping,
/// or it is behind on the live ones.
pub(super) fn not_taking(state: &AppState) -> Option<String> {
    if state.is_draining() {
        return Some("draining: this host is stopping; another host takes new calls".into());
    }
    if state.lease_lost() {
        return Some(
            "no lease: this host cannot reach the database; another host takes new calls".into(),
        );
    }
    overloaded()
}

pub async fn media_stream(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    let slot = match not_taking(&state) {
        Some(reason) => Err(reason),
        None => {
            Slot::reserve(&state).ok_or_else(|| format!("at capacity: {} calls", state.max_calls()))
        }
    };
    let slot = match slot {
        Ok(slot) => slot,
        Err(reason) => return refuse(upgrade, reason),
    };
    upgrade
        // tungstenite zero-fills its read buffer up to this size on every
        // read; the 128 KiB default costs more than the whole audio path for
        // a ~400-byte media message.
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(socket, state, slot))
}

/// Closes the stream at once with a reason the peer can read (1013: try
/// again later), and counts it.
fn refuse(upgrade: WebSocketUpgrade, reason: String) -> Response {
    tracing::warn!("refused a media stream: {reason}");
    let kind = if reason.starts_with("overloaded") {
        "refused-overloaded"
    } else if reason.starts_with("draining") {
        "refused-draining"
    } else if reason.starts_with("no lease") {
        "refused-no-lease"
    } else {
        "refused-at-capacity"
    };
    crate::metrics::WEBSOCKET.add(kind, 1);
    crate::metrics::CALLS_REFUSED.add("stream", 1);
    upgrade
        .on_upgrade(move |mut socket| async move {
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1013,
                    reason: reason.into(),
                })))
                .await;
        })
        .into_response()
}

async fn serve(socket: WebSocket, state: AppState, _slot: Slot) {
    let (mut sink, stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let writer = tokio::spawn(async move {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            let message = tokio::select! {
                text = out_rx.recv() => match text {
                    Some(text) => Message::Text(text.into()),
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Default::default()),
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
        sink
    });
    let incoming = futures_util::stream::unfold(stream, |mut s| async move {
        loop {
            match s.next().await? {
                Ok(Message::Text(t)) => return Some((Incoming::Text(t), s)),
                Ok(Message::Binary(b)) => return Some((Incoming::Binary(b.len()), s)),
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!("closing a media stream: {e}");
                    crate::metrics::WEBSOCKET.add("socket-error", 1);
                    return None;
                }
            }
        }
    });
    let env = StreamEnv {
        pipeline: state.pipeline(),
        sessions: state.sessions.clone(),
        language: state.pipeline().language.clone(),
        live: state.live_calls.clone(),
        tokens: state.stream_tokens.clone(),
        timeouts: state.twilio_settings.stream_timeouts,
        cut: state.cut.subscribe(),
    };
    let summary = media_stream::run(env, Box::pin(incoming), out_tx).await;
    if let Ok(mut sink) = writer.await {
        // A stream we end gets the reason (close reasons are at most 123 bytes).
        if let Some((code, why)) = summary.ended.close_frame() {
            let frame = CloseFrame {
                code,
                reason: truncate(why, 123).into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    }
    match summary.timed_out {
        Some(false) => crate::metrics::WEBSOCKET.add("closed-no-start", 1),
        Some(true) => crate::metrics::WEBSOCKET.add("closed-idle", 1),
        None => {}
    }
    for (reason, n) in &summary.rejected {
        crate::metrics::WEBSOCKET.add(&format!("skipped-{reason}"), *n);
    }
    if summary.token_refused {
        crate::metrics::WEBSOCKET.add("refused-stream-token", 1);
    }
    if matches!(
        summary.ended,
        media_stream::Ended::Refused(_)
            | media_stream::Ended::StartFailed(_)
            | media_stream::Ended::Cut
    ) {
        crate::metrics::WEBSOCKET.add("closed-by-server", 1);
    }
    tracing::debug!(?summary, "media stream closed");
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn close_reasons_are_cut_on_a_character_boundary() {
        assert_eq!(super::truncate("abc", 123), "abc");
        assert_eq!(super::truncate("éé", 3), "é");
        assert_eq!(super::truncate(&"x".repeat(200), 123).len(), 123);
    }
}
