//! `transcriber`: speech to text. The stage sends PCM; the host hands it to
//! the backend the pipeline configures (`[capabilities.transcriber]`).

use super::CapabilityContext;
use super::call_language;
use super::not_configured;
use crate::bindings::transcriber::{
    CapabilityError, Host, TranscribeRequest, Transcription as WitTranscription,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

// The backend seam lives apart, so the backends this module builds
// import it without importing this module back.
pub use super::speech_to_text::{TranscribeFuture, Transcriber, TranscriberError, Transcription};

/// `[capabilities.transcriber]` in a pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "kebab-case")]
pub enum TranscriberConfig {
    WhisperCpp {
        /// A whisper.cpp ggml model; default: Whisper base q8_0, as `callpipe
        /// models` sets it up.
        #[serde(default)]
        model: Option<PathBuf>,
        #[serde(default = "one")]
        threads: i32,
        /// `fr`, `en`, ... or `auto` to detect.
        #[serde(default = "french")]
        language: String,
        /// With `auto`: the languages detection chooses among (a desk knows
        /// whom it serves); default: the fifteen README's "Languages"
        /// names; `[]`: any of whisper's ninety-nine.
        #[serde(default = "fifteen")]
        languages: Vec<String>,
        /// Transcriptions running at once; more wait their turn.
        #[serde(default = "one_usize")]
        max_concurrent: usize,
        /// Transcriptions that may wait for a turn; past this an utterance is
        /// not transcribed (shed, counted), so overload cannot feed itself.
        #[serde(default = "max_queued")]
        max_queued: usize,
        /// Longest one transcription may take.
        #[serde(default = "timeout_ms")]
        timeout_ms: u64,
    },
    /// Any OpenAI-compatible `/v1/audio/transcriptions` endpoint.
    Openai {
        /// Up to and including `/v1`. Example: `url = "https://api.groq.com/openai/v1"`.
        /// Several make a pool: `url = ["http://stt-1:8000/v1", "http://stt-2:8000/v1"]`
        /// (each try goes to the endpoint with the fewest requests in
        /// flight; each has its own circuit breaker).
        #[serde(default = "openai_url")]
        url: Urls,
        #[serde(default = "openai_model")]
        model: String,
        /// Environment variable holding the API key (never the key itself).
        #[serde(default = "openai_key_env")]
        api_key_env: String,
        #[serde(default = "french")]
        language: String,
        /// Per try.
        #[serde(default = "openai_try_ms")]
        try_timeout_ms: u64,
        #[serde(default = "two")]
        retries: u32,
        #[serde(default = "backoff_ms")]
        backoff_ms: u64,
        #[serde(default = "five")]
        breaker_failures: u32,
        #[serde(default = "cooldown_ms")]
        breaker_cooldown_ms: u64,
        /// Longest one transcription may take, retries included.
        #[serde(default = "timeout_ms")]
        timeout_ms: u64,
    },
}

/// One URL or several.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    pub fn list(&self) -> Vec<String> {
        match self {
            Urls::One(u) => vec![u.clone()],
            Urls::Many(v) => v.clone(),
        }
    }
}

fn openai_url() -> Urls {
    Urls::One("https://api.openai.com/v1".into())
}
fn openai_model() -> String {
    "whisper-1".into()
}
fn openai_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn openai_try_ms() -> u64 {
    10_000
}
fn two() -> u32 {
    2
}
fn five() -> u32 {
    5
}
fn backoff_ms() -> u64 {
    250
}
fn cooldown_ms() -> u64 {
    30_000
}

fn one() -> i32 {
    1
}
fn one_usize() -> usize {
    1
}
fn max_queued() -> usize {
    8
}
fn french() -> String {
    "fr".into()
}

/// The languages the stages ask questions in (the clarifier's files).
pub const FIFTEEN: [&str; 15] = [
    "ar", "de", "en", "es", "fr", "it", "ja", "nl", "pl", "pt", "ro", "ru", "tr", "vi", "zh",
];

fn fifteen() -> Vec<String> {
    FIFTEEN.iter().map(|s| s.to_string()).collect()
}

/// Whisper's id for a language tag (its primary subtag).
fn whisper_id(tag: &str) -> Option<i32> {
    whisper_rs::get_lang_id(&call_language::primary(tag))
}

/// Problems with the section's `language` and `languages`, checked at load
/// and by `callpipe check` (a bad tag would otherwise reach whisper.cpp or
/// the endpoint on the first utterance).
fn check_languages(config: &TranscriberConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let (language, languages) = match config {
        TranscriberConfig::WhisperCpp {
            language,
            languages,
            ..
        } => (language, &languages[..]),
        TranscriberConfig::Openai { language, .. } => (language, &[][..]),
    };
    let whisper = matches!(config, TranscriberConfig::WhisperCpp { .. });
    if language != "auto"
        && (!super::valid_tag(language) || (whisper && whisper_id(language).is_none()))
    {
        problems.push(format!(
            "`language = \"{language}\"` is not a language whisper knows; use a tag such as \
             \"fr\" or \"pt-BR\", or \"auto\" to detect each call's"
        ));
    }
    for l in languages {
        if !super::valid_tag(l) || whisper_id(l).is_none() {
            problems.push(format!(
                "`languages` names \"{l}\", which is not a language whisper knows"
            ));
        }
    }
    problems
}
fn timeout_ms() -> u64 {
    30_000
}

/// A configured transcriber with its timeout.
pub struct TranscriberService {
    pub backend: Arc<dyn Transcriber>,
    pub timeout_ms: u64,
}

impl TranscriberConfig {
    /// Whether it needs the speech model `callpipe models` sets up.
    pub fn uses_default_model(&self) -> bool {
        matches!(self, Self::WhisperCpp { model: None, .. })
    }

    /// Builds the backend (loads the model: blocking).
    pub fn build(
        &self,
        data_dir: &Path,
        base_dir: &Path,
    ) -> Result<TranscriberService, TranscriberError> {
        match self {
            TranscriberConfig::WhisperCpp {
                model,
                threads,
                language,
                languages,
                max_concurrent,
                max_queued,
                timeout_ms,
            } => {
                let model = match model {
                    Some(m) if m.is_absolute() => m.clone(),
                    Some(m) => base_dir.join(m),
                    None => crate::models::whisper::default_model(&crate::models::dir(data_dir)),
                };
                let backend =
                    super::whisper_cpp::WhisperCpp::load(super::whisper_cpp::WhisperCppConfig {
                        model,
                        threads: *threads,
                        language: (language != "auto").then(|| language.clone()),
                        detect_among: languages.iter().filter_map(|l| whisper_id(l)).collect(),
                        max_concurrent: *max_concurrent,
                        max_queued: *max_queued,
                    })?;
                Ok(TranscriberService {
                    backend: Arc::new(backend),
                    timeout_ms: *timeout_ms,
                })
            }
            TranscriberConfig::Openai {
                url,
                model,
                api_key_env,
                language,
                try_timeout_ms,
                retries,
                backoff_ms,
                breaker_failures,
                breaker_cooldown_ms,
                timeout_ms,
            } => {
                use super::openai_transcriber::{OpenAiConfig, OpenAiTranscriber};
                use std::time::Duration;
                let backend = OpenAiTranscriber::new(OpenAiConfig {
                    base_urls: url.list(),
                    model: model.clone(),
                    api_key: callpipe_remote::api_key(Some(api_key_env)),
                    language: (language != "auto").then(|| language.clone()),
                    timeout: Duration::from_millis(*try_timeout_ms),
                    retries: *retries,
                    backoff: Duration::from_millis(*backoff_ms),
                    breaker_failures: (*breaker_failures).max(1),
                    breaker_cooldown: Duration::from_millis(*breaker_cooldown_ms),
                })?;
                Ok(TranscriberService {
                    backend: Arc::new(backend),
                    timeout_ms: *timeout_ms,
                })
            }
        }
    }
}

/// PCM at any rate to what the backends take: 16 kHz, -1..1. Telephone
/// audio (8 kHz) goes through the codec's own half-band interpolator, so an
/// utterance the pipeline kept at 8 kHz reaches Whisper as it would have
/// through a 16 kHz pipeline, at a fraction of the general resampler's cost.
pub fn to_16k(samples: &[i16], rate: u32) -> Vec<f32> {
    let scale = |s: &i16| *s as f32 / 32768.0;
    match rate {
        16_000 => samples.iter().map(scale).collect(),
        8_000 => {
            let mut up = Vec::with_capacity(samples.len() * 2 + 64);
            let mut filter = callpipe_dsp::halfband::Upsampler2x::new();
            filter.process_into(samples, &mut up);
            // Flush the filter's delay so the utterance's end is kept too.
            let flush = [0i16; callpipe_dsp::halfband::Upsampler2x::delay() / 2];
            filter.process_into(&flush, &mut up);
            let delay = callpipe_dsp::halfband::Upsampler2x::delay();
            up.iter().skip(delay).map(scale).collect()
        }
        _ => {
            let x: Vec<f32> = samples.iter().map(scale).collect();
            callpipe_dsp::resample::resample(&x, rate, 16_000)
        }
    }
}

impl Host for CapabilityContext {
    async fn transcribe(
        &mut self,
        request: TranscribeRequest,
    ) -> wasmtime::Result<Result<WitTranscription, CapabilityError>> {
        let Some(t) = self.set.get::<TranscriberService>() else {
            return Ok(Err(not_configured("transcriber")));
        };
        if request.rate == 0 || request.rate > 192_000 {
            return Ok(Err(CapabilityError::InvalidRequest(format!(
                "unusable sample rate {}",
                request.rate
            ))));
        }
        let asked = match request.language.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(l) if l.eq_ignore_ascii_case("auto") => None,
            Some(l) if super::valid_tag(l) => Some(call_language::primary(l)),
            Some(_) => {
                return Ok(Err(CapabilityError::InvalidRequest(
                    "language must be a tag such as fr or pt-BR".into(),
                )));
            }
        };
        let started = std::time::Instant::now();
        let audio = to_16k(&request.samples, request.rate);
        // A stage that names no language leaves it to the backend: one set
        // to detect transcribes in the call's language once it has one;
        // another in the language the call started with (Twilio's
        // `language` parameter, else `[pipeline] language`), else its own.
        let detecting = asked.is_none() && t.backend.detects_language();
        let call_language = detecting.then(|| self.language.next().map(str::to_owned));
        let language = match (&call_language, asked) {
            (Some(known), _) => known.clone(),
            (None, Some(l)) => Some(l),
            (None, None) => {
                Some(call_language::primary(&self.context.language)).filter(|l| super::valid_tag(l))
            }
        };
        let job = match &call_language {
            // Unsure detections decode in the call's language so far, else
            // the one it started with.
            Some(None) => {
                let fallback = self
                    .language
                    .settled()
                    .map(str::to_owned)
                    .or_else(|| Some(call_language::primary(&self.context.language)))
                    .filter(|l| super::valid_tag(l));
                t.backend
                    .transcribe_detecting(audio, fallback, request.prompt)
            }
            _ => t.backend.transcribe(audio, language, request.prompt),
        };
        let call = tokio::time::timeout(std::time::Duration::from_millis(t.timeout_ms), job);
        let result = match call.await {
            Err(_) => Err(CapabilityError::Timeout(format!(
                "no transcript after {} ms",
                t.timeout_ms
            ))),
            Ok(Err(TranscriberError::Unavailable(m))) => Err(CapabilityError::Unavailable(m)),
            Ok(Err(e)) => Err(CapabilityError::Other(e.to_string())),
            Ok(Ok(r)) => {
                let language = match call_language {
                    None => r.language,
                    Some(known) => {
                        let detected = known
                            .is_none()
                            .then_some((r.language.as_str(), r.language_probability));
                        let words = call_language::words(&r.text);
                        self.language.observe(detected, words, r.confidence)
                    }
                };
                Ok(WitTranscription {
                    text: r.text,
                    language,
                    confidence: r.confidence,
                })
            }
        };
        super::observe(&METRICS, started, &result);
        Ok(result)
    }
}

/// `[capabilities.transcriber]` as typed settings.
pub fn section_config(table: &toml::Table) -> Result<TranscriberConfig, String> {
    super::factor::typed("transcriber", table)
}

/// The `transcriber` capability (see `factor`).
pub struct TranscriberFactor;

/// Calls from stages to `transcriber`, by outcome and latency (/metrics).
pub static METRICS: crate::metrics::CapabilityMetrics =
    crate::metrics::CapabilityMetrics::new("transcriber");

impl<T: Send + 'static> super::Factor<T> for TranscriberFactor {
    fn name(&self) -> &'static str {
        "transcriber"
    }

    fn interface(&self) -> &'static str {
        "callpipe:stage/transcriber"
    }

    fn metrics(&self) -> Option<&'static crate::metrics::CapabilityMetrics> {
        Some(&METRICS)
    }

    fn check(
        &self,
        section: &toml::Table,
        _stages: &[super::factor::StageView<'_>],
    ) -> Vec<(Option<String>, String)> {
        match section_config(section) {
            Ok(config) => check_languages(&config)
                .into_iter()
                .map(|m| (None, m))
                .collect(),
            // Reported where the section is read.
            Err(_) => Vec::new(),
        }
    }

    fn build<'a>(
        &'a self,
        section: &'a toml::Table,
        setup: super::Setup<'a>,
        set: &'a mut super::CapabilitySet,
    ) -> super::factor::BuildFuture<'a> {
        Box::pin(async move {
            let config = section_config(section)?;
            let (data_dir, base_dir) = (setup.data_dir.to_path_buf(), setup.base_dir.to_path_buf());
            // A model load reads and maps hundreds of MB: off the async runtime.
            let built = tokio::task::spawn_blocking(move || config.build(&data_dir, &base_dir))
                .await
                .map_err(|e| format!("loading the transcriber failed: {e}"))?
                .map_err(|e| e.to_string())?;
            tracing::info!("transcriber: {}", built.backend.summary());
            set.insert(Arc::new(built));
            Ok(())
        })
    }

    fn link(
        &self,
        linker: &mut wasmtime::component::Linker<T>,
        context: super::factor::ContextOf<T>,
    ) -> wasmtime::Result<()> {
        crate::bindings::transcriber::add_to_linker::<
            T,
            wasmtime::component::HasSelf<CapabilityContext>,
        >(linker, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Telephone-rate utterances are interpolated, not smeared or shifted:
    /// a 1 kHz tone at 8 kHz is the same tone at 16 kHz, sample for sample
    /// in time, with its end kept.
    #[test]
    fn eight_khz_speech_reaches_whisper_at_16_khz_in_time() {
        let tone = |rate: f32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / rate).sin())
                .collect()
        };
        let input: Vec<i16> = tone(8000.0, 8000)
            .iter()
            .map(|x| (x * 32767.0) as i16)
            .collect();
        let got = to_16k(&input, 8000);
        assert_eq!(got.len(), 16_000);
        let want = tone(16_000.0, 16_000);
        // Away from the edges (the filter's reach), within 1% of full scale.
        let worst = got[100..15_900]
            .iter()
            .zip(&want[100..15_900])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.01, "worst error {worst}");
        // The last samples are there, not lost in the filter's delay.
        let tail = got[15_990..].iter().map(|x| x.abs()).fold(0.0f32, f32::max);
        assert!(tail > 0.1, "tail {tail}");
        // 16 kHz passes through; other rates are resampled to 16 kHz.
        assert_eq!(to_16k(&[1, 2, 3], 16_000).len(), 3);
        assert_eq!(to_16k(&vec![0; 4410], 44_100).len(), 1600);
    }

    #[test]
    fn languages_are_checked_before_any_utterance() {
        let problems = |toml: &str| {
            let config: TranscriberConfig = toml::from_str(toml).unwrap();
            check_languages(&config)
        };
        assert!(
            problems("backend = \"whisper-cpp\"").is_empty(),
            "the defaults"
        );
        assert!(
            problems(
                "backend = \"whisper-cpp\"\nlanguage = \"auto\"\nlanguages = [\"pt-BR\", \"ko\"]"
            )
            .is_empty()
        );
        assert!(problems("backend = \"openai\"\nlanguage = \"pt-BR\"").is_empty());
        let bad = problems("backend = \"whisper-cpp\"\nlanguage = \"french\"");
        assert!(bad[0].contains("\"french\""), "{bad:?}");
        let bad = problems("backend = \"whisper-cpp\"\nlanguages = [\"fr\", \"xx\"]");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("\"xx\""));
        assert_eq!(
            problems("backend = \"openai\"\nlanguage = \"../x\"").len(),
            1
        );
    }

    #[test]
    fn the_openai_url_is_one_endpoint_or_a_pool() {
        let one: TranscriberConfig =
            toml::from_str("backend = \"openai\"\nurl = \"http://a:1/v1\"").unwrap();
        let pool: TranscriberConfig =
            toml::from_str("backend = \"openai\"\nurl = [\"http://a:1/v1\", \"http://b:1/v1\"]")
                .unwrap();
        let urls = |c: &TranscriberConfig| match c {
            TranscriberConfig::Openai { url, .. } => url.list(),
            _ => panic!("openai"),
        };
        assert_eq!(urls(&one), ["http://a:1/v1"]);
        assert_eq!(urls(&pool), ["http://a:1/v1", "http://b:1/v1"]);
    }
}
