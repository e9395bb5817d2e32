//! `transcriber` stage: turns utterances into transcripts through the host's
//! `transcriber` capability. Final utterances go out as soon as the VAD ends
//! them; long speech is flushed every `max_buffer_s`; a fragment shorter than
//! `min_buffer_s` waits `join_gap_ms` for the same speaker's next one. The
//! host's `callpipe.tick` events tell it that the gap has passed.

wit_bindgen::generate!({ world: "transcriber-stage", path: "../../wit" });

mod buffer;

use callpipe::stage::types::{CallInfo, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

pub use buffer::{Config, Request, Stage as Transcriber, Transcribed};

thread_local! {
    static STATE: RefCell<Option<Transcriber>> = const { RefCell::new(None) };
}

struct Stage;

#[cfg(target_arch = "wasm32")]
fn transcribe(r: &Request) -> Result<Transcribed, String> {
    use callpipe::stage::transcriber::{TranscribeRequest, transcribe};
    use callpipe::stage::types::CapabilityError as E;
    let result = transcribe(&TranscribeRequest {
        samples: r.samples.clone(),
        rate: r.rate,
        language: r.language.clone(),
        prompt: r.prompt.clone(),
    });
    match result {
        Ok(t) => Ok(Transcribed {
            text: t.text,
            language: t.language,
            confidence: t.confidence,
        }),
        Err(E::NotConfigured(m)) => Err(format!("not configured: {m}")),
        Err(E::Timeout(m)) => Err(format!("timeout: {m}")),
        Err(E::Unavailable(m)) => Err(format!("unavailable: {m}")),
        Err(E::InvalidRequest(m)) => Err(format!("invalid request: {m}")),
        Err(E::Other(m)) => Err(m),
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn transcribe(_: &Request) -> Result<Transcribed, String> {
    Err("the transcriber capability exists only inside the host".into())
}

fn warn(message: &str) {
    #[cfg(target_arch = "wasm32")]
    callpipe::stage::log::log(callpipe::stage::log::Level::Warn, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = message;
}

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "transcriber".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            emits: vec![
                EventKind::Transcript,
                EventKind::Utterance,
                EventKind::SpeechStarted,
                EventKind::Custom,
                EventKind::CallEnded,
            ],
            default_on: vec![
                EventKind::Utterance,
                EventKind::SpeechStarted,
                EventKind::Custom,
                EventKind::CallEnded,
            ],
        }
    }

    fn init(config_json: String, call: CallInfo) -> Result<(), StageError> {
        let stage = Transcriber::from_json(&config_json, &call.language)?;
        STATE.with(|s| *s.borrow_mut() = Some(stage));
        Ok(())
    }

    fn handle(event: Event) -> Result<Vec<Event>, StageError> {
        STATE.with(|s| match s.borrow_mut().as_mut() {
            Some(stage) => Ok(stage.handle(event, &mut transcribe, &mut warn)),
            None => Err(StageError::Internal("handle called before init".into())),
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Stage);
