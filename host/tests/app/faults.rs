//! Faults through the real binary: the database away or slow during live
//! calls (through a TCP proxy in front of the machine's real Postgres), and
//! sockets that never start or go silent.

use crate::support::openai::{self, KEY_ENV, transcribe_with};
use crate::support::proxy::Proxy;
use crate::support::server::Server;
use crate::support::{self, fixture_present, root};
use callpipe_host::audio::{frames, wav};
use callpipe_host::pipeline::bindings::types::Track;
use callpipe_host::simulator::{self, SimConfig};
use callpipe_testkit::postgres::Schema;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub(crate) const SAID: &str = "La caméra du parking est éteinte depuis le changement du switch PoE, \
                    elle ne répond plus au ping.";

/// A Postgres schema of its own behind a proxy: the schema, the URL through
/// the proxy, the proxy; or `None` without a Postgres server.
pub(crate) async fn database_behind_proxy() -> Option<(Schema, String, Proxy)> {
    let db = Schema::create("faults").await?;
    // postgres://user@HOST:PORT/db...: the proxy takes HOST:PORT's place.
    let (scheme_user, rest) = db.base.split_once('@').expect("a URL with user@host");
    let (target, path) = rest.split_once('/').expect("a URL with a database");
    let (proxy, port) = Proxy::start(target.to_string()).await;
    let url = db.url_via(&format!("{scheme_user}@127.0.0.1:{port}/{path}"));
    Some((db, url, proxy))
}

pub(crate) fn call(url: &str, session: &str, calls: usize, seconds: f64) -> SimConfig {
    let rec = wav::read(&root().join("samples/technician-fr.wav")).expect("sample");
    let base = frames::frames(&rec, frames::TrackLayout::Mono(Track::Inbound))
        .remove(0)
        .frames;
    let want = (seconds * 50.0) as usize;
    let mut c = SimConfig::from_tracks(url, vec![]);
    c.inbound = Arc::new(
        base.iter()
            .cycle()
            .take(want.max(base.len()))
            .cloned()
            .collect(),
    );
    c.calls = calls;
    c.ramp = Duration::from_millis(500);
    c.params = vec![
        ("session_id".into(), session.into()),
        ("technician_id".into(), "tech-7".into()),
        ("technician_name".into(), "Jeanne".into()),
    ];
    c.linger = Duration::from_millis(200);
    c
}

/// What the live view showed of each session, gathered while the calls run:
/// transcript lines by (start, end) and suggestion ids.
#[derive(Default)]
struct Shown {
    transcripts: BTreeSet<(String, u64, u64)>,
    suggestions: BTreeSet<(String, String)>,
}

async fn watch(server: &Server, sessions: &[String], shown: &mut Shown) {
    for id in sessions {
        let s: Value = server.get_json(&format!("/api/sessions/{id}")).await;
        for t in s["transcript"].as_array().into_iter().flatten() {
            shown.transcripts.insert((
                id.clone(),
                t["start_ms"].as_u64().unwrap_or_default(),
                t["end_ms"].as_u64().unwrap_or_default(),
            ));
        }
        for x in s["suggestions"].as_array().into_iter().flatten() {
            shown
                .suggestions
                .insert((id.clone(), x["id"].as_str().unwrap_or_default().to_string()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_away_for_ten_seconds_loses_no_frame_and_nothing_shown() {
    if !fixture_present(support::models_present(), "the models (`callpipe models`)") {
        return;
    }
    let Some((db, url, proxy)) = database_behind_proxy().await else {
        return;
    };
    let (admin, schema) = (db.admin.clone(), db.name.clone());
    let stt = openai::transcription_stand_in(SAID).await;
    let pipeline = support::default_pipeline_with("outage", transcribe_with(&stt));
    let server = Server::start_pipeline(
        &[
            ("CALLPIPE_DATABASE_URL", url.as_str()),
            (KEY_ENV, "sk-test"),
        ],
        &pipeline,
    );
    let sessions: Vec<String> = (0..5).map(|n| format!("outage-{n}")).collect();
    let calls = tokio::spawn(simulator::run(call(&server.ws(), "outage", 5, 30.0)));
    let mut shown = Shown::default();
    let started = tokio::time::Instant::now();
    let mut was_down = false;
    while !calls.is_finished() {
        let t = started.elapsed();
        if t > Duration::from_secs(6) && !was_down {
            proxy.down();
            was_down = true;
        }
        if t > Duration::from_secs(16) {
            proxy.up();
        }
        watch(&server, &sessions, &mut shown).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    proxy.up();
    let report = calls.await.expect("calls");
    assert_eq!(report.connected.load(Relaxed), 5, "{}", report.render());
    assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
    assert_eq!(server.metric("callpipe_frames_dropped_total").await, 0.0);
    assert!(
        server.metric("callpipe_store_write_retries_total").await > 0.0,
        "the outage was never felt"
    );
    assert!(
        shown.transcripts.len() >= 5,
        "{} transcripts shown",
        shown.transcripts.len()
    );
    assert!(!shown.suggestions.is_empty(), "no suggestion shown");
    // After recovery the queue drains and everything shown is stored.
    server
        .metric_settles("callpipe_store_queue_depth", 0.0, 60)
        .await;
    assert_eq!(
        server.metric("callpipe_store_writes_failed_total").await,
        0.0
    );
    for (session, start, end) in &shown.transcripts {
        let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.events e JOIN {schema}.segments s \
             ON s.session_id = e.session_id \
             WHERE e.session_id = $1 AND e.kind = 'transcript' AND s.start_ms = $2 AND s.end_ms = $3"
        )))
        .bind(session)
        .bind(*start as i64)
        .bind(*end as i64)
        .fetch_one(&admin)
        .await
        .expect("query");
        assert!(
            stored > 0,
            "{session} {start}-{end} was shown but not stored"
        );
    }
    for (session, id) in &shown.suggestions {
        let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.events \
             WHERE session_id = $1 AND kind = 'suggestion' AND data LIKE '%' || $2 || '%'"
        )))
        .bind(session)
        .bind(id)
        .fetch_one(&admin)
        .await
        .expect("query");
        assert!(
            stored > 0,
            "suggestion {id} of {session} was shown but not stored"
        );
    }
    drop(server);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_slowed_to_200_ms_each_drop_no_frame_over_twenty_calls() {
    let Some((db, url, proxy)) = database_behind_proxy().await else {
        return;
    };
    let (admin, schema) = (db.admin.clone(), db.name.clone());
    let stt = openai::transcription_stand_in(SAID).await;
    // The audio path and the transcriber: every utterance is a write.
    let pipeline = support::default_pipeline_with("slow-db", |t| {
        transcribe_with(&stt)(t);
        let caps = t["capabilities"].as_table_mut().expect("capabilities");
        caps.remove("knowledge");
        caps.remove("speech");
        if let Some(toml::Value::Array(stages)) = t.get_mut("stages") {
            stages.retain(|s| {
                matches!(
                    s.get("name").and_then(|n| n.as_str()),
                    Some("codec" | "vad" | "speakers" | "transcriber")
                )
            });
        }
    });
    let server = Server::start_pipeline(
        &[
            ("CALLPIPE_DATABASE_URL", url.as_str()),
            (KEY_ENV, "sk-test"),
        ],
        &pipeline,
    );
    proxy.delay(Duration::from_millis(200));
    let report = simulator::run(call(&server.ws(), "slow", 20, 15.0)).await;
    assert_eq!(report.connected.load(Relaxed), 20, "{}", report.render());
    assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
    assert_eq!(server.metric("callpipe_frames_dropped_total").await, 0.0);
    // The writes were slow, not lost: the queue drains.
    proxy.delay(Duration::ZERO);
    server
        .metric_settles("callpipe_store_queue_depth", 0.0, 60)
        .await;
    let transcripts: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.events WHERE kind = 'transcript'"
    )))
    .fetch_one(&admin)
    .await
    .expect("query");
    assert!(transcripts >= 20, "{transcripts} transcripts stored");
    drop(server);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_start_or_go_silent_are_closed_and_capacity_comes_back() {
    let server = Server::start(&[
        ("CALLPIPE_MAX_CALLS", "450"),
        ("CALLPIPE_STREAM_START_TIMEOUT_MS", "2000"),
        ("CALLPIPE_STREAM_IDLE_TIMEOUT_MS", "3000"),
    ]);
    let start = |n: usize| {
        json!({"event": "start", "sequenceNumber": "1", "streamSid": format!("MZidle{n}"), "start": {
            "accountSid": "AC1", "streamSid": format!("MZidle{n}"), "callSid": format!("CAidle{n}"),
            "tracks": ["inbound"], "customParameters": {"session_id": format!("idle-{n}")},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        .to_string()
    };
    let mut sockets = Vec::new();
    for n in 0..400 {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws())
            .await
            .expect("upgrade");
        if n % 2 == 1 {
            ws.send(Message::Text(start(n).into()))
                .await
                .expect("start");
        }
        sockets.push(ws);
    }
    assert_eq!(server.metric("callpipe_active_calls").await, 400.0);
    // A real call meanwhile goes through.
    let report = simulator::run(call(&server.ws(), "real", 1, 5.0)).await;
    assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
    // Every idle socket is closed by the server (pings and all).
    for ws in &mut sockets {
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an idle socket stayed open");
    }
    let active = server
        .metric_settles("callpipe_active_calls", 0.0, 10)
        .await;
    assert_eq!(active, 0.0, "capacity did not come back");
    let by_kind = |kind: &str| format!("callpipe_websocket_errors_total{{kind=\"{kind}\"}}");
    assert_eq!(server.metric(&by_kind("closed-no-start")).await, 200.0);
    assert_eq!(server.metric(&by_kind("closed-idle")).await, 200.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_max_calls_upgrades_at_once_never_exceed_max_calls() {
    let server = Server::start(&[
        ("CALLPIPE_MAX_CALLS", "20"),
        ("CALLPIPE_STREAM_START_TIMEOUT_MS", "60000"),
    ]);
    let url = server.ws();
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { tokio_tungstenite::connect_async(url).await.ok() })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for a in attempts {
        let Some((mut ws, _)) = a.await.expect("task") else {
            continue;
        };
        // Past capacity the server closes at once, with a reason.
        match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(close))))) if u16::from(close.code) == 1013 => {
                refused += 1
            }
            // Open: nothing, or the server's ping.
            Err(_) | Ok(Some(Ok(Message::Ping(_)))) => open.push(ws),
            Ok(other) => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!((open.len(), refused), (20, 20), "admitted, refused");
    assert_eq!(server.metric("callpipe_active_calls").await, 20.0);
    drop(open);
    let active = server
        .metric_settles("callpipe_active_calls", 0.0, 10)
        .await;
    assert_eq!(active, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_capacity_is_refused_with_a_reason_and_the_server_goes_on() {
    let server = Server::start(&[("CALLPIPE_MAX_CALLS", "3")]);
    let ready: Value = server.get_json("/ready").await;
    assert_eq!(ready["capacity"]["calls"], 3, "{ready}");
    assert_eq!(ready["capacity"]["limited_by"], "configured", "{ready}");
    assert!(
        ready["capacity"]["instances_per_call"].as_u64() > Some(0),
        "{ready}"
    );
    let start = |n: usize| {
        json!({"event": "start", "sequenceNumber": "1", "streamSid": format!("MZcap{n}"), "start": {
            "accountSid": "AC1", "streamSid": format!("MZcap{n}"), "callSid": format!("CAcap{n}"),
            "tracks": ["inbound"], "customParameters": {"session_id": format!("cap-{n}")},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        .to_string()
    };
    let mut admitted = Vec::new();
    for n in 0..3 {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws())
            .await
            .expect("admitted");
        ws.send(Message::Text(start(n).into()))
            .await
            .expect("start");
        admitted.push(ws);
    }
    // Three more: each closed at once with a reason.
    for _ in 0..3 {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws())
            .await
            .expect("upgraded, then closed");
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("closed in time");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => {
                assert_eq!(u16::from(close.code), 1013);
                assert!(close.reason.contains("at capacity"), "{}", close.reason);
            }
            other => panic!("expected a close frame with a reason, got {other:?}"),
        }
    }
    // A call arriving by phone is told, not streamed.
    let twiml = reqwest::Client::new()
        .post(server.http("/twilio/voice"))
        .form(&[("CallSid", "CAbusy")])
        .send()
        .await
        .expect("voice")
        .text()
        .await
        .expect("twiml");
    assert!(
        twiml.contains("<Hangup/>") && !twiml.contains("<Stream"),
        "{twiml}"
    );
    let by_path = |p: &str| format!("callpipe_calls_refused_total{{path=\"{p}\"}}");
    assert_eq!(server.metric(&by_path("stream")).await, 3.0);
    assert_eq!(server.metric(&by_path("voice")).await, 1.0);
    // The admitted calls go on and end; then a new call is served.
    for (n, ws) in admitted.iter_mut().enumerate() {
        let stop = json!({"event": "stop", "sequenceNumber": "2", "streamSid": format!("MZcap{n}"),
                          "stop": {"accountSid": "AC1", "callSid": format!("CAcap{n}")}});
        ws.send(Message::Text(stop.to_string().into()))
            .await
            .expect("stop");
    }
    drop(admitted);
    server
        .metric_settles("callpipe_active_calls", 0.0, 10)
        .await;
    let report = simulator::run(call(&server.ws(), "after-full", 1, 3.0)).await;
    assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
    assert_eq!(report.connected.load(Relaxed), 1, "{}", report.render());
}

/// A call whose pipeline cannot start (a stage traps in `init` for it) is
/// closed with the reason and marked failed; the call beside it, and the
/// next one, are served as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_stages_cannot_start_ends_alone() {
    let pipeline = support::default_pipeline_with("doomed", |t| {
        let stages = t["stages"].as_array_mut().expect("stages");
        let hostile: toml::Table = toml::from_str(
            r#"
name = "hostile"
component = "../tests/components/hostile"
on = ["audio"]
config = { mode = "none", every = 1, fail_session = "doomed" }
"#,
        )
        .expect("stage");
        stages.insert(1, toml::Value::Table(hostile));
    });
    let server = Server::start_pipeline(&[], &pipeline);
    let beside = tokio::spawn(simulator::run(call(&server.ws(), "beside", 1, 4.0)));

    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws())
        .await
        .expect("admitted");
    let start = json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZdoomed", "start": {
        "accountSid": "AC1", "streamSid": "MZdoomed", "callSid": "CAdoomed", "tracks": ["inbound"],
        "customParameters": {"session_id": "doomed"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}});
    ws.send(Message::Text(start.to_string().into()))
        .await
        .expect("start");
    let frame = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("closed in time");
    match frame {
        Some(Ok(Message::Close(Some(close)))) => {
            assert_eq!(u16::from(close.code), 1011);
            assert!(close.reason.contains("hostile"), "{}", close.reason);
        }
        other => panic!("expected a close frame with a reason, got {other:?}"),
    }
    server.session_when("doomed", "failed", 10).await;

    let report = beside.await.expect("the call beside");
    assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
    assert_eq!(report.connected.load(Relaxed), 1, "{}", report.render());
    assert_eq!(server.metric("callpipe_frames_dropped_total").await, 0.0);
    assert_eq!(
        server
            .metric("callpipe_calls_start_failed_total{path=\"stream\"}")
            .await,
        1.0
    );
    let report = simulator::run(call(&server.ws(), "next", 1, 2.0)).await;
    assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
    assert_eq!(report.connected.load(Relaxed), 1, "{}", report.render());
}
