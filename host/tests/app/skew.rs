//! Two hosts on one Postgres schema whose clocks are 50 s apart (Debian's
//! libfaketime in front of the real binary sets one 30 s ahead of the
//! database and the other 20 s behind, so forwarded requests, whose
//! signatures carry a time checked within 60 s, still pass; the monotonic clock is left alone,
//! as a clock step leaves it). Leases, their expiry and the age of a call
//! that rings with no host are all read on the database's clock, so
//! neither host takes the other for gone.

use crate::cluster::follow;
use crate::faults::call;
use crate::partition::history;
use crate::support::{self, fixture_present};
use callpipe_host::simulator;
use callpipe_testkit::postgres::Schema;
use serde_json::Value;
use std::sync::atomic::Ordering::Relaxed;

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Host A runs 30 s ahead of the database and host B 20 s behind, with a
/// 2 s lease: B's call lasts five leases and a call B served rings through
/// it (the unstarted age is 20 s). Judged on A's clock, B's lease would
/// have expired 48 s ago and the ringing call would be 60 s old; A marks
/// neither, both hosts' event streams show B's call in order to its end,
/// and A's own call is unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_whose_clocks_are_50_s_apart_take_nobody_for_gone() {
    if !fixture_present(
        std::path::Path::new(FAKETIME).exists(),
        "Debian's faketime (libfaketime)",
    ) {
        return;
    }
    let Some(db) = Schema::create("skew").await else {
        return;
    };
    let url = db.url();
    let pipeline = support::audio_pipeline();
    let host = |id: &str, clock: &[(&'static str, &'static str)]| {
        let mut env = vec![
            ("CALLPIPE_LEASE_MS", "2000"),
            ("CALLPIPE_UNSTARTED_S", "20"),
        ];
        env.extend_from_slice(clock);
        support::cluster_host(&url, id, &pipeline, &env)
    };
    let skewed = |by: &'static str| {
        [
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME", by),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
    };
    let a = host("a", &skewed("+30s"));
    let b = host("b", &skewed("-20s"));

    // B's clock is really behind: what it stamps with its own clock (the
    // status it records) is 20 s in the past.
    let on_b = tokio::spawn(simulator::run(call(&b.ws(), "skew-b", 1, 10.0)));
    let s = b.session_when("skew-b", "in-progress", 20).await;
    let stamped = s["status_history"][0]["at"].as_f64().unwrap_or_default();
    assert!(
        now() - stamped > 15.0,
        "B's clock is not behind (stamped {stamped}, now {}): {s}",
        now()
    );
    // A call that rings on B (TwiML served, no stream yet).
    let voice = reqwest::Client::new()
        .post(b.http("/twilio/voice?session_id=skew-ringing"))
        .form(&[("CallSid", "CAringing")])
        .send()
        .await
        .expect("voice");
    assert!(voice.status().is_success(), "{}", voice.status());
    let ringing = b.get_json("/api/sessions/skew-ringing").await;
    assert_eq!(ringing["status"], "created", "{ringing}");

    // B's call, followed from both hosts (once A's store read finds it); a
    // shorter one on A meanwhile.
    a.session_when("skew-b", "in-progress", 20).await;
    let followers: Vec<_> = [&a, &b]
        .iter()
        .map(|s| tokio::spawn(follow(s.http(""), "skew-b".into())))
        .collect();
    let on_a = tokio::spawn(simulator::run(call(&a.ws(), "skew-a", 1, 4.0)));
    // A's clock is really ahead: its own call's first status is stamped 30 s
    // in the future.
    let s = a.session_when("skew-a", "in-progress", 20).await;
    let stamped = s["status_history"][0]["at"].as_f64().unwrap_or_default();
    assert!(
        stamped - now() > 25.0,
        "A's clock is not ahead (stamped {stamped}, now {}): {s}",
        now()
    );
    for (name, report) in [("A", on_a.await), ("B", on_b.await)] {
        let report = report.expect("call");
        assert_eq!(
            report.failed.load(Relaxed),
            0,
            "{name}: {}",
            report.render()
        );
    }
    let mut streams = Vec::new();
    for f in followers {
        streams.push(f.await.expect("follower"));
    }
    let ids =
        |seen: &[(i64, String, std::time::Instant)]| seen.iter().map(|e| e.0).collect::<Vec<_>>();
    assert_eq!(ids(&streams[0]), ids(&streams[1]), "{streams:?}");
    assert!(ids(&streams[0]).windows(2).all(|w| w[0] < w[1]));

    for (server, id) in [(&a, "skew-a"), (&b, "skew-b")] {
        let s = server.session_when(id, "completed", 30).await;
        assert!(!history(&s).contains(&"interrupted".into()), "{id}: {s}");
    }
    // The ringing call still rings, served over 10 s ago: judged on A's
    // clock against B's stamp it would be 60 s old, past the 20 s age, and
    // A would end it.
    let ringing = a.get_json("/api/sessions/skew-ringing").await;
    assert_eq!(ringing["status"], "created", "{ringing}");
    assert_eq!(ringing["ended_at"], Value::Null, "{ringing}");

    drop((a, b));
    db.drop().await;
}
