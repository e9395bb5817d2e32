//! Events other hosts store reach this host's listeners (the dashboard's
//! event streams) through Postgres notifications: each names an event id
//! and its host; the event itself is read from the store, so what is
//! relayed is exactly what was committed. A listener that lost its
//! connection may have missed notices: it reads what others stored since
//! the last event it relayed.

use crate::sessions::{Sessions, StatusChange, Update};
use crate::store::{EventRow, Heard, Listener, Store};
use std::sync::Arc;
use std::time::Duration;

/// Events read per catch-up query.
const PAGE: i64 = 1_000;

pub async fn run(mut listener: Listener, me: String, store: Arc<Store>, sessions: Arc<Sessions>) {
    let mut last = match store.last_event_id().await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!("relay: cannot read the newest event id: {e}");
            0
        }
    };
    loop {
        let heard = match listener.next().await {
            Ok(h) => h,
            Err(e) => {
                // The listener reconnects on the next call; not in a loop.
                tracing::warn!("relay: listening for other hosts' events failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Heard::Reconnected
            }
        };
        match heard {
            Heard::Events(notices) => {
                let ids: Vec<i64> = notices
                    .iter()
                    .filter(|n| n.host_id != me)
                    .map(|n| n.event_id)
                    .collect();
                match store.events_by_id(&ids).await {
                    Ok(rows) => {
                        for (session, row) in rows {
                            last = last.max(row.id);
                            relay(&sessions, session, row);
                        }
                    }
                    Err(e) => tracing::warn!("relay: cannot read {} event(s): {e}", ids.len()),
                }
            }
            Heard::Reconnected => {
                tracing::info!("relay: reconnected; catching up from event {last}");
                loop {
                    match store.events_of_others_after(last, &me, PAGE).await {
                        Ok(rows) => {
                            let n = rows.len() as i64;
                            for (session, row) in rows {
                                last = last.max(row.id);
                                relay(&sessions, session, row);
                            }
                            if n < PAGE {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("relay: cannot catch up: {e}");
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// One stored event of another host, to this host's listeners; a status
/// change of a call this host runs (a status callback that reached another
/// host) also updates the live session.
pub(super) fn relay(sessions: &Sessions, session_id: String, row: EventRow) {
    let update = match row.kind.as_str() {
        "transcript" => serde_json::from_str(&row.data).map(Update::Transcript),
        "suggestion" => serde_json::from_str(&row.data).map(Update::Suggestion),
        "status" => serde_json::from_str::<StatusChange>(&row.data).map(Update::Status),
        "summary" => serde_json::from_str(&row.data).map(Update::Summary),
        _ => return,
    };
    match update {
        Ok(update) => sessions.relay(&session_id, row.id, update),
        Err(e) => tracing::warn!(event = row.id, "relay: unreadable {} event: {e}", row.kind),
    }
}
