//! Hosts on one Postgres schema under faults: one host cut from the
//! database while the other keeps it, two processes given one host id, a
//! stream opened for a call another host runs, and requests that say they
//! were forwarded. Real binaries, the machine's real Postgres; the network
//! between a host and the database is a TCP proxy the test can cut.

use crate::faults::{call, database_behind_proxy};
use crate::support::server::{Server, TOKEN};
use crate::support::{self, models_dir, root};
use callpipe_host::simulator;
use callpipe_testkit::postgres::Schema;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::CLUSTER_SECRET as SECRET;

/// The statuses the call went through, as stored.
pub(crate) fn history(s: &Value) -> Vec<String> {
    s["status_history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|x| x["status"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `server` says it is ready, polled until it says `want` (up to
/// `seconds`).
async fn ready_becomes(server: &Server, want: bool, seconds: u64) -> bool {
    let mut ready = !want;
    for _ in 0..seconds * 10 {
        let r = reqwest::get(server.http("/ready")).await.expect("ready");
        ready = r.status().is_success();
        if ready == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ready
}

/// Host A alone loses the database for longer than its lease and grace
/// while B keeps it: B marks A's live call interrupted, A stops taking
/// calls, and once the database is back A reclaims the call, which ends
/// `completed` with no `interrupted` left in its history. A cut shorter
/// than lease + grace marks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_from_the_database_keeps_its_calls() {
    let Some((db, via_proxy, proxy)) = database_behind_proxy().await else {
        return;
    };
    let direct = db.url();
    let pipeline = support::audio_pipeline();
    let host = |id: &str, url: &str| {
        support::cluster_host(url, id, &pipeline, &[("CALLPIPE_LEASE_MS", "3000")])
    };
    let (a, b) = (host("a", &via_proxy), host("b", &direct));

    // A short cut (2 s < lease 3 s + grace 3 s): nothing is marked.
    let short = tokio::spawn(simulator::run(call(&a.ws(), "short-cut", 1, 8.0)));
    b.session_when("short-cut", "in-progress", 20).await;
    proxy.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.up();
    let report = short.await.expect("call");
    assert_eq!(report.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    let s = b.session_when("short-cut", "completed", 30).await;
    assert!(!history(&s).contains(&"interrupted".into()), "{s}");

    // A long cut (9 s): B takes A for gone and marks its call; A knows it
    // lost its lease and takes no new call.
    let long = tokio::spawn(simulator::run(call(&a.ws(), "long-cut", 1, 24.0)));
    b.session_when("long-cut", "in-progress", 20).await;
    proxy.down();
    let s = b.session_when("long-cut", "interrupted", 15).await;
    assert!(s["ended_at"].is_number(), "B ended it: {s}");
    assert!(
        !ready_becomes(&a, false, 10).await,
        "A says it is not ready without its lease"
    );
    let voice = reqwest::Client::new()
        .post(a.http("/twilio/voice"))
        .form(&[("CallSid", "CAwhilecut")])
        .send()
        .await
        .expect("voice");
    assert_eq!(voice.status(), 503, "a call goes to another host");
    let refused = simulator::run(call(&a.ws(), "while-cut", 1, 1.0)).await;
    // The upgrade is answered, then closed at once with the reason (1013).
    assert_eq!(
        refused.failed.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "A takes no new call without its lease: {}",
        refused.render()
    );
    proxy.up();
    // A reclaims the call it still runs: open again, the guess gone.
    let s = b.session_when("long-cut", "in-progress", 20).await;
    assert_eq!(s["ended_at"], Value::Null, "{s}");
    assert!(!history(&s).contains(&"interrupted".into()), "{s}");
    assert!(ready_becomes(&a, true, 20).await, "A is ready again");
    let report = long.await.expect("call");
    assert_eq!(report.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    let s = b.session_when("long-cut", "completed", 30).await;
    assert_eq!(s["host_id"], "a", "{s}");
    assert!(!history(&s).contains(&"interrupted".into()), "{s}");

    drop((a, b));
    db.drop().await;
}

/// A second way to the schema of `db`, through its own proxy.
async fn another_proxy(db: &Schema) -> (String, crate::support::proxy::Proxy) {
    let (scheme_user, rest) = db.base.split_once('@').expect("a URL with user@host");
    let (target, path) = rest.split_once('/').expect("a URL with a database");
    let (proxy, port) = crate::support::proxy::Proxy::start(target.to_string()).await;
    (
        db.url_via(&format!("{scheme_user}@127.0.0.1:{port}/{path}")),
        proxy,
    )
}

/// Every host cut from the database at once, for longer than lease and
/// grace: nobody can mark anything meanwhile. When the database comes back,
/// B reaches it 1.5 s before A, and does not take A for gone before A could
/// renew: the call is never marked, and it ends `completed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_cut_at_once_marks_nothing() {
    let Some((db, via_a, proxy_a)) = database_behind_proxy().await else {
        return;
    };
    let (via_b, proxy_b) = another_proxy(&db).await;
    let host = |id: &str, url: &str| {
        Server::start_logged(&[
            ("CALLPIPE_DATABASE_URL", url),
            ("CALLPIPE_HOST_ID", id),
            ("CALLPIPE_LEASE_MS", "3000"),
            ("CALLPIPE_CLUSTER_SECRET", SECRET),
        ])
    };
    let (a, b) = (host("a", &via_a), host("b", &via_b));
    let long = tokio::spawn(simulator::run(call(&a.ws(), "all-cut", 1, 20.0)));
    b.session_when("all-cut", "in-progress", 20).await;
    proxy_a.down();
    proxy_b.down();
    tokio::time::sleep(Duration::from_secs(9)).await;
    proxy_b.up();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy_a.up();
    let report = long.await.expect("call");
    assert_eq!(report.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    let s = b.session_when("all-cut", "completed", 30).await;
    assert_eq!(s["host_id"], "a", "{s}");
    assert!(!history(&s).contains(&"interrupted".into()), "{s}");
    for (name, server) in [("a", &a), ("b", &b)] {
        let log = server.log();
        assert!(
            !log.contains("marked interrupted") && !log.contains("reclaimed"),
            "{name} judged a live host gone after the outage:\n{log}"
        );
    }
    drop((a, b));
    db.drop().await;
}

/// A stream's owner is stored before its pipeline starts, not through the
/// queue of writes: host A, whose writes are slowed, is killed the moment
/// its live view has the call streaming (what it queued is lost). B still
/// finds the call A's and ends it once A's lease and grace are over,
/// instead of leaving it `created`, with no host, until the unstarted age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_before_its_first_writes_land_leaves_its_call_named() {
    let Some((db, via_proxy, proxy)) = database_behind_proxy().await else {
        return;
    };
    let direct = db.url();
    let pipeline = support::audio_pipeline();
    let host = |id: &str, url: &str| {
        support::cluster_host(url, id, &pipeline, &[("CALLPIPE_LEASE_MS", "3000")])
    };
    let (a, b) = (host("a", &via_proxy), host("b", &direct));
    // Slow enough that A's queued writes are still on their way when it
    // dies, short of the 2 s a claim may take.
    proxy.delay(Duration::from_millis(300));
    let streaming = tokio::spawn(simulator::run(call(&a.ws(), "early-kill", 1, 30.0)));
    a.session_when("early-kill", "in-progress", 20).await;
    drop(a);
    streaming.abort();
    // What the store holds is the claim's alone: the queued write that
    // records the call's pipeline never landed.
    let (host_id, version): (Option<String>, Option<String>) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT host_id, pipeline_version FROM {}.calls WHERE session_id = 'early-kill'",
            db.name
        )))
        .fetch_one(&db.admin)
        .await
        .expect("the call's row");
    assert_eq!(
        (host_id.as_deref(), version),
        (Some("a"), None),
        "the owner came from the claim, before any queued write"
    );
    let s = b.session_when("early-kill", "interrupted", 30).await;
    assert_eq!(s["host_id"], "a", "{s}");
    assert!(s["ended_at"].is_number(), "{s}");
    drop((b, proxy));
    db.drop().await;
}

/// One call, one pipeline: a stream for a call host A runs, opened on host
/// B (a replayed stream, a second connection), is refused by B; the call
/// goes on on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_runs_one_pipeline_whichever_host_a_stream_reaches() {
    let Some(db) = Schema::create("onepipe").await else {
        return;
    };
    let url = db.url();
    let host = |id: &str| {
        Server::start_logged(&[
            ("CALLPIPE_DATABASE_URL", url.as_str()),
            ("CALLPIPE_HOST_ID", id),
            ("CALLPIPE_CLUSTER_SECRET", SECRET),
        ])
    };
    let (a, b) = (host("a"), host("b"));
    let first = tokio::spawn(simulator::run(call(&a.ws(), "one-call", 1, 8.0)));
    b.session_when("one-call", "in-progress", 20).await;
    let _ = simulator::run(call(&b.ws(), "one-call", 1, 2.0)).await;
    let report = first.await.expect("call");
    assert_eq!(report.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    let s = b.session_when("one-call", "completed", 30).await;
    assert_eq!(s["host_id"], "a", "{s}");
    assert!(
        b.log().contains("the call runs on host `a`"),
        "B refused the second stream: {}",
        b.log()
    );
    drop((a, b));
    db.drop().await;
}

/// Two processes started with one host id: the second waits for the
/// first's lease to expire, finds it renewed, and refuses to start, naming
/// the id; the first goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_host_id_refuse_to_share_it() {
    let Some(db) = Schema::create("dupid").await else {
        return;
    };
    let url = db.url();
    let env = [
        ("CALLPIPE_DATABASE_URL", url.as_str()),
        ("CALLPIPE_HOST_ID", "same"),
        ("CALLPIPE_LEASE_MS", "1500"),
    ];
    let first = Server::start(&env);
    let data = tempfile::tempdir().expect("data dir");
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .args(["serve", "--listen", "127.0.0.1:0", "--pipeline"])
        .arg(support::audio_pipeline())
        .current_dir(root())
        .env("CALLPIPE_DATA_DIR", data.path())
        .env("CALLPIPE_MODELS_DIR", models_dir())
        .env("CALLPIPE_API_TOKEN", TOKEN)
        .env("CALLPIPE_TWILIO_SIGNATURES", "off")
        .env("CALLPIPE_LOG", "warn")
        .envs(env)
        .output()
        .expect("a second process runs");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains("another process is alive as host `same`"),
        "{stderr}"
    );
    assert!(ready_becomes(&first, true, 5).await, "the first goes on");
    drop(first);
    db.drop().await;
}

/// One request a listener got: its request line and headers, lowercased.
async fn spy() -> (u16, tokio::sync::mpsc::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&got).to_lowercase()).await;
            // A redirect towards another endpoint: never to be followed.
            let _ = socket
                .write_all(
                    b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/api/ops\r\n\
                      content-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    (port, rx)
}

/// A host address in the database is not trusted with anything: a request
/// handed to it carries the cluster's signature, never the user's token or
/// cookie, and its redirect is not followed. A request that only says it
/// was forwarded is refused, and a session id that would change the path
/// never reaches one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_trust_signatures_not_headers_or_addresses() {
    let Some(db) = Schema::create("trust").await else {
        return;
    };
    let url = db.url();
    let a = Server::start(&[
        ("CALLPIPE_DATABASE_URL", url.as_str()),
        ("CALLPIPE_HOST_ID", "a"),
        ("CALLPIPE_CLUSTER_SECRET", SECRET),
    ]);
    // Someone who can write rows names a "host" that is a listener of
    // theirs and says it runs a call.
    let (port, mut seen) = spy().await;
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO hosts (host_id, address, started_at, lease_until, incarnation) \
         VALUES ('spy', $1, 0, 1e12, 'x')",
    )
    .bind(format!("http://127.0.0.1:{port}"))
    .execute(&pool)
    .await
    .expect("host row");
    sqlx::query(
        "INSERT INTO calls (session_id, status, started_at, host_id) \
         VALUES ('spied', 'in-progress', 0, 'spy')",
    )
    .execute(&pool)
    .await
    .expect("call row");

    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(a.http(path))
            .bearer_auth(TOKEN)
            .header("cookie", format!("callpipe_token={TOKEN}"))
            .json(&body)
            .send()
    };
    let r = post("/api/sessions/spied/mute", json!({"muted": true}))
        .await
        .expect("mute");
    assert_eq!(r.status(), 502, "the redirect is not followed");
    let request = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the listener got the request")
        .expect("a request");
    assert!(
        request.starts_with("post /api/sessions/spied/mute "),
        "{request}"
    );
    assert!(!request.contains(&TOKEN.to_lowercase()), "{request}");
    assert!(!request.contains("authorization:"), "{request}");
    assert!(!request.contains("cookie:"), "{request}");
    assert!(
        request.contains("x-callpipe-cluster-signature: t="),
        "{request}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen.recv())
            .await
            .is_err(),
        "one request, no redirect followed"
    );

    // The forwarding header alone (a client's forgery) is refused, token or
    // not; so is a signature made with another secret.
    let chat = json!({"session_id": "forged", "text": "bonjour"});
    let r = client
        .post(a.http("/demo/send-demo-transcription"))
        .bearer_auth(TOKEN)
        .header("x-callpipe-forwarded-by", "b")
        .json(&chat)
        .send()
        .await
        .expect("forged");
    assert_eq!(r.status(), 401);
    let r = client
        .post(a.http("/demo/send-demo-transcription"))
        .header("x-callpipe-forwarded-by", "b")
        .header(
            "x-callpipe-cluster-signature",
            format!("t={},v1={}", chrono_now(), "00".repeat(32)),
        )
        .json(&chat)
        .send()
        .await
        .expect("forged");
    assert_eq!(r.status(), 401);

    // Session ids that would leave their path segment never reach one.
    for bad in ["../ops", "a b", &"x".repeat(200)] {
        let r = post("/demo/end-demo-call", json!({"session_id": bad}))
            .await
            .expect("end");
        assert_eq!(r.status(), 400, "{bad}");
        let r = post(
            "/demo/send-demo-transcription",
            json!({"session_id": bad, "text": "bonjour"}),
        )
        .await
        .expect("chat");
        assert_eq!(r.status(), 400, "{bad}");
    }
    // The same rule for ids in a path, checked once by its extractor.
    // (`%2E%2E` never gets here: clients resolve it as `..` before sending.)
    for bad in ["a%20b", "x%0Ay", "%C3%A9t%C3%A9"] {
        for path in [
            format!("/api/sessions/{bad}"),
            format!("/api/sessions/{bad}/events"),
        ] {
            let r = client
                .get(a.http(&path))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("get");
            assert_eq!(r.status(), 400, "{path}");
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen.recv())
            .await
            .is_err(),
        "nothing else reached the listener"
    );
    drop(a);
    pool.close().await;
    db.drop().await;
}

/// Seconds since the epoch.
fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
