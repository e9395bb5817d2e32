//! How a host stops (SIGTERM): within one budget, `CALLPIPE_SHUTDOWN_S`,
//! with what is queued for the store stored. The database is the
//! machine's real Postgres behind a proxy that slows every write.

use crate::faults::{SAID, call, database_behind_proxy};
use crate::support::server::Server;
use crate::support::{self, fixture_present};
use callpipe_host::simulator;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_what_is_still_queued_before_closing() {
    if !fixture_present(support::models_present(), "the models (`callpipe models`)") {
        return;
    }
    let Some((db, url, proxy)) = database_behind_proxy().await else {
        return;
    };
    let (admin, schema) = (db.admin.clone(), db.name.clone());
    let pipeline = support::default_pipeline_with("sigterm", |_| {});
    let server = Server::start_pipeline(&[("CALLPIPE_DATABASE_URL", url.as_str())], &pipeline);
    // Slow writes: at SIGTERM some are still queued.
    proxy.delay(Duration::from_millis(300));
    for text in [
        "Bonjour, j'ai un souci sur le site.",
        SAID,
        "Je l'ai déjà redémarrée, sans effet.",
    ] {
        let r = server
            .client()
            .post(server.http("/demo/send-demo-transcription"))
            .json(&json!({"session_id": "term-1", "text": text, "speaker": "technician"}))
            .send()
            .await
            .expect("chat");
        assert!(r.status().is_success(), "{}", r.status());
    }
    let live: Value = server.get_json("/api/sessions/term-1").await;
    let shown = live["transcript"].as_array().map_or(0, Vec::len) as i64;
    assert!(shown >= 3, "{live}");
    let queued = server.metric("callpipe_store_queue_depth").await;
    assert!(server.terminate(), "serve exits cleanly on SIGTERM");
    let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.events WHERE session_id = 'term-1' AND kind = 'transcript'"
    )))
    .fetch_one(&admin)
    .await
    .expect("query");
    assert_eq!(stored, shown, "{queued} writes were queued at SIGTERM");
    db.drop().await;
}

/// A stop under load: calls that outlast the drain, chats with their end
/// still to come, and the database slowed from the stop on (every write
/// of the stop itself queues). On SIGTERM the whole stop (drain, closing
/// the calls, the chats' end, the last writes) ends inside
/// `CALLPIPE_SHUTDOWN_S`, so a supervisor's grace above it never has to
/// kill it; no queued write is lost, every chat line the live views showed
/// is stored, and every call and chat is stored ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_under_load_fits_its_budget_and_stores_every_write() {
    if !fixture_present(support::models_present(), "the models (`callpipe models`)") {
        return;
    }
    let Some((db, url, proxy)) = database_behind_proxy().await else {
        return;
    };
    let (admin, schema) = (db.admin.clone(), db.name.clone());
    // 12 s: the drain gets 2 s of it, the rest ends chats and stores.
    const BUDGET_S: u64 = 12;
    let budget = BUDGET_S.to_string();
    let pipeline = support::default_pipeline_with("stop-load", |_| {});
    let server = Server::start_pipeline_logged(
        &[
            ("CALLPIPE_DATABASE_URL", url.as_str()),
            ("CALLPIPE_SHUTDOWN_S", budget.as_str()),
            ("CALLPIPE_DRAIN_S", "30"),
        ],
        &pipeline,
    );
    // Four calls that would talk for a minute: still live when the drain
    // ends, they are stored as interrupted.
    let calls = tokio::spawn(simulator::run(call(&server.ws(), "stop-call", 4, 60.0)));
    for n in 0..4 {
        server
            .session_when(&format!("stop-call-{n}"), "in-progress", 30)
            .await;
    }
    let chats: Vec<String> = (0..6).map(|n| format!("stop-chat-{n}")).collect();
    let turns = chats.iter().map(|id| {
        let server = &server;
        async move {
            for text in ["Bonjour, j'ai un souci sur le site.", SAID] {
                let r = server
                    .client()
                    .post(server.http("/demo/send-demo-transcription"))
                    .json(&json!({"session_id": id, "text": text, "speaker": "technician"}))
                    .send()
                    .await
                    .expect("chat");
                assert!(r.status().is_success(), "{id}: {}", r.status());
            }
        }
    });
    futures_util::future::join_all(turns).await;
    let mut shown = Vec::new();
    for id in &chats {
        let live: Value = server.get_json(&format!("/api/sessions/{id}")).await;
        let lines = live["transcript"].as_array().map_or(0, Vec::len) as i64;
        assert!(lines >= 2, "{live}");
        shown.push(lines);
    }
    let queued = server.metric("callpipe_store_queue_depth").await;

    // From here each write waits 20 ms per message to the database: what
    // the stop writes (four calls closed, six chats ended) queues.
    proxy.delay(Duration::from_millis(20));
    let began = std::time::Instant::now();
    server.sigterm();
    // A second of slack for the signal's delivery and the process's exit;
    // a stop that overruns is killed here, as a supervisor would.
    let limit = Duration::from_secs(BUDGET_S + 1);
    let (server, exited) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        let exited = server.wait_within(limit);
        (server, exited)
    })
    .await
    .expect("wait");
    let took = began.elapsed();
    let log = server.log();
    assert!(
        !log.contains("the rest is lost") && !log.contains("closed pool"),
        "queued writes were lost: {log}"
    );
    calls.abort();
    assert_eq!(
        exited,
        Some(true),
        "the stop took {took:?} (budget {BUDGET_S} s) and should exit cleanly"
    );

    for (id, lines) in chats.iter().zip(shown) {
        let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.events WHERE session_id = $1 AND kind = 'transcript'"
        )))
        .bind(id)
        .fetch_one(&admin)
        .await
        .expect("query");
        assert_eq!(
            stored, lines,
            "{id}: {queued} writes were queued at SIGTERM"
        );
    }
    let open: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT session_id, status FROM {schema}.calls WHERE ended_at IS NULL"
    )))
    .fetch_all(&admin)
    .await
    .expect("query");
    assert!(
        open.is_empty(),
        "stored as still live after the stop: {open:?}"
    );
    let ended: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.calls WHERE ended_at IS NOT NULL"
    )))
    .fetch_one(&admin)
    .await
    .expect("query");
    assert_eq!(ended, 10, "four calls and six chats, each stored ended");
    db.drop().await;
}
