//! The `whisper-cpp` transcriber backend: whisper.cpp in process (whisper-rs),
//! on the blocking thread pool behind a concurrency limit, so a transcription
//! never blocks the async runtime and never runs more at once than asked.

use super::speech_to_text::{TranscribeFuture, Transcriber, TranscriberError, Transcription};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

/// Encoder frames per second of audio (whisper's 20 ms hop, halved by conv2).
const FRAMES_PER_SECOND: f32 = 50.0;
/// Whisper's full window: 30 s.
const FULL_AUDIO_CTX: i32 = 1500;
/// Margin over the clip length: a window shorter than the speech makes
/// whisper.cpp hallucinate; a little longer is as accurate and still cheap.
const AUDIO_CTX_MARGIN: i32 = 128;

#[derive(Debug, Clone)]
pub struct WhisperCppConfig {
    pub model: PathBuf,
    pub threads: i32,
    /// BCP 47 primary tag, or `None` to detect.
    pub language: Option<String>,
    /// What detection chooses among (whisper's ids); empty: any language
    /// whisper knows.
    pub detect_among: Vec<i32>,
    pub max_concurrent: usize,
    /// Callers that may wait for a turn; more are shed.
    pub max_queued: usize,
}

pub struct WhisperCpp {
    ctx: Arc<WhisperContext>,
    config: WhisperCppConfig,
    permits: Arc<Semaphore>,
    /// Decoder states reused between requests (one per permit at most).
    states: Arc<Mutex<Vec<Pooled>>>,
    /// Jobs inside whisper.cpp now.
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// Callers waiting for a turn.
    queue: Admission,
}

/// A bounded waiting room: entering fails when `max` are already inside.
#[derive(Default)]
struct Admission {
    inside: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// One place in the waiting room, left when dropped.
struct Waiting<'a>(&'a Admission);

impl Admission {
    fn new(max: usize) -> Self {
        Admission {
            inside: Default::default(),
            max,
        }
    }

    fn enter(&self) -> Option<Waiting<'_>> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.inside
            .fetch_update(AcqRel, Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()?;
        crate::metrics::TRANSCRIPTIONS.waiting.fetch_add(1, AcqRel);
        Some(Waiting(self))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::AcqRel;
        self.0.inside.fetch_sub(1, AcqRel);
        crate::metrics::TRANSCRIPTIONS.waiting.fetch_sub(1, AcqRel);
    }
}

/// Counts a job as running for as long as it lives.
struct Running(Arc<std::sync::atomic::AtomicUsize>);

impl Running {
    fn start(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl WhisperCpp {
    /// Loads the model (blocking: call it off the async runtime).
    pub fn load(config: WhisperCppConfig) -> Result<Self, TranscriberError> {
        whisper_rs::install_logging_hooks();
        if !config.model.is_file() {
            return Err(TranscriberError::Config(format!(
                "no Whisper model at {} (run `callpipe models`, or set `model` to a whisper.cpp ggml file)",
                config.model.display()
            )));
        }
        let ctx =
            WhisperContext::new_with_params(&config.model, WhisperContextParameters::default())
                .map_err(|e| {
                    TranscriberError::Config(format!("cannot load {}: {e}", config.model.display()))
                })?;
        Ok(Self {
            ctx: Arc::new(ctx),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            states: Arc::default(),
            running: Arc::default(),
            queue: Admission::new(config.max_queued),
            config,
        })
    }

    pub fn model(&self) -> &Path {
        &self.config.model
    }
}

/// The encoder window for a clip of `samples` at 16 kHz.
pub fn audio_ctx_for(samples: usize) -> i32 {
    let frames = (samples as f32 / 16_000.0 * FRAMES_PER_SECOND).ceil() as i32;
    (frames + AUDIO_CTX_MARGIN).min(FULL_AUDIO_CTX)
}

/// A decoder state, and its own state for language detection, made when
/// first needed.
struct Pooled {
    state: WhisperState,
    detector: Option<WhisperState>,
}

/// The window language detection listens to: the first 5 s (250 encoder
/// frames). Detection encodes with the window its state last decoded with;
/// a state of its own, set once, keeps it fixed, so what is detected never
/// depends on the length of another call's utterance.
const DETECT_CTX: i32 = 250;

/// What the transcription is in, and how sure detection was of it.
fn language_of<'l>(
    ctx: &WhisperContext,
    pooled: &mut Pooled,
    config: &WhisperCppConfig,
    audio: &[f32],
    language: Option<&'l str>,
) -> Result<(&'l str, Option<f32>), TranscriberError> {
    if let Some(l) = language {
        return Ok((l, None));
    }
    let threads = config.threads.max(1) as usize;
    let failed = |e: whisper_rs::WhisperError| {
        TranscriberError::Failed(format!("whisper.cpp language detection: {e}"))
    };
    let detector = match &mut pooled.detector {
        Some(d) => d,
        None => {
            let mut d = ctx.create_state().map_err(failed)?;
            // One silent second through `full` sets the window for good.
            let mut params = quiet_params(config, 16_100);
            params.set_audio_ctx(DETECT_CTX);
            params.set_language(Some("en"));
            d.full(params, &vec![0.0; 16_100]).map_err(failed)?;
            pooled.detector.insert(d)
        }
    };
    // Only the window is listened to; the rest need not be analysed.
    let head = &audio[..audio.len().min(DETECT_CTX as usize * 320)];
    detector.pcm_to_mel(head, threads).map_err(failed)?;
    let (id, probabilities) = detector.lang_detect(0, threads).map_err(failed)?;
    let (id, p) = among(id, &probabilities, &config.detect_among);
    let tag = whisper_rs::get_lang_str(id).ok_or_else(|| {
        TranscriberError::Failed(format!(
            "whisper.cpp detected language id {id}, not in its table"
        ))
    })?;
    Ok((tag, p))
}

/// The most probable of the allowed languages, with whisper's own
/// probability for it: a desk that serves fifteen languages never settles
/// on Latin or Javanese. Not renormalised over the set: much of whisper's
/// belief on a language outside it says the audio is hard to place, and
/// renormalising turned that doubt into sureness of a wrong language
/// (measured: a Dutch espeak voice became English at 0.92, from 0.35).
/// Empty `allowed`: whisper's own choice.
fn among(best: i32, probabilities: &[f32], allowed: &[i32]) -> (i32, Option<f32>) {
    let p = |id: i32| {
        usize::try_from(id)
            .ok()
            .and_then(|i| probabilities.get(i).copied())
    };
    if allowed.is_empty() || allowed.contains(&best) {
        return (best, p(best));
    }
    let top = allowed
        .iter()
        .filter_map(|&id| Some((id, p(id)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match top {
        Some((id, q)) => (id, Some(q)),
        None => (best, p(best)),
    }
}

fn quiet_params<'a>(config: &WhisperCppConfig, samples: usize) -> FullParams<'a, 'a> {
    let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    params.set_n_threads(config.threads.max(1));
    params.set_print_special(false);
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_timestamps(false);
    params.set_no_context(true);
    params.set_single_segment(true);
    params.set_suppress_blank(true);
    params.set_audio_ctx(audio_ctx_for(samples));
    params
}

fn run(
    ctx: &WhisperContext,
    pooled: &mut Pooled,
    config: &WhisperCppConfig,
    audio: &[f32],
    language: Option<&str>,
    fallback: Option<&str>,
    prompt: Option<&str>,
) -> Result<Transcription, TranscriberError> {
    // whisper.cpp needs at least a second of audio; pad short clips with silence.
    let padded;
    let audio = if audio.len() < 16_000 {
        padded = [audio, &vec![0.0; 16_100 - audio.len()]].concat();
        &padded[..]
    } else {
        audio
    };
    // Detected here rather than inside `full`, which would detect too but
    // keep the probability to itself (and encode with a stale window).
    let (language, language_probability) = language_of(ctx, pooled, config, audio, language)?;
    // An unsure guess decodes worse than the language the call is in.
    let decode_in = match (language_probability, fallback) {
        (Some(p), Some(f)) if p < super::call_language::SURE => f,
        _ => language,
    };
    let mut params = quiet_params(config, audio.len());
    params.set_language(Some(decode_in));
    if let Some(p) = prompt.filter(|p| !p.is_empty() && !p.contains('\0')) {
        params.set_initial_prompt(p);
    }
    let state = &mut pooled.state;
    state
        .full(params, audio)
        .map_err(|e| TranscriberError::Failed(format!("whisper.cpp: {e}")))?;
    let eot = ctx.token_eot();
    let mut text = String::new();
    let (mut prob_sum, mut prob_n) = (0f32, 0u32);
    for segment in state.as_iter() {
        text.push_str(
            &segment
                .to_str_lossy()
                .map_err(|e| TranscriberError::Failed(e.to_string()))?,
        );
        for i in 0..segment.n_tokens() {
            if let Some(token) = segment.get_token(i)
                && token.token_id() < eot
            {
                prob_sum += token.token_probability();
                prob_n += 1;
            }
        }
    }
    Ok(Transcription {
        text: text.trim().to_string(),
        language: language.to_string(),
        confidence: if prob_n == 0 {
            0.0
        } else {
            prob_sum / prob_n as f32
        },
        language_probability,
    })
}

impl Transcriber for WhisperCpp {
    fn detects_language(&self) -> bool {
        self.config.language.is_none()
    }

    fn running(&self) -> Option<usize> {
        Some(self.running.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn summary(&self) -> String {
        format!(
            "whisper-cpp {} ({} thread(s), language {}, {} at once)",
            self.config.model.display(),
            self.config.threads,
            self.config.language.as_deref().unwrap_or("auto"),
            self.config.max_concurrent
        )
    }

    fn transcribe<'a>(
        &'a self,
        audio: Vec<f32>,
        language: Option<String>,
        prompt: Option<String>,
    ) -> TranscribeFuture<'a> {
        self.submit(audio, language, None, prompt)
    }

    fn transcribe_detecting<'a>(
        &'a self,
        audio: Vec<f32>,
        fallback: Option<String>,
        prompt: Option<String>,
    ) -> TranscribeFuture<'a> {
        self.submit(audio, None, fallback, prompt)
    }
}

impl WhisperCpp {
    /// One job on the blocking pool, once a slot is free.
    fn submit(
        &self,
        audio: Vec<f32>,
        language: Option<String>,
        fallback: Option<String>,
        prompt: Option<String>,
    ) -> TranscribeFuture<'_> {
        Box::pin(async move {
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // Wait for a turn, if there is room to wait.
                    let Some(_waiting) = self.queue.enter() else {
                        crate::metrics::TRANSCRIPTIONS
                            .shed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(TranscriberError::Unavailable(format!(
                            "overloaded: {} transcriptions already waiting",
                            self.config.max_queued
                        )));
                    };
                    self.permits
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| TranscriberError::Unavailable("shut down".into()))?
                }
            };
            let ctx = self.ctx.clone();
            let states = self.states.clone();
            let config = self.config.clone();
            let running = self.running.clone();
            // `auto` is whisper.cpp's word for detecting; detect here instead.
            let language = language
                .filter(|l| l != "auto")
                .or_else(|| config.language.clone());
            tokio::task::spawn_blocking(move || {
                // The slot goes with the job, not with the caller: a caller
                // that gave up (a timeout) does not free it while whisper
                // still runs, so overload never runs more jobs than allowed.
                let _permit = permit;
                let _running = Running::start(&running);
                let pooled = states.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let mut state = match pooled {
                    Some(s) => s,
                    None => Pooled {
                        state: ctx.create_state().map_err(|e| {
                            TranscriberError::Failed(format!("whisper.cpp state: {e}"))
                        })?,
                        detector: None,
                    },
                };
                let result = run(
                    &ctx,
                    &mut state,
                    &config,
                    &audio,
                    language.as_deref(),
                    fallback.as_deref(),
                    prompt.as_deref(),
                );
                states.lock().unwrap_or_else(|p| p.into_inner()).push(state);
                result
            })
            .await
            .map_err(|e| TranscriberError::Failed(format!("transcription task failed: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waiting_room_holds_max_and_frees_places_when_left() {
        let room = Admission::new(2);
        let a = room.enter().expect("first");
        let b = room.enter().expect("second");
        assert!(room.enter().is_none(), "a third waits nowhere");
        drop(a);
        let c = room.enter().expect("a freed place");
        drop((b, c));
        assert_eq!(room.inside.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn the_window_follows_the_clip_with_a_margin() {
        assert_eq!(audio_ctx_for(3 * 16_000), 150 + AUDIO_CTX_MARGIN);
        assert_eq!(audio_ctx_for(40 * 16_000), FULL_AUDIO_CTX);
        assert!(
            audio_ctx_for(16_000 * 64 / 10) > 320,
            "never shorter than a 6.4 s clip"
        );
    }

    #[test]
    fn detection_chooses_among_the_allowed_languages() {
        let id = |t: &str| whisper_rs::get_lang_id(t).expect(t);
        let mut p = vec![0.0f32; whisper_rs::get_lang_max_id() as usize + 1];
        p[id("la") as usize] = 0.6;
        p[id("pt") as usize] = 0.3;
        p[id("es") as usize] = 0.1;
        // Any language: whisper's own choice and probability.
        assert_eq!(among(id("la"), &p, &[]), (id("la"), Some(0.6)));
        // Among Portuguese and Spanish: Portuguese, as unsure as whisper
        // was of it (not 0.3 of their 0.4).
        assert_eq!(
            among(id("la"), &p, &[id("pt"), id("es")]),
            (id("pt"), Some(0.3))
        );
        // Whisper's choice allowed: it stands.
        assert_eq!(
            among(id("la"), &p, &[id("la"), id("es")]),
            (id("la"), Some(0.6))
        );
        // Nothing heard of the allowed one: it, and unsure.
        assert_eq!(among(id("la"), &p, &[id("ja")]), (id("ja"), Some(0.0)));
    }

    #[test]
    fn a_missing_model_names_the_fix() {
        let err = WhisperCpp::load(WhisperCppConfig {
            model: "/nonexistent/ggml-base.bin".into(),
            threads: 1,
            language: Some("fr".into()),
            detect_among: Vec::new(),
            max_concurrent: 1,
            max_queued: 1,
        })
        .err()
        .expect("refused");
        assert!(err.to_string().contains("callpipe models"), "{err}");
    }
}
