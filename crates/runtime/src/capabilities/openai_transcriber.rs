//! The `openai` transcriber backend: any OpenAI-compatible
//! `/v1/audio/transcriptions` endpoint (OpenAI, Groq, a local server), or a
//! pool of them (several self-hosted faster-whisper or vLLM servers).
//! A 16 kHz WAV goes up as multipart; each try has a timeout, retryable
//! failures (timeouts, 429, 5xx) are retried with exponential backoff, on
//! another endpoint of the pool when there is one; each try goes to the
//! endpoint with the fewest requests in flight, and a circuit breaker per
//! endpoint stops calling one that keeps failing.

use super::speech_to_text::{TranscribeFuture, Transcriber, TranscriberError, Transcription};
use serde::Deserialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URLs up to and including `/v1`: one endpoint, or a pool.
    pub base_urls: Vec<String>,
    pub model: String,
    pub api_key: Option<String>,
    pub language: Option<String>,
    /// Per try.
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
    pub backoff: Duration,
    /// Consecutive failed requests (every try failed) that open an
    /// endpoint's circuit...
    pub breaker_failures: u32,
    /// ...for this long.
    pub breaker_cooldown: Duration,
}

/// One endpoint of the pool.
struct Member {
    base_url: String,
    /// Requests to it in flight now (least outstanding wins).
    outstanding: std::sync::atomic::AtomicUsize,
    /// Consecutive failed requests on it.
    breaker: callpipe_remote::Breaker,
}

pub struct OpenAiTranscriber {
    http: reqwest::Client,
    config: OpenAiConfig,
    policy: callpipe_remote::Policy,
    members: Vec<Member>,
    /// Breaks ties between equally loaded endpoints, in turn.
    turn: std::sync::atomic::AtomicUsize,
}

#[derive(Deserialize)]
struct Response {
    text: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    segments: Vec<Segment>,
}

#[derive(Deserialize)]
struct Segment {
    #[serde(default)]
    avg_logprob: Option<f32>,
}

/// Mono 16-bit PCM WAV at 16 kHz.
pub fn wav_16k(audio: &[f32]) -> Vec<u8> {
    let data_len = (audio.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + audio.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&32_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &x in audio {
        out.extend_from_slice(
            &((x * 32767.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes(),
        );
    }
    out
}

enum Attempt {
    Done(Transcription),
    Retry(String),
    /// Not worth another try; true when it counts against the endpoint (a
    /// key refused, a wrong address).
    Fail(TranscriberError, bool),
}

/// The most of an answer that is read: a transcript with its segments is
/// a few KiB; an endpoint that sends more is not one.
const MAX_ANSWER_BYTES: usize = 1 << 20;

impl OpenAiTranscriber {
    pub fn new(config: OpenAiConfig) -> Result<Self, TranscriberError> {
        if config.base_urls.is_empty() {
            return Err(TranscriberError::Config(
                "the openai transcriber needs at least one `url`".into(),
            ));
        }
        let policy = callpipe_remote::Policy {
            timeout: config.timeout,
            retries: config.retries,
            backoff: config.backoff,
        };
        let http = callpipe_remote::client(&policy)
            .map_err(|e| TranscriberError::Config(e.to_string()))?;
        let members = config
            .base_urls
            .iter()
            .map(|u| Member {
                base_url: u.trim_end_matches('/').to_string(),
                outstanding: Default::default(),
                breaker: callpipe_remote::Breaker::new(
                    config.breaker_failures,
                    config.breaker_cooldown,
                ),
            })
            .collect();
        Ok(Self {
            http,
            config,
            policy,
            members,
            turn: Default::default(),
        })
    }

    /// The endpoint for the next try: the usable one with the fewest
    /// requests in flight, preferring one not tried yet for this request;
    /// ties go round in turn. A half-open endpoint admits one probe at a
    /// time. `None` when every circuit is open.
    fn pick(&self, tried: &[usize]) -> Option<usize> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = Instant::now();
        let start = self.turn.fetch_add(1, Relaxed);
        let n = self.members.len();
        // An endpoint this request was admitted to (its probe, when
        // half-open) takes its retries too.
        let mut usable: Vec<usize> = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| tried.contains(&i) || self.members[i].breaker.allows(now))
            .collect();
        // Stable: among equals, the turn order stays.
        usable.sort_by_key(|&i| {
            (
                tried.contains(&i),
                self.members[i].outstanding.load(Relaxed),
            )
        });
        usable
            .into_iter()
            .find(|&i| tried.contains(&i) || self.members[i].breaker.admit(now))
    }

    async fn attempt(
        &self,
        member: &Member,
        wav: &[u8],
        language: Option<&str>,
        prompt: Option<&str>,
    ) -> Attempt {
        let file = match reqwest::multipart::Part::bytes(wav.to_vec())
            .file_name("audio.wav")
            .mime_str("audio/wav")
        {
            Ok(f) => f,
            Err(e) => return Attempt::Fail(TranscriberError::Failed(e.to_string()), false),
        };
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.config.model.clone())
            .text("response_format", "verbose_json");
        if let Some(l) = language {
            form = form.text("language", l.to_string());
        }
        if let Some(p) = prompt.filter(|p| !p.is_empty()) {
            form = form.text("prompt", p.to_string());
        }
        let mut request = self
            .http
            .post(format!("{}/audio/transcriptions", member.base_url))
            .multipart(form);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let body = match callpipe_remote::exchange(request, &self.policy, MAX_ANSWER_BYTES).await {
            callpipe_remote::Outcome::Answered { body, .. } => body,
            callpipe_remote::Outcome::Retry(why) => return Attempt::Retry(why),
            callpipe_remote::Outcome::Refused {
                status,
                body,
                endpoint_fault,
            } => {
                return Attempt::Fail(
                    TranscriberError::Failed(format!(
                        "endpoint refused the request ({status}): {body}"
                    )),
                    endpoint_fault,
                );
            }
        };
        match serde_json::from_slice::<Response>(&body) {
            Ok(r) => {
                let probs: Vec<f32> = r
                    .segments
                    .iter()
                    .filter_map(|s| s.avg_logprob)
                    .map(f32::exp)
                    .collect();
                let confidence = if probs.is_empty() {
                    0.0
                } else {
                    probs.iter().sum::<f32>() / probs.len() as f32
                };
                Attempt::Done(Transcription {
                    text: r.text.trim().to_string(),
                    language: language
                        .map(str::to_owned)
                        .or(r.language.as_deref().map(language_tag))
                        .unwrap_or_default(),
                    confidence: confidence.clamp(0.0, 1.0),
                    // The API names the language it detected, not how sure it is.
                    language_probability: None,
                })
            }
            Err(e) => Attempt::Retry(format!("unreadable answer: {e}")),
        }
    }
}

/// OpenAI's `verbose_json` names the language ("french"); stages expect a
/// tag ("fr"). Whisper's own table knows both; an unknown name stays as is.
fn language_tag(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    if lower.is_empty() || lower.contains('\0') {
        // whisper-rs panics on a NUL; an endpoint's answer is not trusted.
        return lower;
    }
    match whisper_rs::get_lang_id(&lower).and_then(whisper_rs::get_lang_str) {
        Some(tag) => tag.to_string(),
        None => lower,
    }
}

impl Transcriber for OpenAiTranscriber {
    fn detects_language(&self) -> bool {
        self.config.language.is_none()
    }

    fn summary(&self) -> String {
        let urls: Vec<&str> = self.members.iter().map(|m| m.base_url.as_str()).collect();
        format!(
            "openai-compatible {} model {}",
            urls.join(", "),
            self.config.model
        )
    }

    fn transcribe<'a>(
        &'a self,
        audio: Vec<f32>,
        language: Option<String>,
        prompt: Option<String>,
    ) -> TranscribeFuture<'a> {
        Box::pin(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let wav = wav_16k(&audio);
            let language = language.or_else(|| self.config.language.clone());
            let mut last = String::new();
            // The endpoints this request tried, and those that failed it.
            let mut tried: Vec<usize> = Vec::new();
            let mut failed: Vec<usize> = Vec::new();
            for attempt in 0..self.policy.tries() {
                let Some(i) = self.pick(&tried) else {
                    self.count_failures(&failed);
                    return Err(TranscriberError::Unavailable(format!(
                        "circuit open after {} failed requests{}",
                        self.config.breaker_failures,
                        if self.members.len() > 1 {
                            " on every endpoint"
                        } else {
                            ""
                        }
                    )));
                };
                self.policy.wait(attempt).await;
                let member = &self.members[i];
                if !tried.contains(&i) {
                    tried.push(i);
                }
                member.outstanding.fetch_add(1, Relaxed);
                let result = self
                    .attempt(member, &wav, language.as_deref(), prompt.as_deref())
                    .await;
                member.outstanding.fetch_sub(1, Relaxed);
                match result {
                    Attempt::Done(t) => {
                        member.breaker.succeeded();
                        self.count_failures(&failed);
                        return Ok(t);
                    }
                    Attempt::Fail(e, endpoint_fault) => {
                        if endpoint_fault && !failed.contains(&i) {
                            failed.push(i);
                        }
                        self.count_failures(&failed);
                        return Err(e);
                    }
                    Attempt::Retry(why) => {
                        tracing::warn!(attempt, endpoint = %member.base_url, "transcription endpoint: {why}");
                        if !failed.contains(&i) {
                            failed.push(i);
                        }
                        last = why;
                    }
                }
            }
            self.count_failures(&failed);
            Err(TranscriberError::Unavailable(format!(
                "{} tries failed, last: {last}",
                self.policy.tries()
            )))
        })
    }
}

impl OpenAiTranscriber {
    /// One more failed request for each endpoint that failed one of its
    /// tries; enough in a row open its circuit.
    fn count_failures(&self, failed: &[usize]) {
        for &i in failed {
            let member = &self.members[i];
            if member.breaker.failed() {
                tracing::error!(
                    endpoint = %member.base_url,
                    "transcription endpoint keeps failing: circuit open for {:?}",
                    member.breaker.cooldown()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::{Multipart, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    /// A test-only stand-in for an OpenAI-compatible endpoint.
    #[derive(Clone, Default)]
    struct Stub {
        requests: Arc<AtomicU32>,
        /// Requests answered 503 before it starts working.
        failing: Arc<AtomicU32>,
        /// Answer this late (to exercise the timeout).
        delay_ms: u64,
        seen: Arc<Mutex<Vec<(String, String)>>>,
    }

    async fn handler(
        State(stub): State<Stub>,
        headers: HeaderMap,
        mut form: Multipart,
    ) -> axum::response::Response {
        stub.requests.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(stub.delay_ms)).await;
        if stub.failing.load(Ordering::SeqCst) > 0 {
            stub.failing.fetch_sub(1, Ordering::SeqCst);
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut fields = vec![("authorization".to_string(), auth)];
        while let Ok(Some(field)) = form.next_field().await {
            let name = field.name().unwrap_or("").to_string();
            let value = if name == "file" {
                let ct = field.content_type().unwrap_or("").to_string();
                let file = field.file_name().unwrap_or("").to_string();
                let bytes = field.bytes().await.unwrap_or_default();
                let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
                format!(
                    "{file} {ct} {} {rate}",
                    String::from_utf8_lossy(&bytes[..4])
                )
            } else {
                field.text().await.unwrap_or_default()
            };
            fields.push((name, value));
        }
        stub.seen.lock().unwrap().extend(fields);
        axum::Json(serde_json::json!({"text": " bonjour ", "language": "french", "segments": [{"avg_logprob": -0.2}]}))
            .into_response()
    }

    async fn serve(stub: Stub) -> String {
        let app = axum::Router::new()
            .route("/v1/audio/transcriptions", axum::routing::post(handler))
            .with_state(stub);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1")
    }

    fn config(base_url: String) -> OpenAiConfig {
        OpenAiConfig {
            base_urls: vec![base_url],
            model: "whisper-1".into(),
            api_key: Some("sk-test".into()),
            language: Some("fr".into()),
            timeout: Duration::from_millis(300),
            retries: 2,
            backoff: Duration::from_millis(10),
            breaker_failures: 2,
            breaker_cooldown: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_language_name_becomes_its_tag() {
        assert_eq!(language_tag("French"), "fr");
        assert_eq!(language_tag(" english "), "en");
        assert_eq!(language_tag("es"), "es");
        assert_eq!(language_tag("klingon"), "klingon", "unknown names stay");
        assert_eq!(language_tag("fr\0ench"), "fr\0ench", "no panic on a NUL");
    }

    #[tokio::test]
    async fn sends_a_multipart_16k_wav_with_model_language_and_key() {
        let stub = Stub::default();
        let t = OpenAiTranscriber::new(config(serve(stub.clone()).await)).unwrap();
        let got = t
            .transcribe(vec![0.1; 16_000], None, Some("caméra".into()))
            .await
            .unwrap();
        assert_eq!(got.text, "bonjour");
        assert_eq!(got.language, "fr");
        assert!((got.confidence - (-0.2f32).exp()).abs() < 1e-6);
        let seen = stub.seen.lock().unwrap().clone();
        let field = |k: &str| {
            seen.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(field("authorization"), "Bearer sk-test");
        assert_eq!(field("model"), "whisper-1");
        assert_eq!(field("language"), "fr");
        assert_eq!(field("prompt"), "caméra");
        assert_eq!(field("response_format"), "verbose_json");
        assert_eq!(field("file"), "audio.wav audio/wav RIFF 16000");
    }

    #[tokio::test]
    async fn retries_a_failing_endpoint_then_succeeds() {
        let stub = Stub::default();
        stub.failing.store(2, Ordering::SeqCst);
        let t = OpenAiTranscriber::new(config(serve(stub.clone()).await)).unwrap();
        assert_eq!(
            t.transcribe(vec![0.0; 8000], None, None)
                .await
                .unwrap()
                .text,
            "bonjour"
        );
        assert_eq!(stub.requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn times_out_each_try_then_opens_the_circuit() {
        let stub = Stub {
            delay_ms: 2_000,
            ..Default::default()
        };
        let t = OpenAiTranscriber::new(config(serve(stub.clone()).await)).unwrap();
        // Had the timeout not cut a try, the stub would have answered (late)
        // with a transcript and there would be no error at all.
        let err = t.transcribe(vec![0.0; 8000], None, None).await.unwrap_err();
        assert!(matches!(err, TranscriberError::Unavailable(_)), "{err}");
        assert!(
            err.to_string()
                .contains("3 tries failed, last: no answer within"),
            "{err}"
        );
        assert_eq!(stub.requests.load(Ordering::SeqCst), 3);
        // A second failed request opens the circuit: the next call does not
        // reach the endpoint at all.
        let _ = t.transcribe(vec![0.0; 8000], None, None).await;
        let before = stub.requests.load(Ordering::SeqCst);
        let err = t.transcribe(vec![0.0; 8000], None, None).await.unwrap_err();
        assert!(err.to_string().contains("circuit open"), "{err}");
        assert_eq!(stub.requests.load(Ordering::SeqCst), before);
    }

    #[tokio::test]
    async fn a_client_error_is_not_retried() {
        let app = axum::Router::new().route(
            "/v1/audio/transcriptions",
            axum::routing::post(|| async { (StatusCode::BAD_REQUEST, "bad model") }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let t = OpenAiTranscriber::new(config(format!("http://{addr}/v1"))).unwrap();
        let err = t.transcribe(vec![0.0; 8000], None, None).await.unwrap_err();
        assert!(err.to_string().contains("bad model"), "{err}");
    }

    /// A pool of two: one endpoint that always fails and one that is slow
    /// but works. Every request is answered; the failing one's circuit
    /// opens after two failed requests and it is tried no more.
    #[tokio::test]
    async fn a_pool_goes_around_a_failing_endpoint() {
        let failing = Stub {
            failing: Arc::new(AtomicU32::new(1_000)),
            ..Default::default()
        };
        let slow = Stub {
            delay_ms: 100,
            ..Default::default()
        };
        let mut c = config(serve(failing.clone()).await);
        c.base_urls.push(serve(slow.clone()).await);
        let t = OpenAiTranscriber::new(c).unwrap();
        for _ in 0..6 {
            let got = t.transcribe(vec![0.0; 8000], None, None).await.unwrap();
            assert_eq!(got.text, "bonjour");
        }
        assert_eq!(failing.requests.load(Ordering::SeqCst), 2);
        assert_eq!(slow.requests.load(Ordering::SeqCst), 6);
        assert!(t.summary().contains(", "), "{}", t.summary());
    }

    /// Two requests at once on a pool of two: one each (the fewest in
    /// flight wins).
    #[tokio::test]
    async fn a_pool_spreads_requests_by_least_outstanding() {
        let (a, b) = (
            Stub {
                delay_ms: 200,
                ..Default::default()
            },
            Stub {
                delay_ms: 200,
                ..Default::default()
            },
        );
        let mut c = config(serve(a.clone()).await);
        c.base_urls.push(serve(b.clone()).await);
        let t = OpenAiTranscriber::new(c).unwrap();
        let (x, y) = tokio::join!(
            t.transcribe(vec![0.0; 8000], None, None),
            t.transcribe(vec![0.0; 8000], None, None)
        );
        assert!(x.is_ok() && y.is_ok());
        assert_eq!(a.requests.load(Ordering::SeqCst), 1);
        assert_eq!(b.requests.load(Ordering::SeqCst), 1);
    }
}
