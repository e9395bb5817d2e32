//! `speech`: text to 8 kHz mu-law for bidirectional calls, from the backend
//! the pipeline configures (`[capabilities.speech]`): espeak-ng in a child
//! process (the embedded default), or an OpenAI-compatible
//! `/v1/audio/speech` endpoint.

use super::CapabilityContext;
use super::not_configured;
use crate::bindings::speech::{CapabilityError, Host};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Twilio's media rate.
pub const RATE: u32 = 8000;

#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error("speech misconfigured: {0}")]
    Config(String),
    #[error("speech unavailable: {0}")]
    Unavailable(String),
    #[error("speech timed out after {0} ms")]
    Timeout(u64),
    #[error("{0}")]
    Invalid(String),
    #[error("speech synthesis failed: {0}")]
    Failed(String),
}

pub type SpeechFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, SpeechError>> + Send + 'a>>;

/// A text-to-speech backend: returns 8 kHz mu-law, ready for Twilio.
pub trait Synthesizer: Send + Sync {
    fn summary(&self) -> String;
    fn synthesize<'a>(&'a self, text: &'a str, language: &'a str) -> SpeechFuture<'a>;
}

/// `[capabilities.speech]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "kebab-case")]
pub enum SpeechConfig {
    /// Debian's espeak-ng, one child process per phrase.
    EspeakNg {
        #[serde(default = "espeak_binary")]
        binary: String,
        /// Voice per language tag; a tag without one uses the tag itself.
        /// Example: `voices = { fr = "fr-fr", en = "en-us" }`
        #[serde(default)]
        voices: BTreeMap<String, String>,
        /// Words per minute.
        #[serde(default = "speed")]
        speed: u32,
        #[serde(default = "two")]
        max_concurrent: usize,
        #[serde(default = "timeout_ms")]
        timeout_ms: u64,
        #[serde(default = "max_chars")]
        max_chars: usize,
    },
    /// Any OpenAI-compatible `/v1/audio/speech` endpoint.
    Openai {
        #[serde(default = "openai_url")]
        url: String,
        #[serde(default = "openai_model")]
        model: String,
        #[serde(default = "openai_voice")]
        voice: String,
        #[serde(default = "openai_key_env")]
        api_key_env: String,
        #[serde(default = "timeout_ms")]
        timeout_ms: u64,
        #[serde(default = "one")]
        retries: u32,
        #[serde(default = "max_chars")]
        max_chars: usize,
    },
}

fn espeak_binary() -> String {
    "espeak-ng".into()
}
fn speed() -> u32 {
    165
}
fn two() -> usize {
    2
}
fn one() -> u32 {
    1
}
fn timeout_ms() -> u64 {
    10_000
}
fn max_chars() -> usize {
    1_000
}
fn openai_url() -> String {
    "https://api.openai.com/v1".into()
}
fn openai_model() -> String {
    "tts-1".into()
}
fn openai_voice() -> String {
    "alloy".into()
}
fn openai_key_env() -> String {
    "OPENAI_API_KEY".into()
}

/// A configured backend with its per-phrase timeout.
pub struct SpeechService {
    pub backend: Arc<dyn Synthesizer>,
    pub timeout_ms: u64,
}

impl SpeechConfig {
    pub fn build(&self) -> Result<SpeechService, SpeechError> {
        match self {
            SpeechConfig::EspeakNg {
                binary,
                voices,
                speed,
                max_concurrent,
                timeout_ms,
                max_chars,
            } => {
                // Fail at load, not on the first question of a call.
                let probe = std::process::Command::new(binary)
                    .arg("--version")
                    .output()
                    .map_err(|e| {
                        SpeechError::Config(format!(
                            "cannot run `{binary}` ({e}); install espeak-ng (Debian: apt-get install espeak-ng)"
                        ))
                    })?;
                if !probe.status.success() {
                    return Err(SpeechError::Config(format!("`{binary} --version` failed")));
                }
                Ok(SpeechService {
                    backend: Arc::new(EspeakNg {
                        binary: binary.clone(),
                        voices: voices.clone(),
                        speed: (*speed).clamp(80, 450),
                        permits: tokio::sync::Semaphore::new((*max_concurrent).max(1)),
                        max_chars: *max_chars,
                    }),
                    timeout_ms: *timeout_ms,
                })
            }
            SpeechConfig::Openai {
                url,
                model,
                voice,
                api_key_env,
                timeout_ms,
                retries,
                max_chars,
            } => {
                // The whole call (tries and backoff) is bounded by
                // `timeout_ms` in the host function; a try gets as long.
                let policy = callpipe_remote::Policy {
                    timeout: Duration::from_millis(*timeout_ms),
                    retries: *retries,
                    backoff: Duration::from_millis(200),
                };
                let http = callpipe_remote::client(&policy)
                    .map_err(|e| SpeechError::Config(e.to_string()))?;
                Ok(SpeechService {
                    backend: Arc::new(OpenAiSpeech {
                        http,
                        url: format!("{}/audio/speech", url.trim_end_matches('/')),
                        model: model.clone(),
                        voice: voice.clone(),
                        api_key: callpipe_remote::api_key(Some(api_key_env)),
                        policy,
                        max_chars: *max_chars,
                    }),
                    timeout_ms: *timeout_ms,
                })
            }
        }
    }
}

fn check_text(text: &str, max_chars: usize) -> Result<(), SpeechError> {
    if text.trim().is_empty() {
        return Err(SpeechError::Invalid("nothing to say".into()));
    }
    let n = text.chars().count();
    if n > max_chars {
        return Err(SpeechError::Invalid(format!(
            "{n} characters to say (at most {max_chars})"
        )));
    }
    Ok(())
}

/// WAV of any rate and format to 8 kHz mu-law (mono: the first channel).
pub fn wav_to_mulaw(wav: &[u8]) -> Result<Vec<u8>, SpeechError> {
    let rec = crate::audio::wav::parse(wav)
        .map_err(|e| SpeechError::Failed(format!("unreadable audio from the backend: {e}")))?;
    let mono = rec.channels.into_iter().next().unwrap_or_default();
    let pcm = if rec.rate == RATE {
        mono
    } else {
        callpipe_dsp::resample::resample(&mono, rec.rate, RATE)
    };
    Ok(pcm
        .iter()
        .map(|&x| callpipe_dsp::g711::encode((x.clamp(-1.0, 1.0) * 32767.0) as i16))
        .collect())
}

pub struct EspeakNg {
    binary: String,
    voices: BTreeMap<String, String>,
    speed: u32,
    permits: tokio::sync::Semaphore,
    max_chars: usize,
}

/// A BCP 47-ish tag: `fr`, `en-GB`, `pt_BR`.
impl EspeakNg {
    fn voice(&self, language: &str) -> Result<String, SpeechError> {
        let lang = language.trim().to_lowercase();
        if !super::valid_tag(&lang) {
            return Err(SpeechError::Invalid(format!(
                "`{language}` is not a language tag (e.g. fr, en-GB)"
            )));
        }
        let primary = lang.split(['-', '_']).next().unwrap_or("fr").to_string();
        Ok(self
            .voices
            .get(&lang)
            .or_else(|| self.voices.get(&primary))
            .cloned()
            .unwrap_or(primary))
    }
}

impl Synthesizer for EspeakNg {
    fn summary(&self) -> String {
        format!("espeak-ng ({}, {} wpm)", self.binary, self.speed)
    }

    fn synthesize<'a>(&'a self, text: &'a str, language: &'a str) -> SpeechFuture<'a> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            check_text(text, self.max_chars)?;
            let voice = self.voice(language)?;
            // Voice names are words; anything else could be read as a flag.
            if !voice
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+'))
            {
                return Err(SpeechError::Invalid(format!("unusable voice `{voice}`")));
            }
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| SpeechError::Unavailable("shutting down".into()))?;
            // The text goes through stdin, never the command line.
            let mut child = tokio::process::Command::new(&self.binary)
                .args([
                    "--stdout",
                    "-b",
                    "1",
                    "-v",
                    &voice,
                    "-s",
                    &self.speed.to_string(),
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    SpeechError::Unavailable(format!("cannot run {}: {e}", self.binary))
                })?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(text.as_bytes())
                    .await
                    .map_err(|e| SpeechError::Failed(e.to_string()))?;
            }
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| SpeechError::Failed(e.to_string()))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(SpeechError::Failed(format!(
                    "espeak-ng voice `{voice}`: {}",
                    err.trim()
                )));
            }
            wav_to_mulaw(&out.stdout)
        })
    }
}

pub struct OpenAiSpeech {
    http: reqwest::Client,
    url: String,
    model: String,
    voice: String,
    api_key: Option<String>,
    policy: callpipe_remote::Policy,
    max_chars: usize,
}

impl Synthesizer for OpenAiSpeech {
    fn summary(&self) -> String {
        format!("OpenAI-compatible speech at {} ({})", self.url, self.model)
    }

    fn synthesize<'a>(&'a self, text: &'a str, _language: &'a str) -> SpeechFuture<'a> {
        Box::pin(async move {
            check_text(text, self.max_chars)?;
            let body = serde_json::json!({
                "model": self.model,
                "input": text,
                "voice": self.voice,
                "response_format": "wav",
            });
            let mut last = String::new();
            for attempt in 0..self.policy.tries() {
                self.policy.wait(attempt).await;
                let mut request = self.http.post(&self.url).json(&body);
                if let Some(key) = &self.api_key {
                    request = request.bearer_auth(key);
                }
                match callpipe_remote::exchange(request, &self.policy, MAX_AUDIO_BYTES).await {
                    callpipe_remote::Outcome::Answered { body, .. } => return wav_to_mulaw(&body),
                    callpipe_remote::Outcome::Refused { status, body, .. } => {
                        return Err(SpeechError::Unavailable(format!(
                            "{} refused the request ({status}): {body}",
                            self.url
                        )));
                    }
                    callpipe_remote::Outcome::Retry(why) => {
                        tracing::warn!("speech try {} failed: {why}", attempt + 1);
                        last = why;
                    }
                }
            }
            Err(SpeechError::Unavailable(format!("{}: {last}", self.url)))
        })
    }
}

/// The most audio read from an endpoint: a minute of 24 kHz 16-bit WAV is
/// under 3 MiB; what is said back is a sentence or two.
const MAX_AUDIO_BYTES: usize = 8 << 20;

impl Host for CapabilityContext {
    async fn synthesize(
        &mut self,
        text: String,
        language: String,
    ) -> wasmtime::Result<Result<Vec<u8>, CapabilityError>> {
        let Some(s) = self.set.get::<SpeechService>() else {
            return Ok(Err(not_configured("speech")));
        };
        let started = std::time::Instant::now();
        let call = tokio::time::timeout(
            Duration::from_millis(s.timeout_ms),
            s.backend.synthesize(&text, &language),
        );
        let result = match call.await {
            Err(_) => Err(CapabilityError::Timeout(format!(
                "no audio after {} ms",
                s.timeout_ms
            ))),
            Ok(Err(SpeechError::Invalid(m))) => Err(CapabilityError::InvalidRequest(m)),
            Ok(Err(SpeechError::Unavailable(m))) => Err(CapabilityError::Unavailable(m)),
            Ok(Err(e)) => Err(CapabilityError::Other(e.to_string())),
            Ok(Ok(audio)) => Ok(audio),
        };
        super::observe(&METRICS, started, &result);
        Ok(result)
    }
}

/// The `speech` capability (see `factor`).
pub struct SpeechFactor;

/// Calls from stages to `speech`, by outcome and latency (/metrics).
pub static METRICS: crate::metrics::CapabilityMetrics =
    crate::metrics::CapabilityMetrics::new("speech");

impl<T: Send + 'static> super::Factor<T> for SpeechFactor {
    fn name(&self) -> &'static str {
        "speech"
    }

    fn interface(&self) -> &'static str {
        "callpipe:stage/speech"
    }

    fn metrics(&self) -> Option<&'static crate::metrics::CapabilityMetrics> {
        Some(&METRICS)
    }

    fn build<'a>(
        &'a self,
        section: &'a toml::Table,
        _setup: super::Setup<'a>,
        set: &'a mut super::CapabilitySet,
    ) -> super::factor::BuildFuture<'a> {
        Box::pin(async move {
            let config: SpeechConfig = super::factor::typed("speech", section)?;
            let built = config.build().map_err(|e| e.to_string())?;
            tracing::info!("speech: {}", built.backend.summary());
            set.insert(Arc::new(built));
            Ok(())
        })
    }

    fn link(
        &self,
        linker: &mut wasmtime::component::Linker<T>,
        context: super::factor::ContextOf<T>,
    ) -> wasmtime::Result<()> {
        crate::bindings::speech::add_to_linker::<T, wasmtime::component::HasSelf<CapabilityContext>>(
            linker, context,
        )
    }
}
