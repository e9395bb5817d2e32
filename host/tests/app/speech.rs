//! The `speech` capability: espeak-ng for real (checked by ear, through
//! Whisper), and the OpenAI-compatible backend against a test-only endpoint.

use crate::support::{data_dir, fixture_present, root};
use callpipe_host::capabilities::speech::{SpeechConfig, SpeechError};
use callpipe_host::capabilities::transcriber::TranscriberConfig;
use std::collections::BTreeMap;

fn espeak() -> SpeechConfig {
    SpeechConfig::EspeakNg {
        binary: "espeak-ng".into(),
        voices: BTreeMap::new(),
        speed: 150,
        max_concurrent: 2,
        timeout_ms: 10_000,
        max_chars: 200,
    }
}

pub(crate) fn espeak_present() -> bool {
    let ok = std::process::Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    fixture_present(ok, "espeak-ng (Debian package espeak-ng)")
}

fn mulaw_to_pcm(bytes: &[u8]) -> Vec<i16> {
    bytes
        .iter()
        .map(|&b| callpipe_dsp::g711::decode(b))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn espeak_speaks_french_that_whisper_understands() {
    if !espeak_present() {
        return;
    }
    let model =
        callpipe_host::models::dir(&data_dir()).join(callpipe_host::models::whisper::MODEL_FILE);
    if !fixture_present(model.exists(), "the Whisper model (run `callpipe models`)") {
        return;
    }
    let speech = espeak().build().expect("espeak-ng");
    let text = "Bonjour, quelle caméra ne fonctionne plus ?";
    let audio = speech.backend.synthesize(text, "fr").await.expect("audio");
    let seconds = audio.len() as f64 / 8000.0;
    assert!((1.0..6.0).contains(&seconds), "{seconds} s of speech");
    let pcm = mulaw_to_pcm(&audio);
    let loud = pcm.iter().filter(|s| s.unsigned_abs() > 2000).count();
    assert!(loud > 1000, "mostly silence: {loud} loud samples");

    let stt = TranscriberConfig::WhisperCpp {
        model: Some(model),
        threads: 1,
        language: "fr".into(),
        languages: Vec::new(),
        max_concurrent: 1,
        max_queued: 8,
        timeout_ms: 30_000,
    }
    .build(&data_dir(), &root())
    .expect("whisper");
    let heard = stt
        .backend
        .transcribe(
            callpipe_host::capabilities::transcriber::to_16k(&pcm, 8000),
            Some("fr".into()),
            None,
        )
        .await
        .expect("transcript");
    let text = heard.text.to_lowercase();
    assert!(text.contains("caméra"), "Whisper heard: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn espeak_refuses_what_it_cannot_say() {
    if !espeak_present() {
        return;
    }
    let speech = espeak().build().expect("espeak-ng");
    let b = &speech.backend;
    assert!(matches!(
        b.synthesize("  ", "fr").await,
        Err(SpeechError::Invalid(_))
    ));
    let long = "mot ".repeat(100);
    assert!(matches!(
        b.synthesize(&long, "fr").await,
        Err(SpeechError::Invalid(_))
    ));
    // A language is never a command-line flag.
    assert!(matches!(
        b.synthesize("bonjour", "--help").await,
        Err(SpeechError::Invalid(_))
    ));
    match b.synthesize("bonjour", "xx-nowhere").await {
        Err(SpeechError::Failed(m)) => assert!(m.contains("xx"), "{m}"),
        other => panic!("an unknown voice gave {other:?}"),
    }
    // English works too, with its own voice.
    assert!(
        b.synthesize("The door does not open.", "en-GB")
            .await
            .is_ok()
    );
    // A missing binary is reported when the pipeline loads.
    let missing = SpeechConfig::EspeakNg {
        binary: "/nonexistent/espeak-ng".into(),
        voices: BTreeMap::new(),
        speed: 150,
        max_concurrent: 1,
        timeout_ms: 1_000,
        max_chars: 100,
    };
    let err = missing.build().err().expect("refused").to_string();
    assert!(err.contains("apt-get install espeak-ng"), "{err}");
}

/// A local stand-in for `/v1/audio/speech`: checks the request, answers a
/// 24 kHz WAV tone, and fails the first try with a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_speech_backend_against_a_local_endpoint() {
    use axum::Json;
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tries = Arc::new(AtomicUsize::new(0));
    let seen = tries.clone();
    let app = axum::Router::new().route(
        "/v1/audio/speech",
        axum::routing::post(
            move |headers: HeaderMap, Json(body): Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(StatusCode::SERVICE_UNAVAILABLE);
                    }
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    if auth != Some("Bearer sk-speech")
                        || body["model"] != "tts-test"
                        || body["voice"] != "nova"
                        || body["response_format"] != "wav"
                        || body["input"] != "Quel est le modèle de la caméra ?"
                    {
                        return Err(StatusCode::BAD_REQUEST);
                    }
                    let tone: Vec<i16> = (0..24_000)
                        .map(|i| {
                            ((i as f32 * 440.0 * std::f32::consts::TAU / 24_000.0).sin() * 12_000.0)
                                as i16
                        })
                        .collect();
                    let dir = tempfile::tempdir().expect("tempdir");
                    let path = dir.path().join("t.wav");
                    callpipe_host::audio::wav::write_pcm16(&path, 24_000, &[tone]).expect("wav");
                    Ok(std::fs::read(&path).expect("read"))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    // SAFETY: no other thread reads this variable.
    unsafe { std::env::set_var("CALLPIPE_TEST_SPEECH_KEY", "sk-speech") };
    let speech = SpeechConfig::Openai {
        url: format!("http://{addr}/v1"),
        model: "tts-test".into(),
        voice: "nova".into(),
        api_key_env: "CALLPIPE_TEST_SPEECH_KEY".into(),
        timeout_ms: 5_000,
        retries: 1,
        max_chars: 200,
    }
    .build()
    .expect("backend");
    let audio = speech
        .backend
        .synthesize("Quel est le modèle de la caméra ?", "fr")
        .await
        .expect("audio after one retry");
    assert_eq!(tries.load(Ordering::SeqCst), 2);
    // One second at 24 kHz became one second of 8 kHz mu-law.
    assert!(
        (7_900..=8_100).contains(&audio.len()),
        "{} bytes",
        audio.len()
    );
    let pcm = mulaw_to_pcm(&audio);
    let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!((10_000..14_000).contains(&peak), "peak {peak}");
}
