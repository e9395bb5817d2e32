//! `callpipe serve` end to end: the real binary, Twilio's protocol on the
//! socket, a test-only stand-in for Twilio's REST API, the simulator. One
//! file per concern; the helpers they share are here.

use crate::support;
use crate::support::root;
use crate::support::server::Server;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use callpipe_host::audio::{frames, wav};
use callpipe_host::pipeline::bindings::types::Track;
use callpipe_host::simulator::{self, SimConfig};
use callpipe_host::twilio::signature;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::twilio::{
    AUTH_TOKEN as TOKEN, CALL_SID, PUBLIC, sign, twilio_env, twilio_stand_in,
};

mod access;
mod reload;
mod streams;
mod twilio_rest;

fn start_with(env: &[(&'static str, String)]) -> Server {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(&pairs)
}

fn sample_frames() -> Vec<Vec<u8>> {
    let rec = wav::read(&root().join("samples/technician-fr.wav")).expect("sample");
    frames::frames(&rec, frames::TrackLayout::Mono(Track::Inbound))
        .remove(0)
        .frames
}

fn sim(url: &str, session: &str, token: Option<&str>) -> SimConfig {
    let mut c = SimConfig::from_tracks(url, vec![]);
    c.inbound = Arc::new(sample_frames());
    c.params = vec![
        ("session_id".into(), session.into()),
        ("technician_id".into(), "tech-7".into()),
        ("technician_name".into(), "Jeanne".into()),
    ];
    c.auth_token = token.map(str::to_owned);
    c.linger = Duration::from_millis(200);
    c
}

/// Every one of `calls` simulated calls connected, and none failed.
fn all_went_through(report: &simulator::SimReport, calls: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(report.connected.load(Relaxed), calls, "{}", report.render());
    assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
}

async fn session(server: &Server, id: &str) -> Value {
    server.get_json(&format!("/api/sessions/{id}")).await
}

fn start_msg(session: &str) -> String {
    json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZbad", "start": {
        "accountSid": "AC1", "streamSid": "MZbad", "callSid": format!("CA{session}"), "tracks": ["inbound"],
        "customParameters": {"session_id": session, "technician_id": "tech-bad"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
    .to_string()
}

fn media_msg(payload: &str, k: usize) -> String {
    json!({"event": "media", "sequenceNumber": (k + 2).to_string(), "streamSid": "MZbad",
           "media": {"track": "inbound", "chunk": (k + 1).to_string(), "timestamp": (k * 20).to_string(), "payload": payload}})
    .to_string()
}

async fn stats(server: &Server) -> Value {
    server
        .client()
        .get(server.http("/api/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET /metrics` (no token, like /health), parsed as Prometheus's text
/// format: series -> value; every histogram's buckets checked on the way.
async fn prometheus(server: &Server) -> std::collections::HashMap<String, f64> {
    let r = reqwest::get(server.http("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let mut out = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        out.insert(series.to_string(), value);
    }
    // Cumulative buckets never go down, and +Inf is the count.
    let mut last: std::collections::HashMap<String, f64> = Default::default();
    for line in text.lines().filter(|l| l.contains("_bucket{")) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let family = without_le(series);
        if let Some(before) = last.insert(family.clone(), value) {
            assert!(value >= before, "{line}");
        }
        if series.contains("le=\"+Inf\"") {
            let count = family.replace("_bucket", "_count");
            assert_eq!(out.get(&count), Some(&value), "{line} vs {count}");
        }
    }
    out
}

/// `x_bucket{stage="a",le="0.1"}` -> `x_bucket{stage="a"}`; `x_bucket{le="1"}` -> `x_bucket`.
fn without_le(series: &str) -> String {
    let i = series.find("le=\"").expect("a bucket bound");
    let close = series[i + 4..].find('"').expect("closing quote") + i + 5;
    format!("{}{}", &series[..i], &series[close..])
        .replace(",}", "}")
        .replace("{}", "")
}

async fn status_of(request: reqwest::RequestBuilder) -> reqwest::StatusCode {
    request.send().await.expect("the server answers").status()
}
