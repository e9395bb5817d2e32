//! Simulated Twilio calls: N concurrent Media Streams that speak Twilio's
//! protocol exactly, paced at 20 ms on absolute deadlines, and emulate
//! Twilio's playback of what the server sends back (marks are returned once
//! "played"; `clear` drops queued audio and returns its marks at once).

use crate::audio::frames::{FRAME_BYTES, TrackFrames};
use crate::metrics::Histogram;
use crate::twilio::signature;
use crate::twilio::stream_token;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const FRAME: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct SimConfig {
    pub url: String,
    pub calls: usize,
    /// Calls start spread over this long.
    pub ramp: Duration,
    /// Send the outbound (agent) track too, as `<Start><Stream track="both_tracks">` does.
    pub both_tracks: bool,
    /// Inbound frames, then optional outbound frames (silence if absent).
    pub inbound: Arc<Vec<Vec<u8>>>,
    pub outbound: Option<Arc<Vec<Vec<u8>>>>,
    /// customParameters; `session_id` gets a `-N` suffix per call when N > 1.
    pub params: Vec<(String, String)>,
    /// Signs the upgrade request like Twilio does, when set.
    pub auth_token: Option<String>,
    /// How long to wait after `stop`... for marks still being "played".
    pub linger: Duration,
    /// Call n of N starts its audio n/N of the way in (and wraps), so
    /// simultaneous calls do not say the same thing at the same moment.
    pub rotate: bool,
    /// Frames each call sends (the audio wraps around); default: all once.
    pub frames: Option<usize>,
}

impl SimConfig {
    pub fn from_tracks(url: &str, tracks: Vec<TrackFrames>) -> Self {
        let mut inbound = Vec::new();
        let mut outbound = None;
        for t in tracks {
            match t.track {
                crate::bindings::types::Track::Inbound => inbound = t.frames,
                crate::bindings::types::Track::Outbound => outbound = Some(Arc::new(t.frames)),
            }
        }
        Self {
            url: url.to_string(),
            calls: 1,
            ramp: Duration::ZERO,
            both_tracks: false,
            inbound: Arc::new(inbound),
            outbound,
            params: Vec::new(),
            auth_token: None,
            linger: Duration::from_secs(2),
            rotate: false,
            frames: None,
        }
    }
}

#[derive(Default)]
pub struct SimReport {
    pub calls: usize,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub frames_sent: AtomicU64,
    pub lateness: Histogram,
    pub mark_round_trip: Histogram,
    pub received: std::sync::Mutex<BTreeMap<String, u64>>,
    pub errors: std::sync::Mutex<Vec<String>>,
    pub elapsed: std::sync::Mutex<Duration>,
}

impl SimReport {
    fn count(&self, kind: &str) {
        *self
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.to_string())
            .or_default() += 1;
    }

    fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < 20 {
            errors.push(e);
        }
    }

    pub fn received(&self) -> BTreeMap<String, u64> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn render(&self) -> String {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        let received: Vec<String> = self
            .received()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut out = format!(
            "calls: {} connected, {} failed (of {})\nframes sent: {} in {:.1?}\nsender lateness: p50 {} p99 {} max {}\nreceived: {}\n",
            self.connected.load(Relaxed),
            self.failed.load(Relaxed),
            self.calls,
            self.frames_sent.load(Relaxed),
            *self.elapsed.lock().unwrap_or_else(|p| p.into_inner()),
            ms(self.lateness.quantile(0.5)),
            ms(self.lateness.quantile(0.99)),
            ms(self.lateness.max()),
            if received.is_empty() {
                "nothing".into()
            } else {
                received.join(" ")
            },
        );
        if self.mark_round_trip.count() > 0 {
            out.push_str(&format!(
                "mark round trip: p50 {} p95 {} p99 {} ({} marks)\n",
                ms(self.mark_round_trip.quantile(0.5)),
                ms(self.mark_round_trip.quantile(0.95)),
                ms(self.mark_round_trip.quantile(0.99)),
                self.mark_round_trip.count()
            ));
        }
        for e in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!("error: {e}\n"));
        }
        out
    }
}

/// Posts a signed `/twilio/voice` for the call, as Twilio does when it is
/// answered, and returns the stream token of the TwiML that comes back.
async fn fetch_stream_token(
    stream_url: &str,
    auth_token: &str,
    call_sid: &str,
    session_id: &str,
) -> Result<String, String> {
    let base = stream_url
        .split_once("/twilio/media-stream")
        .map_or(stream_url, |(base, _)| base);
    let base = base
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    let query =
        serde_urlencoded::to_string([("session_id", session_id)]).map_err(|e| e.to_string())?;
    let url = format!("{base}/twilio/voice?{query}");
    let form = [("CallSid".to_string(), call_sid.to_string())];
    let response = reqwest::Client::new()
        .post(&url)
        .header(
            signature::HEADER,
            signature::compute(auth_token, &url, &form),
        )
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let twiml = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("POST {url}: {status}: {twiml}"));
    }
    let marker = format!("<Parameter name=\"{}\" value=\"", stream_token::PARAMETER);
    twiml
        .split_once(&marker)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(token, _)| token.to_string())
        .ok_or_else(|| format!("the TwiML from {url} has no {}", stream_token::PARAMETER))
}

fn sid(prefix: &str, n: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}{:016x}{:016x}", nanos as u64, n as u64)
}

/// Runs every call to the end and reports.
pub async fn run(config: SimConfig) -> Arc<SimReport> {
    let report = Arc::new(SimReport {
        calls: config.calls,
        ..Default::default()
    });
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(config.calls);
    for n in 0..config.calls {
        let offset = if config.calls > 1 {
            config.ramp.mul_f64(n as f64 / config.calls as f64)
        } else {
            Duration::ZERO
        };
        let config = config.clone();
        let report = report.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(started + offset).await;
            if let Err(e) = one_call(&config, n, report.clone()).await {
                report.failed.fetch_add(1, Relaxed);
                report.error(format!("call {n}: {e}"));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    *report.elapsed.lock().unwrap_or_else(|p| p.into_inner()) = started.elapsed();
    report
}

/// Twilio's playback of server audio: when each queued mark will be "played".
#[derive(Default)]
struct Playback {
    /// When the audio queued so far finishes playing.
    until: Option<Instant>,
    /// Marks waiting for playback to reach them: (due, name, received at).
    marks: VecDeque<(Instant, String, Instant)>,
}

async fn one_call(config: &SimConfig, n: usize, report: Arc<SimReport>) -> Result<(), String> {
    let stream_sid = sid("MZ", n);
    let call_sid = sid("CA", n);
    let (ws, params) = connect(config, n, &call_sid).await?;
    report.connected.fetch_add(1, Relaxed);
    let (sink, stream) = ws.split();
    // The sender writes its frames itself; marks, which the reader and the
    // marker produce, go through a writer task. A task hop per frame would
    // cost the generator a wake-up per frame on the cores it shares with
    // the server it measures.
    let sink = Arc::new(Mutex::new(sink));
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let writer = {
        let sink = sink.clone();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if write(&sink, [m]).await.is_err() {
                    break;
                }
            }
        })
    };

    let playback = Arc::new(Mutex::new(Playback::default()));
    // The reader's word to the marker that a mark was queued.
    let queued = Arc::new(Notify::new());

    let reader = spawn_reader(
        stream,
        tx.clone(),
        playback.clone(),
        queued.clone(),
        stream_sid.clone(),
        report.clone(),
    );
    let marker = spawn_marker(
        tx.clone(),
        playback.clone(),
        queued,
        stream_sid.clone(),
        report.clone(),
    );
    let result = send_call(config, n, &sink, &stream_sid, &call_sid, params, &report).await;
    // The reader runs until the server closes; don't wait forever.
    drop(tx);
    let mut reader = reader;
    let close = match tokio::time::timeout(Duration::from_secs(5), &mut reader).await {
        Ok(Ok(close)) => close,
        Ok(Err(_)) => None,
        Err(_) => {
            reader.abort();
            None
        }
    };
    marker.abort();
    writer.abort();
    let _ = sink.lock().await.close().await;
    result.map_err(|e| match close {
        Some(close) => format!("{e} ({close})"),
        None => e,
    })
}

/// The call's stream parameters and its WebSocket, signed and with the
/// stream token fetched as Twilio would when the server checks them.
async fn connect(
    config: &SimConfig,
    n: usize,
    call_sid: &str,
) -> Result<(WsStream, serde_json::Map<String, serde_json::Value>), String> {
    let mut params: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for (k, v) in &config.params {
        let v = if k == "session_id" && config.calls > 1 {
            format!("{v}-{n}")
        } else {
            v.clone()
        };
        params.insert(k.clone(), json!(v));
    }
    if let Some(token) = &config.auth_token {
        // As Twilio does: fetch the call's TwiML, whose stream parameters
        // carry the token the server signed for this call.
        let session = params
            .get("session_id")
            .and_then(|v| v.as_str())
            .unwrap_or(call_sid)
            .to_string();
        let stream_token = fetch_stream_token(&config.url, token, call_sid, &session).await?;
        params.insert(stream_token::PARAMETER.into(), json!(stream_token));
    }
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(token) = &config.auth_token {
        let sig = signature::compute(token, &config.url, &[]);
        request.headers_mut().insert(
            "X-Twilio-Signature",
            sig.parse().map_err(|_| "bad signature header")?,
        );
    }
    // Nagle off, as a real-time media sender has it: with it on, a frame
    // written while the previous one is unacknowledged waits for that
    // acknowledgement, and the server's read, which sends it, then pays
    // for transmitting the generator's held frame too (on loopback).
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|e| match e.to_string() {
            e if e.contains("403") && config.auth_token.is_none() => format!(
                "connect: {e}: the server refuses unsigned Twilio requests; give `simulate` the \
                 server's TWILIO_AUTH_TOKEN, or start the server with CALLPIPE_TWILIO_SIGNATURES=off"
            ),
            e => format!("connect: {e}"),
        })?;
    Ok((ws, params))
}

/// The reader: counts what the server sends and emulates playback of its
/// audio; ends with the server's reason when it closes the stream abnormally.
fn spawn_reader(
    mut stream: futures_util::stream::SplitStream<WsStream>,
    tx: mpsc::Sender<String>,
    playback: Arc<Mutex<Playback>>,
    queued: Arc<Notify>,
    stream_sid: String,
    report: Arc<SimReport>,
) -> tokio::task::JoinHandle<Option<String>> {
    tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t,
                // The server's reason, for the sender's error: a refusal
                // (1013, "overloaded: ...") reads differently from a
                // crash.
                Ok(Message::Close(Some(frame))) if frame.code != CloseCode::Normal => {
                    report.count(&format!("close-{}", u16::from(frame.code)));
                    return Some(format!("{} {}", u16::from(frame.code), frame.reason));
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let v: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(_) => {
                    report.count("invalid");
                    continue;
                }
            };
            let kind = v["event"].as_str().unwrap_or("unknown").to_string();
            report.count(&kind);
            let now = Instant::now();
            let mut pb = playback.lock().await;
            match kind.as_str() {
                "media" => {
                    let start = pb.until.filter(|u| *u > now).unwrap_or(now);
                    pb.until = Some(start + FRAME);
                }
                "mark" => {
                    let name = v["mark"]["name"].as_str().unwrap_or_default().to_string();
                    let due = pb.until.filter(|u| *u > now).unwrap_or(now);
                    pb.marks.push_back((due, name, now));
                    queued.notify_one();
                }
                "clear" => {
                    // Twilio drops the buffer and returns its marks at once.
                    pb.until = None;
                    for (_, name, at) in pb.marks.drain(..) {
                        report.mark_round_trip.record(at.elapsed());
                        let _ = tx.send(mark_json(&stream_sid, &name)).await;
                    }
                }
                _ => {}
            }
        }
        None
    })
}

/// Marker: returns marks when playback reaches them. It sleeps until the
/// first queued mark is due, or until the reader queues one: polling
/// instead would wake each simulated call hundreds of times a second and
/// take the cores the server under test is measured on.
fn spawn_marker(
    tx: mpsc::Sender<String>,
    playback: Arc<Mutex<Playback>>,
    queued: Arc<Notify>,
    stream_sid: String,
    report: Arc<SimReport>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let next = playback.lock().await.marks.front().map(|(due, _, _)| *due);
            match next {
                Some(due) => tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = queued.notified() => continue,
                },
                None => {
                    queued.notified().await;
                    continue;
                }
            }
            let now = Instant::now();
            let mut pb = playback.lock().await;
            while pb.marks.front().is_some_and(|(due, _, _)| *due <= now) {
                if let Some((_, name, at)) = pb.marks.pop_front() {
                    report.mark_round_trip.record(at.elapsed());
                    if tx.send(mark_json(&stream_sid, &name)).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// The sender: `connected`, `start`, the frames on their 20 ms clock, `stop`,
/// then a wait for playback of what the server sent last.
async fn send_call(
    config: &SimConfig,
    n: usize,
    sink: &Mutex<WsSink>,
    stream_sid: &str,
    call_sid: &str,
    params: serde_json::Map<String, serde_json::Value>,
    report: &SimReport,
) -> Result<(), String> {
    let tracks = if config.both_tracks {
        json!(["inbound", "outbound"])
    } else {
        json!(["inbound"])
    };
    let mut seq = 1u64;
    let mut next_seq = || {
        seq += 1;
        (seq - 1).to_string()
    };
    let closed = |_| "server closed the stream";
    write(
        sink,
        [json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()],
    )
    .await
    .map_err(closed)?;
    write(
        sink,
        [json!({
            "event": "start", "sequenceNumber": next_seq(), "streamSid": stream_sid,
            "start": {
                "accountSid": "ACsimulator", "streamSid": stream_sid, "callSid": call_sid,
                "tracks": tracks, "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
            }
        })
        .to_string()],
    )
    .await
    .map_err(closed)?;
    let silence = vec![0xFFu8; FRAME_BYTES];
    let origin = Instant::now();
    let len = config.inbound.len();
    let shift = if config.rotate && config.calls > 0 {
        n * len / config.calls
    } else {
        0
    };
    for k in 0..config.frames.unwrap_or(len) {
        let at = (k + shift) % len.max(1);
        let Some(frame) = config.inbound.get(at) else {
            break;
        };
        let due = origin + FRAME * k as u32;
        tokio::time::sleep_until(due).await;
        report
            .lateness
            .record(Instant::now().saturating_duration_since(due));
        let (ts, chunk) = (k as u64 * 20, k + 1);
        let mut send =
            |track: &str, bytes: &[u8]| media_json(stream_sid, next_seq(), track, chunk, ts, bytes);
        let inbound = send("inbound", frame);
        if config.both_tracks {
            let out = config
                .outbound
                .as_ref()
                .and_then(|o| o.get(at))
                .unwrap_or(&silence);
            let outbound = send("outbound", out);
            write(sink, [inbound, outbound]).await.map_err(closed)?;
            report.frames_sent.fetch_add(2, Relaxed);
        } else {
            write(sink, [inbound]).await.map_err(closed)?;
            report.frames_sent.fetch_add(1, Relaxed);
        }
    }
    write(
        sink,
        [
            json!({"event": "stop", "sequenceNumber": next_seq(), "streamSid": stream_sid,
               "stop": {"accountSid": "ACsimulator", "callSid": call_sid}})
            .to_string(),
        ],
    )
    .await
    .map_err(closed)?;
    // Let playback of what the server sent last finish.
    tokio::time::sleep(config.linger).await;
    Ok(())
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type WsSink = futures_util::stream::SplitSink<WsStream, Message>;

/// Writes messages in one flush (both tracks of a frame in one write).
async fn write<const N: usize>(
    sink: &Mutex<WsSink>,
    texts: [String; N],
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut sink = sink.lock().await;
    for text in texts {
        sink.feed(Message::Text(text.into())).await?;
    }
    sink.flush().await
}

/// A media message as Twilio sends it, written directly: building a JSON
/// value per frame would make the load generator, which shares the machine
/// with the server it measures, cost several times what it needs to.
fn media_json(
    stream_sid: &str,
    seq: String,
    track: &str,
    chunk: usize,
    ts: u64,
    bytes: &[u8],
) -> String {
    use std::fmt::Write;
    // The ids are the simulator's own hex and the track a fixed word, so
    // nothing here needs JSON escaping.
    let mut m = String::with_capacity(200 + bytes.len() * 4 / 3);
    let _ = write!(
        m,
        r#"{{"event":"media","sequenceNumber":"{seq}","streamSid":"{stream_sid}","media":{{"track":"{track}","chunk":"{chunk}","timestamp":"{ts}","payload":""#
    );
    B64.encode_string(bytes, &mut m);
    m.push_str("\"}}");
    m
}

fn mark_json(stream_sid: &str, name: &str) -> String {
    json!({"event": "mark", "sequenceNumber": "0", "streamSid": stream_sid, "mark": {"name": name}})
        .to_string()
}

#[cfg(test)]
mod tests {
    use crate::twilio::messages::{self, Inbound, Track};

    #[test]
    fn a_simulated_media_message_is_what_the_server_reads() {
        let frame: Vec<u8> = (0..=159).collect();
        let text = super::media_json("MZ00ff", "7".into(), "outbound", 3, 40, &frame);
        let Ok(Inbound::Media(m)) = messages::parse(&text) else {
            panic!("not a media message: {text}");
        };
        assert_eq!((m.track, m.chunk, m.timestamp_ms), (Track::Outbound, 3, 40));
        assert_eq!(m.payload.as_slice(), frame.as_slice());
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            (v["sequenceNumber"].as_str(), v["streamSid"].as_str()),
            (Some("7"), Some("MZ00ff"))
        );
    }
}
