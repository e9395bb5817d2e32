//! A local stand-in for Twilio's REST API (tests only): it records what the
//! server sent (method, path, basic auth, form) and answers as Twilio does.

use axum::extract::{Path as AxPath, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// What the Twilio stand-in saw: method, path, basic-auth header, form.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub auth: String,
    pub form: Vec<(String, String)>,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(log: &Log, method: &str, path: String, headers: &HeaderMap, body: &[u8]) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let form = serde_urlencoded::from_bytes(body).unwrap_or_default();
    log.lock().unwrap().push(Seen {
        method: method.into(),
        path,
        auth,
        form,
    });
}

/// A local stand-in for api.twilio.com (tests only).
pub async fn twilio_stand_in() -> (String, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls.json",
            post(|State(log): State<Log>, AxPath(account): AxPath<String>, headers: HeaderMap, body: axum::body::Bytes| async move {
                record(&log, "POST", format!("/Accounts/{account}/Calls.json"), &headers, &body).await;
                axum::Json(json!({"sid": "CAfeed0000000000000000000000000001", "status": "queued", "direction": "outbound-api"}))
            }),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{file}",
            get(|State(log): State<Log>, AxPath((account, file)): AxPath<(String, String)>, headers: HeaderMap| async move {
                record(&log, "GET", format!("/Accounts/{account}/Calls/{file}"), &headers, b"").await;
                axum::Json(json!({"sid": file.trim_end_matches(".json"), "status": "in-progress", "duration": null, "direction": "outbound-api", "from": "+15005550006", "to": "+33612345678"}))
            })
            .post(|State(log): State<Log>, AxPath((account, file)): AxPath<(String, String)>, headers: HeaderMap, body: axum::body::Bytes| async move {
                record(&log, "POST", format!("/Accounts/{account}/Calls/{file}"), &headers, &body).await;
                axum::Json(json!({"sid": file.trim_end_matches(".json"), "status": "completed", "duration": "42"}))
            }),
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), log)
}

/// The SID the stand-in gives the calls it creates.
pub const CALL_SID: &str = "CAfeed0000000000000000000000000001";

/// TWILIO_AUTH_TOKEN of the servers that talk to the stand-in.
pub const AUTH_TOKEN: &str = "test-auth-token";
pub const PUBLIC: &str = "https://callpipe.example";

/// A server's environment for Twilio through the stand-in at `api`.
pub fn twilio_env(api: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TWILIO_ACCOUNT_SID", "ACtest".into()),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
        ("TWILIO_PHONE_NUMBER", "+15005550006".into()),
        ("TWILIO_WEBSOCKET_URL", PUBLIC.into()),
        ("CALLPIPE_TWILIO_API_URL", api.into()),
    ]
}

/// `X-Twilio-Signature` for a form posted to `url`, as Twilio signs it.
pub fn sign(url: &str, form: &[(&str, &str)]) -> String {
    let params: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    callpipe_host::twilio::signature::compute(AUTH_TOKEN, url, &params)
}

/// Posts Twilio's status callback for the stand-in's call, signed.
pub async fn post_status(server: &super::server::Server, status: &str) {
    let form = [("CallSid", CALL_SID), ("CallStatus", status)];
    let r = reqwest::Client::new()
        .post(server.http("/twilio/status"))
        .header(
            "X-Twilio-Signature",
            sign(&format!("{PUBLIC}/twilio/status"), &form),
        )
        .form(&form)
        .send()
        .await
        .expect("status callback");
    assert!(r.status().is_success(), "{}", r.status());
}
