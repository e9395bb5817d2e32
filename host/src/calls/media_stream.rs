//! One Twilio Media Streams connection: parses each message, feeds a call's
//! pipeline, plays back what the pipeline says, and ends the call cleanly on
//! `stop` or on disconnect. Transport-agnostic: the web layer hands in text
//! messages and takes out replies, so tests can drive it frame by frame.

use crate::bindings::types::{Codec, Dtmf, EncodedAudio, Speaker, SpeakerRole, Track};
use crate::metrics::AUDIO;
use crate::pipeline::call::SendError;
use crate::pipeline::{Call, CallInfo, Event, LoadedPipeline};
use crate::sessions::Sessions;
use crate::twilio::messages::{self, Inbound, ParseError, Track as WireTrack};
use crate::twilio::playback::Player;
use crate::twilio::stream_token::{self, StreamTokens};
use futures_util::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the transport delivered. The text is the transport's own buffer
/// (no copy per message).
#[derive(Debug)]
pub enum Incoming<T = String> {
    Text(T),
    /// Twilio never sends binary frames; counted and skipped.
    Binary(usize),
}

/// What a connection needs from the server.
#[derive(Clone)]
pub struct StreamEnv {
    pub pipeline: Arc<LoadedPipeline>,
    pub sessions: Arc<Sessions>,
    /// Used when the stream's parameters name no language.
    pub language: String,
    /// Where the call is listed while it runs, so chat can reach it.
    pub live: Arc<crate::calls::live::LiveCalls>,
    /// When set, a `start` must bring back the token the server signed for
    /// its call (the TwiML's `stream_token` parameter).
    pub tokens: Option<Arc<StreamTokens>>,
    pub timeouts: StreamTimeouts,
    /// Turns true when the host stops and its drain is over: a stream
    /// still open closes, so its pipeline stops queueing writes behind the
    /// stop's last flush.
    pub cut: tokio::sync::watch::Receiver<bool>,
}

/// When the server gives up on a socket.
#[derive(Debug, Clone, Copy)]
pub struct StreamTimeouts {
    /// From the upgrade to `start`.
    pub start: Duration,
    /// Between two messages once started (Twilio sends media every 20 ms,
    /// silence included, so a quiet socket is a dead one).
    pub idle: Duration,
}

impl Default for StreamTimeouts {
    fn default() -> Self {
        StreamTimeouts {
            start: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Twilio sent `stop`.
    Stop,
    /// The socket closed without `stop`.
    Disconnect,
    /// We closed the stream because of what it sent (or did not send).
    Refused(String),
    /// We closed the stream because its pipeline could not start.
    StartFailed(String),
    /// We closed the stream because this host is stopping and the drain
    /// is over: its pipeline ends, and the call is recorded interrupted.
    Cut,
}

impl Ended {
    /// The close frame the peer gets, when we are the one closing: 1008
    /// (policy) for what it sent, 1011 (server error) for our failure,
    /// 1001 (going away) when the host stops.
    pub fn close_frame(&self) -> Option<(u16, &str)> {
        match self {
            Ended::Refused(why) => Some((1008, why)),
            Ended::StartFailed(why) => Some((1011, why)),
            Ended::Cut => Some((1001, "the host is stopping")),
            Ended::Stop | Ended::Disconnect => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub call_sid: Option<String>,
    pub session_id: Option<String>,
    pub frames: u64,
    pub dropped: u64,
    /// Skipped messages, by reason.
    pub rejected: BTreeMap<String, u64>,
    pub ended: Ended,
    /// The `start` did not bring back a valid stream token.
    pub token_refused: bool,
    /// Closed by a timeout: no `start` in time (`Some(false)`) or silent
    /// too long (`Some(true)`).
    pub timed_out: Option<bool>,
}

/// Longest piece of a rejected message that reaches the log.
const LOGGED_CHARS: usize = 200;

/// What a peer sent, made safe for a log line: control characters (a
/// newline that would forge a log line, terminal escapes) are escaped and
/// the text is cut short.
fn escaped(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(LOGGED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > LOGGED_CHARS {
        out.push('…');
    }
    out
}

/// Log the first few bad messages of a stream, then only count them.
const LOGGED_REJECTS: u64 = 5;

struct Live {
    call: Call,
    session_id: String,
    output: tokio::task::JoinHandle<()>,
    /// Plays audio back on a bidirectional stream; `mark`s report its progress.
    player: Option<Player>,
    /// Lists the call for chat messages while it runs.
    _listed: Option<crate::calls::live::Registration>,
}

fn track(t: &WireTrack) -> Track {
    match t {
        WireTrack::Inbound => Track::Inbound,
        WireTrack::Outbound => Track::Outbound,
    }
}

fn reject_key(e: &ParseError) -> &'static str {
    match e {
        ParseError::TooLarge(_) => "too-large",
        ParseError::Json(_) => "bad-json",
        ParseError::UnknownEvent(_) => "unknown-event",
        ParseError::Malformed { .. } => "malformed",
        ParseError::BadBase64 => "bad-base64",
        ParseError::BadPayloadSize(_) => "bad-payload-size",
    }
}

pub async fn run<S, T>(env: StreamEnv, mut incoming: S, outgoing: mpsc::Sender<String>) -> Summary
where
    S: Stream<Item = Incoming<T>> + Unpin,
    T: std::ops::Deref<Target = str>,
{
    let mut live: Option<Live> = None;
    let mut summary = Summary {
        call_sid: None,
        session_id: None,
        frames: 0,
        dropped: 0,
        rejected: BTreeMap::new(),
        ended: Ended::Disconnect,
        token_refused: false,
        timed_out: None,
    };
    let mut rejects = Rejects::default();
    let mut reject = |summary: &mut Summary, key: &str, why: &dyn std::fmt::Display| {
        rejects.note(summary, key, why)
    };

    // One timer, moved forward on every message: no allocation per frame.
    let deadline = tokio::time::sleep(env.timeouts.start);
    tokio::pin!(deadline);
    // The inbound track's frames against the stream's own clock.
    let mut clock = super::lateness::StreamClock::default();
    let mut cut = env.cut.clone();
    let mut cut_open = true;
    loop {
        let msg = tokio::select! {
            msg = incoming.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
            changed = cut.changed(), if cut_open => {
                match changed {
                    Ok(()) if *cut.borrow() => {
                        summary.ended = Ended::Cut;
                        break;
                    }
                    Ok(()) => {}
                    // No sender: nothing will cut the stream.
                    Err(_) => cut_open = false,
                }
                continue;
            }
            () = &mut deadline => {
                let started = live.is_some();
                let why = if started {
                    format!("silent for {} s", env.timeouts.idle.as_secs_f32())
                } else {
                    format!("no `start` within {} s", env.timeouts.start.as_secs_f32())
                };
                tracing::warn!(
                    call = summary.call_sid.as_deref().unwrap_or("-"),
                    "closing a media stream: {why}"
                );
                summary.timed_out = Some(started);
                summary.ended = Ended::Refused(why);
                break;
            }
        };
        // When the host read it: a frame that waited in the socket is late.
        let arrived = std::time::Instant::now();
        if live.is_some() {
            deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + env.timeouts.idle);
        }
        let text = match msg {
            Incoming::Text(t) => t,
            Incoming::Binary(n) => {
                reject(
                    &mut summary,
                    "binary",
                    &format_args!("unexpected binary message of {n} bytes"),
                );
                continue;
            }
        };
        let parsed = match messages::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                if matches!(e, ParseError::BadBase64 | ParseError::BadPayloadSize(_)) {
                    AUDIO.frames_rejected.fetch_add(1, Relaxed);
                }
                reject(&mut summary, reject_key(&e), &e);
                if e.is_fatal() {
                    summary.ended = Ended::Refused(e.to_string());
                    break;
                }
                continue;
            }
        };
        match parsed {
            Inbound::Connected => {}
            Inbound::Start(start) => {
                if live.is_some() {
                    reject(
                        &mut summary,
                        "duplicate-start",
                        &"a second `start` on the same stream",
                    );
                    continue;
                }
                let Some(l) = on_start(&env, &start, &outgoing, &mut summary).await else {
                    break;
                };
                live = Some(l);
                deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + env.timeouts.idle);
            }
            Inbound::Media(m) => {
                let Some(l) = &live else {
                    AUDIO.frames_rejected.fetch_add(1, Relaxed);
                    reject(&mut summary, "media-before-start", &"media before `start`");
                    continue;
                };
                if !on_media(l, &m, arrived, &mut clock, &mut summary) {
                    break;
                }
            }
            Inbound::Dtmf { track: t, digit } => {
                if let Some(l) = &live {
                    let _ = l
                        .call
                        .send(Event::Dtmf(Dtmf {
                            track: track(&t),
                            digit,
                        }))
                        .await;
                }
            }
            Inbound::Mark { name } => {
                if let Some(player) = live.as_ref().and_then(|l| l.player.as_ref()) {
                    player.marked(name).await;
                }
            }
            Inbound::Stop => {
                summary.ended = Ended::Stop;
                break;
            }
        }
    }

    if let Some(l) = live {
        finish(&env, l, &summary, rejects.total).await;
    }
    summary
}

/// Skipped messages: counted by kind, the first few logged.
#[derive(Default)]
struct Rejects {
    total: u64,
}

impl Rejects {
    fn note(&mut self, summary: &mut Summary, key: &str, why: &dyn std::fmt::Display) {
        self.total += 1;
        *summary.rejected.entry(key.to_string()).or_default() += 1;
        if self.total <= LOGGED_REJECTS {
            tracing::warn!(
                call = summary.call_sid.as_deref().unwrap_or("-"),
                "skipped a media-stream message: {}",
                escaped(&why.to_string())
            );
        }
    }
}

/// `start`: checks the stream token and starts the call's pipeline; `None`
/// (with `summary.ended` set) closes the stream.
async fn on_start(
    env: &StreamEnv,
    start: &messages::Start,
    outgoing: &mpsc::Sender<String>,
    summary: &mut Summary,
) -> Option<Live> {
    if let Some(tokens) = &env.tokens {
        let token = start.custom_parameters.get(stream_token::PARAMETER);
        let now = crate::clock::now_epoch() as u64;
        let session = session_of(start);
        let token = token.map(String::as_str);
        let verified = tokens.verify(token, &start.call_sid, &session, now);
        let spent = match (
            verified,
            token.and_then(StreamTokens::nonce),
            env.sessions.store(),
        ) {
            (Err(e), _, _) => Err(e.to_string()),
            // Once for the whole cluster: another host may have seen it.
            (Ok(()), Some((nonce, expires)), Some(store)) => {
                match store.spend_token(nonce, expires as f64).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(stream_token::TokenError::Replayed.to_string()),
                    // Fail closed: a token that cannot be spent opens nothing.
                    Err(e) => Err(format!("the stream token cannot be checked: {e}")),
                }
            }
            (Ok(()), None, Some(_)) => Err(stream_token::TokenError::Malformed.to_string()),
            (Ok(()), _, None) => Ok(()),
        };
        if let Err(e) = spent {
            tracing::warn!(call = %escaped(&start.call_sid), "refused a media stream: {e}");
            summary.ended = Ended::Refused(e);
            summary.token_refused = true;
            return None;
        }
    }
    match begin(env, start, outgoing.clone()).await {
        Ok(l) => {
            summary.call_sid = Some(start.call_sid.clone());
            summary.session_id = Some(l.session_id.clone());
            tracing::info!(call = %start.call_sid, session = %l.session_id, "media stream started");
            Some(l)
        }
        Err(e) => {
            tracing::error!(call = %start.call_sid, "cannot start the call's pipeline: {e}");
            summary.ended = Ended::StartFailed(e);
            None
        }
    }
}

/// One media frame into the call (the per-20 ms path: no wait, no
/// allocation beyond the payload's copy); `false` when the call is gone.
fn on_media(
    l: &Live,
    m: &messages::Media,
    arrived: std::time::Instant,
    clock: &mut super::lateness::StreamClock,
    summary: &mut Summary,
) -> bool {
    summary.frames += 1;
    AUDIO.frames_in.fetch_add(1, Relaxed);
    let track = track(&m.track);
    if track == Track::Inbound
        && let Some(late) = clock.lateness(m.timestamp_ms, arrived)
    {
        AUDIO.stream_lateness.record(late);
        AUDIO.recent_lateness.record(late);
    }
    let event = Event::EncodedAudio(EncodedAudio {
        codec: Codec::Mulaw,
        rate: 8000,
        track,
        seq: m.chunk,
        timestamp_ms: m.timestamp_ms,
        bytes: m.payload.to_vec(),
    });
    match l.call.try_send(event) {
        Ok(()) => true,
        Err(SendError::Full) => {
            summary.dropped += 1;
            AUDIO.frames_dropped.fetch_add(1, Relaxed);
            true
        }
        Err(SendError::Closed) => false,
    }
}

/// The stream is over: the call's pipeline finishes and the session shows
/// how it ended.
async fn finish(env: &StreamEnv, mut l: Live, summary: &Summary, rejected_total: u64) {
    l._listed = None;
    let status = match &summary.ended {
        Ended::Stop => "completed",
        Ended::Disconnect => "disconnected",
        Ended::Refused(_) | Ended::StartFailed(_) => "failed",
        Ended::Cut => "interrupted",
    };
    let stats = l.call.finish().await;
    let _ = l.output.await;
    env.sessions.set_streaming(&l.session_id, false);
    env.sessions.set_status(&l.session_id, status);
    let failed: u64 = stats.iter().map(|s| s.failed).sum();
    tracing::info!(
        call = summary.call_sid.as_deref().unwrap_or("-"),
        frames = summary.frames,
        dropped = summary.dropped,
        rejected = rejected_total,
        stage_failures = failed,
        "media stream ended ({status})"
    );
}

/// The session a stream feeds: its `session_id` parameter, else its call.
fn session_of(start: &messages::Start) -> String {
    start
        .custom_parameters
        .get("session_id")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| start.call_sid.clone())
}

async fn begin(
    env: &StreamEnv,
    start: &messages::Start,
    outgoing: mpsc::Sender<String>,
) -> Result<Live, String> {
    let p = &start.custom_parameters;
    let param = |k: &str| p.get(k).cloned().unwrap_or_default();
    // Stream time 0: the media that follows is timed from here.
    let stream_started = std::time::Instant::now();
    let session_id = session_of(start);
    let technician_id = param("technician_id");
    let technician_name = param("technician_name");
    let language = Some(param("language"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env.language.clone());
    let speakers = if technician_id.is_empty() {
        vec![]
    } else {
        vec![Speaker {
            id: technician_id.clone(),
            name: technician_name.clone(),
            role: SpeakerRole::Technician,
            track: Some(Track::Inbound),
        }]
    };
    let info = CallInfo {
        session_id: session_id.clone(),
        call_sid: start.call_sid.clone(),
        technician_id: technician_id.clone(),
        technician_name: technician_name.clone(),
        language,
        speakers,
    };
    // One pipeline per call: the store names its owner before anything
    // starts, so a replayed stream or a second host cannot start another.
    env.sessions
        .claim(&session_id)
        .await
        .map_err(|e| format!("refused: {e}"))?;
    env.sessions
        .open(&session_id, &technician_id, &technician_name, None);
    env.sessions.set_runs_here(&session_id);
    env.sessions.attach_call(&session_id, &start.call_sid);
    env.sessions.set_status(&session_id, "in-progress");
    env.sessions.set_streaming(&session_id, true);
    env.sessions
        .set_pipeline(&session_id, &env.pipeline.version);
    let (call, output) = match Call::start(env.pipeline.clone(), info).await {
        Ok(started) => started,
        Err(e) => {
            // This call only: the session says so, the stream is closed with
            // the reason, and the host goes on.
            env.sessions.set_streaming(&session_id, false);
            env.sessions.set_status(&session_id, "failed");
            crate::metrics::CALLS_START_FAILED.add("stream", 1);
            return Err(e.to_string());
        }
    };

    // Only a `<Connect><Stream>` (inbound track only) can carry audio back.
    let bidirectional = !start.tracks.iter().any(|t| t == "outbound");
    let player = bidirectional.then(|| Player::start(start.stream_sid.clone(), outgoing));
    let voice = player.clone().map(|player| crate::calls::output::Voice {
        player,
        speech: env.pipeline.capabilities.get(),
    });
    let markers = Arc::new(crate::calls::output::Markers::default());
    let listed = call
        .injector()
        .map(|i| env.live.register(&session_id, i, markers.clone()));
    let output = crate::calls::output::spawn(
        output,
        env.sessions.clone(),
        session_id.clone(),
        voice,
        Some(markers),
        Some(stream_started),
    );
    Ok(Live {
        call,
        session_id,
        output,
        player,
        _listed: listed,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_a_peer_sent_cannot_forge_a_log_line() {
        let e = super::escaped("unknown event `x\n2026-12-01T00:00:00Z INFO forged`\u{1b}[31m");
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
        assert!(e.contains("\\n2026"), "{e}");
        let long = "a".repeat(1000);
        assert_eq!(
            super::escaped(&long).chars().count(),
            super::LOGGED_CHARS + 1
        );
    }
}
