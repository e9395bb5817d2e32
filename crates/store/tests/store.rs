//! The durable record, the same checks against SQLite (the embedded
//! default) and Postgres (the scale path; `CALLPIPE_TEST_DATABASE_URL`,
//! default postgres://postgres@127.0.0.1:5432/test, each run in a schema of
//! its own).

use callpipe_store::items::{LineTranslation, SuggestionRecord, TranscriptLine};
use callpipe_store::{NewCall, Store};
use callpipe_testkit::postgres::Schema;

fn line(text: &str, end_ms: u64) -> TranscriptLine {
    TranscriptLine {
        speaker_id: "tech-1".into(),
        speaker_role: "technician".into(),
        start_ms: end_ms - 1000,
        end_ms,
        text: text.into(),
        language: "fr".into(),
        confidence: 0.8,
        translation: None,
    }
}

fn suggestion(id: &str, kind: &str, confidence: f32, at: f64) -> SuggestionRecord {
    SuggestionRecord {
        id: id.into(),
        kind: kind.into(),
        title: format!("title {id}"),
        content: format!("content {id}"),
        sources: vec!["sample-001".into()],
        confidence,
        language: "fr".into(),
        at,
        model_written: kind == "clarification_question",
    }
}

/// Several hosts on one database: each interrupts only its own calls at
/// start; the calls of a host whose lease expired more than the grace ago
/// are orphans, ended once; leases are stamped and compared on the
/// database's clock; one id, one live process; a call has one owner, and a
/// live owner reclaims a call wrongly marked interrupted.
async fn hosts(store: &Store) {
    use callpipe_store::{Claim, StoreError};
    use std::time::Duration;
    let minute = Duration::from_secs(60);
    let none = Duration::ZERO;
    store
        .renew_lease("host-a", "a-1", "http://a:1", minute)
        .await
        .unwrap();
    store
        .renew_lease("host-b", "b-1", "http://b:1", minute)
        .await
        .unwrap();
    // The lease is on the database's clock, whatever this process's says.
    let db_now = store.db_now().await.unwrap();
    let row = store.host_row("host-a").await.unwrap().unwrap();
    assert!(
        (row.lease_until - (db_now + 60.0)).abs() < 5.0,
        "{row:?} vs {db_now}"
    );
    // A second process under host-a's id is refused while host-a's lease
    // holds; host-a itself renews.
    assert!(matches!(
        store.renew_lease("host-a", "a-2", "http://a:2", minute).await,
        Err(StoreError::HostIdTaken(id)) if id == "host-a"
    ));
    store
        .renew_lease("host-a", "a-1", "http://a:1", minute)
        .await
        .unwrap();
    assert_eq!(
        store.host_row("host-a").await.unwrap().unwrap().address,
        "http://a:1"
    );
    for (session, host) in [("a1", "host-a"), ("b1", "host-b")] {
        store
            .open_call(&NewCall {
                session_id: session,
                call_sid: Some(&format!("CA{session}")),
                host_id: Some(host),
                ..NewCall::default()
            })
            .await
            .unwrap();
    }
    // A later write that names no host (a status callback's) or another
    // host (a queued write) leaves the owner: only a claim changes it.
    for host_id in [None, Some("host-a")] {
        store
            .open_call(&NewCall {
                session_id: "b1",
                technician_name: "Paul",
                host_id,
                ..NewCall::default()
            })
            .await
            .unwrap();
    }
    let b1 = store.call_by_sid("CAb1").await.unwrap().unwrap();
    assert_eq!(b1.host_id.as_deref(), Some("host-b"));
    // One owner: host-a cannot take host-b's live call; host-b has it.
    assert_eq!(
        store.claim_call("b1", "host-a", none).await.unwrap(),
        Claim::Elsewhere("host-b".into())
    );
    assert_eq!(
        store.claim_call("b1", "host-b", none).await.unwrap(),
        Claim::Taken
    );
    assert_eq!(
        store
            .live_owner("b1", "host-a")
            .await
            .unwrap()
            .map(|h| h.address),
        Some("http://b:1".into())
    );
    assert_eq!(store.live_owner("b1", "host-b").await.unwrap(), None);
    // A call whose TwiML was served has no host yet: a restart of any host
    // leaves it; the first claim takes it; it ends by age if none comes.
    store
        .open_call(&NewCall {
            session_id: "ringing",
            call_sid: Some("CAringing"),
            ..NewCall::default()
        })
        .await
        .unwrap();
    assert_eq!(store.interrupt_unfinished("host-a").await.unwrap(), ["a1"]);
    assert_eq!(store.call("ringing").await.unwrap().unwrap().ended_at, None);
    assert!(store.unstarted_calls(minute).await.unwrap().is_empty());
    assert_eq!(store.unstarted_calls(none).await.unwrap(), ["ringing"]);
    assert_eq!(
        store.claim_call("ringing", "host-a", none).await.unwrap(),
        Claim::Taken
    );
    assert!(store.unstarted_calls(none).await.unwrap().is_empty());
    assert!(
        store
            .end_unfinished("ringing", "completed")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.claim_call("ringing", "host-b", none).await.unwrap(),
        Claim::Ended
    );
    // A claim creates the row of a call nobody recorded yet (a chat).
    assert_eq!(
        store.claim_call("chat-1", "host-b", none).await.unwrap(),
        Claim::Taken
    );
    assert_eq!(
        store
            .call("chat-1")
            .await
            .unwrap()
            .unwrap()
            .host_id
            .as_deref(),
        Some("host-b")
    );
    store.set_status("chat-1", "completed").await.unwrap();

    // host-b's lease runs out: within the grace its call is left alone,
    // after it the call is an orphan, ended once; a lease given up (a
    // clean stop) needs no grace.
    store.set_status("b1", "in-progress").await.unwrap();
    store
        .renew_lease("host-b", "b-1", "http://b:1", none)
        .await
        .unwrap();
    // Expired (a lease of no length, on the database's clock) ...
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !store
        .orphaned_calls(none)
        .await
        .unwrap()
        .iter()
        .any(|(call, _)| call == "b1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ... but within the grace.
    assert!(
        store
            .orphaned_calls(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    store.release_lease("host-b", "b-1").await.unwrap();
    assert_eq!(
        store.orphaned_calls(none).await.unwrap(),
        [("b1".to_string(), "host-b".to_string())]
    );
    let ended = store.end_unfinished("b1", "interrupted").await.unwrap();
    assert!(ended.is_some());
    assert_eq!(
        store.end_unfinished("b1", "interrupted").await.unwrap(),
        None
    );
    assert!(store.orphaned_calls(none).await.unwrap().is_empty());
    // Events can be read back by id, with their session.
    let id = ended.unwrap();
    let rows = store.events_by_id(&[id]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "b1");
    assert_eq!(rows[0].1.kind, "status");
    assert_eq!(store.last_event_id().await.unwrap(), id);

    // host-b was only cut from the database and still runs b1: it
    // reclaims the call; the wrong status leaves its history.
    let back = store
        .reclaim("b1", "host-b")
        .await
        .unwrap()
        .expect("reclaimed");
    let b1 = store.call("b1").await.unwrap().unwrap();
    assert_eq!((b1.status.as_str(), b1.ended_at), ("in-progress", None));
    let history = store.status_history("b1").await.unwrap();
    assert!(
        history.iter().all(|(s, _)| s != "interrupted"),
        "{history:?}"
    );
    let event = &store.events_by_id(&[back]).await.unwrap()[0].1;
    let doc: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        (doc["status"].as_str(), doc["reclaimed"].as_bool()),
        (Some("in-progress"), Some(true))
    );
    assert_eq!(store.reclaim("b1", "host-b").await.unwrap(), None, "once");
    assert_eq!(
        store.reclaim("a1", "host-b").await.unwrap(),
        None,
        "not its call"
    );
    // The same call marked again while host-b is away, then ended by
    // host-b: the terminal status it really had replaces the guess.
    store
        .end_unfinished("b1", "interrupted")
        .await
        .unwrap()
        .unwrap();
    store.set_status("b1", "completed").await.unwrap().unwrap();
    let b1 = store.call("b1").await.unwrap().unwrap();
    assert_eq!(b1.status, "completed");
    assert!(b1.ended_at.is_some());
    let history = store.status_history("b1").await.unwrap();
    assert!(
        history.iter().all(|(s, _)| s != "interrupted"),
        "{history:?}"
    );
    // A terminal status is final: a late `in-progress` is refused, a
    // second terminal one is kept in the history only.
    assert_eq!(store.set_status("b1", "in-progress").await.unwrap(), None);
    assert!(store.set_status("b1", "failed").await.unwrap().is_some());
    assert_eq!(store.call("b1").await.unwrap().unwrap().status, "completed");
    assert_eq!(
        store.status_history("b1").await.unwrap().last().unwrap().0,
        "failed"
    );

    // The events another host stored are found after an id.
    store.set_host("host-c");
    let before = store.last_event_id().await.unwrap();
    store
        .open_call(&NewCall {
            session_id: "c1",
            ..NewCall::default()
        })
        .await
        .unwrap();
    store.set_status("c1", "in-progress").await.unwrap();
    assert!(
        store
            .events_of_others_after(before, "host-c", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .events_of_others_after(before, "host-d", 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // A stream token's nonce is spent once for every host of the database,
    // still after its expiry (a host whose clock lags takes it for valid a
    // while longer), and forgotten ten minutes after.
    let db_now = store.db_now().await.unwrap();
    assert!(store.spend_token("nonce-1", db_now + 300.0).await.unwrap());
    assert!(!store.spend_token("nonce-1", db_now + 300.0).await.unwrap());
    assert!(store.spend_token("nonce-2", db_now - 60.0).await.unwrap());
    assert!(
        !store.spend_token("nonce-2", db_now - 60.0).await.unwrap(),
        "just expired, still spent"
    );
    assert!(store.spend_token("nonce-3", db_now - 700.0).await.unwrap());
    assert!(
        store.spend_token("nonce-3", db_now - 700.0).await.unwrap(),
        "forgotten ten minutes after its expiry"
    );
    assert!(!store.spend_token("nonce-1", db_now + 300.0).await.unwrap());
}

/// Everything a call leaves behind, written and read back.
async fn exercise(store: &Store) {
    store
        .record_pipeline("v1", "technician-support", "p.toml", "[pipeline]")
        .await
        .unwrap();
    store
        .record_pipeline("v1", "technician-support", "p.toml", "[pipeline]")
        .await
        .unwrap();
    store
        .open_call(&NewCall {
            session_id: "s1",
            technician_id: "tech-1",
            technician_name: "Jeanne",
            phone_number: Some("+33612345678"),
            pipeline_version: Some("v1"),
            ..NewCall::default()
        })
        .await
        .unwrap();
    // What arrives later fills in; empty fields never erase.
    store
        .open_call(&NewCall {
            session_id: "s1",
            call_sid: Some("CA1"),
            ..NewCall::default()
        })
        .await
        .unwrap();
    store
        .open_call(&NewCall {
            session_id: "s2",
            host_id: Some("host-a"),
            ..NewCall::default()
        })
        .await
        .unwrap();
    let first = store
        .set_status("s1", "in-progress")
        .await
        .unwrap()
        .unwrap();
    store
        .add_segment("s1", "tech-1", "technician")
        .await
        .unwrap();
    store
        .add_segment("s1", "tech-1", "technician")
        .await
        .unwrap();
    store
        .add_transcript("s1", &line("bonjour", 2000))
        .await
        .unwrap();
    store
        .add_transcript("s2", &line("autre appel", 2000))
        .await
        .unwrap();
    let third = store
        .add_transcript("s1", &line("la caméra", 4000))
        .await
        .unwrap();
    store
        .add_suggestion(
            "s1",
            &suggestion("question-equipment", "clarification_question", 0.85, 10.0),
        )
        .await
        .unwrap();
    store
        .add_suggestion(
            "s1",
            &suggestion("kb-sample-001-1", "knowledge_base", 0.7, 11.0),
        )
        .await
        .unwrap();
    // The same id again updates, never duplicates.
    store
        .add_suggestion(
            "s1",
            &suggestion("kb-sample-001-1", "knowledge_base", 0.9, 12.0),
        )
        .await
        .unwrap();
    store.set_status("s1", "completed").await.unwrap();
    // The end-of-call summary: on the call row and in the event log.
    assert_eq!(store.call("s1").await.unwrap().expect("s1").summary, None);
    let summary = store
        .set_summary("s1", r#"{"problem":"caméra"}"#)
        .await
        .unwrap();
    assert!(summary > third);
    let missing = store
        .set_summary("no-such-call", "{}")
        .await
        .expect_err("no row");
    assert!(missing.is_missing_call(), "{missing}");

    store
        .set_context("s1", r#"{"site":"Parking Nord"}"#)
        .await
        .unwrap();
    let call = store.call("s1").await.unwrap().expect("the call");
    assert_eq!(call.summary.as_deref(), Some(r#"{"problem":"caméra"}"#));
    assert_eq!(call.context.as_deref(), Some(r#"{"site":"Parking Nord"}"#));
    assert_eq!(call.status, "completed");
    assert_eq!(call.call_sid.as_deref(), Some("CA1"));
    assert_eq!(call.technician_name, "Jeanne");
    assert_eq!(call.phone_number.as_deref(), Some("+33612345678"));
    assert_eq!(call.pipeline_version.as_deref(), Some("v1"));
    assert!(call.ended_at.is_some_and(|e| e >= call.started_at));
    assert!(store.call("nope").await.unwrap().is_none());

    let history: Vec<String> = store
        .status_history("s1")
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(history, ["in-progress", "completed"]);

    let said = store.transcripts("s1").await.unwrap();
    assert_eq!(
        said.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["bonjour", "la caméra"]
    );
    assert_eq!(said[1].end_ms, 4000);

    // A line's translation is kept with the line it names (session, role,
    // start and text): not with another text at that time, nor with
    // another session's line.
    for (start_ms, original, text) in [
        (3000, "la camera", "wrong text"),
        (1000, "autre appel", "wrong session"),
        (3000, "la caméra", "the camera"),
    ] {
        store
            .add_translation(
                "s1",
                &LineTranslation {
                    speaker_role: "technician".into(),
                    start_ms,
                    original: original.into(),
                    language: "en".into(),
                    text: text.into(),
                },
            )
            .await
            .unwrap();
    }
    let lines = store.transcripts("s1").await.unwrap();
    let translated: Vec<_> = lines
        .iter()
        .filter_map(|l| l.translation.as_ref())
        .collect();
    assert_eq!(translated.len(), 1, "{lines:?}");
    assert_eq!(translated[0].text, "the camera");
    assert_eq!(translated[0].language, "en");
    let other = store.transcripts("s2").await.unwrap();
    assert!(other.iter().all(|l| l.translation.is_none()), "{other:?}");
    let shown = store.suggestions("s1").await.unwrap();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(shown[0].kind, "clarification_question");
    assert!(
        (shown[0].confidence - 0.85).abs() < 1e-6,
        "a question keeps its confidence"
    );
    assert_eq!(shown[1].kind, "knowledge_base");
    assert!((shown[1].confidence - 0.9).abs() < 1e-6);
    assert_eq!(shown[1].sources, ["sample-001"]);
    // Who wrote it survives the store, both tables.
    assert!(shown[0].model_written && !shown[1].model_written);

    // The event log, in order, per session, resumable after an id.
    let events = store.events_after("s1", 0, 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        [
            "status",
            "transcript",
            "transcript",
            "suggestion",
            "suggestion",
            "suggestion",
            "status",
            "summary",
            "translation",
            "translation",
            "translation"
        ]
    );
    assert_eq!(events[0].id, first);
    let after = store.events_after("s1", third, 100).await.unwrap();
    assert_eq!(after.len(), 8);
    let doc: serde_json::Value = serde_json::from_str(&after[2].data).unwrap();
    assert_eq!(doc["id"], "kb-sample-001-1");
    assert_eq!(store.events_after("s2", 0, 100).await.unwrap().len(), 1);
    assert_eq!(store.events_after("s1", 0, 2).await.unwrap().len(), 2);

    // At the next start, a call nobody ended (the process was killed) is
    // marked interrupted; an ended one is left alone.
    assert_eq!(store.interrupt_unfinished("host-a").await.unwrap(), ["s2"]);
    assert_eq!(
        store.call("s2").await.unwrap().unwrap().status,
        "interrupted"
    );
    assert_eq!(store.call("s1").await.unwrap().unwrap().status, "completed");
    assert!(
        store
            .interrupt_unfinished("host-a")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.recent_calls(10).await.unwrap().len(), 2);
    hosts(store).await;

    // Stage errors, newest first, for the ops page.
    store
        .add_stage_error("s1", "transcriber", "fault on utterance: deadline", 20.0)
        .await
        .unwrap();
    store
        .add_stage_error("s2", "solutions", "error on analysis: search failed", 21.0)
        .await
        .unwrap();
    let errors = store.recent_stage_errors(10).await.unwrap();
    assert_eq!(
        errors
            .iter()
            .map(|e| (e.session_id.as_str(), e.stage.as_str()))
            .collect::<Vec<_>>(),
        [("s2", "solutions"), ("s1", "transcriber")]
    );
    assert_eq!(errors[1].message, "fault on utterance: deadline");
    assert_eq!(errors[1].at, 20.0);
    assert_eq!(store.recent_stage_errors(1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_keeps_the_record_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("callpipe.db").display());
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    exercise(&store).await;
    store.close().await;
    // Migrations are idempotent and the data is on disk.
    let again = Store::connect(&url).await.unwrap();
    assert_eq!(again.call("s1").await.unwrap().unwrap().status, "completed");
    assert_eq!(again.events_after("s1", 0, 100).await.unwrap().len(), 11);
    assert_eq!(
        again.call("s2").await.unwrap().unwrap().status,
        "interrupted"
    );
}

#[tokio::test]
async fn postgres_keeps_the_same_record() {
    let Some(schema) = Schema::create("store").await else {
        return;
    };
    let url = schema.url();
    let store = Store::connect(&url)
        .await
        .expect("connect with the test schema");
    assert_eq!(store.backend(), "postgres");
    exercise(&store).await;
    // Two hosts on the schema: what one stores, the other hears of (the
    // event's id and who stored it), once committed.
    let other = Store::connect(&url).await.expect("a second host");
    other.set_host("host-b");
    let mut listener = store
        .listen()
        .await
        .unwrap()
        .expect("Postgres has a listener");
    let id = other
        .set_status("c1", "completed")
        .await
        .unwrap()
        .expect("c1 was live");
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), listener.next())
        .await
        .expect("a notice in time")
        .unwrap();
    match heard {
        callpipe_store::Heard::Events(notices) => assert_eq!(
            notices,
            [callpipe_store::Notice {
                event_id: id,
                host_id: "host-b".into()
            }]
        ),
        other => panic!("expected events, got {other:?}"),
    }
    // A listener holds a connection of the pool: closing waits for it.
    drop(listener);
    other.close().await;
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn a_bad_url_says_what_it_wants() {
    let e = Store::connect("mysql://x")
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("sqlite://") && e.contains("postgres://"), "{e}");
}
