//! The whisper-cpp transcriber on real recorded French phone speech
//! (Debian's asterisk-core-sounds-fr-wav, with the package's own transcripts).

use crate::support::{SOUNDS, data_dir, fixture_present};
use callpipe_host::audio::wav;
use callpipe_host::capabilities::transcriber::{TranscriberConfig, to_16k};
use callpipe_host::models::whisper;
use callpipe_testkit::speech::{TRANSCRIPTS, edit_distance, transcripts, words};
use std::path::Path;

const PROMPTS: [&str; 12] = [
    "agent-loggedoff",
    "conf-onlyperson",
    "pbx-invalid",
    "pbx-invalidpark",
    "privacy-unident",
    "queue-thankyou",
    "ss-noservice",
    "vm-msgsaved",
    "vm-nomore",
    "vm-passchanged",
    "conf-muted",
    "vm-goodbye",
];
/// Word error rate over all prompts: measured 0.079 (8 of 101 words) with
/// Whisper base, greedy, 1 thread. The bound allows one or two words of drift
/// between CPUs (SIMD paths), not a regression; it only ever goes down.
const MAX_WER: f64 = 0.10;

/// The speech model `callpipe models` set up, if it is there (skips loudly
/// otherwise, fails under CI).
fn model() -> Option<std::path::PathBuf> {
    let model = callpipe_host::models::dir(&data_dir()).join(whisper::MODEL_FILE);
    fixture_present(
        model.exists(),
        &format!(
            "the speech model at {} (`callpipe models`)",
            model.display()
        ),
    )
    .then_some(model)
}

/// Word errors, words and seconds of transcription of the prompts by `model`.
fn word_errors(model: &Path) -> (usize, usize, f64) {
    let config: TranscriberConfig = toml::from_str(&format!(
        "backend = \"whisper-cpp\"\nmodel = \"{}\"\nthreads = 1\nlanguage = \"fr\"\n",
        model.display()
    ))
    .expect("config");
    let transcriber = config
        .build(&data_dir(), Path::new("."))
        .expect("model loads");
    let refs = transcripts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let (mut errors, mut total, mut secs) = (0usize, 0usize, 0f64);
    for prompt in PROMPTS {
        let rec = wav::read(&Path::new(SOUNDS).join(format!("{prompt}.wav"))).expect("prompt");
        let pcm: Vec<i16> = rec.channels[0]
            .iter()
            .map(|&x| (x * 32767.0) as i16)
            .collect();
        let audio = to_16k(&pcm, rec.rate);
        let started = std::time::Instant::now();
        let got = rt
            .block_on(
                transcriber
                    .backend
                    .transcribe(audio, Some("fr".into()), None),
            )
            .expect("transcribes");
        secs += started.elapsed().as_secs_f64();
        let reference = words(&refs[prompt]);
        let hypothesis = words(&got.text);
        let e = edit_distance(&reference, &hypothesis);
        eprintln!(
            "{prompt}: {e}/{} \"{}\" ({:.2})",
            reference.len(),
            got.text,
            got.confidence
        );
        assert_eq!(got.language, "fr");
        assert!((0.0..=1.0).contains(&got.confidence));
        errors += e;
        total += reference.len();
    }
    (errors, total, secs)
}

/// Whisper base (f16) stays under its bound; the quantized copies
/// `callpipe models --quantize q8_0,q5_1` writes stay within 0.01 of it.
#[test]
fn word_error_rate_in_french_stays_under_its_bound() {
    let Some(model) = model() else { return };
    let have_speech =
        Path::new(SOUNDS).join("pbx-invalid.wav").exists() && Path::new(TRANSCRIPTS).exists();
    if !fixture_present(
        have_speech,
        "Debian's asterisk-core-sounds-fr-wav and asterisk-core-sounds-fr",
    ) {
        return;
    }
    let (errors, total, secs) = word_errors(&model);
    let wer = errors as f64 / total as f64;
    eprintln!(
        "f16: WER {wer:.3} ({errors}/{total} words), {:.2} s per prompt",
        secs / PROMPTS.len() as f64
    );
    assert!(wer <= MAX_WER, "WER {wer:.3} over {MAX_WER}");
    for kind in ["q8_0", "q5_1"] {
        let quantized = model.with_file_name(format!("ggml-base-{kind}.bin"));
        if !fixture_present(
            quantized.exists(),
            &format!(
                "{} (`callpipe models --quantize {kind}`)",
                quantized.display()
            ),
        ) {
            continue;
        }
        let (e, t, s) = word_errors(&quantized);
        let q = e as f64 / t as f64;
        eprintln!(
            "{kind}: WER {q:.3} ({e}/{t} words), {:.2} s per prompt",
            s / PROMPTS.len() as f64
        );
        assert!(q <= wer + 0.01, "{kind}: WER {q:.3} against f16's {wer:.3}");
    }
}

#[test]
fn word_error_rate_arithmetic() {
    let r = words("Vous n'êtes plus en ligne.");
    assert_eq!(r, ["vous", "n", "êtes", "plus", "en", "ligne"]);
    assert_eq!(edit_distance(&r, &words("vous n'êtes plus en ligne")), 0);
    assert_eq!(edit_distance(&r, &words("vous êtes plus en ligne")), 1);
    assert_eq!(edit_distance(&r, &words("")), 6);
}

/// A transcription whose caller gave up (a timeout) keeps its slot until
/// whisper.cpp is done with it: under overload no more jobs run than
/// `max_concurrent`, however often callers time out and come back.
#[test]
fn a_timed_out_transcription_keeps_its_slot_until_whisper_is_done() {
    let Some(model) = model() else { return };
    let config: TranscriberConfig = toml::from_str(&format!(
        "backend = \"whisper-cpp\"\nmodel = \"{}\"\nthreads = 1\nlanguage = \"fr\"\nmax_concurrent = 1\n",
        model.display()
    ))
    .expect("config");
    let transcriber = config
        .build(&data_dir(), Path::new("."))
        .expect("model loads");
    let backend = transcriber.backend.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    // Five seconds of low noise: whisper.cpp takes a good fraction of a
    // second on it, far longer than the callers wait.
    let audio: Vec<f32> = (0..80_000)
        .map(|i| ((i * 7919 % 200) as f32 - 100.0) / 20_000.0)
        .collect();
    rt.block_on(async {
        let mut peak = 0;
        for _ in 0..3 {
            let attempt = backend.transcribe(audio.clone(), Some("fr".into()), None);
            let _ = tokio::time::timeout(std::time::Duration::from_millis(20), attempt).await;
            peak = peak.max(backend.running().expect("whisper counts its jobs"));
        }
        assert!(peak >= 1, "the first job runs");
        assert_eq!(peak, 1, "more whisper jobs than max_concurrent");
        // The job that was started finishes on its own.
        for _ in 0..600 {
            if backend.running() == Some(0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(backend.running(), Some(0));
    });
}
