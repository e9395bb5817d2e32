//! How a host stops: on SIGTERM (or Ctrl-C) it takes nothing new, gives
//! its live calls the drain, ends what is left and stores what is queued,
//! all within one budget (`CALLPIPE_SHUTDOWN_S`).

use crate::web::AppState;
use std::time::Duration;

/// SIGTERM: this host takes nothing new (`/ready` answers 503, streams and
/// calls are refused, event streams end so their clients reconnect
/// elsewhere) and gives the live calls up to `limit` to finish.
pub(super) async fn drain_calls(state: &AppState, limit: Duration) {
    use std::sync::atomic::Ordering::Acquire;
    // `send_replace`, not `send`: with no event stream subscribed, `send`
    // fails and leaves the flag false, and the host went on taking calls.
    state.draining.send_replace(true);
    let live = state.active_streams.load(Acquire);
    if live == 0 {
        return;
    }
    tracing::info!(
        live,
        "draining: new calls go elsewhere; waiting up to {} s for the live ones",
        limit.as_secs()
    );
    let until = tokio::time::Instant::now() + limit;
    while state.active_streams.load(Acquire) > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = state.active_streams.load(Acquire);
    if left > 0 {
        tracing::warn!(left, "drain time is up: the calls still live are cut");
    }
}

/// After the drain: calls still streaming are closed and recorded as ended
/// by this host (interrupted), not left for another host to find once the
/// lease expires, and chat sessions end. It returns once the closed
/// streams' pipelines have ended, so nothing more is queued for the store
/// behind the stop's last flush.
pub(super) async fn end_what_is_left(state: &AppState) {
    use std::sync::atomic::Ordering::Acquire;
    state.cut.send_replace(true);
    let cut: Vec<String> = state
        .sessions
        .map_all(|s| (s.streaming && !s.is_over()).then(|| s.session_id.clone()));
    for id in &cut {
        state.sessions.set_streaming(id, false);
        state.sessions.set_status(id, "interrupted");
    }
    state.chats.end_all(&state.sessions).await;
    while state.active_streams.load(Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a stop keeps after the drain for ending chats and storing what is
/// queued.
pub const AFTER_DRAIN: Duration = Duration::from_secs(10);

/// Resolves when the process is told to stop (SIGTERM, or Ctrl-C).
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
