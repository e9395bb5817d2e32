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
    let defaults = [
        ("--listen", "127.0.0.1:0"),
        ("--watch-ms", "0"),
        ("--max-calls", "4"),
        ("--database-url", &database),
        ("--twilio-auth-token", ""),
        ("--twilio-signatures", "auto"),
    ];
    let mut argv = vec!["serve"];
    for (flag, value) in defaults {
        if !args.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
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

/// Twilio's webhooks need Twilio's signature: over the public URL the
/// server is reached on, with the form as posted. A missing, malformed or
/// replayed-elsewhere signature, or a form changed after signing, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_webhooks_need_their_signature() {
    const TWILIO: &str = "in-process-twilio-token";
    const PUBLIC: &str = "https://callpipe.example";
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--api-token",
        "off",
        "--twilio-auth-token",
        TWILIO,
        "--twilio-websocket-url",
        PUBLIC,
    ];
    let app = app(dir.path(), &args).await;
    let form = [
        ("CallSid", "CAsig1"),
        ("CallStatus", "ringing"),
        ("Direction", "outbound-api"),
    ];
    let sign = |path: &str, form: &[(&str, &str)]| {
        let params: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        callpipe_host::twilio::signature::compute(TWILIO, &format!("{PUBLIC}{path}"), &params)
    };
    let post = |path: &str, form: &[(&str, &str)], sig: Option<String>| {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let mut r = Request::post(path)
            .header(header::HOST, "callpipe.test")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(sig) = sig {
            r = r.header("X-Twilio-Signature", sig);
        }
        r.body(Body::from(body)).expect("request")
    };
    let status_path = "/twilio/status";
    assert_eq!(status(&app, post(status_path, &form, None)).await, 403);
    let malformed = Some("bm90IGl0".to_string());
    assert_eq!(status(&app, post(status_path, &form, malformed)).await, 403);
    let voice = "/twilio/voice?session_id=s-sig&technician_id=t9";
    let elsewhere = Some(sign(voice, &form));
    assert_eq!(
        status(&app, post(status_path, &form, elsewhere)).await,
        403,
        "a signature made for another address"
    );
    let mut changed = form;
    changed[1] = ("CallStatus", "completed");
    let before_change = Some(sign(status_path, &form));
    assert_eq!(
        status(&app, post(status_path, &changed, before_change)).await,
        403,
        "a form changed after signing"
    );
    let good = Some(sign(status_path, &form));
    assert_eq!(status(&app, post(status_path, &form, good)).await, 204);

    assert_eq!(status(&app, post(voice, &form, None)).await, 403);
    let twiml = app
        .router
        .clone()
        .oneshot(post(voice, &form, Some(sign(voice, &form))))
        .await
        .expect("an answer");
    assert_eq!(twiml.status(), 200);
    let body = axum::body::to_bytes(twiml.into_body(), 1 << 20)
        .await
        .expect("the TwiML");
    let twiml = String::from_utf8_lossy(&body);
    assert!(
        twiml.contains("<Stream url=\"wss://callpipe.example/twilio/media-stream\">"),
        "{twiml}"
    );
    assert!(
        twiml.contains("<Parameter name=\"stream_token\""),
        "{twiml}"
    );
}

/// `/metrics` is Prometheus's text format: open like `/health`, every
/// family with its HELP and TYPE before its samples, histogram buckets
/// cumulative with `+Inf` equal to the count, and the pipeline named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(dir.path(), &["--api-token", "in-process-token"]).await;
    let request = Request::get("/metrics")
        .header(header::HOST, "callpipe.test")
        .body(Body::empty())
        .expect("request");
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200, "no token needed");
    let kind = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii");
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let body = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .expect("the metrics");
    let text = String::from_utf8(body.to_vec()).expect("utf-8");

    let mut described = std::collections::HashSet::new();
    let mut typed = std::collections::HashMap::new();
    let mut values = std::collections::HashMap::new();
    let mut last_bucket: std::collections::HashMap<String, f64> = Default::default();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("a help text");
            assert!(!help.trim().is_empty(), "{line}");
            assert!(
                described.insert(name.to_string()),
                "described twice: {name}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("a type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            let before = typed.insert(name.to_string(), kind.to_string());
            assert!(before.is_none(), "typed twice: {name}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        let name = series.split('{').next().unwrap_or(series);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            described.contains(family) && typed.contains_key(family),
            "{series}: samples before their HELP and TYPE"
        );
        if name.ends_with("_bucket") {
            let le = series.find("le=\"").expect("a bucket bound");
            let key = format!("{}|{}", family, &series[..le]);
            if let Some(before) = last_bucket.insert(key, value) {
                assert!(value >= before, "buckets go down at {line}");
            }
        }
        let before = values.insert(series.to_string(), value);
        assert!(before.is_none(), "a series twice: {series}");
    }
    let mut histograms = 0;
    for (series, value) in &values {
        if let Some(prefix) = series.strip_suffix("le=\"+Inf\"}") {
            let count = format!("{}}}", prefix.trim_end_matches(','))
                .replace("_bucket{", "_count{")
                .replace("_count{}", "_count");
            assert_eq!(values.get(&count), Some(value), "{series} against {count}");
            histograms += 1;
        }
    }
    assert!(histograms > 0, "no histogram checked: {text}");
    assert!(
        values
            .keys()
            .any(|k| k.starts_with("callpipe_pipeline_info{name=\"edge\"")),
        "{text}"
    );
    assert_eq!(values.get("callpipe_max_calls"), Some(&4.0), "{text}");
}
