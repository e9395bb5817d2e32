//! A session's event log read the way a dashboard's event stream reads it
//! after a reconnect: everything after the newest id it has seen
//! (`Last-Event-ID`). On Postgres ids are handed out at insert and become
//! visible at commit, so that is only complete if a session's events
//! commit in id order, whichever host and connection wrote them.

use callpipe_store::items::TranscriptLine;
use callpipe_store::{NewCall, Store};
use callpipe_testkit::postgres::Schema;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

const WRITERS: usize = 8;
const EACH: usize = 60;

fn line(n: usize) -> TranscriptLine {
    TranscriptLine {
        speaker_id: "tech-1".into(),
        speaker_role: "technician".into(),
        start_ms: n as u64 * 1000,
        end_ms: n as u64 * 1000 + 900,
        text: format!("line {n}"),
        language: "fr".into(),
        confidence: 0.8,
        translation: None,
    }
}

/// Two hosts write one session's events on many connections at once while
/// a reader follows with "after the newest id seen": it misses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_after_the_newest_id_misses_no_event_of_a_session() {
    let Some(schema) = Schema::create("order").await else {
        return;
    };
    let hosts: Vec<Arc<Store>> = {
        let mut hosts = Vec::new();
        for name in ["host-a", "host-b"] {
            let store = Store::connect(&schema.url()).await.expect("connect");
            store.set_host(name);
            hosts.push(Arc::new(store));
        }
        hosts
    };
    hosts[0]
        .open_call(&NewCall {
            session_id: "s",
            ..NewCall::default()
        })
        .await
        .expect("open the call");
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = hosts[w % hosts.len()].clone();
        writers.push(tokio::spawn(async move {
            for k in 0..EACH {
                store
                    .add_transcript("s", &line(w * EACH + k))
                    .await
                    .expect("store a line");
            }
        }));
    }
    let reader = {
        let (store, done) = (hosts[0].clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut last = 0;
            loop {
                // Read whether the writers are done before reading: a read
                // after they are sees everything.
                let finished = done.load(Relaxed);
                let page = store.events_after("s", last, 10_000).await.expect("read");
                for e in &page {
                    seen.insert(e.id);
                    last = e.id;
                }
                if finished && page.is_empty() {
                    return seen;
                }
            }
        })
    };
    for w in writers {
        w.await.expect("a writer");
    }
    done.store(true, Relaxed);
    let seen = reader.await.expect("the reader");
    let stored: BTreeSet<i64> = hosts[0]
        .events_after("s", 0, 10_000)
        .await
        .expect("read all")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stored.len(), WRITERS * EACH);
    let missed: Vec<&i64> = stored.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "a reader following the newest id missed {} of {} events: {missed:?}",
        missed.len(),
        stored.len()
    );
    for store in &hosts {
        store.close().await;
    }
    schema.drop().await;
}
