//! A rolling restart on one Postgres schema: each host in turn stops with
//! SIGTERM and starts again under the same id, while calls ring (their
//! TwiML served, no stream yet) and stream. A call that rings has no host
//! yet, so no host's stop or start touches it.

use crate::faults::call;
use crate::partition::history;
use crate::support;
use crate::support::server::Server;
use callpipe_host::simulator;
use callpipe_testkit::postgres::Schema;
use serde_json::Value;
use std::sync::atomic::Ordering::Relaxed;

/// Serves a call's TwiML on `server`, as Twilio asks when the call rings.
async fn ring(server: &Server, session: &str) {
    let r = reqwest::Client::new()
        .post(server.http(&format!("/twilio/voice?session_id={session}")))
        .form(&[("CallSid", format!("CA{session}"))])
        .send()
        .await
        .expect("voice");
    assert!(r.status().is_success(), "{session}: {}", r.status());
}

/// Four calls ring (two served by each host) and one streams on each host
/// while A, then B, stops with SIGTERM and starts again. Afterwards the
/// ringing calls still ring, stream on the host that did not serve them,
/// and, with the two that streamed through the restarts, end `completed`
/// with no `interrupted` in their history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_interrupts_no_call() {
    let Some(db) = Schema::create("rolling").await else {
        return;
    };
    let url = db.url();
    let pipeline = support::audio_pipeline();
    let host = |id: &str| {
        let timing = [("CALLPIPE_LEASE_MS", "1500"), ("CALLPIPE_DRAIN_S", "30")];
        support::cluster_host(&url, id, &pipeline, &timing)
    };
    let (a, b) = (host("a"), host("b"));
    for (server, n) in [(&a, 0), (&b, 1), (&a, 2), (&b, 3)] {
        ring(server, &format!("ring-{n}")).await;
    }
    let on_a = tokio::spawn(simulator::run(call(&a.ws(), "live-a", 1, 5.0)));
    let on_b = tokio::spawn(simulator::run(call(&b.ws(), "live-b", 1, 5.0)));
    a.session_when("live-a", "in-progress", 20).await;
    b.session_when("live-b", "in-progress", 20).await;

    // A: its live call drains, then the same host starts again; then B.
    a.sigterm();
    let report = on_a.await.expect("A's call");
    assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
    assert!(a.wait(), "A stops cleanly");
    let a = host("a");
    b.sigterm();
    let report = on_b.await.expect("B's call");
    assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
    assert!(b.wait(), "B stops cleanly");
    let b = host("b");

    for n in 0..4 {
        let s = a.get_json(&format!("/api/sessions/ring-{n}")).await;
        assert_eq!(s["status"], "created", "ring-{n} still rings: {s}");
        assert_eq!(s["ended_at"], Value::Null, "ring-{n}: {s}");
    }
    // Each ringing call's stream reaches the host that did not serve it.
    let mut streams = Vec::new();
    for (server, n) in [(&b, 0), (&a, 1), (&b, 2), (&a, 3)] {
        let session = format!("ring-{n}");
        streams.push(tokio::spawn(simulator::run(call(
            &server.ws(),
            &session,
            1,
            2.0,
        ))));
    }
    for s in streams {
        let report = s.await.expect("stream");
        assert_eq!(report.failed.load(Relaxed), 0, "{}", report.render());
    }
    for id in ["live-a", "live-b", "ring-0", "ring-1", "ring-2", "ring-3"] {
        let s = a.session_when(id, "completed", 30).await;
        assert_eq!(s["status"], "completed", "{id}: {s}");
        assert!(!history(&s).contains(&"interrupted".into()), "{id}: {s}");
    }
    drop((a, b));
    db.drop().await;
}

/// A call whose TwiML was served but whose stream never came is not left
/// `created` nor kept in memory: past `CALLPIPE_UNSTARTED_S` a host ends
/// it as interrupted, and the session leaves memory after its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_never_streams_is_ended_by_age_and_leaves_memory() {
    let server = Server::start(&[
        ("CALLPIPE_UNSTARTED_S", "5"),
        ("CALLPIPE_LEASE_MS", "1500"),
        ("CALLPIPE_SESSION_GRACE_S", "1"),
    ]);
    let before = server.metric("callpipe_sessions_in_memory").await;
    ring(&server, "never-streams").await;
    assert_eq!(
        server.metric("callpipe_sessions_in_memory").await,
        before + 1.0
    );
    server
        .session_when("never-streams", "interrupted", 30)
        .await;
    let left = server
        .metric_settles("callpipe_sessions_in_memory", before, 30)
        .await;
    assert_eq!(left, before, "{}", server.metrics().await);
    // The store answers for it now.
    let s = server.get_json("/api/sessions/never-streams").await;
    assert!(s["ended_at"].is_number(), "{s}");
    assert_eq!(history(&s), ["interrupted"], "{s}");
}
