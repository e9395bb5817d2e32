//! Twilio's REST API behind call control (a test-only stand-in for it), calls
//! it did not place, and the words the pipeline gives the assistant.

use super::*;

/// A call Twilio's REST API did not place leaves no session waiting for a
/// stream: it ends `failed` at once (and, stored, a terminal status is
/// final).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_twilio_did_not_place_ends_at_once() {
    // Nothing listens on port 1: the REST call fails.
    let server = start_with(&twilio_env("http://127.0.0.1:1"));
    let r = server
        .client()
        .post(server.http("/twilio/initiate-call"))
        .json(&json!({"phone_number": "+33612345678", "session_id": "s-unplaced"}))
        .send()
        .await
        .expect("send");
    assert!(!r.status().is_success(), "{}", r.status());
    server.session_when("s-unplaced", "failed", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_control_goes_through_twilios_rest_api() {
    let (api, log) = twilio_stand_in().await;
    let server = start_with(&twilio_env(&api));
    let http = server.client();

    let bad = http
        .post(server.http("/twilio/initiate-call"))
        .json(&json!({"phone_number": "06 12 34 56 78", "technician_id": "t1"}))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap_or_default().contains("E.164"));

    let r: Value = http
        .post(server.http("/twilio/initiate-call"))
        .json(&json!({"phone_number": "+33612345678", "technician_id": "t1", "technician_name": "Jeanne", "session_id": "s-rest"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        r,
        json!({"success": true, "call_sid": "CAfeed0000000000000000000000000001", "session_id": "s-rest",
               "status": "initiated", "twilio_status": "queued"})
    );

    let seen = log.lock().unwrap().clone();
    let create = &seen[0];
    assert_eq!(
        (create.method.as_str(), create.path.as_str()),
        ("POST", "/Accounts/ACtest/Calls.json")
    );
    let expected_auth = format!("Basic {}", B64.encode(format!("ACtest:{TOKEN}")));
    assert_eq!(create.auth, expected_auth);
    let field = |k: &str| {
        create
            .form
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(field("To"), ["+33612345678"]);
    assert_eq!(field("From"), ["+15005550006"]);
    assert_eq!(field("StatusCallback"), [format!("{PUBLIC}/twilio/status")]);
    assert_eq!(
        field("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    let url = &field("Url")[0];
    assert!(
        url.starts_with(&format!("{PUBLIC}/twilio/voice?session_id=s-rest")),
        "{url}"
    );
    assert!(url.contains("technician_name=Jeanne"), "{url}");

    let status: Value = http
        .get(server.http("/twilio/call-status/CAfeed0000000000000000000000000001"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "in-progress");
    assert_eq!(status["session_id"], "s-rest");

    let ended: Value = http
        .post(server.http("/twilio/end-call"))
        .json(&json!({"call_sid": "CAfeed0000000000000000000000000001", "session_id": "s-rest"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ended["success"], true);
    assert_eq!(ended["status"], "completed");
    assert_eq!(ended["duration"], 42);
    assert_eq!(
        ended["session_stats"],
        json!({"total_segments": 0, "speakers": {}})
    );
    // The original's end-of-call statistics, beside session_stats.
    assert_eq!(
        ended["statistics"],
        json!({"duration": 42, "segments": 0, "technician_segments": 0,
               "solutions_provided": 0, "questions_asked": 0})
    );
    let end = log.lock().unwrap()[2].clone();
    assert_eq!(
        end.path,
        "/Accounts/ACtest/Calls/CAfeed0000000000000000000000000001.json"
    );
    assert_eq!(
        end.form,
        vec![("Status".to_string(), "completed".to_string())]
    );
    assert_eq!(end.auth, expected_auth);

    // Only call SIDs reach a REST URL: anything else is a 400, and Twilio
    // hears nothing of it.
    let before = log.lock().unwrap().len();
    for bad in [
        "CA1",
        "..%2F..%2FMessages",
        "CAFEED0000000000000000000000000001",
    ] {
        let r = http
            .get(server.http(&format!("/twilio/call-status/{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    for bad in [
        "../Messages",
        "CA1",
        "CAfeed0000000000000000000000000001/../x",
    ] {
        let r = http
            .post(server.http("/twilio/end-call"))
            .json(&json!({"call_sid": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert_eq!(
        log.lock().unwrap().len(),
        before,
        "a bad SID reached Twilio"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_twilio_credentials_call_endpoints_say_so_and_streams_still_work() {
    let server = Server::start(&[]);
    let http = server.client();
    let status_path = format!("/twilio/call-status/{CALL_SID}");
    for (method, path, body) in [
        (
            "POST",
            "/twilio/initiate-call",
            json!({"phone_number": "+33612345678"}),
        ),
        ("POST", "/twilio/end-call", json!({"call_sid": CALL_SID})),
        ("GET", status_path.as_str(), json!(null)),
    ] {
        let req = if method == "POST" {
            http.post(server.http(path)).json(&body)
        } else {
            http.get(server.http(path))
        };
        let r = req.send().await.expect("send");
        assert_eq!(r.status(), 503, "{path}");
        assert!(
            r.text().await.unwrap().contains("Twilio not configured"),
            "{path}"
        );
    }
    let report = simulator::run(sim(&server.ws(), "no-twilio", None)).await;
    assert_eq!(
        report.connected.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "{}",
        report.render()
    );
    let s = session(&server, "no-twilio").await;
    assert_eq!(s["status"], "completed");
    // The sample has three phrases, all the technician's.
    assert_eq!(s["total_segments"], 3, "{s}");
    assert_eq!(
        s["speakers"]["tech-7"],
        json!({"segment_count": 3, "speaker_role": "technician"})
    );
}

/// The assistant's first words are the pipeline's: the spoken greeting in
/// the TwiML and the chat's opening line on the dashboard, per language,
/// with the built-in (the original's) wording for languages not given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greetings_come_from_the_pipeline() {
    let base = std::fs::read_to_string(support::audio_pipeline()).expect("pipeline");
    let path = root()
        .join("target")
        .join("test-pipelines")
        .join(format!("greetings-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "{base}\n[pipeline.greetings.call]\nfr = \"Allô, ici le support Acme.\"\n\
             [pipeline.greetings.chat]\nfr = \"Bienvenue chez Acme !\"\n"
        ),
    )
    .expect("write pipeline");
    let server = Server::start_pipeline(&[], &path);
    let twiml = server.get_text("/twilio/test-twiml").await;
    assert!(
        twiml.contains("<Say language=\"fr-FR\">Allô, ici le support Acme.</Say>"),
        "{twiml}"
    );
    let page = server.get_text("/demo/technician").await;
    assert!(
        page.contains("data-greeting-fr=\"Bienvenue chez Acme !\""),
        "{page}"
    );
    assert!(
        page.contains("data-greeting-en=\"Hello! What is the problem?\""),
        "the built-in English line stays"
    );
}
