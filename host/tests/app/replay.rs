//! A media-stream token is spent once for every host sharing the database:
//! the `start` a captured TwiML allows, replayed to the other host, opens
//! nothing, neither while the call runs on the first host nor after it
//! ended. Two real binaries, signed as Twilio signs, on Postgres.

use crate::support::cluster_host;
use crate::support::twilio::{AUTH_TOKEN, PUBLIC, sign};
use callpipe_host::twilio::signature;
use callpipe_testkit::postgres::Schema;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A stream upgrade signed for the public address, as Twilio makes it.
async fn signed_stream(server: &crate::support::server::Server) -> Ws {
    let mut req = server.ws().into_client_request().expect("request");
    let sig = signature::compute(
        AUTH_TOKEN,
        &format!(
            "{}/twilio/media-stream",
            PUBLIC.replace("https://", "wss://")
        ),
        &[],
    );
    req.headers_mut()
        .insert("X-Twilio-Signature", sig.parse().expect("header"));
    tokio_tungstenite::connect_async(req)
        .await
        .expect("a signed upgrade is accepted")
        .0
}

fn start(call: &str, session: &str, token: &str) -> Message {
    Message::Text(
        json!({"event": "start", "sequenceNumber": "1", "streamSid": format!("MZ{call}"), "start": {
            "accountSid": "ACtest", "streamSid": format!("MZ{call}"), "callSid": call,
            "tracks": ["inbound"],
            "customParameters": {"session_id": session, "stream_token": token},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        .to_string()
        .into(),
    )
}

/// Whether the server closed the stream (it does at once on a refusal).
async fn closed(ws: &mut Ws) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(10), ws.next()).await,
        Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_))))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_token_replayed_to_the_other_host_opens_nothing() {
    let Some(db) = Schema::create("replay").await else {
        return;
    };
    let url = db.url();
    let signed = [
        ("TWILIO_ACCOUNT_SID", "ACtest"),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_WEBSOCKET_URL", PUBLIC),
    ];
    let pipeline = crate::support::audio_pipeline();
    let a = cluster_host(&url, "a", &pipeline, &signed);
    let b = cluster_host(&url, "b", &pipeline, &signed);

    // Twilio asks host A for the call's TwiML: it carries the token.
    let (call, session) = ("CAreplay", "s-replay");
    let form = [("CallSid", call), ("CallStatus", "ringing")];
    let path = format!("/twilio/voice?session_id={session}&technician_id=t1");
    let twiml = reqwest::Client::new()
        .post(a.http(&path))
        .header(
            "X-Twilio-Signature",
            sign(&format!("{PUBLIC}{path}"), &form),
        )
        .form(&form)
        .send()
        .await
        .expect("TwiML")
        .text()
        .await
        .expect("TwiML text");
    let token = twiml
        .split_once("<Parameter name=\"stream_token\" value=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| panic!("no stream token in {twiml}"));

    // The stream starts on A with it ...
    let mut first = signed_stream(&a).await;
    first
        .send(start(call, session, &token))
        .await
        .expect("start");
    let live = a.session_when(session, "in-progress", 20).await;
    assert_eq!(live["host_id"], "a", "{live}");

    // ... and the same start replayed to B, a process that never saw the
    // token, is refused while the call runs on A ...
    let mut replay = signed_stream(&b).await;
    replay
        .send(start(call, session, &token))
        .await
        .expect("start");
    assert!(closed(&mut replay).await, "B opened a replayed token");

    // ... and after it ended there.
    first
        .send(Message::Text(
            json!({"event": "stop", "sequenceNumber": "2", "streamSid": format!("MZ{call}"),
                   "stop": {"accountSid": "ACtest", "callSid": call}})
            .to_string()
            .into(),
        ))
        .await
        .expect("stop");
    a.session_when(session, "completed", 20).await;
    let mut late = signed_stream(&b).await;
    late.send(start(call, session, &token))
        .await
        .expect("start");
    assert!(
        closed(&mut late).await,
        "B opened a replayed token after the call"
    );
    // Both for the token, not for another reason (counted once the
    // server has closed the socket, so it may lag the close).
    let refused = b
        .metric_settles(
            "callpipe_websocket_errors_total{kind=\"refused-stream-token\"}",
            2.0,
            10,
        )
        .await;
    assert_eq!(refused, 2.0, "{}", b.metrics().await);
    drop((a, b));
    db.drop().await;
}
