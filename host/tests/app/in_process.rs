//! The router in process, built by `App::build` as `callpipe serve` builds
//! it and driven with tower's `oneshot`: the guards at the edge without a
//! process per test or a socket per request.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use callpipe_host::app::{App, Config};
use callpipe_runtime::test_support::{load, runtime, wasm};
use clap::Parser;
use std::sync::Arc;
use tower::ServiceExt;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

/// The app on a one-stage pipeline and its own SQLite store in `dir`, with
/// `args` on top of a test's defaults. Every setting a test relies on is
/// an argument (they win over the environment): the store, Twilio's token
/// and signatures, so the machine's settings do not leak in.
async fn app(dir: &std::path::Path, args: &[&str]) -> App {
    let database = format!("sqlite://{}", dir.join("edge.db").display());
    let mut argv = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--watch-ms",
        "0",
        "--max-calls",
        "4",
        "--database-url",
        &database,
        "--twilio-auth-token",
        "",
        "--twilio-signatures",
        "auto",
    ];
    argv.extend_from_slice(args);
    let config = Cli::parse_from(argv).config;
    let toml = format!(
        "[pipeline]\nname = \"edge\"\n\n[[stages]]\nname = \"codec\"\ncomponent = \"{}\"\n",
        wasm("callpipe-stage-mulaw-codec")
    );
    let pipeline = Arc::new(load(&toml).await.expect("pipeline loads"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    App::build(dir, config, runtime(), pipeline, listener)
        .await
        .expect("the app builds")
}

async fn status(app: &App, request: Request<Body>) -> StatusCode {
    app.router
        .clone()
        .oneshot(request)
        .await
        .expect("an answer")
        .status()
}

fn chat(origin: Option<&str>, kind: &str, body: &str) -> Request<Body> {
    let mut r = Request::post("/demo/send-demo-transcription")
        .header(header::HOST, "callpipe.test")
        .header(header::CONTENT_TYPE, kind);
    if let Some(origin) = origin {
        r = r.header(header::ORIGIN, origin);
    }
    r.body(Body::from(body.to_owned())).expect("request")
}

/// A page on another site cannot make a browser change anything here: a
/// cross-origin POST is refused, as is a body that is neither JSON nor a
/// form; the dashboard's own requests (same origin) and tools that send no
/// Origin go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(dir.path(), &["--api-token", "off"]).await;
    let json = "application/json";
    let body = r#"{"session_id": "x-site", "text": "bonjour"}"#;
    let evil = Some("https://evil.example");
    assert_eq!(status(&app, chat(evil, json, body)).await, 403);
    let call = Request::post("/twilio/initiate-call")
        .header(header::HOST, "callpipe.test")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("phone_number=%2B33612345678"))
        .expect("request");
    assert_eq!(
        status(&app, call).await,
        403,
        "placing a call from another site"
    );
    assert_eq!(status(&app, chat(None, "text/plain", body)).await, 415);
    let own = Some("http://callpipe.test");
    assert_ne!(status(&app, chat(own, json, body)).await, 403);
    assert_ne!(status(&app, chat(None, json, body)).await, 403);
}

/// The API needs the token (as a bearer or the cookie `?token=` sets);
/// health and readiness do not; Twilio's routes need Twilio's signature
/// and, without an auth token to check it with, refuse everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_token_and_twilio_its_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(dir.path(), &["--api-token", "in-process-token"]).await;
    let get = |path: &str, auth: Option<&str>| {
        let mut r = Request::get(path).header(header::HOST, "callpipe.test");
        if let Some(auth) = auth {
            r = r.header(header::AUTHORIZATION, auth);
        }
        r.body(Body::empty()).expect("request")
    };
    assert_eq!(status(&app, get("/api/stats", None)).await, 401);
    let wrong = Some("Bearer not-it");
    assert_eq!(status(&app, get("/api/stats", wrong)).await, 401);
    let right = Some("Bearer in-process-token");
    assert_eq!(status(&app, get("/api/stats", right)).await, 200);
    assert_eq!(status(&app, get("/health", None)).await, 200);
    assert_eq!(status(&app, get("/ready", None)).await, 200);
    let cookie = Request::get("/api/stats")
        .header(header::HOST, "callpipe.test")
        .header(header::COOKIE, "callpipe_token=in-process-token")
        .body(Body::empty())
        .expect("request");
    assert_eq!(status(&app, cookie).await, 200, "the cookie `?token=` sets");
    // No TWILIO_AUTH_TOKEN and signatures `auto`: Twilio's routes refuse.
    let voice = Request::post("/twilio/voice")
        .header(header::HOST, "callpipe.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("CallSid=CAedge"))
        .expect("request");
    assert_eq!(status(&app, voice).await, 403);
}
