//! Hot reload under live calls.

use super::*;

/// Hot reload while 20 calls are in progress: a broken file is rejected
/// (the ops page and the reload API say why, and the running version
/// stays), a good one is picked up by the watcher for new calls, and none
/// of the 20 calls loses a frame or changes version mid-call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_during_twenty_calls_drops_none() {
    let good = std::fs::read_to_string(support::audio_pipeline()).expect("pipeline");
    let path = root()
        .join("target")
        .join("test-pipelines")
        .join(format!("reload-{}.toml", std::process::id()));
    std::fs::write(&path, &good).unwrap();
    let server = Server::start_pipeline(&[("CALLPIPE_WATCH_MS", "100")], &path);
    let before = server.get_json("/ready").await["pipeline_version"]
        .as_str()
        .unwrap()
        .to_string();

    let mut config = sim(&server.ws(), "reload", None);
    config.calls = 20;
    config.ramp = Duration::from_millis(500);
    let calls = tokio::spawn(simulator::run(config));
    let mut active = 0;
    for _ in 0..100 {
        active = stats(&server).await["active_calls"].as_u64().unwrap_or(0);
        if active == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(active, 20, "all calls in progress before the reloads");

    // A broken file: refused, shown, and the running version stays.
    std::fs::write(&path, "[pipeline]\nname = \"broken\nqueue = 8\n").unwrap();
    let mut ops = server.get_json("/api/ops").await;
    for _ in 0..100 {
        if !ops["reload_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        ops = server.get_json("/api/ops").await;
    }
    let shown = ops["reload_error"]
        .as_str()
        .expect("the rejection is shown");
    assert!(
        shown.contains(&format!("reload-{}.toml", std::process::id())),
        "{shown}"
    );
    assert!(shown.contains(":2:"), "names the line: {shown}");
    assert_eq!(ops["pipeline"]["version"], before.as_str());
    let r = server
        .client()
        .post(server.http("/api/pipelines/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["status"], "rejected", "{doc}");
    assert_eq!(doc["version"], before.as_str(), "{doc}");

    // A good change: the watcher loads it for new calls.
    std::fs::write(&path, format!("{good}\n# reloaded while calls run\n")).unwrap();
    let mut after = before.clone();
    for _ in 0..100 {
        after = server.get_json("/ready").await["pipeline_version"]
            .as_str()
            .unwrap()
            .to_string();
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(after, before, "the watcher reloaded the file");
    assert!(server.get_json("/api/ops").await["reload_error"].is_null());
    // The API reloads on demand too.
    let r: Value = server
        .client()
        .post(server.http("/api/pipelines/reload"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "reloaded", "{r}");
    assert_eq!(r["version"], after.as_str(), "{r}");

    let report = calls.await.expect("calls");
    all_went_through(&report, 20);
    let st = stats(&server).await;
    assert_eq!(st["frames_dropped"], 0, "{st}");
    for n in 0..20 {
        let s = server
            .session_when(&format!("reload-{n}"), "completed", 5)
            .await;
        assert_eq!(s["total_segments"], 3, "{s}");
        assert_eq!(
            s["pipeline_version"],
            before.as_str(),
            "kept its version: {s}"
        );
    }
    let report = simulator::run(sim(&server.ws(), "after-reload", None)).await;
    assert_eq!(report.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    let s = server.session_when("after-reload", "completed", 5).await;
    assert_eq!(s["pipeline_version"], after.as_str(), "{s}");
    assert_eq!(s["total_segments"], 3, "{s}");
}

/// A reload measures what the host can hold again, for the new version:
/// a pipeline of seven stages costs more per call than one of three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_measures_capacity_for_the_new_version() {
    let path = root()
        .join("target")
        .join("test-pipelines")
        .join(format!("capacity-reload-{}.toml", std::process::id()));
    std::fs::copy(support::audio_pipeline(), &path).unwrap();
    let server = Server::start_pipeline(&[("CALLPIPE_MAX_CALLS", "5")], &path);
    let before = server.get_json("/ready").await["capacity"].clone();
    assert_eq!(before["instances_per_call"], 3, "{before}");
    assert_eq!(before["calls"], 5, "{before}");

    std::fs::copy(
        support::default_pipeline_with("capacity-seven", |_| {}),
        &path,
    )
    .unwrap();
    let r = server
        .client()
        .post(server.http("/api/pipelines/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let after = server.get_json("/ready").await["capacity"].clone();
    assert_eq!(after["instances_per_call"], 7, "{after}");
    assert_eq!(after["calls"], 5, "{after}");
    assert!(
        after["mappings_per_call"].as_u64() > before["mappings_per_call"].as_u64(),
        "measured again: {before} then {after}"
    );
    let metrics = server.metrics().await;
    assert!(metrics.contains("callpipe_max_calls 5"), "{metrics}");
}
