//! Who may reach what, through the real process: Twilio's signature on the
//! stream upgrade and the per-call stream token (a socket is the point),
//! and the API token (made and kept at first start). The webhooks'
//! signatures, the token's checks and cross-site requests run in
//! `in_process.rs`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_upgrade_needs_a_signature_and_the_start_its_token() {
    let (api, _) = twilio_stand_in().await;
    let server = start_with(&twilio_env(&api));
    // Twilio has no API token: its routes are checked by signature alone.
    let http = reqwest::Client::new();
    let form = [
        ("CallSid", "CAsig1"),
        ("CallStatus", "ringing"),
        ("Direction", "outbound-api"),
    ];

    let post = |path: &str, sig: Option<String>| {
        let mut r = http.post(server.http(path)).form(&form);
        if let Some(s) = sig {
            r = r.header("X-Twilio-Signature", s);
        }
        r.send()
    };
    // The webhooks' signature checks run in process (`in_process.rs`);
    // here a signed /twilio/voice gives the TwiML whose token the stream
    // needs.
    let voice_path = "/twilio/voice?session_id=s-sig&technician_id=t9";
    assert_eq!(post(voice_path, None).await.unwrap().status(), 403);
    let r = post(
        voice_path,
        Some(sign(&format!("{PUBLIC}{voice_path}"), &form)),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let twiml = r.text().await.unwrap();
    assert!(
        twiml.contains("<Connect><Stream url=\"wss://callpipe.example/twilio/media-stream\">"),
        "{twiml}"
    );
    assert!(
        twiml.contains("<Parameter name=\"session_id\" value=\"s-sig\"/>"),
        "{twiml}"
    );
    assert!(twiml.contains("<Say language=\"fr-FR\">"), "{twiml}");

    // The media-stream upgrade: refused unsigned, accepted when signed over
    // the public wss:// URL.
    let err = tokio_tungstenite::connect_async(server.ws())
        .await
        .expect_err("unsigned upgrade refused");
    assert!(err.to_string().contains("403"), "{err}");
    let mut req = server.ws().into_client_request().unwrap();
    let sig = signature::compute(TOKEN, "wss://callpipe.example/twilio/media-stream", &[]);
    req.headers_mut()
        .insert("X-Twilio-Signature", sig.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("signed upgrade accepted");
    ws.close(None).await.ok();

    // A signed upgrade is not enough: the `start` must bring back the token
    // the TwiML carried for this call, once, before it expires.
    let token = twiml
        .split_once("<Parameter name=\"stream_token\" value=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| panic!("no stream token in {twiml}"));
    let signed_stream = || async {
        let mut req = server.ws().into_client_request().unwrap();
        req.headers_mut()
            .insert("X-Twilio-Signature", sig.parse().unwrap());
        tokio_tungstenite::connect_async(req)
            .await
            .expect("signed upgrade")
            .0
    };
    let start = |call: &str, token: Option<&str>| {
        let mut params = json!({"session_id": "s-sig", "technician_id": "t9"});
        if let Some(t) = token {
            params["stream_token"] = json!(t);
        }
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZsig", "start": {
            "accountSid": "ACtest", "streamSid": "MZsig", "callSid": call, "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        .to_string()
    };
    // The server closes a refused stream at once.
    async fn closed(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_))))
        )
    }
    // The last character changed (to another one: the token may end in 0).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    for (what, call, t) in [
        ("no token", "CAsig1", None),
        ("another call's token", "CAsig2", Some(token.as_str())),
        ("a forged token", "CAsig1", Some(forged.as_str())),
    ] {
        let mut ws = signed_stream().await;
        ws.send(Message::Text(start(call, t).into())).await.unwrap();
        assert!(closed(&mut ws).await, "{what}: the stream stayed open");
    }
    let mut ws = signed_stream().await;
    ws.send(Message::Text(start("CAsig1", Some(&token)).into()))
        .await
        .unwrap();
    let live = server.session_when("s-sig", "in-progress", 10).await;
    assert_eq!(live["call_sid"], "CAsig1", "{live}");
    // The same start again (a captured token replayed) is refused.
    let mut replay = signed_stream().await;
    replay
        .send(Message::Text(start("CAsig1", Some(&token)).into()))
        .await
        .unwrap();
    assert!(
        closed(&mut replay).await,
        "a replayed token opened a stream"
    );
    ws.send(Message::Text(
        json!({"event": "stop", "sequenceNumber": "2", "streamSid": "MZsig", "stop": {"accountSid": "ACtest", "callSid": "CAsig1"}}).to_string().into(),
    ))
    .await
    .unwrap();
    // Counted once the server has closed the socket, so it may lag the close.
    let refused = server
        .metric_settles(
            "callpipe_websocket_errors_total{kind=\"refused-stream-token\"}",
            4.0,
            10,
        )
        .await;
    assert_eq!(refused, 4.0, "{}", server.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_auth_token_twilio_routes_are_refused_unless_explicitly_off() {
    let refusing = Server::start_logged(&[("CALLPIPE_TWILIO_SIGNATURES", "auto")]);
    let http = reqwest::Client::new();
    let r = http
        .post(refusing.http("/twilio/voice"))
        .form(&[("CallSid", "CAunsigned")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("CALLPIPE_TWILIO_SIGNATURES=off")
    );
    let err = tokio_tungstenite::connect_async(refusing.ws())
        .await
        .expect_err("unsigned upgrade refused");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(
        refusing.log().contains("TWILIO_AUTH_TOKEN is not set"),
        "{}",
        refusing.log()
    );

    let open = Server::start_logged(&[("CALLPIPE_TWILIO_SIGNATURES", "off")]);
    let r = http
        .post(open.http("/twilio/voice"))
        .form(&[("CallSid", "CAunsigned")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains("stream_token"));
    assert!(
        open.log().contains("accept UNSIGNED requests"),
        "{}",
        open.log()
    );

    // With a token, the simulator signs like Twilio and fetches each call's
    // stream token from /twilio/voice: simulated calls work signed.
    let signed = Server::start(&[("TWILIO_AUTH_TOKEN", TOKEN)]);
    let report = simulator::run(sim(&signed.ws(), "signed", Some(TOKEN))).await;
    all_went_through(&report, 1);
    let unsigned = simulator::run(sim(&signed.ws(), "unsigned", None)).await;
    assert_eq!(
        unsigned.failed.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "{}",
        unsigned.render()
    );
}

/// The API and dashboard need the token (header, cookie, or once in the
/// address); health, readiness and the pages' assets do not; `off` opens
/// everything; without a setting the server makes one and keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_dashboard_need_the_token() {
    let server = Server::start(&[]);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/api/sessions", "/api/ops", "/", "/demo/technician"] {
        let r = plain.get(server.http(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{path}");
        let doc: Value = r.json().await.unwrap();
        assert!(
            doc["detail"]
                .as_str()
                .unwrap()
                .contains("CALLPIPE_API_TOKEN"),
            "{doc}"
        );
    }
    let chat = plain
        .post(server.http("/demo/send-demo-transcription"))
        .json(&json!({"session_id": "x", "text": "bonjour"}));
    assert_eq!(status_of(chat).await, 401);
    let wrong = plain
        .get(server.http("/api/sessions"))
        .bearer_auth("not-the-token");
    assert_eq!(status_of(wrong).await, 401);
    // A browser is asked for the token on a page, not given JSON.
    let page = plain
        .get(server.http("/demo/technician"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.text().await.unwrap().contains("name=\"token\""));
    for path in [
        "/health",
        "/ready",
        "/assets/dashboard.js",
        "/assets/dashboard.css",
    ] {
        assert_eq!(status_of(plain.get(server.http(path))).await, 200, "{path}");
    }
    assert_eq!(
        status_of(plain.get(server.http("/assets/nope.js"))).await,
        404
    );
    // The token once in the address sets a cookie that works from then on,
    // and the browser is sent on to the same address without it.
    let r = plain
        .get(server.http(&format!(
            "/demo/technician?token={}&lang=en",
            support::server::TOKEN
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/demo/technician?lang=en");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    // Behind a TLS proxy the cookie is Secure.
    let r = plain
        .get(server.http(&format!("/?token={}", support::server::TOKEN)))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    let secure = r.headers()["set-cookie"].to_str().unwrap();
    assert!(secure.contains("; Secure"), "{secure}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = plain
        .get(server.http("/api/ops"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ops: Value = r.json().await.unwrap();
    assert_eq!(ops["pipeline"]["name"], "technician-support", "{ops}");
    assert!(!ops["stages"].as_array().unwrap().is_empty(), "{ops}");
    drop(server);

    let open = Server::start(&[("CALLPIPE_API_TOKEN", "off")]);
    assert_eq!(status_of(plain.get(open.http("/api/sessions"))).await, 200);
    drop(open);

    let own = Server::start_logged(&[("CALLPIPE_API_TOKEN", "")]);
    let file = own.data_dir().join("api-token");
    let token = std::fs::read_to_string(&file).expect("token file made");
    assert!(token.len() >= 32, "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the token file is private: {mode:o}");
    }
    assert_eq!(status_of(plain.get(own.http("/api/sessions"))).await, 401);
    let with_token = plain
        .get(own.http("/api/sessions"))
        .bearer_auth(token.trim());
    assert_eq!(status_of(with_token).await, 200);
    let once = plain.get(own.http(&format!("/api/ops?token={}", token.trim())));
    assert_eq!(status_of(once).await, 303);
    // The log names the file, never the token.
    let log = own.log();
    assert!(
        log.contains(&file.display().to_string()),
        "the log should say where the token is:\n{log}"
    );
    assert!(
        !log.contains(token.trim()),
        "the API token is in the log:\n{log}"
    );
}
