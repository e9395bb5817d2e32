//! Test-only stage built from a frozen copy of `callpipe:stage@0.1.0`
//! (`wit/` beside this file, never edited), without the SDK: the host
//! implements a later 0.1.x and must keep loading components built against
//! 0.1.0. It logs once through the 0.1.0 `log` import and turns each
//! `custom` event into one named `contract-0.1.0`.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "audio-stage",
        path: "wit",
    });

    use callpipe::stage::log;
    use callpipe::stage::types::{CallInfo, Custom, Descriptor, Event, EventKind, StageError};

    struct Contract;

    impl exports::callpipe::stage::stage::Guest for Contract {
        fn describe() -> Descriptor {
            Descriptor {
                name: "contract-v0-1-0".into(),
                version: "0.1.0".into(),
                emits: vec![EventKind::Custom],
                default_on: vec![EventKind::Custom],
            }
        }

        fn init(_config_json: String, _call: CallInfo) -> Result<(), StageError> {
            log::log(log::Level::Debug, "built against callpipe:stage@0.1.0");
            Ok(())
        }

        fn handle(event: Event) -> Result<Vec<Event>, StageError> {
            Ok(match event {
                Event::Custom(c) => vec![Event::Custom(Custom {
                    name: "contract-0.1.0".into(),
                    json: c.json,
                })],
                other => vec![other],
            })
        }
    }

    export!(Contract);
}
