//! Phone calls in progress, by session id. A chat message sent with the
//! session id of a live call enters that call's pipeline (the original
//! system: "même traitement que transcription Twilio"), so the stages see
//! typed and spoken words as one conversation.

use crate::calls::output::Markers;
use crate::pipeline::call::Injector;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Utterance ids of typed messages in a phone call start here, far above
/// the ids the VAD gives spoken utterances.
pub const TYPED_IDS: u64 = 1 << 48;

pub struct LiveCall {
    pub injector: Injector,
    /// Reached when a `callpipe.flush` marker comes out of the call.
    pub markers: Arc<Markers>,
    pub started: Instant,
    pub next_id: AtomicU64,
}

#[derive(Default)]
pub struct LiveCalls(Mutex<HashMap<String, Arc<LiveCall>>>);

/// Keeps a call listed; dropping it (the call ended) unlists it.
pub struct Registration {
    calls: Arc<LiveCalls>,
    session_id: String,
    entry: Arc<LiveCall>,
}

impl LiveCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveCall>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        self: &Arc<Self>,
        session_id: &str,
        injector: Injector,
        markers: Arc<Markers>,
    ) -> Registration {
        let entry = Arc::new(LiveCall {
            injector,
            markers,
            started: Instant::now(),
            next_id: AtomicU64::new(TYPED_IDS),
        });
        self.lock().insert(session_id.to_string(), entry.clone());
        Registration {
            calls: self.clone(),
            session_id: session_id.to_string(),
            entry,
        }
    }

    pub fn get(&self, session_id: &str) -> Option<Arc<LiveCall>> {
        self.lock().get(session_id).cloned()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut calls = self.calls.lock();
        // A newer call may have taken the same session id meanwhile.
        if calls
            .get(&self.session_id)
            .is_some_and(|e| Arc::ptr_eq(e, &self.entry))
        {
            calls.remove(&self.session_id);
        }
    }
}
