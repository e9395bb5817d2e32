//! A local stand-in for an OpenAI-compatible transcription endpoint (the
//! real one cannot be reached from here): answers every request at once
//! with `text`, so fault tests get transcripts without whisper's CPU.

use axum::routing::post;

/// Serves `/v1/audio/transcriptions`; returns the base URL (up to `/v1`).
pub async fn transcription_stand_in(text: &'static str) -> String {
    let app = axum::Router::new().route(
        "/v1/audio/transcriptions",
        post(move || async move {
            axum::Json(serde_json::json!({
                "text": text,
                "language": "french",
                "segments": [{"avg_logprob": -0.1}]
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

/// Points a pipeline's transcriber at the stand-in at `url`.
pub fn transcribe_with(url: &str) -> impl Fn(&mut toml::Table) + use<> {
    let url = url.to_string();
    move |t: &mut toml::Table| {
        let mut section = toml::Table::new();
        section.insert("backend".into(), "openai".into());
        section.insert("url".into(), url.clone().into());
        section.insert("api_key_env".into(), KEY_ENV.into());
        section.insert("language".into(), "fr".into());
        t["capabilities"]
            .as_table_mut()
            .expect("capabilities")
            .insert("transcriber".into(), toml::Value::Table(section));
    }
}

/// The variable the server reads the stand-in's key from.
pub const KEY_ENV: &str = "CALLPIPE_TEST_OPENAI_KEY";
