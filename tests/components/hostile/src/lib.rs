//! Test-only stage that misbehaves on purpose, to prove the host contains it.
//! Config: `{"mode": "loop" | "leak" | "panic" | "none", "every": N}`; it
//! passes events through and misbehaves on every Nth `audio` event.

wit_bindgen::generate!({ world: "audio-stage", path: "../../../wit" });

use callpipe::stage::types::{CallInfo, Descriptor, Event, EventKind, StageError};
use exports::callpipe::stage::stage::Guest;
use std::cell::RefCell;

#[derive(serde::Deserialize, Default)]
struct Config {
    mode: String,
    every: u64,
}

thread_local! {
    static STATE: RefCell<(Config, u64, Vec<Vec<u8>>)> = RefCell::new(Default::default());
}

struct Stage;

impl Guest for Stage {
    fn describe() -> Descriptor {
        Descriptor {
            name: "hostile".into(),
            version: "0.0.0".into(),
            emits: vec![EventKind::Audio],
            default_on: vec![EventKind::Audio],
        }
    }

    fn init(config_json: String, _call: CallInfo) -> Result<(), StageError> {
        let config: Config = serde_json::from_str(&config_json)
            .map_err(|e| StageError::InvalidConfig(e.to_string()))?;
        STATE.with(|s| *s.borrow_mut() = (config, 0, Vec::new()));
        Ok(())
    }

    fn handle(event: Event) -> Result<Vec<Event>, StageError> {
        let misbehave = STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.1 += 1;
            let every = s.0.every.max(1);
            (s.1 % every == 0).then(|| s.0.mode.clone())
        });
        match misbehave.as_deref() {
            Some("loop") => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Some("leak") => loop {
                STATE.with(|s| s.borrow_mut().2.push(vec![1u8; 1 << 20]));
            },
            Some("panic") => panic!("hostile stage panics on purpose"),
            _ => Ok(vec![event]),
        }
    }
}

#[cfg(target_arch = "wasm32")]
export!(Stage);
