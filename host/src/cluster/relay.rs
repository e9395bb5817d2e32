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
/// How far below the newest relayed id a catch-up reads again: ids are
/// handed out at insert and become visible at commit, so a transaction that
/// took an id earlier may commit after a later one was relayed.
const REREAD: i64 = 2_000;
/// Relayed ids remembered, so what is read again is not relayed twice.
const REMEMBER: usize = 20_000;

/// The ids relayed lately: each event reaches the listeners once, in
/// whatever order reads find it.
#[derive(Default)]
struct Delivered {
    ids: std::collections::BTreeSet<i64>,
}

impl Delivered {
    /// Whether `id` is new (and now remembered).
    fn fresh(&mut self, id: i64) -> bool {
        let new = self.ids.insert(id);
        while self.ids.len() > REMEMBER {
            self.ids.pop_first();
        }
        new
    }

    /// Where a catch-up starts reading (exclusive).
    fn reread_from(&self, start: i64) -> i64 {
        self.ids
            .last()
            .map_or(start, |&newest| (newest - REREAD).max(start))
    }
}

pub async fn run(mut listener: Listener, me: String, store: Arc<Store>, sessions: Arc<Sessions>) {
    let start = match store.last_event_id().await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!("relay: cannot read the newest event id: {e}");
            0
        }
    };
    let mut delivered = Delivered::default();
    // Announced events whose read failed: read again on the next round.
    let mut pending: Vec<i64> = Vec::new();
    loop {
        let heard = if pending.is_empty() {
            match listener.next().await {
                Ok(h) => h,
                Err(e) => {
                    // The listener reconnects on the next call; not in a loop.
                    tracing::warn!("relay: listening for other hosts' events failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Heard::Reconnected
                }
            }
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Heard::Events(Vec::new())
        };
        match heard {
            Heard::Events(notices) => {
                pending.extend(
                    notices
                        .iter()
                        .filter(|n| n.host_id != me)
                        .map(|n| n.event_id),
                );
                match store.events_by_id(&pending).await {
                    Ok(rows) => {
                        pending.clear();
                        for (session, row) in rows {
                            if delivered.fresh(row.id) {
                                relay(&sessions, session, row);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            "relay: cannot read {} event(s), retrying: {e}",
                            pending.len()
                        )
                    }
                }
            }
            Heard::Reconnected => {
                let mut after = delivered.reread_from(start);
                tracing::info!("relay: reconnected; catching up from event {after}");
                loop {
                    match store.events_of_others_after(after, &me, PAGE).await {
                        Ok(rows) => {
                            let n = rows.len() as i64;
                            for (session, row) in rows {
                                after = after.max(row.id);
                                if delivered.fresh(row.id) {
                                    relay(&sessions, session, row);
                                }
                            }
                            if n < PAGE {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("relay: cannot catch up, retrying: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
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
        "translation" => serde_json::from_str(&row.data).map(Update::Translation),
        _ => return,
    };
    match update {
        Ok(update) => sessions.relay(&session_id, row.id, update),
        Err(e) => tracing::warn!(event = row.id, "relay: unreadable {} event: {e}", row.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two transactions take ids 7 and 8; 8 commits and is relayed first.
    /// A catch-up after a reconnect reads below 8 again, relays 7, and
    /// skips 8.
    #[test]
    fn an_event_committed_late_is_relayed_once() {
        let mut d = Delivered::default();
        assert!(d.fresh(8));
        let from = d.reread_from(0);
        assert!(from < 7, "{from}");
        let read_again: Vec<i64> = (from + 1..=8).filter(|id| *id >= 7).collect();
        let relayed: Vec<i64> = read_again.into_iter().filter(|&id| d.fresh(id)).collect();
        assert_eq!(relayed, [7]);
        // Never below where the relay started.
        assert_eq!(Delivered::default().reread_from(42), 42);
        let mut d = Delivered::default();
        d.fresh(50);
        assert_eq!(d.reread_from(42), 42);
        // Memory stays bounded.
        let mut d = Delivered::default();
        for id in 0..(REMEMBER as i64 + 10) {
            d.fresh(id);
        }
        assert_eq!(d.ids.len(), REMEMBER);
    }
}
