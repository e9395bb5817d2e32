//! A session's event stream through the real binary: stored events
//! replayed (after Last-Event-ID on a reconnect) then live ones, and
//! nothing shown lost when the server is killed mid-call; across two hosts,
//! nothing lost when the database drops their LISTEN connections.

use crate::conversation::{chat, ready};
use crate::support;
use crate::support::server::Server;
use crate::support::sse::{Sse, take_events};
use serde_json::Value;

/// Reads events from an open stream until `want` of them have come.
async fn read_events(resp: &mut reqwest::Response, buf: &mut String, want: usize) -> Vec<Sse> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while out.len() < want {
        out.extend(take_events(buf));
        if out.len() >= want {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {out:?}");
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), resp.chunk())
            .await
            .expect("an event within 30 s")
            .expect("the stream stays open")
            .expect("more of the stream");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    out
}

/// The session's event stream: what was stored is replayed (after
/// Last-Event-ID on a reconnect), then live events follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_stream_replays_then_follows_live() {
    if !ready() {
        return;
    }
    let server = Server::start_pipeline(
        &[],
        &support::default_pipeline_with("sse", |t| {
            support::solutions_floor(t, support::TEST_FLOOR)
        }),
    );
    chat(
        &server,
        "sse-1",
        "Bonjour, j'ai un souci sur le site.",
        "technician",
    )
    .await;
    let http = server.client();
    let url = server.http("/api/sessions/sse-1/events");
    let mut first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let mut buf = String::new();
    // Status, the transcript and the question, from the store.
    let replayed = read_events(&mut first, &mut buf, 3).await;
    let kinds: Vec<&str> = replayed.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["status", "transcript", "suggestion"],
        "{replayed:?}"
    );
    assert_eq!(replayed[2].data["id"], "question-equipment");
    assert!(replayed.iter().all(|e| e.id.is_some()));

    // Live: the details bring the transcript and the article.
    chat(
        &server,
        "sse-1",
        "C'est la caméra du parking, elle est éteinte depuis qu'on a remplacé le switch PoE ce matin, \
         plus aucune lumière et elle ne répond pas au ping.",
        "technician",
    )
    .await;
    let live = read_events(&mut first, &mut buf, 2).await;
    assert_eq!(live[0].event, "transcript");
    assert_eq!(live[1].event, "suggestion");
    assert_eq!(live[1].data["type"], "knowledge_base");
    drop(first);

    // A reconnect after the question gets only what came after it.
    let mut again = http
        .get(&url)
        .header("Last-Event-ID", replayed[2].id.unwrap().to_string())
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let resumed = read_events(&mut again, &mut buf, 2).await;
    assert_eq!(resumed[0].id, live[0].id, "{resumed:?}");
    assert_eq!(resumed[1].data["type"], "knowledge_base");

    let r = http
        .get(server.http("/api/sessions/nope/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let s: Value = server.get_json("/api/sessions/sse-1").await;
    assert_eq!(s["statistics"]["solutions_provided"], 1, "{s}");
    assert_eq!(s["statistics"]["questions_asked"], 1, "{s}");

    // Killed (no clean shutdown) and started again on the same data dir:
    // what was shown is still there, from the store.
    let server = server.restart();
    let s: Value = server.get_json("/api/sessions/sse-1").await;
    assert_eq!(s["transcript"].as_array().map(Vec::len), Some(2), "{s}");
    // The chat was cut by the kill: marked as interrupted at start.
    assert_eq!(s["status"], "interrupted", "{s}");
    let list: Value = server.get_json("/api/sessions").await;
    assert!(
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["session_id"] == "sse-1" && x["status"] == "interrupted"),
        "{list}"
    );
    assert_eq!(s["statistics"]["solutions_provided"], 1, "{s}");
    assert_eq!(s["statistics"]["questions_asked"], 1, "{s}");
    let polled: Value = server
        .get_json("/demo/get-session-suggestions?session_id=sse-1")
        .await;
    assert_eq!(polled["status"], "success", "{polled}");
    assert_eq!(
        polled["suggestions"][0]["type"], "knowledge_base",
        "{polled}"
    );
    assert_eq!(polled["transcriptions"].as_array().map(Vec::len), Some(2));
    let mut replay = http
        .get(server.http("/api/sessions/sse-1/events"))
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let all = read_events(&mut replay, &mut buf, 5).await;
    assert_eq!(
        all[4].id, live[1].id,
        "the same ids after a restart: {all:?}"
    );
}

/// Durability: the server is killed (SIGKILL) in the middle of a phone call
/// and started again on the same data dir. Every event a dashboard was shown
/// over the live stream is in the store, unchanged, and the call is marked
/// interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_call_loses_nothing_that_was_shown() {
    if !ready() {
        return;
    }
    let server = Server::start_pipeline(&[], &support::default_pipeline_with("durable", |_| {}));
    let mut call = tokio::process::Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .args(["simulate", "--url", &server.ws(), "--script"])
        .arg(support::root().join("samples/calls/door-strike.toml"))
        .args(["--param", "session_id=durable-1"])
        .env("CALLPIPE_LOG", "error")
        .env("CALLPIPE_API_TOKEN", support::server::TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("callpipe simulate starts");

    // The dashboard's stream, once the call has begun.
    let http = server.client();
    let url = server.http("/api/sessions/durable-1/events");
    let mut stream = None;
    for _ in 0..200 {
        let r = http.get(&url).send().await.unwrap();
        if r.status() == 200 {
            stream = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut stream = stream.expect("the call's stream opens");
    let mut buf = String::new();
    let mut shown = Vec::new();
    // Until the first thing the technician said has been shown: mid-call.
    while !shown.iter().any(|e: &Sse| e.event == "transcript") {
        shown.extend(read_events(&mut stream, &mut buf, 1).await);
    }
    let server = server.restart();
    let _ = call.kill().await;

    let s = server.get_json("/api/sessions/durable-1").await;
    assert_eq!(s["status"], "interrupted", "{s}");
    let db = callpipe_host::store::Store::connect(&format!(
        "sqlite://{}",
        server.data_dir().join("callpipe.db").display()
    ))
    .await
    .expect("the server's database");
    let stored = db.events_after("durable-1", 0, 10_000).await.unwrap();
    for e in &shown {
        let id = e.id.expect("every shown event has its stored id");
        let row = stored
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("shown event {id} ({}) not stored: {stored:?}", e.event));
        assert_eq!(row.kind, e.event);
        let data: Value = serde_json::from_str(&row.data).unwrap();
        assert_eq!(data, e.data, "event {id} stored as shown");
    }
    let last = stored.last().expect("events");
    assert_eq!(last.kind, "status");
    assert!(last.data.contains("interrupted"), "{last:?}");
}

/// Two hosts on Postgres, and the database drops every host's LISTEN
/// connection between two messages (a failover, a proxy's idle timeout):
/// the dashboard's stream on the other host still shows every event of
/// the session, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listener_loses_no_event_on_the_other_host() {
    if !ready() {
        return;
    }
    let Some(db) = callpipe_testkit::postgres::Schema::create("relisten").await else {
        return;
    };
    let url = db.url();
    let pipeline = support::default_pipeline_with("relisten", |t| {
        support::solutions_floor(t, support::TEST_FLOOR)
    });
    let a = support::cluster_host(&url, "a", &pipeline, &[]);
    let b = support::cluster_host(&url, "b", &pipeline, &[]);
    chat(
        &a,
        "relisten-1",
        "Bonjour, j'ai un souci sur le site.",
        "technician",
    )
    .await;
    let mut stream = b
        .client()
        .get(b.http("/api/sessions/relisten-1/events"))
        .send()
        .await
        .expect("B's stream");
    assert_eq!(stream.status(), 200);
    let mut buf = String::new();
    let before = read_events(&mut stream, &mut buf, 3).await;

    // The database ends every listening connection of this schema.
    let channel = format!("callpipe_events_{}", db.name);
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query ILIKE 'LISTEN%' AND query LIKE '%' || $1 || '%'",
    )
    .bind(&channel)
    .fetch_all(&db.admin)
    .await
    .expect("terminate the listeners");
    assert_eq!(cut.len(), 2, "both hosts listen on {channel}");

    chat(
        &a,
        "relisten-1",
        "C'est la caméra du parking, elle est éteinte depuis qu'on a remplacé le switch PoE ce matin, \
         plus aucune lumière et elle ne répond pas au ping.",
        "technician",
    )
    .await;
    // Every event the store has for the session once A has stored the new
    // line (an answer may follow it) ...
    let stored_ids = || async {
        let ids: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, kind FROM {}.events WHERE session_id = 'relisten-1' ORDER BY id",
            db.name
        )))
        .fetch_all(&db.admin)
        .await
        .expect("the stored events");
        ids
    };
    let mut stored = stored_ids().await;
    for _ in 0..100 {
        if stored.iter().filter(|(_, k)| k == "transcript").count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stored = stored_ids().await;
    }
    let stored: Vec<i64> = stored.into_iter().map(|(id, _)| id).collect();
    assert!(stored.len() > before.len(), "{stored:?}");
    // ... reaches B's stream, once and in order (what came since follows).
    let after = read_events(&mut stream, &mut buf, stored.len() - before.len()).await;
    let shown: Vec<i64> = before.iter().chain(&after).filter_map(|e| e.id).collect();
    assert_eq!(shown[..stored.len()], stored[..], "{after:?}");
    assert!(shown.windows(2).all(|w| w[0] < w[1]), "{shown:?}");
    drop((a, b));
    db.drop().await;
}
