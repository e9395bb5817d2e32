//! Test-only stage that misbehaves on purpose, to prove the host contains it.
//! Config: `{"mode": "loop" | "leak" | "panic" | "none", "every": N,
//! "fail_session": "id"}`; it passes events through and misbehaves on every
//! Nth `audio` event, and panics in `init` for the call whose session is
//! `fail_session` (an instantiation that fails for one call only).

use callpipe_sdk::types::{CallInfo, Event, EventKind, StageError};

#[derive(serde::Deserialize, Default)]
pub struct Config {
    mode: String,
    every: u64,
    #[serde(default)]
    fail_session: String,
}

pub struct Hostile {
    config: Config,
    seen: u64,
    hoard: Vec<Vec<u8>>,
}

impl callpipe_sdk::Stage for Hostile {
    const NAME: &'static str = "hostile";
    const EMITS: &'static [EventKind] = &[EventKind::Audio];
    const DEFAULT_ON: &'static [EventKind] = &[EventKind::Audio];
    type Config = Config;

    fn new(config: Config, call: &CallInfo) -> Result<Self, StageError> {
        if !config.fail_session.is_empty() && call.session_id == config.fail_session {
            panic!(
                "hostile stage refuses session {} on purpose",
                call.session_id
            );
        }
        Ok(Hostile {
            config,
            seen: 0,
            hoard: Vec::new(),
        })
    }

    fn handle(&mut self, event: Event) -> Result<Vec<Event>, StageError> {
        self.seen += 1;
        if !self.seen.is_multiple_of(self.config.every.max(1)) {
            return Ok(vec![event]);
        }
        match self.config.mode.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "leak" => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            "panic" => panic!("hostile stage panics on purpose"),
            _ => Ok(vec![event]),
        }
    }
}

callpipe_sdk::export_stage!(Hostile);
