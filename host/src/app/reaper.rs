//! Chat sessions nobody writes to any more are ended; ended sessions leave
//! memory after the grace period (the store answers for them).

use crate::web::AppState;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often idle chats are looked for.
const CHATS_EVERY: Duration = Duration::from_secs(60);

pub(super) fn spawn(state: AppState, grace: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every =
            tokio::time::interval(Duration::from_secs(5).min(grace.max(Duration::from_secs(1))));
        let mut chats_checked = std::time::Instant::now();
        loop {
            every.tick().await;
            if chats_checked.elapsed() >= CHATS_EVERY {
                chats_checked = std::time::Instant::now();
                state
                    .chats
                    .end_idle(crate::calls::chat::IDLE, &state.sessions)
                    .await;
            }
            let gone = state.sessions.evict_ended(grace);
            if gone > 0 {
                tracing::debug!(gone, "ended sessions left memory");
            }
        }
    })
}
