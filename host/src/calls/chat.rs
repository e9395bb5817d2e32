//! The text path: chat messages (`POST /demo/send-demo-transcription`)
//! enter the same pipeline as phone calls, at the first stage that handles
//! transcripts, so chat and phone get the same analysis, questions and
//! suggestions. Each chat session is a long-lived call of its own.

use crate::bindings::types::{CallInfo, Custom, Event, EventKind, SpeakerRole, Track, Transcript};
use crate::calls::live::LiveCalls;
use crate::calls::output::{self as call_output, Markers};
use crate::pipeline::LoadedPipeline;
use crate::pipeline::call::Call;
use crate::pipeline::call::SendError;
use crate::pipeline::event::FLUSH;
use crate::sessions::Sessions;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A chat session nobody wrote to for this long is ended.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// Longest a message may take through the pipeline before the answer is
/// sent without its results (they still reach the session).
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the pipeline `{0}` has no stage that handles transcripts")]
    NoEntry(String),
    #[error("too many chat sessions at once ({0}); try again later")]
    Full(usize),
    #[error("cannot start the pipeline: {0}")]
    Start(String),
    #[error("the chat session has ended")]
    Ended,
    /// Another host runs the session (it claimed it first).
    #[error("the session runs on host `{0}`")]
    Elsewhere(String),
}

/// One message, as the original endpoint took it.
#[derive(Debug, Clone)]
pub struct Message {
    pub session_id: String,
    pub role: SpeakerRole,
    pub text: String,
    /// Seconds from the start of the session; `None`: now.
    pub start_s: Option<f64>,
    pub end_s: Option<f64>,
    pub confidence: f32,
    pub language: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Processed {
    pub status: &'static str,
    pub segment_id: u64,
    pub suggestions_count: usize,
    pub questions_count: usize,
    pub processing_time_ms: u64,
}

struct Live {
    call: Call,
    output: JoinHandle<()>,
}

struct ChatCall {
    live: tokio::sync::Mutex<Option<Live>>,
    markers: Arc<Markers>,
    next_id: AtomicU64,
    started: Instant,
    /// Milliseconds since `started` of the last message.
    last_used_ms: AtomicU64,
}

pub struct ChatCalls {
    calls: tokio::sync::Mutex<HashMap<String, Arc<ChatCall>>>,
    max: usize,
    /// Phone calls in progress: a message for one of them joins its pipeline.
    live: Arc<LiveCalls>,
}

impl ChatCalls {
    pub fn new(max: usize, live: Arc<LiveCalls>) -> Self {
        ChatCalls {
            calls: tokio::sync::Mutex::new(HashMap::new()),
            max,
            live,
        }
    }

    pub async fn active(&self) -> usize {
        self.calls.lock().await.len()
    }

    /// Whether this host runs the session's pipeline (a chat or a phone call).
    pub async fn holds(&self, session_id: &str) -> bool {
        self.live.get(session_id).is_some() || self.calls.lock().await.contains_key(session_id)
    }

    async fn get_or_start(
        &self,
        pipeline: &Arc<LoadedPipeline>,
        sessions: &Arc<Sessions>,
        m: &Message,
    ) -> Result<Arc<ChatCall>, ChatError> {
        let mut calls = self.calls.lock().await;
        if let Some(c) = calls.get(&m.session_id) {
            return Ok(c.clone());
        }
        if calls.len() >= self.max {
            return Err(ChatError::Full(self.max));
        }
        let first = pipeline
            .first_handling(EventKind::Transcript)
            .ok_or_else(|| ChatError::NoEntry(pipeline.name.clone()))?;
        let info = CallInfo {
            session_id: m.session_id.clone(),
            call_sid: String::new(),
            technician_id: String::new(),
            technician_name: String::new(),
            language: m.language.clone(),
            speakers: vec![],
        };
        // One pipeline per call: the store names its one owner first.
        sessions.claim(&m.session_id).await.map_err(|e| match e {
            crate::sessions::ClaimRefused::Elsewhere(host) => ChatError::Elsewhere(host),
            crate::sessions::ClaimRefused::Ended => ChatError::Ended,
        })?;
        sessions.open(&m.session_id, "", "", None);
        sessions.set_runs_here(&m.session_id);
        sessions.set_pipeline(&m.session_id, &pipeline.version);
        sessions.set_status(&m.session_id, "in-progress");
        let (call, output) = match Call::start_from(pipeline.clone(), info, first).await {
            Ok(started) => started,
            Err(e) => {
                sessions.set_status(&m.session_id, "failed");
                crate::metrics::CALLS_START_FAILED.add("chat", 1);
                return Err(ChatError::Start(e.to_string()));
            }
        };
        let markers = Arc::new(Markers::default());
        let output = call_output::spawn(
            output,
            sessions.clone(),
            m.session_id.clone(),
            None,
            Some(markers.clone()),
            None,
        );
        tracing::info!(session = %m.session_id, pipeline = %pipeline.name, "chat session started");
        let chat = Arc::new(ChatCall {
            live: tokio::sync::Mutex::new(Some(Live { call, output })),
            markers,
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        });
        calls.insert(m.session_id.clone(), chat.clone());
        Ok(chat)
    }

    /// Runs one message through the session's pipeline and waits until
    /// everything it caused has come out (recorded in the session).
    pub async fn send(
        &self,
        pipeline: &Arc<LoadedPipeline>,
        sessions: &Arc<Sessions>,
        m: Message,
    ) -> Result<Processed, ChatError> {
        let started = Instant::now();
        if let Some(call) = self.live.get(&m.session_id) {
            // A phone call in progress: the message joins its conversation.
            let now_ms = call.started.elapsed().as_millis() as u64;
            let id = call.next_id.fetch_add(1, Relaxed);
            let done = call.markers.wait(id);
            let injector = call.injector.clone();
            return deliver(sessions, m, id, now_ms, done, started, |e| {
                let injector = injector.clone();
                async move { injector.send(e).await }
            })
            .await;
        }
        let chat = self.get_or_start(pipeline, sessions, &m).await?;
        // One message at a time per session, in order.
        let live = chat.live.lock().await;
        let live = live.as_ref().ok_or(ChatError::Ended)?;
        let now_ms = chat.started.elapsed().as_millis() as u64;
        chat.last_used_ms.store(now_ms, Relaxed);
        let id = chat.next_id.fetch_add(1, Relaxed);
        let done = chat.markers.wait(id);
        deliver(sessions, m, id, now_ms, done, started, |e| {
            live.call.send(e)
        })
        .await
    }
    /// Ends a chat session: the stages see `call-ended`.
    pub async fn end(&self, session_id: &str, sessions: &Sessions) -> bool {
        let Some(chat) = self.calls.lock().await.remove(session_id) else {
            return false;
        };
        if let Some(live) = chat.live.lock().await.take() {
            live.call.finish().await;
            let _ = live.output.await;
        }
        sessions.set_status(session_id, "completed");
        tracing::info!(session = %session_id, "chat session ended");
        true
    }

    /// Ends every chat session (the host stops).
    /// Ends every chat session at once (their stages' `call-ended` work,
    /// such as summaries, runs side by side, not one after another).
    pub async fn end_all(&self, sessions: &Sessions) {
        let ids: Vec<String> = self.calls.lock().await.keys().cloned().collect();
        futures_util::future::join_all(ids.iter().map(|id| self.end(id, sessions))).await;
    }

    /// Ends sessions idle for longer than `idle`.
    pub async fn end_idle(&self, idle: Duration, sessions: &Sessions) -> usize {
        let stale: Vec<String> = self
            .calls
            .lock()
            .await
            .iter()
            .filter(|(_, c)| {
                let last = Duration::from_millis(c.last_used_ms.load(Relaxed));
                c.started.elapsed().saturating_sub(last) > idle
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            self.end(id, sessions).await;
        }
        stale.len()
    }
}

/// Sends one message (and its flush marker) through `send`, waits until all
/// it caused has come out, and counts what the session got from it.
async fn deliver<F, Fut>(
    sessions: &Sessions,
    m: Message,
    id: u64,
    now_ms: u64,
    done: tokio::sync::oneshot::Receiver<()>,
    started: Instant,
    send: F,
) -> Result<Processed, ChatError>
where
    F: Fn(Event) -> Fut,
    Fut: std::future::Future<Output = Result<(), SendError>>,
{
    let end_ms = m
        .end_s
        .filter(|s| *s > 0.0)
        .map_or(now_ms, |s| (s * 1000.0) as u64);
    let start_ms = m
        .start_s
        .filter(|s| *s > 0.0)
        .map_or(end_ms, |s| (s * 1000.0) as u64)
        .min(end_ms);
    let before: Vec<String> = sessions
        .get(&m.session_id)
        .map(|s| s.suggestions.iter().map(|x| x.id.clone()).collect())
        .unwrap_or_default();
    let session_id = m.session_id.clone();
    let transcript = Event::Transcript(Transcript {
        utterance_id: id,
        track: if m.role == SpeakerRole::Agent {
            Track::Outbound
        } else {
            Track::Inbound
        },
        speaker_id: crate::pipeline::event::role_name(m.role).into(),
        role: m.role,
        start_ms,
        end_ms,
        text: m.text,
        language: m.language,
        confidence: m.confidence,
    });
    send(transcript).await.map_err(|_| ChatError::Ended)?;
    send(Event::Custom(Custom {
        name: FLUSH.into(),
        json: format!("{{\"id\":{id}}}"),
    }))
    .await
    .map_err(|_| ChatError::Ended)?;
    let status = match tokio::time::timeout(ANSWER_WITHIN, done).await {
        Ok(Ok(())) => "processed",
        _ => "pending",
    };
    let (mut suggestions, mut questions) = (0, 0);
    if let Some(s) = sessions.get(&session_id) {
        for x in s.suggestions.iter().filter(|x| !before.contains(&x.id)) {
            if x.kind == "knowledge_base" {
                suggestions += 1;
            } else {
                questions += 1;
            }
        }
    }
    Ok(Processed {
        status,
        segment_id: id,
        suggestions_count: suggestions,
        questions_count: questions,
        processing_time_ms: started.elapsed().as_millis() as u64,
    })
}
